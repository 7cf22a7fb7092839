/**
 * `ambit up`: a 2-node cluster with a client pod and an `echo` service of two versions, running
 * until Ctrl-C; then everything is removed again.
 *
 *   node-1: client, echo-v1 (app=echo, version=v1)      node-2: echo-v2 (app=echo, version=v2)
 *   Service default/echo: 80 -> 8080 (http), 9090 -> 9090 (tcp echo)
 *
 * Then the mesh (mesh.ts): the control plane and one node agent per node as child processes, the
 * pods handed to the agents as CNI would, the namespace labelled ambient in the watched YAML, and
 * one request client -> echo VIP checked to go through HBONE before the user is told to try.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MeshError, errorMessage, logger } from '../core/index.js';
import { createCluster, pidAlive, startEchoServer, type Cluster, type EchoHandle, type Pod, type Service } from '../local/index.js';
import { LocalWaypoints } from './local-waypoints.js';
import { tailFile } from './children.js';
import { AMBIENT_LABEL, checkMesh, meshPorts, startMesh, type MeshCheck, type ProgramExit, type RunningMesh } from './mesh.js';
import { configDir, readState, removeState, resolveDir, writeFileAtomic, writeState } from './state-file.js';
import { UpSocketServer, type NamespaceRequest, type RestartRequest } from './up-socket.js';

const log = logger('cli.up');

export interface Demo {
  readonly client: Pod;
  readonly v1: Pod;
  readonly v2: Pod;
  readonly service: Service;
  readonly servers: readonly EchoHandle[];
}

/** Adds the demo workloads to a cluster of at least 2 nodes and starts their servers. */
export async function buildDemo(cluster: Cluster): Promise<Demo> {
  const [n1, n2] = cluster.nodes;
  if (!n1 || !n2) throw new MeshError('AMBIT_CONFIG_INVALID', 'ambit up: the demo needs at least 2 nodes');
  const client = await cluster.addPod({ name: 'client', namespace: 'default', node: n1.name, labels: { app: 'client' }, serviceAccount: 'client' });
  const v1 = await cluster.addPod({ name: 'echo-v1', node: n1.name, labels: { app: 'echo', version: 'v1' }, serviceAccount: 'echo' });
  const v2 = await cluster.addPod({ name: 'echo-v2', node: n2.name, labels: { app: 'echo', version: 'v2' }, serviceAccount: 'echo' });
  const service = cluster.addService({
    name: 'echo', namespace: 'default', selector: { app: 'echo' },
    ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }, { name: 'tcp', port: 9090, targetPort: 9090, appProtocol: 'tcp' }],
  });
  const servers = await Promise.all([
    startEchoServer(cluster, v1, { name: 'echo-v1', version: 'v1' }),
    startEchoServer(cluster, v2, { name: 'echo-v2', version: 'v2' }),
  ]);
  return { client, v1, v2, service, servers };
}

export interface UpOptions {
  /** ambit working directory (state.json, config/) */
  readonly dir: string;
  /** node count; default 2 */
  readonly nodes?: number;
  /** tear down right after building (tests, smoke checks) */
  readonly once?: boolean;
  /** how the CLI was invoked, for the hints printed (e.g. `node dist/src/cli/main.js`) */
  readonly self?: string;
  /** stdout */
  readonly print: (text: string) => void;
  /** start the mesh (control plane, agents); default true. Without it: plain pod networking. */
  readonly mesh?: boolean;
  /** first of the ports the mesh uses (see mesh.ts); default 15000 */
  readonly portBase?: number;
  /** log level of the mesh programs; default info */
  readonly logLevel?: string;
}

/** The examples/ directory of this package (next to package.json), if it is there. */
export function examplesDir(): string | undefined {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'examples'))) return join(d, 'examples');
    d = dirname(d);
  }
  return undefined;
}

/** A path as the user would type it: relative to the cwd when below it. */
function shortPath(p: string): string {
  const rel = relative(process.cwd(), p);
  return rel && !rel.startsWith('..') ? rel : p;
}

