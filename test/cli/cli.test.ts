import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { listNetns } from '../../src/local/index.js';
import { rootTest } from '../helpers/root.js';

const nt = rootTest;
const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

interface Run { code: number | null; stdout: string; stderr: string; pid: number }

function cli(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env },
  });
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

test('waypoint: a missing name is named in one line and exits 1; --help lists its options', async (t) => {
  const r = await cli(['waypoint'], { env: { AMBIT_WAYPOINT_NAME: '' } });
  t.is(r.code, 1);
  t.regex(r.stderr, /waypoint: name "" missing or not a DNS label \(--name or AMBIT_WAYPOINT_NAME\)/);
  const help = await cli(['waypoint', '--help']);
  t.is(help.code, 0, help.stderr);
  for (const o of ['--name', '--namespace', '--netns', '--control-url', '--hbone-port', '--metrics-port', '--readiness-port']) t.true(help.stdout.includes(o), `waypoint --help lacks ${o}`);
});

test('control and agent --help list their options', async (t) => {
  const control = await cli(['control', '--help']);
  t.is(control.code, 0, control.stderr);
  for (const o of ['--config-dir', '--state-dir', '--trust-domain', '--listen', '--ws-port', '--wss-port', '--status-port', '--kube']) {
    t.true(control.stdout.includes(o), `control --help lacks ${o}`);
  }
  const agent = await cli(['agent', '--help']);
  t.is(agent.code, 0, agent.stderr);
  for (const o of ['--node', '--control-url', '--token-file', '--state-dir', '--admin-port', '--metrics-port', '--readiness-port', '--netns-prefix']) {
    t.true(agent.stdout.includes(o), `agent --help lacks ${o}`);
  }
});

test('bad program flags name the flag; a missing setting is an error, not a crash', async (t) => {
  const port = await cli(['control', '--status-port', '70000']);
  t.is(port.code, 1);
  t.regex(port.stderr, /--status-port: 70000 is not a port number/);
  const url = await cli(['agent', '--node', 'n1', '--control-url', 'http://x']);
  t.is(url.code, 1);
  t.regex(url.stderr, /--control-url: "http:\/\/x" is not a ws:\/\/ or wss:\/\/ URL/);
  const dir = tempDir(t);
  const token = await cli(['agent', '--node', 'n1', '--control-url', 'ws://127.0.0.1:1', '--token-file', join(dir, 'nope')]);
  t.is(token.code, 1);
  t.regex(token.stderr, /--token-file .*nope: cannot read/);
  const node = await cli(['agent'], { env: { AMBIT_NODE_NAME: '', NODE_NAME: '' } });
  t.is(node.code, 1);
  t.regex(node.stderr, /node name missing/);
});

