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
import { agentHasPolicies } from '../helpers/agent-admin.js';

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
  for (const sub of ['up', 'down', 'restart', 'exec', 'apply', 'delete', 'install', 'uninstall', 'control', 'agent', 'waypoint', 'cni']) {
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

// The tests below spawn several ambit processes each; serial, so a loaded 2-core machine does not run
// a dozen tsx start-ups at once and reach ava's inactivity timeout before any of them finishes.
test.serial('cni: kube-system, ambit-system and host-network pods start while the agent is unreachable; others are refused', async (t) => {
  const netconf = JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'ambit-cni', agentSocket: '/nonexistent/agent.sock', prevResult: { ips: [{ address: '10.244.1.9/24' }] } });
  const add = (ns: string, netns: string) => cli(['cni'], { env: { CNI_COMMAND: 'ADD', CNI_NETNS: netns, CNI_ARGS: `K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=p` }, input: netconf });
  for (const ns of ['kube-system', 'ambit-system']) {
    const r = await add(ns, '/var/run/netns/none');
    t.is(r.code, 0, `${ns}: ${r.stdout}`);
    t.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.0.0', ips: [{ address: '10.244.1.9/24' }] });
  }
  // a host-network sandbox: the runtime names the namespace the plugin itself runs in
  const host = await add('default', `/proc/${process.pid}/ns/net`); // this process's: the plugin's too
  t.is(host.code, 0, host.stdout);
  const pod = await add('default', '/var/run/netns/none');
  t.is(pod.code, 1);
  t.regex((JSON.parse(pod.stdout) as { msg: string }).msg, /cannot open CNI_NETNS|did not enrol pod default\/p/);
});

test('an unknown command is an error with a hint, not a crash', async (t) => {
  const r = await cli(['frobnicate']);
  t.is(r.code, 1);
  t.regex(r.stderr, /ambit: Unknown argument: frobnicate\nrun "ambit --help"/);
});