function describe(cluster: Cluster, demo: Demo, self: string, dir: string, mesh: RunningMesh | undefined, check: MeshCheck | undefined): string {
  const lines: string[] = [];
  lines.push(`ambit up: ${cluster.nodes.length} nodes, ${cluster.pods.length} pods (network namespaces ${cluster.prefix}*)`);
  lines.push('');
  lines.push(`  underlay      ${cluster.underlay.cidr}, host ${cluster.underlay.hostIP}`);
  for (const n of cluster.nodes) lines.push(`  node ${n.name.padEnd(8)} ${n.underlayIP.padEnd(12)} pods ${n.podCidr}`);
  for (const p of cluster.pods) {
    const labels = Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(',');
    lines.push(`  pod  ${p.name.padEnd(8)} ${p.namespace}/${p.node.padEnd(8)} ${p.ip.padEnd(12)} ${labels}`);
  }
  const s = demo.service;
  const vip = s.clusterIP;
  lines.push(`  svc  ${s.namespace}/${s.name}  ${vip}  ${s.ports.map((p) => `${p.port}->${p.targetPort}`).join(', ')}  selector app=echo`);
  lines.push('');
  const cfg = shortPath(configDir(dir));
  if (mesh) {
    lines.push(`mesh: namespace default is ambient (istio.io/dataplane-mode=ambient in ${shortPath(join(configDir(dir), 'cluster.yaml'))})`);
    lines.push(`  control plane ${mesh.controlUrl}  status http://127.0.0.1:${mesh.statusPort}/ready  /metrics  /debug/config_dump`);
    lines.push(`                log ${shortPath(mesh.controlLog)}`);
    for (const a of mesh.agents) {
      lines.push(`  agent ${a.node.padEnd(7)} metrics http://127.0.0.1:${a.metricsPort}/metrics  admin http://127.0.0.1:${a.adminPort}/config_dump`);
      lines.push(`                log ${shortPath(a.logFile)}`);
    }
    if (check) lines.push(`  checked: client -> ${vip}:80 answered by ${check.answeredBy} over mTLS (HBONE)`);
    lines.push('');
    const ex = examplesDir();
    const exPath = (f: string): string => (ex ? shortPath(join(ex, f)) : `examples/${f}`);
    lines.push('Try, in another terminal:');
    lines.push(`  ${self} exec client -- curl -s http://${vip}/hello`);
    lines.push('      (through the mesh: HBONE with mTLS between the pods; run it a few times for v1 and v2)');
    lines.push(`  curl -s http://127.0.0.1:${mesh.agents[0]!.metricsPort}/metrics | grep istio_tcp_connections_opened_total`);
    lines.push(`  ${self} apply -f ${exPath('deny-all.yaml')}`);
    lines.push('      (live: the curl above is now refused)');
    lines.push(`  ${self} apply -f ${exPath('allow-client.yaml')}`);
    lines.push('      (the client\'s identity, from its certificate, may call echo again)');
    lines.push(`  rm ${cfg}/deny-all.yaml ${cfg}/allow-client.yaml`);
    lines.push('      (applied policies are files there; removing one reverts it)');
    lines.push(`  ${self} exec client -- nft list ruleset`);
    lines.push('      (the capture rules the agent installed in the pod)');
    lines.push(`  ${self} restart agent ${mesh.agents[0]!.node}`);
    lines.push('      (a new agent takes the pods\' sockets over, then the old one drains: no request is refused)');
    lines.push(`  ${self} restart control`);
    lines.push('      (the agents keep serving their last config and reconnect to the new control plane)');
  } else {
    lines.push('No mesh (--no-mesh): plain pod-to-pod networking; the service IP answers only with the mesh.');
    lines.push('Try, in another terminal:');
    lines.push(`  ${self} exec client -- curl -s http://${demo.v2.ip}:8080/hello`);
  }
  lines.push(`  ${self} exec node/${cluster.nodes[0]!.name} -- ip route`);
  lines.push('');
  return lines.join('\n') + '\n';
}

