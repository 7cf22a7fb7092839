/**
 * The ambit path: the real control plane (src/control/main) in the underlay namespace, reading the
 * cluster as YAML, and one real node agent process per node (agent-proc). Both pods of the mesh
 * namespace are ambient, so the client's connections to the server pod are captured in the client
 * pod and carried over HBONE between the two agents.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { clusterToYaml, type Cluster, type Pod } from '../../src/local/index.js';
import { BenchError, messageOf } from '../common/errors.js';
import { OutputTail, stopChild, waitForLine } from '../common/proc.js';
import { repoRoot } from '../common/results.js';
import { APP_PORTS, waitEcho, waitPort } from './apps.js';
import { HTTP_GET } from './pod-scripts.js';
import type { PathTarget } from './measure.js';

/**
 * Node flags of the agents, as daemonset/node-agent.yaml sets them (NODE_OPTIONS): the bench
 * measures the deployed configuration. A young generation capped at 4 MB per semi-space keeps a
 * burst of new tunnels from leaving ~20 MB of grown heap behind in each agent.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

const CONTROL_WS_PORT = 15010;
const CONTROL_STATUS_PORT = 15014;
/** the agents' Prometheus port (default), inside each node's namespace */
const AGENT_METRICS_PORT = 15020;

/**
 * Connections the destination agent accepted over mutual TLS (HBONE), from its Prometheus
 * metrics: the proof that the measured traffic was tunnelled and not passed through in the clear.
 */
export async function hboneInboundCount(cluster: Cluster, node: string): Promise<number> {
  const r = await cluster.exec({ node }, [process.execPath, '-e', HTTP_GET, `http://127.0.0.1:${AGENT_METRICS_PORT}/metrics`], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new BenchError('ambit: agent metrics', `${node}: ${r.stderr.trim()}`);
  let n = 0;
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('istio_tcp_connections_opened_total{')) continue;
    if (!line.includes('reporter="destination"') || !line.includes('connection_security_policy="mutual_tls"')) continue;
    n += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return n;
}

/** process.memoryUsage() of an agent right after a full GC, bytes (null fields: not reported) */
export interface AgentMemory { rss: number | null; heapUsed: number | null; heapTotal: number | null; external: number | null; arrayBuffers: number | null }

function parseGcLine(line: string): AgentMemory {
  const none: AgentMemory = { rss: null, heapUsed: null, heapTotal: null, external: null, arrayBuffers: null };
  const i = line.indexOf('{');
  if (i < 0) return none;
  try {
    const j = JSON.parse(line.slice(i)) as Record<string, unknown>;
    const num = (k: string) => (typeof j[k] === 'number' ? j[k] : null);
    return { rss: num('rss'), heapUsed: num('heapUsed'), heapTotal: num('heapTotal'), external: num('external'), arrayBuffers: num('arrayBuffers') };
  } catch {
    return none;
  }
}

/**
 * How an agent is replaced (restart step). With the handover (issue 8; the agent takes the pods
 * of a running agent of the same state directory): `restart` = SIGTERM the old one (it keeps
 * serving until a successor took over) and start the new one at once; `overlap` = start the new
 * one, and SIGTERM the old one once the new one is ready (a rolling replacement). Without it,
 * `restart` stops the old one, waits until it is gone, then starts the new one (`plain-restart`),
 * and `overlap` cannot be done.
 */
export type ReplaceMode = 'restart' | 'overlap';

/** Whether the agents of this tree hand their pods over to a successor (src/node-agent/handover). */
export function handoverAvailable(): boolean {
  const root = repoRoot();
  const fromSources = import.meta.url.endsWith('.ts');
  return existsSync(fromSources ? join(root, 'src', 'node-agent', 'handover.ts') : join(root, 'dist', 'src', 'node-agent', 'handover.js'));
}

/** What one agent replacement took, milliseconds from its start. */
export interface Replacement {
  readonly node: string;
  readonly mode: ReplaceMode | 'plain-restart';
  /** wall clock (Date.now()) when the replacement began */
  readonly startedAt: number;
  /** the old agent had exited */
  readonly oldGoneMs: number | null;
  /** the new agent printed READY */
  readonly newReadyMs: number;
}