test('cni speaks the CNI protocol: VERSION, and an error object with exit 1 for bad input', async (t) => {
  const v = await cli(['cni'], { env: { CNI_COMMAND: 'VERSION' } });
  t.is(v.code, 0, v.stderr);
  const version = JSON.parse(v.stdout) as { supportedVersions: string[] };
  t.true(version.supportedVersions.includes('1.0.0'));
  const bad = await cli(['cni'], { env: { CNI_COMMAND: 'ADD' }, input: '{not json' });
  t.is(bad.code, 1);
  const err = JSON.parse(bad.stdout) as { code: number; msg: string };
  t.is(err.code, 4);
  t.regex(err.msg, /invalid network configuration/);
  // DEL must succeed even when there is no agent to tell
  const del = await cli(['cni'], {
    env: { CNI_COMMAND: 'DEL', CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=x' },
    input: JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'ambit-cni', agentSocket: '/nonexistent/agent.sock' }),
  });
  t.is(del.code, 0, del.stdout);
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

/** pids of mesh programs recorded in state.json */
function programPids(dir: string): number[] {
  const st = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { programs?: Array<{ pid: number }> };
  return (st.programs ?? []).map((p) => p.pid);
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** Resolves once `pid` is gone (signals reach it asynchronously). */
async function gone(pid: number): Promise<void> {
  while (alive(pid)) await new Promise((r) => setTimeout(r, 20));
}

nt('up --once builds the demo, runs the mesh, proves a request went through HBONE, and leaves nothing behind', async (t) => {
  const dir = tempDir(t);
  const r = await cli(['up', '--once', '--dir', dir, '--port-base', '25000']);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /pod {2}client +default\/node-1 +10\.244\.1\.\d+/);
  t.regex(r.stdout, /pod {2}echo-v1 +default\/node-1 +10\.244\.1\.\d+ +app=echo,version=v1/);
  t.regex(r.stdout, /pod {2}echo-v2 +default\/node-2 +10\.244\.2\.\d+ +app=echo,version=v2/);
  const vip = /svc {2}default\/echo +(10\.96\.\d+\.\d+) +80->8080/.exec(r.stdout)?.[1];
  t.truthy(vip, r.stdout);
  // up checks the client's agent counted an mTLS connection for the request, and fails otherwise
  t.regex(r.stdout, new RegExp(`checked: client -> ${vip!.replace(/\./g, '\\.')}:80 answered by echo-v[12] over mTLS`));
  t.regex(r.stdout, /agent node-1 +metrics http:\/\/127\.0\.0\.1:25120\/metrics/);
  t.regex(r.stdout, /removed everything/);

  // the access log of node-1's agent: the client's connection to the VIP left through an HBONE tunnel
  // to an echo pod's :15008, with both SPIFFE identities (the client's verified by the peer)
  const access = readFileSync(join(dir, 'logs', 'agent-node-1.log'), 'utf8').split('\n')
    .filter((l) => l.includes('"scope":"access"')).map((l) => JSON.parse(l) as Record<string, string>)
    .find((l) => l.direction === 'outbound' && l['dst.addr'] === `${vip}:80`);
  t.truthy(access, 'no outbound access log line for the VIP');
  t.regex(access!['dst.hbone_addr'] ?? '', /^10\.244\.[12]\.\d+:15008$/);
  t.is(access!['src.identity'], 'spiffe://cluster.local/ns/default/sa/client');
  t.is(access!['dst.identity'], 'spiffe://cluster.local/ns/default/sa/echo');

  const prefix = `ambit-${r.pid.toString(36)}-`;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
  t.false(existsSync(join(dir, 'state.json')));
  t.false(existsSync(join(dir, 'config', 'cluster.yaml')));
});

interface Dump { snapshot: { authorizations: Array<{ namespace: string; name: string }> } }

/** Waits until the agent (admin port) has applied a snapshot with exactly these policies. */
async function agentHasPolicies(adminPort: number, names: string[]): Promise<void> {
  for (;;) {
    const d = await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json() as Dump;
    if (d.snapshot.authorizations.map((a) => `${a.namespace}/${a.name}`).sort().join() === names.sort().join()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

nt('a running up: the service VIP works through the mesh, applied policy takes effect live, Ctrl-C removes everything', async (t) => {
  const dir = tempDir(t);
  const up = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, 'up', '--dir', dir, '--port-base', '26000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(up, 'exit');
  t.teardown(() => { if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL'); });
  let out = '';
  up.stdout.setEncoding('utf8');
  up.stderr.resume();
  await new Promise<void>((resolve, reject) => {
    up.stdout.on('data', (chunk: string) => { out += chunk; if (out.includes('Press Ctrl-C')) resolve(); });
    up.once('exit', (code) => reject(new Error(`ambit up exited early (${code}): ${out}`)));
  });
  const vip = /svc {2}default\/echo +(10\.96\.\d+\.\d+)/.exec(out)?.[1];
  t.truthy(vip, out);
  const pids = programPids(dir);
  t.is(pids.length, 3, 'control plane and two agents recorded in state.json');
  t.teardown(() => { for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } } });

  // node:http, not fetch: a connection the mesh resets before the client saw it established
  // (the agent refuses within a millisecond or two) made fetch exit 0 with nothing, its promise
  // never settled; http reports the ECONNRESET.
  const get = (path: string) => cli(['exec', 'client', '--dir', dir, '--', process.execPath, '-e',
    `require('node:http').get(process.argv[1], (r) => { let b = ''; r.on('data', (d) => { b += d; }); r.on('end', () => process.stdout.write(b)); })
       .on('error', (e) => { process.stdout.write(String(e.code ?? e)); process.exit(3); });`,
    `http://${vip}${path}`]);
  const first = await get('/via-vip');
  t.is(first.code, 0, first.stdout + first.stderr);
  const answer = JSON.parse(first.stdout) as { name: string; path: string; remoteAddress: string };
  t.regex(answer.name, /^echo-v[12]$/);
  t.is(answer.path, '/via-vip');
  t.regex(answer.remoteAddress, /^10\.244\.1\.\d+$/); // the client pod's own address, on node-1

  const examples = fileURLToPath(new URL('../../examples/', import.meta.url));
  const admins = [26100, 26200];
  t.is((await cli(['apply', '-f', join(examples, 'deny-all.yaml'), '--dir', dir])).code, 0);
  await Promise.all(admins.map((p) => agentHasPolicies(p, ['default/deny-all'])));
  const denied = await get('/denied');
  t.is(denied.code, 3, `expected a refused connection, got code ${denied.code}: ${denied.stdout} ${denied.stderr}`);

  t.is((await cli(['apply', '-f', join(examples, 'allow-client.yaml'), '--dir', dir])).code, 0);
  await Promise.all(admins.map((p) => agentHasPolicies(p, ['default/deny-all', 'default/allow-client'])));
  const allowed = await get('/allowed');
  t.is(allowed.code, 0, allowed.stdout);
  t.is((JSON.parse(allowed.stdout) as { path: string }).path, '/allowed');

  const objs = parseAllDocuments(readFileSync(join(dir, 'config', 'cluster.yaml'), 'utf8'))
    .map((d) => d.toJS() as { kind: string; metadata: { name: string; labels?: Record<string, string> } });
  t.deepEqual(objs.filter((o) => o.kind === 'Pod').map((o) => o.metadata.name).sort(), ['client', 'echo-v1', 'echo-v2']);
  t.is(objs.find((o) => o.kind === 'Namespace' && o.metadata.name === 'default')?.metadata.labels?.['istio.io/dataplane-mode'], 'ambient');

  up.kill('SIGINT');
  const [exitCode] = await exited as [number | null];
  t.is(exitCode, 0, out);
  const prefix = `ambit-${up.pid!.toString(36)}-`;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
  t.false(existsSync(join(dir, 'state.json')));
  for (const pid of pids) t.false(alive(pid), `program ${pid} outlived ambit up`);
});

nt('down stops the mesh programs and namespaces of an ambit up that was killed', async (t) => {
  const dir = tempDir(t);
  const up = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, 'up', '--dir', dir, '--port-base', '27000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL'); });
  let out = '';
  up.stdout.setEncoding('utf8');
  up.stderr.resume();
  await new Promise<void>((resolve, reject) => {
    up.stdout.on('data', (chunk: string) => { out += chunk; if (out.includes('Press Ctrl-C')) resolve(); });
    up.once('exit', (code) => reject(new Error(`ambit up exited early (${code}): ${out}`)));
  });
  const pids = programPids(dir);
  t.teardown(() => { for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } } });
  up.kill('SIGKILL');
  await once(up, 'exit');
  t.true(pids.every(alive), 'the programs run in their own process groups and survive a SIGKILL of up');

  const r = await cli(['down', '--dir', dir]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /stopped programs left by a dead ambit up: control plane \(pid \d+\), agent node-1/);
  await Promise.all(pids.map(gone));
  const prefix = `ambit-${up.pid!.toString(36)}-`;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
  t.false(existsSync(join(dir, 'state.json')));
});