/** Runs `ambit up`; resolves with the exit code once everything is torn down again. */
export async function runUp(opts: UpOptions): Promise<number> {
  if (process.getuid?.() !== 0) {
    throw new MeshError('AMBIT_NETNS', 'ambit up needs root: it creates network namespaces (run it as root, e.g. in CI or a VM)');
  }
  const previous = readStateQuietly(opts.dir);
  if (previous && previous.pid !== process.pid && pidAlive(previous.pid)) {
    throw new MeshError('AMBIT_NETNS', `ambit up is already running (pid ${previous.pid}, state in ${opts.dir}); stop it first`);
  }
  // Handlers first: a Ctrl-C while building must still tear down (a signal death skips 'exit').
  let signalled: NodeJS.Signals | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (sig: NodeJS.Signals): void => { signalled ??= sig; wake?.(); };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const sig of signals) process.on(sig, onSignal);
  try {
    return await upUntilSignal(opts, () => signalled, (fn) => { wake = fn; });
  } finally {
    for (const sig of signals) process.off(sig, onSignal);
  }
}

/**
 * Files in the watched directory other than cluster.yaml are what the user applied in an earlier
 * run. A new run starts from the demo alone (so its start-up check is not refused by yesterday's
 * deny-all); they are moved aside, not deleted. Returns the names moved.
 */
function setAsideOldConfig(dir: string, cfgDir: string): string[] {
  const moved: string[] = [];
  let names: string[];
  try { names = readdirSync(cfgDir); } catch { return moved; }
  const aside = join(dir, 'config.previous');
  for (const n of names) {
    if (n === 'cluster.yaml' || !/\.ya?ml$/.test(n)) continue;
    mkdirSync(aside, { recursive: true });
    renameSync(join(cfgDir, n), join(aside, n));
    moved.push(n);
  }
  return moved;
}

