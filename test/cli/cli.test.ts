import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { listNetns } from '../../src/local/index.js';

const root = process.getuid?.() === 0;
const nt = root ? test : test.skip;
const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

interface Run { code: number | null; stdout: string; stderr: string; pid: number }

function cli(args: string[], opts: { input?: string } = {}): Promise<Run> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdin.end(opts.input ?? '');
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr, pid: child.pid! }));
  });
}

function tempDir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'ambit-cli-test-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('--help lists every subcommand', async (t) => {
  const r = await cli(['--help']);
  t.is(r.code, 0, r.stderr);
  for (const sub of ['up', 'down', 'exec', 'apply', 'control', 'agent', 'waypoint', 'cni']) {
    t.regex(r.stdout, new RegExp(`ambit ${sub}\\b`), `missing ${sub}`);
  }
});

test('--version prints the package version', async (t) => {
  const r = await cli(['--version']);
  t.is(r.code, 0);
  t.is(r.stdout.trim(), pkg.version);
});

test('programs not wired yet say so and exit 2', async (t) => {
  for (const sub of ['control', 'agent', 'waypoint', 'cni']) {
    const r = await cli([sub]);
    t.is(r.code, 2, sub);
    t.regex(r.stderr, new RegExp(`ambit ${sub}: not implemented yet`));
  }
});

test('an unknown command is an error with a hint, not a crash', async (t) => {
  const r = await cli(['frobnicate']);
  t.is(r.code, 1);
  t.regex(r.stderr, /ambit: Unknown argument: frobnicate\nrun "ambit --help"/);
});

test('apply copies a valid file into config/ and names the file and line of a broken one', async (t) => {
  const dir = tempDir(t);
  const good = join(dir, 'policy.yaml');
  writeFileSync(good, 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-all\n  namespace: default\nspec: {}\n');
  const ok = await cli(['apply', '-f', good, '--dir', join(dir, 'state')]);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /applied 1 object/);
  t.is(readFileSync(join(dir, 'state', 'config', 'policy.yaml'), 'utf8'), readFileSync(good, 'utf8'));

  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n---\napiVersion: v1\nkind: [unclosed\n');
  const r = await cli(['apply', '-f', bad, '--dir', join(dir, 'state')]);
  t.is(r.code, 1);
  t.regex(r.stderr, /bad\.yaml document 2: line \d+: /);
  t.false(existsSync(join(dir, 'state', 'config', 'bad.yaml')));

  const noKind = await cli(['apply', '-f', '-', '--dir', join(dir, 'state')], { input: 'apiVersion: v1\nmetadata:\n  name: x\n' });
  t.is(noKind.code, 1);
  t.regex(noKind.stderr, /stdin document 1 \(line 1\): kind: missing or not a string/);
  t.deepEqual(readdirSync(join(dir, 'state', 'config')), ['policy.yaml']);
});

test('exec without a running cluster explains what to do', async (t) => {
  const dir = tempDir(t);
  const r = await cli(['exec', 'client', '--dir', dir, '--', 'true']);
  t.is(r.code, 1);
  t.regex(r.stderr, /no running cluster: .*state\.json does not exist \(start one with: ambit up\)/);
});

test('down removes a state file left by a dead run', async (t) => {
  const dir = tempDir(t);
  // pid 2^22+1 is above the default pid_max of most systems: certainly not running
  writeFileSync(join(dir, 'state.json'), JSON.stringify({ version: 1, pid: 4194305, startedAt: '', cluster: { pods: [] } }));
  const r = await cli(['down', '--dir', dir]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /and the stale state file/);
  t.false(existsSync(join(dir, 'state.json')));
});

nt('up --once builds the demo, tears it down and leaves nothing behind', async (t) => {
  const dir = tempDir(t);
  const r = await cli(['up', '--once', '--dir', dir]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /pod {2}client +default\/node-1 +10\.244\.1\.\d+/);
  t.regex(r.stdout, /pod {2}echo-v1 +default\/node-1 +10\.244\.1\.\d+ +app=echo,version=v1/);
  t.regex(r.stdout, /pod {2}echo-v2 +default\/node-2 +10\.244\.2\.\d+ +app=echo,version=v2/);
  t.regex(r.stdout, /svc {2}default\/echo +10\.96\.\d+\.\d+ +80->8080/);
  t.regex(r.stdout, /removed everything/);
  const prefix = `ambit-${r.pid.toString(36)}-`;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
  t.false(existsSync(join(dir, 'state.json')));
  t.false(existsSync(join(dir, 'config', 'cluster.yaml')));
});

nt('a running up serves exec into its pods, writes cluster.yaml, and Ctrl-C removes everything', async (t) => {
  const dir = tempDir(t);
  const up = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, 'up', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(up, 'exit');
  t.teardown(() => { if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL'); });
  let out = '';
  up.stdout.setEncoding('utf8');
  up.stderr.resume();
  await new Promise<void>((resolve, reject) => {
    up.stdout.on('data', (chunk: string) => { out += chunk; if (out.includes('Press Ctrl-C')) resolve(); });
    up.once('exit', (code) => reject(new Error(`ambit up exited early (${code}): ${out}`)));
  });
  const v2ip = /pod {2}echo-v2 +\S+ +(10\.244\.2\.\d+)/.exec(out)?.[1];
  t.truthy(v2ip, out);

  const r = await cli(['exec', 'client', '--dir', dir, '--', process.execPath, '-e',
    'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))', `http://${v2ip}:8080/via-exec`]);
  t.is(r.code, 0, r.stderr);
  const answer = JSON.parse(r.stdout) as { name: string; version: string; path: string; remoteAddress: string };
  t.is(answer.name, 'echo-v2');
  t.is(answer.version, 'v2');
  t.is(answer.path, '/via-exec');
  t.regex(answer.remoteAddress, /^10\.244\.1\.\d+$/); // the client pod, on node-1

  const code = await cli(['exec', 'echo-v1', '--dir', dir, '--', 'sh', '-c', 'exit 7']);
  t.is(code.code, 7, 'exec passes the exit code through');

  const objs = parseAllDocuments(readFileSync(join(dir, 'config', 'cluster.yaml'), 'utf8')).map((d) => d.toJS() as { kind: string; metadata: { name: string } });
  t.deepEqual(objs.filter((o) => o.kind === 'Pod').map((o) => o.metadata.name).sort(), ['client', 'echo-v1', 'echo-v2']);
  t.true(objs.some((o) => o.kind === 'Service' && o.metadata.name === 'echo'));

  up.kill('SIGINT');
  const [exitCode] = await exited as [number | null];
  t.is(exitCode, 0);
  const prefix = `ambit-${up.pid!.toString(36)}-`;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
  t.false(existsSync(join(dir, 'state.json')));
});
