/**
 * The agent installs its CNI plugin onto the node (src/node-agent/enrol/cni-install.ts): real
 * files in temporary CNI bin and conf dirs, and the INSTALLED program executed the way a container
 * runtime executes it (its own Node copy, the bundled plugin, the copied addon), with no agent
 * listening, and with a CNI socket that answers (the netns fd crossing through the copied addon).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, closeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../../src/native/index.js';
import { CniServer } from '../../src/node-agent/enrol/cni-server.js';
import { CNI_PROGRAM, CNI_PROGRAM_DIR, installCni, installCniProgram, keepChained, launcherRefs, planInstall, payloadName, uninstallCni, verifyCniProgram, type CniPayload } from '../../src/node-agent/enrol/cni-install.js';
import { AMBIT_CNI_TYPE } from '../../src/node-agent/enrol/cni-conflist.js';
import { bundleCniPlugin } from '../../scripts/bundle-cni.js';
import { MAIN_TS, runCli } from '../helpers/cli.js';
import { addNetns } from '../helpers/netns-raw.js';
import { netnsTest } from '../helpers/root.js';

const bridge = {
  cniVersion: '1.0.0', name: 'k8s-pod-network',
  plugins: [
    { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: true, ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }]] } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};
const plugin = { agentSocket: '/var/run/ambit/agent.sock', exemptNamespaces: ['monitoring'] };

let bundle: string;
let addon: string;
const scratch = mkdtempSync(join(tmpdir(), 'ambit-cni-bundle-'));
test.before(async () => {
  bundle = await bundleCniPlugin(join(scratch, 'ambit-cni.mjs'));
  addon = native.addonFile()!;
});
test.after.always(() => rmSync(scratch, { recursive: true, force: true }));

interface Node { bin: string; conf: string; root: string }

/** A node's CNI dirs: the main plugin's binaries and its conflist already there. */
function node(t: ExecutionContext): Node {
  const root = mkdtempSync(join(tmpdir(), 'ambit-cni-node-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const bin = join(root, 'opt-cni-bin');
  const conf = join(root, 'etc-cni-net.d');
  mkdirSync(bin);
  mkdirSync(conf);
  for (const b of ['bridge', 'host-local', 'portmap', 'loopback']) writeFileSync(join(bin, b), `#!/bin/sh\necho ${b}\n`, { mode: 0o755 });
  writeFileSync(join(conf, '10-bridge.conflist'), JSON.stringify(bridge, null, 2));
  writeFileSync(join(conf, '99-loopback.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'lo', type: 'loopback' }));
  return { root, bin, conf };
}

/** The real payload: this Node, the bundle, the addon. */
const realPayload = (): CniPayload => ({ node: process.execPath, plugin: bundle, addon });

/** A small stand-in for Node where the program is not executed (copying 100 MB is not what those tests are about). */
function fakePayload(t: ExecutionContext, tag: string): CniPayload {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-cni-payload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = { node: join(dir, 'node'), plugin: join(dir, 'plugin.mjs'), addon: join(dir, 'addon.node') };
  writeFileSync(p.node, '#!/bin/sh\nexit 0\n');
  writeFileSync(p.plugin, `// plugin ${tag}\n`);
  writeFileSync(p.addon, 'addon');
  return p;
}

interface Run { code: number | null; stdout: string; stderr: string }

/** Executes the installed program as a runtime does: CNI_* in the environment, the config on stdin. */
function execPlugin(program: string, env: Record<string, string>, stdin = ''): Promise<Run> {
  // a runtime's environment: no NODE_OPTIONS of ours (tsx), a plain PATH
  const child = spawn(program, [], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_PATH: '/opt/cni/bin', CNI_IFNAME: 'eth0', CNI_CONTAINERID: 'c1', NODE_OPTIONS: '--import=/nonexistent.mjs', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdin.end(stdin);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const conflist = (n: Node) => JSON.parse(readFileSync(join(n.conf, '10-bridge.conflist'), 'utf8')) as typeof bridge;
const netconf = (socket: string) => JSON.stringify({
  cniVersion: '1.0.0', name: 'k8s-pod-network', type: AMBIT_CNI_TYPE, agentSocket: socket,
  prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.244.1.9/24', interface: 0 }] },
});

test('install: the program is executable in the bin dir, the conflist keeps its plugins and gains ambit\'s entry last, other files untouched', async (t) => {
  const n = node(t);
  const before = readdirSync(n.bin).sort();
  const r = await installCni({ binDir: n.bin, confDir: n.conf, payload: realPayload(), plugin });
  t.is(r.program, join(n.bin, CNI_PROGRAM));
  t.is(r.conf, join(n.conf, '10-bridge.conflist'));
  t.is(statSync(r.program).mode & 0o777, 0o755);
  t.deepEqual(readdirSync(n.bin).sort(), [...before, CNI_PROGRAM, CNI_PROGRAM_DIR].sort());
  const files = readdirSync(join(n.bin, CNI_PROGRAM_DIR)).sort();
  t.is(files.length, 3);
  for (const f of files) t.is(statSync(join(n.bin, CNI_PROGRAM_DIR, f)).mode & 0o777, 0o755, f);
  t.deepEqual(launcherRefs(readFileSync(r.program, 'utf8')).sort(), files, 'the launcher names exactly the files there');
  t.deepEqual(conflist(n), { ...bridge, plugins: [...bridge.plugins, { type: AMBIT_CNI_TYPE, agentSocket: plugin.agentSocket, exemptNamespaces: ['monitoring'] }] });
  t.deepEqual(JSON.parse(readFileSync(join(n.conf, '99-loopback.conf'), 'utf8')), { cniVersion: '1.0.0', name: 'lo', type: 'loopback' });
  t.deepEqual(readdirSync(n.conf).sort(), ['10-bridge.conflist', '99-loopback.conf'], 'no temporary file left');
});

test('the installed program runs on the host\'s terms: VERSION, an exempt pod passes with no agent, an ambient pod with no agent fails with a CNI error', async (t) => {
  const n = node(t);
  const { program } = await installCni({ binDir: n.bin, confDir: n.conf, payload: realPayload(), plugin });
  const version = await execPlugin(program, { CNI_COMMAND: 'VERSION' });
  t.is(version.code, 0, version.stderr);
  t.true((JSON.parse(version.stdout) as { supportedVersions: string[] }).supportedVersions.includes('1.0.0'));

  await t.notThrowsAsync(verifyCniProgram(program));
  // a program that does not answer as the plugin (here: the stand-in Node of fakePayload) fails the check, named
  const other = node(t);
  const broken = await installCniProgram(other.bin, fakePayload(t, 'broken'));
  await t.throwsAsync(verifyCniProgram(broken), { message: new RegExp(`cni install: ${broken}: CNI_COMMAND=VERSION does not answer as the plugin`) });

  const none = join(n.root, 'no-agent.sock');
  const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.244.1.9/24', interface: 0 }] };
  for (const ns of ['kube-system', 'ambit-system', 'monitoring']) {
    const conf = JSON.stringify({ ...conflist(n).plugins.at(-1), cniVersion: '1.0.0', name: 'k8s-pod-network', agentSocket: none, prevResult: prev });
    const r = await execPlugin(program, { CNI_COMMAND: 'ADD', CNI_NETNS: '/var/run/netns/gone', CNI_ARGS: `K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=p` }, conf);
    t.is(r.code, 0, `${ns}: ${r.stdout}${r.stderr}`);
    t.deepEqual(JSON.parse(r.stdout), prev, `${ns}: prevResult passed through`);
  }
  // a host-network pod: CNI_NETNS is the plugin's own namespace
  const host = await execPlugin(program, { CNI_COMMAND: 'ADD', CNI_NETNS: `/proc/${process.pid}/ns/net`, CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=h' },
    JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: AMBIT_CNI_TYPE, agentSocket: none, prevResult: prev }));
  t.is(host.code, 0, host.stdout + host.stderr);
  // DEL always succeeds
  const del = await execPlugin(program, { CNI_COMMAND: 'DEL', CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=p' }, netconf(none));
  t.is(del.code, 0, del.stdout + del.stderr);
});

netnsTest('the installed program fails closed for an ambient pod while no agent listens, and hands its netns to an agent that does', async (t) => {
  const n = node(t);
  const { program } = await installCni({ binDir: n.bin, confDir: n.conf, payload: realPayload(), plugin });
  const pod = addNetns(t, 'cnii');
  const env = { CNI_COMMAND: 'ADD', CNI_NETNS: pod.path, CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=u1' };
  const socket = join(n.root, 'agent.sock');

  const refused = await execPlugin(program, env, netconf(socket));
  t.is(refused.code, 1, refused.stdout + refused.stderr);
  const err = JSON.parse(refused.stdout) as { code: number; msg: string; details: string };
  t.is(err.code, 11, 'try again later');
  t.regex(err.msg, /node agent did not enrol pod default\/web/);
  t.true(err.details.includes(socket));

  // the agent is back: the same ADD is answered, with the pod's netns received through the copied addon
  const seen: Array<{ name: string; ip?: string | undefined; netns: string }> = [];
  const server = new CniServer({
    native, path: socket,
    handlers: {
      add: (req, fd) => {
        seen.push({ name: `${req.namespace}/${req.name}`, ip: req.ip, netns: native.netnsId(fd) });
        native.closeFd(fd);
        return Promise.resolve();
      },
      del: () => Promise.resolve(),
    },
  });
  await server.listen();
  t.teardown(() => server.close());
  const ok = await execPlugin(program, env, netconf(socket));
  t.is(ok.code, 0, ok.stdout + ok.stderr);
  t.deepEqual((JSON.parse(ok.stdout) as { ips: unknown }).ips, [{ address: '10.244.1.9/24', interface: 0 }]);
  t.deepEqual(seen, [{ name: 'default/web', ip: '10.244.1.9', netns: native.netnsId(pod.path) }]);
});

test('install twice changes nothing; an upgrade replaces the launcher by rename and keeps the files the replaced one names', async (t) => {
  const n = node(t);
  const payload = fakePayload(t, 'v1');
  const launcher = join(n.bin, CNI_PROGRAM);
  const dir = join(n.bin, CNI_PROGRAM_DIR);
  await installCni({ binDir: n.bin, confDir: n.conf, payload, plugin });
  const snap = () => ({
    launcher: statSync(launcher).ino, launcherMtime: statSync(launcher).mtimeMs,
    conf: statSync(join(n.conf, '10-bridge.conflist')).ino, confMtime: statSync(join(n.conf, '10-bridge.conflist')).mtimeMs,
    files: readdirSync(dir).sort(),
  });
  const first = snap();
  await installCni({ binDir: n.bin, confDir: n.conf, payload, plugin });
  t.deepEqual(snap(), first, 'idempotent: nothing rewritten');

  // a runtime has the old launcher open (it is running it) while the agent upgrades
  const v1Text = readFileSync(launcher, 'utf8');
  const fd = openSync(launcher, 'r');
  t.teardown(() => closeSync(fd));
  appendFileSync(payload.plugin, '// v2\n');
  await installCniProgram(n.bin, payload);
  const v2Text = readFileSync(launcher, 'utf8');
  t.not(statSync(launcher).ino, first.launcher, 'replaced by rename, never written in place');
  const buf = Buffer.alloc(4096);
  t.is(buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString(), v1Text, 'the running copy still reads the old launcher whole');
  for (const f of [...launcherRefs(v1Text), ...launcherRefs(v2Text)]) t.true(existsSync(join(dir, f)), `${f} is there for whichever launcher runs`);
  t.is(readdirSync(dir).length, 4, 'node and addon shared, two plugin versions');
  t.deepEqual(launcherRefs(v1Text).filter((f) => f.startsWith('plugin-')).length, 1);

  // the next upgrade drops what only the oldest launcher named
  appendFileSync(payload.plugin, '// v3\n');
  await installCniProgram(n.bin, payload);
  const v3Text = readFileSync(launcher, 'utf8');
  t.deepEqual(readdirSync(dir).sort(), [...new Set([...launcherRefs(v2Text), ...launcherRefs(v3Text)])].sort());
  t.false(readdirSync(n.bin).some((f) => f.startsWith('.ambit-tmp-')) || readdirSync(dir).some((f) => f.startsWith('.ambit-tmp-')), 'no temporary left');
});

test('an upgrade of the real program: the new launcher runs, and so does the old one\'s set of files', async (t) => {
  const n = node(t);
  const p = realPayload();
  const { program } = await installCni({ binDir: n.bin, confDir: n.conf, payload: p, plugin });
  const old = readFileSync(program, 'utf8');
  const changed = join(n.root, 'plugin-v2.mjs');
  copyFileSync(bundle, changed);
  appendFileSync(changed, '// upgraded\n');
  await installCniProgram(n.bin, { ...p, plugin: changed });
  t.not(readFileSync(program, 'utf8'), old);
  const now = await execPlugin(program, { CNI_COMMAND: 'VERSION' });
  t.is(now.code, 0, now.stderr);
  // the previous launcher, as a runtime that started it before the rename still executes it
  const previous = join(n.bin, 'ambit-cni-previous');
  writeFileSync(previous, old, { mode: 0o755 });
  const then = await execPlugin(previous, { CNI_COMMAND: 'VERSION' });
  t.is(then.code, 0, then.stderr);
  t.is(then.stdout, now.stdout);
});

test('uninstall restores the conflist, removes the program and its dir, and leaves every other file alone', async (t) => {
  const n = node(t);
  const bins = readdirSync(n.bin).sort();
  await installCni({ binDir: n.bin, confDir: n.conf, payload: fakePayload(t, 'x'), plugin });
  const r = await uninstallCni({ binDir: n.bin, confDir: n.conf });
  t.is(r.conf, join(n.conf, '10-bridge.conflist'));
  t.deepEqual(r.removed, [join(n.bin, CNI_PROGRAM), join(n.bin, CNI_PROGRAM_DIR)]);
  t.deepEqual(conflist(n), bridge);
  t.deepEqual(readdirSync(n.bin).sort(), bins);
  t.deepEqual(readdirSync(n.conf).sort(), ['10-bridge.conflist', '99-loopback.conf']);
  t.deepEqual(await uninstallCni({ binDir: n.bin, confDir: n.conf }), { conf: undefined, removed: [] }, 'twice: nothing left to do');
});

test('a .conf of a single plugin: install turns it into a .conflist with ambit, uninstall leaves the list without ambit', async (t) => {
  const n = node(t);
  rmSync(join(n.conf, '10-bridge.conflist'));
  writeFileSync(join(n.conf, '10-flannel.conf'), JSON.stringify({ cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true } }));
  const r = await installCni({ binDir: n.bin, confDir: n.conf, payload: fakePayload(t, 'x'), plugin });
  t.is(r.conf, join(n.conf, '10-flannel.conflist'));
  t.deepEqual(readdirSync(n.conf).sort(), ['10-flannel.conflist', '99-loopback.conf']);
  await uninstallCni({ binDir: n.bin, confDir: n.conf });
  t.deepEqual(JSON.parse(readFileSync(join(n.conf, '10-flannel.conflist'), 'utf8')), { cniVersion: '0.3.1', name: 'cbr0', plugins: [{ type: 'flannel', delegate: { hairpinMode: true } }] });
});

test('no network configuration yet: install waits for the main plugin to write one, then chains into it', async (t) => {
  const n = node(t);
  for (const f of readdirSync(n.conf)) rmSync(join(n.conf, f));
  let done = false;
  const installing = installCni({ binDir: n.bin, confDir: n.conf, payload: fakePayload(t, 'x'), plugin }).then((r) => { done = true; return r; });
  // the program goes in first; the chaining waits
  while (!existsSync(join(n.bin, CNI_PROGRAM))) await new Promise((r) => setImmediate(r));
  t.false(done);
  writeFileSync(join(n.conf, '10-bridge.conflist'), JSON.stringify(bridge));
  const r = await installing;
  t.is(r.conf, join(n.conf, '10-bridge.conflist'));
  t.is(conflist(n).plugins.at(-1)!.type, AMBIT_CNI_TYPE);
});

test('the main plugin rewrites its conflist without ambit: it is chained again; a broken file is reported, not rewritten', async (t) => {
  const n = node(t);
  const chained: string[] = [];
  const errors: string[] = [];
  let wake: () => void = () => undefined;
  const next = () => new Promise<void>((r) => { wake = r; });
  let waiting = next();
  const keeper = keepChained(n.conf, plugin, {
    chained: (f) => { chained.push(f); wake(); },
    error: (e) => { errors.push((e as Error).message); wake(); },
  });
  t.teardown(() => keeper.close());
  await waiting;
  t.is(conflist(n).plugins.length, 3);
  // e.g. Calico restarting writes its own file again
  waiting = next();
  writeFileSync(join(n.conf, '10-bridge.conflist'), JSON.stringify(bridge));
  while (conflist(n).plugins.length !== 3) await waiting.then(() => { waiting = next(); });
  t.is(conflist(n).plugins.at(-1)!.type, AMBIT_CNI_TYPE);
  waiting = next();
  writeFileSync(join(n.conf, '10-bridge.conflist'), '{broken');
  while (errors.length === 0) await waiting.then(() => { waiting = next(); });
  t.regex(errors[0]!, /AMBIT_CNI_INSTALL|cni install: cni config 10-bridge\.conflist: not JSON/);
  t.is(readFileSync(join(n.conf, '10-bridge.conflist'), 'utf8'), '{broken');
});

test('the plan: what to copy, whether to replace the launcher, and what to remove', (t) => {
  const h = (c: string) => c.repeat(16);
  const v1 = { node: payloadName('node', h('a')), plugin: payloadName('plugin', h('b')), addon: payloadName('addon', h('c')) };
  const v2 = { ...v1, plugin: payloadName('plugin', h('d')) };
  t.deepEqual(v1, { node: `node-${h('a')}`, plugin: `plugin-${h('b')}.mjs`, addon: `addon-${h('c')}.node` });
  const fresh = planInstall({ launcher: undefined, files: [] }, v1);
  t.deepEqual(fresh.copy, ['node', 'plugin', 'addon']);
  t.truthy(fresh.launcher);
  const l1 = fresh.launcher!;
  t.deepEqual(planInstall({ launcher: l1, files: Object.values(v1) }, v1), { copy: [], launcher: undefined, remove: [] });
  const up = planInstall({ launcher: l1, files: [...Object.values(v1), 'plugin-eeeeeeeeeeeeeeee.mjs', '.ambit-tmp-9-x'] }, v2);
  t.deepEqual(up.copy, ['plugin']);
  t.deepEqual(up.remove, ['.ambit-tmp-9-x', 'plugin-eeeeeeeeeeeeeeee.mjs'], 'v1 stays: the replaced launcher names it');
  t.deepEqual(launcherRefs(up.launcher).sort(), Object.values(v2).sort());
});

test('ambit agent --cni-uninstall takes the plugin off the node and exits', async (t) => {
  const n = node(t);
  await installCni({ binDir: n.bin, confDir: n.conf, payload: fakePayload(t, 'x'), plugin });
  const r = await runCli(['agent', '--cni-uninstall', '--cni-bin-dir', n.bin, '--cni-conf-dir', n.conf]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /unchained from .*10-bridge\.conflist; removed /);
  t.deepEqual(conflist(n), bridge);
  t.false(existsSync(join(n.bin, CNI_PROGRAM)));
  const half = await runCli(['agent', '--cni-uninstall', '--cni-bin-dir', n.bin]);
  t.is(half.code, 1);
  t.regex(half.stderr, /AMBIT_CNI_BIN_DIR and AMBIT_CNI_CONF_DIR go together/);
});

/** `ambit agent` with the CNI dirs of `n` (no control plane: it retries), once it logged that the plugin is chained. */
async function startAgent(t: ExecutionContext, n: Node, state: string, exempt = 'mesh-ops'): Promise<{ child: ReturnType<typeof spawn>; exited: Promise<number | null>; stderr: () => string }> {
  // where the agent looks for the bundle (npm run bundle-cni; .ci/setup and the image build make it)
  await bundleCniPlugin();
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), MAIN_TS, 'agent'], {
    env: {
      ...process.env, AMBIT_NODE_NAME: 'node-1', AMBIT_CONTROL_URL: 'ws://127.0.0.1:9/none', AMBIT_TOKEN: 't'.repeat(32),
      AMBIT_STATE_DIR: state, AMBIT_ADMIN_PORT: '0', AMBIT_METRICS_PORT: '0', AMBIT_READINESS_PORT: '0', AMBIT_DRAIN_MS: '0',
      AMBIT_CNI_BIN_DIR: n.bin, AMBIT_CNI_CONF_DIR: n.conf, AMBIT_EXEMPT_NAMESPACES: exempt, AMBIT_LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('cni plugin chained')) resolve();
    });
    void exited.then((code) => reject(new Error(`agent exited (${code}) before chaining: ${stderr}`)));
  });
  return { child, exited, stderr: () => stderr };
}

test.serial('ambit agent with AMBIT_CNI_*: installs and chains at start, and leaves both in place when SIGTERM stops it', async (t) => {
  const n = node(t);
  const state = join(n.root, 'state');
  const { child, exited, stderr: err } = await startAgent(t, n, state);
  const stderr = err();
  t.true(existsSync(join(n.bin, CNI_PROGRAM)));
  t.deepEqual(conflist(n).plugins.at(-1), { type: AMBIT_CNI_TYPE, agentSocket: join(state, 'agent.sock'), exemptNamespaces: ['mesh-ops'] });
  child.kill('SIGTERM');
  t.is(await exited, 0, stderr);
  // a restart or a rolling update stops the agent the same way: pods must keep waiting for it
  t.true(existsSync(join(n.bin, CNI_PROGRAM)), 'the program stays');
  t.is(conflist(n).plugins.at(-1)!.type, AMBIT_CNI_TYPE, 'the conflist entry stays');
  const v = await execPlugin(join(n.bin, CNI_PROGRAM), { CNI_COMMAND: 'VERSION' });
  t.is(v.code, 0, v.stderr);
});

test.serial('POST /cni/uninstall on the agent\'s admin door (what ambit uninstall calls): unchained, removed, and not chained again', async (t) => {
  const n = node(t);
  const state = join(n.root, 'state');
  const { child, exited, stderr } = await startAgent(t, n, state);
  const get = await adminRequest(join(state, `agent-${child.pid!}.sock`), 'GET', '/cni/uninstall');
  t.is(get.status, 405, 'an action, not a read');
  const r = await adminRequest(join(state, `agent-${child.pid!}.sock`), 'POST', '/cni/uninstall');
  t.is(r.status, 200, r.body);
  t.deepEqual(JSON.parse(r.body), { node: 'node-1', conf: join(n.conf, '10-bridge.conflist'), removed: [join(n.bin, CNI_PROGRAM), join(n.bin, CNI_PROGRAM_DIR)] });
  t.deepEqual(conflist(n), bridge);
  child.kill('SIGTERM');
  t.is(await exited, 0, stderr());
  t.deepEqual(conflist(n), bridge, 'its watcher stopped with the uninstall');
  t.false(existsSync(join(n.bin, CNI_PROGRAM)));
});

function adminRequest(socketPath: string, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, method, path, headers: { 'content-length': '0' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end();
  });
}