async function upUntilSignal(
  opts: UpOptions, signalled: () => NodeJS.Signals | undefined, onWake: (fn: () => void) => void,
): Promise<number> {
  const cfgDir = configDir(opts.dir);
  mkdirSync(cfgDir, { recursive: true });
  const clusterYaml = join(cfgDir, 'cluster.yaml');
  const withMesh = opts.mesh ?? true;
  if (withMesh) {
    const moved = setAsideOldConfig(opts.dir, cfgDir);
    if (moved.length > 0) opts.print(`moved config of an earlier run to ${shortPath(join(opts.dir, 'config.previous'))}: ${moved.join(', ')}\n`);
  }

  const cluster = await createCluster({ nodes: opts.nodes ?? 2 });
  let mesh: RunningMesh | undefined;
  let waypoints: LocalWaypoints | undefined;
  // Safety net: whatever happens below, namespaces and programs do not outlive this process.
  const onExit = (): void => { waypoints?.killSync(); mesh?.killSync(); cluster.destroySync(); };
  process.on('exit', onExit);

  let upSocket: UpSocketServer | undefined;
  let torn: Promise<void> | undefined;
  const teardown = (): Promise<void> => torn ??= (async () => {
    try { await upSocket?.close(); } catch (e) { log.error('closing the restart socket failed', { err: errorMessage(e) }); }
    try { await waypoints?.stop(); } catch (e) { log.error('stopping the waypoints failed', { err: errorMessage(e) }); }
    try { await mesh?.stop(); } catch (e) { log.error('stopping the mesh failed', { err: errorMessage(e) }); }
    await cluster.destroy();
    removeState(opts.dir);
    rmSync(clusterYaml, { force: true });
    process.off('exit', onExit);
  })();

  try {
    const demo = await buildDemo(cluster);
    writeFileAtomic(clusterYaml, cluster.toYaml());
    const saveState = (): void => writeState(opts.dir, {
      version: 1, pid: process.pid, startedAt: new Date().toISOString(), cluster: cluster.state(),
      ...(mesh ? { programs: [...mesh.programs(), ...(waypoints?.programs() ?? [])] } : {}),
    });
    saveState();
    // hints must reach this run: name its directory unless it is the one found by default
    const self = `${opts.self ?? 'ambit'}${resolveDir(undefined) === opts.dir ? '' : ` --dir ${shortPath(opts.dir)}`}`;
    // A program that exits is reported; the rest of the mesh keeps serving (`ambit restart` brings it back).
    const reportExit = (x: ProgramExit): void => {
      const tail = lastLines(tailFile(x.logFile, 2048));
      opts.print(`\n${x.name} (pid ${x.pid ?? '?'}) exited (${x.how}); the rest of the mesh keeps running. Log ${shortPath(x.logFile)}${tail ? `, last lines:\n${tail}` : ''}\n`
        + `start it again: ${self} restart ${x.restart}\n`);
      saveState();
    };
    let check: MeshCheck | undefined;
    if (withMesh && !signalled()) {
      opts.print('starting the mesh: control plane, one node agent per node ...\n');
      mesh = await startMesh({
        cluster, dir: opts.dir, configDir: cfgDir,
        ...(opts.portBase !== undefined ? { portBase: opts.portBase } : {}),
        ...(opts.logLevel !== undefined ? { logLevel: opts.logLevel } : {}),
        onExit: reportExit,
        cancelled: signalled,
      });
      saveState(); // now with the programs' pids, for `ambit down` after a crash
      check = await checkMesh(cluster, mesh, demo.client, demo.service, 80);
      // waypoints: Gateways of a waypoint class in the watched directory (ambit waypoint apply)
      waypoints = new LocalWaypoints({
        cluster, dir: opts.dir, configDir: cfgDir, controlUrl: mesh.controlUrl, tokenFile: join(opts.dir, 'control', 'bootstrap-token'),
        portBase: meshPorts(opts.portBase ?? 15000).ws - 10, logLevel: opts.logLevel ?? 'info',
        onExit: reportExit,
        // state.json first: whoever reads the line may look the waypoint's pid up at once
        onReady: (w) => { saveState(); opts.print(`waypoint ${w.key} ready: pod ${w.pod.ip} on ${w.pod.node}, metrics http://127.0.0.1:${w.metricsPort}/metrics, log ${shortPath(w.logFile)}\n`); },
      });
      await waypoints.start();
      if (!opts.once) {
        const restart = restartHandler(opts, mesh, waypoints, saveState, () => signalled() !== undefined || torn !== undefined);
        const label = namespaceHandler(opts, cluster, () => { writeFileAtomic(clusterYaml, cluster.toYaml()); saveState(); });
        upSocket = await UpSocketServer.listen(opts.dir, (r, say) => (r.op === 'namespace' ? label(r, say) : restart(r, say)));
      }
    }
    opts.print(describe(cluster, demo, self, opts.dir, mesh, check));
    if (opts.once) {
      opts.print('--once: tearing down\n');
      await teardown();
      opts.print('removed everything\n');
      return 0;
    }
    if (!signalled()) {
      opts.print('Press Ctrl-C to stop and remove everything.\n');
      await new Promise<void>((resolve) => { onWake(resolve); });
    }
    opts.print(`\n${signalled()}: tearing down\n`);
    await teardown();
    opts.print('removed everything\n');
    return 0;
  } catch (e) {
    await teardown().catch((e2: unknown) => log.error('teardown failed', { err: errorMessage(e2) }));
    throw e;
  }
}

/** The last `n` lines of `text`, indented and cut at 240 characters (log lines are long JSON). */
function lastLines(text: string, n = 4): string {
  return text.split('\n').filter(Boolean).slice(-n).map((l) => `    ${l.length > 240 ? `${l.slice(0, 240)}...` : l}`).join('\n');
}

/**
 * `ambit namespace enroll|unenroll NAME`: the namespace's `istio.io/dataplane-mode` label in the
 * cluster the control plane watches (its other labels kept). The agents then enrol or release the
 * namespace's running pods, as they do for a label change in Kubernetes.
 */
