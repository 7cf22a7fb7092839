/**
 * Bundles the CNI plugin (src/node-agent/cni-plugin/main.ts and the modules it reaches: the CNI
 * logic, the hand-off client, src/core and src/native) into one ESM file that needs nothing but
 * Node's built-in modules and the native addon: the program the node agent installs on a node as
 * `ambit-cni` (src/node-agent/enrol/cni-install.ts). A host has neither Node nor ambit's files, so
 * the agent copies this file, its own Node executable and the addon there.
 *
 * `npm run bundle-cni` writes dist/cni/ambit-cni.mjs (`npm run build` and the image build run it);
 * tests call bundleCniPlugin with a file of their own.
 */
import { build } from 'esbuild';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
/** Where the agent looks for the bundle: <package root>/dist/cni/ambit-cni.mjs (CNI_PLUGIN_BUNDLE in cni-install.ts). */
export const CNI_BUNDLE = join(ROOT, 'dist', 'cni', 'ambit-cni.mjs');

const ENTRY = "import { cniPluginMain } from './src/node-agent/cni-plugin/main.ts';\nawait cniPluginMain();\n";

/** Writes the bundle to `outfile` (default CNI_BUNDLE) and returns its path. */
export async function bundleCniPlugin(outfile: string = CNI_BUNDLE): Promise<string> {
  const r = await build({
    stdin: { contents: ENTRY, resolveDir: ROOT, sourcefile: 'ambit-cni.ts', loader: 'ts' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile,
    logLevel: 'silent',
    legalComments: 'none',
    banner: { js: '// ambit-cni: the CNI plugin of the ambit node agent, bundled by scripts/bundle-cni.ts' },
  });
  if (r.errors.length > 0) throw new Error(`bundle-cni: ${r.errors.map((e) => e.text).join('; ')}`);
  return outfile;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.stdout.write(`bundle-cni: ${await bundleCniPlugin()}\n`);
}