export interface AmbitMesh {
  readonly target: PathTarget;
  /** the node agents' processes by node name (the current ones, after replacements) */
  agentsByNode(): ReadonlyMap<string, number>;
  /** replaces the agent of `node` by a new process; resolves when the new one is ready */
  replaceAgent(node: string, mode?: ReplaceMode): Promise<Replacement>;
  /** the control plane's process */
  controlPid(): number | undefined;
  /** where mesh programs reach the control plane (from a node's namespace), and the token file they present */
  readonly controlUrl: string;
  readonly tokenFile: string;
  /** the agent processes (their RSS is the path's memory cost) */
  agentPids(): number[];
  /** full garbage collection in every agent; resolves when all are done, with their memory after it */
  collectGarbage(): Promise<(AgentMemory & { node: string })[]>;
  /** connections the server's agent has accepted over HBONE so far */
  tunnelled(): Promise<number>;
  stop(): Promise<void>;
}

/** How to start a module of this repository as a node process, from sources (tsx) or from dist/. */
export function nodeArgv(srcRelative: string, nodeFlags: readonly string[] = []): string[] {
  const fromSources = import.meta.url.endsWith('.ts');
  const root = repoRoot();
  const file = fromSources ? join(root, srcRelative) : join(root, 'dist', srcRelative.replace(/\.ts$/, '.js'));
  // execArgv carries the TypeScript loader when we run from sources
  return [process.execPath, ...process.execArgv, ...nodeFlags, file];
}