export function namespaceLabels(cur: Readonly<Record<string, string>>, enroll: boolean): Record<string, string> {
  const { [AMBIENT_LABEL]: _mode, ...rest } = cur;
  return enroll ? { ...rest, [AMBIENT_LABEL]: 'ambient' } : rest;
}

function namespaceHandler(opts: UpOptions, cluster: Cluster, save: () => void): (r: NamespaceRequest, say: (line: string) => void) => Promise<string> {
  return async (r) => {
    const namespaces = cluster.state().namespaces;
    const ns = namespaces.find((n) => n.name === r.name);
    if (!ns) throw new MeshError('AMBIT_CONFIG_INVALID', `no namespace "${r.name}"; namespaces: ${namespaces.map((n) => n.name).join(', ') || 'none'}`);
    const was = ns.labels[AMBIENT_LABEL] === 'ambient';
    const verb = r.enroll ? 'enrolled' : 'unenrolled';
    if (was === r.enroll) return `namespace ${r.name}: already ${verb} (${AMBIENT_LABEL}${r.enroll ? '=ambient' : ' not ambient'})`;
    cluster.setNamespaceLabels(r.name, namespaceLabels(ns.labels, r.enroll));
    save();
    const pods = cluster.state().pods.filter((p) => p.namespace === r.name).length;
    const line = `namespace ${r.name} ${verb}: ${r.enroll ? `${AMBIENT_LABEL}=ambient` : `${AMBIENT_LABEL} removed`}; the agents ${r.enroll ? 'capture' : 'release'} its ${pods} running pod(s)`;
    opts.print(`
${line} (ambit namespace)
`);
    return line;
  };
}

/** What `ambit restart` asks of this run; each step is printed here as well as in the asking terminal. */
function restartHandler(opts: UpOptions, mesh: RunningMesh, waypoints: LocalWaypoints, saveState: () => void, stopping: () => boolean): (r: RestartRequest, say: (line: string) => void) => Promise<string> {
  return async (r, say) => {
    const what = `${r.target}${r.name !== undefined ? ` ${r.name}` : ''}`;
    opts.print(`\nrestart ${what} (ambit restart)\n`);
    // each step is saved too: a new instance's pid is in state.json from its start (for `ambit down` if up dies)
    // (not once the teardown began: it removes the state file)
    const save = (): void => { if (!stopping()) saveState(); };
    const tell = (line: string): void => { save(); opts.print(`  ${line}\n`); say(line); };
    try {
      const done = r.target === 'agent' ? await mesh.restartAgent(r.name!, tell)
        : r.target === 'control' ? await mesh.restartControl(tell)
          : await waypoints.restart(r.name!, tell);
      opts.print(`restart ${what}: done: ${done}\n`);
      return done;
    } catch (e) {
      if (stopping()) {
        opts.print(`restart ${what}: interrupted (ambit up is stopping)\n`);
        throw new MeshError('AMBIT_PROCESS_FAILED', `restart ${what}: interrupted (ambit up is stopping)`, { cause: e });
      }
      // both terminals: the first line and the end of the log it names (not the whole 4 kB)
      const [first, ...rest] = errorMessage(e).split('\n');
      const tail = lastLines(rest.join('\n'));
      const short = `restart ${what}: failed: ${first}${tail ? `\n${tail}` : ''}`;
      opts.print(`${short}\n`);
      throw new MeshError('AMBIT_PROCESS_FAILED', short, { cause: e });
    } finally {
      save();
    }
  };
}

function readStateQuietly(dir: string): ReturnType<typeof readState> {
  try { return readState(dir); } catch { return undefined; }
}

/** `node dist/src/cli/main.js` (relative to the cwd) or `ambit`, for hints. */
export function selfCommand(argv1: string | undefined): string {
  if (!argv1) return 'ambit';
  if (/[\\/]ambit$/.test(argv1)) return 'ambit';
  const rel = relative(process.cwd(), argv1);
  // from the TypeScript sources the loader is needed too
  return `node ${argv1.endsWith('.ts') ? '--import tsx ' : ''}${rel.startsWith('..') ? argv1 : rel}`;
}