test.serial('apply stores each object under its identity and names the file and line of a broken one', async (t) => {
  const dir = tempDir(t);
  const good = join(dir, 'policy.yaml');
  writeFileSync(good, 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-all\n  namespace: default\nspec: {}\n');
  const ok = await cli(['apply', '-f', good, '--dir', join(dir, 'state')]);
  t.is(ok.code, 0, ok.stderr);
  t.is(ok.stdout, 'AuthorizationPolicy default/deny-all created\n');
  const stored = readdirSync(join(dir, 'state', 'config'));
  t.deepEqual(stored, ['applied_AuthorizationPolicy_security.istio.io_default_deny-all.yaml']);
  t.deepEqual(parseAllDocuments(readFileSync(join(dir, 'state', 'config', stored[0]!), 'utf8'))[0]!.toJS(), parseAllDocuments(readFileSync(good, 'utf8'))[0]!.toJS());

  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n---\napiVersion: v1\nkind: [unclosed\n');
  const r = await cli(['apply', '-f', bad, '--dir', join(dir, 'state')]);
  t.is(r.code, 1);
  t.regex(r.stderr, /bad\.yaml document 2: line \d+: /);

  const noKind = await cli(['apply', '-f', '-', '--dir', join(dir, 'state')], { input: 'apiVersion: v1\nmetadata:\n  name: x\n' });
  t.is(noKind.code, 1);
  t.regex(noKind.stderr, /stdin document 1 \(line 1\): kind: missing or not a string/);
  t.deepEqual(readdirSync(join(dir, 'state', 'config')), stored);
});

test.serial('apply refuses what the control plane would reject, with its message, file, document, line and field, and stores nothing', async (t) => {
  const dir = tempDir(t);
  // document 1 is fine; document 2 has the typo: neither is stored
  const input = 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\nspec:\n  mtls: { mode: STRICT }\n'
    + '---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: typo\n  namespace: shop\nspec:\n  action: DENYY\n  rules: [{}]\n';
  const r = await cli(['apply', '-f', '-', '--dir', dir], { input });
  t.is(r.code, 1);
  t.is(r.stdout, '');
  t.is(r.stderr,
    'ambit: stdin document 2 (line 14): AuthorizationPolicy shop/typo: spec.action: "DENYY" is not one of ALLOW, DENY, AUDIT, CUSTOM\n'
    + 'ambit: the control plane would reject it; nothing was applied\n');
  t.false(existsSync(join(dir, 'config')));
});

test.serial('two applies from stdin keep both objects; delete -f - removes by identity and names what is not there', async (t) => {
  const dir = tempDir(t);
  const policy = (name: string, action: string) => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\nspec:\n  action: ${action}\n  rules: [{}]\n`;
  t.is((await cli(['apply', '-f', '-', '--dir', dir], { input: policy('a', 'DENY') })).stdout, 'AuthorizationPolicy default/a created\n');
  t.is((await cli(['apply', '-f', '-', '--dir', dir], { input: policy('b', 'DENY') })).stdout, 'AuthorizationPolicy default/b created\n');
  t.deepEqual(readdirSync(join(dir, 'config')).sort(), [
    'applied_AuthorizationPolicy_security.istio.io_default_a.yaml', 'applied_AuthorizationPolicy_security.istio.io_default_b.yaml']);
  // delete names objects by identity only: even a body the control plane would reject names them
  const del = await cli(['delete', '-f', '-', '--dir', dir], { input: `${policy('a', 'DENYY')}---\n${policy('c', 'DENY')}` });
  t.is(del.code, 1);
  t.is(del.stdout, 'AuthorizationPolicy default/a deleted\n');
  t.is(del.stderr, 'ambit: AuthorizationPolicy default/c not found (not stored by ambit apply)\n');
  t.deepEqual(readdirSync(join(dir, 'config')), ['applied_AuthorizationPolicy_security.istio.io_default_b.yaml']);
});

test.serial('install --dry-run prints the installation as YAML; bad --set and a missing cluster are one-line errors', async (t) => {
  const r = await cli(['install', '--dry-run', '--set', 'namespace=mesh', '--set', 'agent.drainSeconds=20']);
  t.is(r.code, 0, r.stderr);
  const objs = parseAllDocuments(r.stdout, { version: '1.1' }).map((d) => d.toJS() as { kind: string; metadata: { name: string; namespace?: string } });
  t.deepEqual(objs.map((o) => o.kind), ['Namespace', 'CustomResourceDefinition', 'CustomResourceDefinition', 'CustomResourceDefinition', 'CustomResourceDefinition',
    'GatewayClass', 'ServiceAccount', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Deployment', 'Service', 'PodDisruptionBudget', 'DaemonSet']);
  t.is(objs[0]!.metadata.name, 'mesh');
  t.regex(r.stdout, /terminationGracePeriodSeconds: 25\n/);

  const bad = await cli(['install', '--dry-run', '--set', 'agent.drainSeconds=soon']);
  t.is(bad.code, 1);
  t.is(bad.stderr, 'ambit: --set: agent.drainSeconds: "soon" is not an integer 1..600\n');

  const home = tempDir(t);
  const none = await cli(['install'], { env: { KUBECONFIG: join(home, 'nope'), HOME: home, KUBERNETES_SERVICE_HOST: '' } });
  t.is(none.code, 1);
  t.regex(none.stderr, /^ambit: install: needs a cluster: no kubeconfig found \(KUBECONFIG, ~\/\.kube\/config\).*ambit install --dry-run/);
  t.is(none.stdout, '');
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

nt('down after a killed up: the programs end (parent-death signal, or down stops them) and no namespace or state file is left', async (t) => {
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
  // the programs get SIGINT from the kernel when up dies (parent-death signal, test/cli/up-orphans.test.ts)
  // and drain on their own; down, run at once, stops whichever are still there and removes the rest
  const r = await cli(['down', '--dir', dir]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /removed \d+ stale network namespace\(s\)/);
  const stopped = /stopped programs left by a dead ambit up: (.*)/.exec(r.stdout)?.[1];
  if (stopped) t.regex(stopped, /^(control plane|agent node-\d) \(pid \d+\)/);
  await Promise.all(pids.map(gone));
  const prefix = `ambit-${up.pid!.toString(36)}-`;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
  t.false(existsSync(join(dir, 'state.json')));
});