export async function startAmbit(o: {
  cluster: Cluster; client: Pod; server: Pod; dir: string; log: (line: string) => void; logLevel?: string;
  /** write a V8 CPU profile of each agent here (node --cpu-prof), for finding where time goes */
  profileDir?: string;
  /** extra node flags for the agents (experiments, e.g. --heapsnapshot-signal=SIGUSR1) */
  agentNodeFlags?: readonly string[];
  /** more YAML for the control plane next to the cluster's (waypoint Gateways, routes); file name -> text */
  extraYaml?: Readonly<Record<string, string>>;
}): Promise<AmbitMesh> {
  const { cluster } = o;
  const controlDir = join(o.dir, 'control');
  const configDir = join(o.dir, 'config');
  mkdirSync(controlDir, { recursive: true, mode: 0o700 });
  mkdirSync(configDir, { recursive: true });
  writeFileSync(join(configDir, 'cluster.yaml'), clusterToYaml(cluster.state()));
  for (const [name, text] of Object.entries(o.extraYaml ?? {})) {
    if (!/^[a-z0-9][-a-z0-9]*\.yaml$/.test(name) || name === 'cluster.yaml') throw new BenchError('ambit', `extra YAML file name "${name}"`);
    writeFileSync(join(configDir, name), text);
  }

  const level = o.logLevel ?? 'warn';
  const host = cluster.underlay.hostIP;
  const children: ChildProcess[] = [];
  const tails = new Map<string, OutputTail>();
  // SIGINT: the programs stop at once (SIGTERM would start an agent's drain, which outlasts the
  // grace period), and exit normally, so a --cpu-prof profile gets written
  const stop = async () => { await Promise.all(children.map((c) => stopChild(c, 10_000, 'SIGINT'))); };
  const root = repoRoot();
  try {
    o.log('ambit: starting control plane');
    const control = cluster.spawn({ underlay: true }, [
      'env', `AMBIT_CONFIG_DIR=${configDir}`, `AMBIT_STATE_DIR=${controlDir}`, `AMBIT_LISTEN_HOST=${host}`,
      `AMBIT_WS_PORT=${CONTROL_WS_PORT}`, 'AMBIT_WSS_PORT=off', `AMBIT_STATUS_PORT=${CONTROL_STATUS_PORT}`,
      `AMBIT_LOG_LEVEL=${level}`, `AMBIT_CLUSTER_ID=${cluster.name}`,
      ...nodeArgv('src/control/main.ts'),
    ], { cwd: root });
    children.push(control);
    tails.set('control', new OutputTail(control));
    await waitPort(cluster, { underlay: true }, host, CONTROL_WS_PORT, 'control plane', 30_000);

    const netns = [o.client, o.server].map((p) => p.netnsPath);
    let generation = 0;
    const spawnAgent = async (node: string): Promise<ChildProcess> => {
      const stateDir = join(o.dir, `agent-${node}`);
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      const agent = cluster.spawn({ node }, [
        'env', `AMBIT_NODE_NAME=${node}`, `AMBIT_CONTROL_URL=ws://${host}:${CONTROL_WS_PORT}`,
        `AMBIT_TOKEN_FILE=${join(controlDir, 'bootstrap-token')}`, `AMBIT_STATE_DIR=${stateDir}`, `AMBIT_LOG_LEVEL=${level}`,
        ...nodeArgv('bench/l4/agent-proc.ts', ['--expose-gc', ...AGENT_NODE_FLAGS, ...(o.agentNodeFlags ?? []), ...(o.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${o.profileDir}`] : [])]),
        ...netns,
      ], { cwd: root });
      children.push(agent);
      tails.set(`${node}#${generation++}`, new OutputTail(agent));
      await waitForLine(agent, /^READY$/, `node agent ${node}`, 60_000);
      return agent;
    };
    const agents = new Map<string, ChildProcess>();
    await Promise.all(cluster.nodes.map(async (n) => { agents.set(n.name, await spawnAgent(n.name)); }));
    o.log('ambit: agents ready; probing the path');
    // Ready means listening; the first connection may still wait for a workload certificate.
    await waitEcho(cluster, o.client, o.server.ip, APP_PORTS.echo, 'ambit path', 30_000);
    await waitPort(cluster, o.client, o.server.ip, APP_PORTS.http, 'ambit path (http)');
    const tunnelled = await hboneInboundCount(cluster, o.server.node);
    if (tunnelled < 1) throw new BenchError('ambit', `the probe reached the server but not over HBONE (agent on ${o.server.node} counted no mutual_tls connection)`);
    return {
      target: { host: o.server.ip, ports: APP_PORTS },
      controlUrl: `ws://${host}:${CONTROL_WS_PORT}`,
      tokenFile: join(controlDir, 'bootstrap-token'),
      agentPids: () => [...agents.values()].map((a) => a.pid!).filter((p) => p !== undefined),
      agentsByNode: () => new Map([...agents].flatMap(([n, a]) => (a.pid === undefined ? [] : [[n, a.pid] as [string, number]]))),
      controlPid: () => control.pid,
      tunnelled: () => hboneInboundCount(cluster, o.server.node),
      replaceAgent: async (node, mode = 'restart') => {
        const old = agents.get(node);
        if (!old) throw new BenchError('ambit: replace agent', `no agent on node ${node}`);
        const startedAt = Date.now();
        let oldGoneMs: number | null = null;
        const gone = () => stopChild(old, 60_000).then(() => { oldGoneMs = Date.now() - startedAt; });
        if (!handoverAvailable()) {
          if (mode === 'overlap') throw new BenchError('ambit: replace agent', 'overlap needs the agent handover, which this tree does not have');
          // plain restart: SIGTERM, the old one stops; then a new process on the same state
          await gone();
          const fresh = await spawnAgent(node);
          agents.set(node, fresh);
          return { node, mode: 'plain-restart', startedAt, oldGoneMs, newReadyMs: Date.now() - startedAt };
        }
        const terminated = mode === 'restart' ? gone() : undefined;
        const fresh = await spawnAgent(node);
        const newReadyMs = Date.now() - startedAt;
        agents.set(node, fresh);
        await (terminated ?? gone());
        return { node, mode, startedAt, oldGoneMs, newReadyMs };
      },
      collectGarbage: async () => Promise.all([...agents].map(async ([node, a]) => {
        const done = waitForLine(a, /^GC( |$)/, 'agent garbage collection', 10_000);
        process.kill(a.pid!, 'SIGUSR2');
        return { node, ...parseGcLine(await done) };
      })),
      stop,
    };
  } catch (e) {
    const logs = [...tails.entries()].map(([k, t]) => `${k}: ${t.last(4).replace(/\n/g, ' / ')}`).join(' || ');
    await stop();
    throw new BenchError('ambit', `${messageOf(e)}${logs ? ` [${logs}]` : ''}`, { cause: e });
  }
}
