/**
 * The Dockerfile, read statically (no image can be built where the tests run: no daemon, no base
 * images offline): a build stage and a slim run stage of the same Node image, the system tools the
 * agent spawns installed in the run stage, and every file the programs read from the package root
 * at run time copied into it, where they look for it.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
const stages: string[][] = [];
for (const l of lines) {
  if (l.startsWith('FROM ')) stages.push([]);
  stages.at(-1)?.push(l);
}
const run = stages.at(-1)!;
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: { ambit: string } };

test('two stages from one Node image: the build one full, the run one slim', (t) => {
  t.is(stages.length, 2);
  const arg = /^ARG NODE_IMAGE=(node:20[\w.-]*)$/.exec(lines[0]!);
  t.truthy(arg, 'the Node image is one ARG, so both stages use the same Node (the addon is built for it)');
  t.is(stages[0]![0], 'FROM ${NODE_IMAGE} AS build');
  t.is(run[0], 'FROM ${NODE_IMAGE}-slim');
});

test('the run stage installs what the agent spawns (nft, ip) and nothing to build with', (t) => {
  const apt = run.find((l) => l.includes('apt-get install'))!;
  t.truthy(apt);
  t.regex(apt, /\bnftables\b/);
  t.regex(apt, /\biproute2\b/);
  t.notRegex(apt, /\b(g\+\+|gcc|make|python3|-dev)\b/);
  // the agent spawns these three from /usr/sbin, /sbin, /usr/bin or /bin (nft from nftables, ip from
  // iproute2); nsenter comes with util-linux, an essential package of every Debian image
  const capture = readFileSync(join(ROOT, 'src/node-agent/enrol/capture.ts'), 'utf8');
  t.regex(capture, /systemTool\(name: 'nft' \| 'ip' \| 'nsenter'\)/);
});

test('every file read from the package root at run time is copied into the run stage where it is looked for', (t) => {
  const copies = run.filter((l) => l.startsWith('COPY --from=build ')).map((l) => l.split(/\s+/).slice(2));
  const dest = (src: string) => copies.find(([from]) => from === `/src/${src}`)?.[1];
  t.is(dest('package.json'), './', '"type": "module" and the version');
  t.is(dest('node_modules'), 'node_modules');
  t.is(dest('dist/src'), 'dist/src');
  // the CNI plugin bundle the agent installs on the node: built by the build stage, found at <package root>/dist/cni
  t.regex(readFileSync(join(ROOT, 'src/node-agent/enrol/cni-install.ts'), 'utf8'), /CNI_BUNDLE_RELATIVE = join\('dist', 'cni', 'ambit-cni\.mjs'\)/);
  t.true(stages[0]!.some((l) => l.startsWith('RUN ') && /npm run bundle-cni/.test(l) && l.indexOf('bundle-cni') < l.indexOf('npm prune')), 'bundled before the dev dependencies (esbuild) are pruned');
  t.is(dest('dist/cni'), 'dist/cni');
  // src/native/addon.ts walks up from dist/src/native to this path
  t.regex(readFileSync(join(ROOT, 'src/native/addon.ts'), 'utf8'), /join\('native', 'build', 'Release', 'ambit_native\.node'\)/);
  t.is(dest('native/build/Release/ambit_native.node'), 'native/build/Release/ambit_native.node');
  // src/xds/schema.ts reads the .proto files from <package root>/src/xds/proto
  t.regex(readFileSync(join(ROOT, 'src/xds/schema.ts'), 'utf8'), /join\(packageRoot\(\), 'src', 'xds', 'proto'\)/);
  t.is(dest('src/xds/proto'), 'src/xds/proto');
  t.true(run.includes('WORKDIR /app'));
  t.true(run.includes(`ENTRYPOINT ["node", "/app/${pkg.bin.ambit}"]`), 'the entry point is the ambit command');
});

test('the build stage copies what npm ci and tsc need, and the files exist', (t) => {
  const build = stages[0]!;
  for (const f of ['package.json', 'package-lock.json', '.ci/preinstall', 'native', 'tsconfig.json', 'src', 'scripts']) {
    t.true(build.some((l) => l.startsWith('COPY ') && l.split(/\s+/).includes(f)), `COPY ${f}`);
    t.true(existsSync(join(ROOT, f)), f);
  }
  const i = (s: string) => build.findIndex((l) => l.includes(s));
  t.true(i('npm ci') < i('COPY src'), 'dependencies and the addon are a layer of their own');
  t.true(build.some((l) => l.includes('npm prune --omit=dev')));
  t.true(build.some((l) => /apt-get install .*libnghttp2-dev/.test(l)), 'the engine compiles against nghttp2\'s header');
  t.true(i('ENV npm_config_nodedir=/usr/local') >= 0 && i('ENV npm_config_nodedir=/usr/local') < i('npm ci'), 'node-gyp uses the image\'s Node headers, no download');
});
