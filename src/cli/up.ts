/**
 * `ambit up`: a 2-node cluster with a client pod and an `echo` service of two versions, running
 * until Ctrl-C; then everything is removed again.
 *
 *   node-1: client, echo-v1 (app=echo, version=v1)      node-2: echo-v2 (app=echo, version=v2)
 *   Service default/echo: 80 -> 8080 (http), 9090 -> 9090 (tcp echo)
 *
 * The mesh itself (control plane, node agents, waypoints) is started by `startMesh`, the one
 * place to wire it in.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { MeshError, errorMessage, logger } from '../core/index.js';
import { createCluster, pidAlive, startEchoServer, type Cluster, type EchoHandle, type Pod, type Service } from '../local/index.js';
import { configDir, readState, removeState, writeFileAtomic, writeState } from './state-file.js';

const log = logger('cli.up');

/** What the mesh gets to work with. */
export interface MeshContext {
  readonly cluster: Cluster;
  /** the ambit working directory (.ambit) */
  readonly dir: string;
  /** the directory of YAML the local control plane watches; holds cluster.yaml */
  readonly configDir: string;
}

/** Stops what startMesh started. */
export type StopMesh = () => Promise<void>;

/**
 * Starts the mesh on a built cluster: control plane (in the underlay netns, reachable at
 * cluster.underlay.hostIP from nodes and pods), one node agent per node, waypoints. Not wired
 * yet: the cluster runs without a mesh (plain pod-to-pod networking).
 */
export async function startMesh(_ctx: MeshContext): Promise<StopMesh> {
  return async () => {};
}

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
}

function describe(cluster: Cluster, demo: Demo, self: string): string {
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
  lines.push(`  svc  ${s.namespace}/${s.name}  ${s.clusterIP}  ${s.ports.map((p) => `${p.port}->${p.targetPort}`).join(', ')}  selector app=echo`);
  lines.push('');
  lines.push('Try, in another terminal (pod IPs work now; the service IP needs the mesh):');
  lines.push(`  ${self} exec client -- curl -s http://${demo.v2.ip}:8080/hello`);
  lines.push(`  ${self} exec client -- ip route`);
  lines.push(`  ${self} exec node/${cluster.nodes[0]!.name} -- ip route`);
  lines.push(`  ${self} apply -f policy.yaml    # copies into the watched config directory`);
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

async function upUntilSignal(
  opts: UpOptions, signalled: () => NodeJS.Signals | undefined, onWake: (fn: () => void) => void,
): Promise<number> {
  const cfgDir = configDir(opts.dir);
  mkdirSync(cfgDir, { recursive: true });
  const clusterYaml = join(cfgDir, 'cluster.yaml');

  const cluster = await createCluster({ nodes: opts.nodes ?? 2 });
  // Safety net: whatever happens below, namespaces do not outlive this process.
  const onExit = (): void => { cluster.destroySync(); };
  process.on('exit', onExit);

  let stopMesh: StopMesh | undefined;
  let torn: Promise<void> | undefined;
  const teardown = (): Promise<void> => torn ??= (async () => {
    try { await stopMesh?.(); } catch (e) { log.error('stopping the mesh failed', { err: errorMessage(e) }); }
    await cluster.destroy();
    removeState(opts.dir);
    rmSync(clusterYaml, { force: true });
    process.off('exit', onExit);
  })();

  try {
    const demo = await buildDemo(cluster);
    writeFileAtomic(clusterYaml, cluster.toYaml());
    writeState(opts.dir, { version: 1, pid: process.pid, startedAt: new Date().toISOString(), cluster: cluster.state() });
    stopMesh = await startMesh({ cluster, dir: opts.dir, configDir: cfgDir });
    const self = opts.self ?? 'ambit';
    opts.print(describe(cluster, demo, self));
    if (opts.once) {
      opts.print('--once: tearing down\n');
      await teardown();
      opts.print('removed everything\n');
      return 0;
    }
    if (!signalled()) {
      opts.print('Press Ctrl-C to stop and remove everything.\n');
      await new Promise<void>((resolve) => onWake(resolve));
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

function readStateQuietly(dir: string): ReturnType<typeof readState> {
  try { return readState(dir); } catch { return undefined; }
}

/** `node dist/src/cli/main.js` (relative to the cwd) or `ambit`, for hints. */
export function selfCommand(argv1: string | undefined): string {
  if (!argv1) return 'ambit';
  if (/[\\/]ambit$/.test(argv1)) return 'ambit';
  const rel = relative(process.cwd(), argv1);
  return `node ${rel.startsWith('..') ? argv1 : rel}`;
}
