/**
 * The ambit path: the real control plane (src/control/main) in the underlay namespace, reading the
 * cluster as YAML, and one real node agent process per node (agent-proc). Both pods of the mesh
 * namespace are ambient, so the client's connections to the server pod are captured in the client
 * pod and carried over HBONE between the two agents.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { clusterToYaml, type Cluster, type Pod } from '../../src/local/index.js';
import { BenchError, messageOf } from '../common/errors.js';
import { OutputTail, stopChild, waitForLine } from '../common/proc.js';
import { repoRoot } from '../common/results.js';
import { APP_PORTS, waitEcho, waitPort } from './apps.js';
import type { PathTarget } from './measure.js';

const CONTROL_WS_PORT = 15010;
const CONTROL_STATUS_PORT = 15014;

export interface AmbitMesh {
  readonly target: PathTarget;
  /** the agent processes (their RSS is the path's memory cost) */
  agentPids(): number[];
  stop(): Promise<void>;
}

/** How to start a module of this repository as a node process, from sources (tsx) or from dist/. */
function nodeArgv(srcRelative: string): string[] {
  const fromSources = import.meta.url.endsWith('.ts');
  const root = repoRoot();
  const file = fromSources ? join(root, srcRelative) : join(root, 'dist', srcRelative.replace(/\.ts$/, '.js'));
  // execArgv carries the TypeScript loader when we run from sources
  return [process.execPath, ...process.execArgv, file];
}

export async function startAmbit(o: {
  cluster: Cluster; client: Pod; server: Pod; dir: string; log: (line: string) => void; logLevel?: string;
}): Promise<AmbitMesh> {
  const { cluster } = o;
  const controlDir = join(o.dir, 'control');
  const configDir = join(o.dir, 'config');
  mkdirSync(controlDir, { recursive: true, mode: 0o700 });
  mkdirSync(configDir, { recursive: true });
  writeFileSync(join(configDir, 'cluster.yaml'), clusterToYaml(cluster.state()));

  const level = o.logLevel ?? 'warn';
  const host = cluster.underlay.hostIP;
  const children: ChildProcess[] = [];
  const tails = new Map<string, OutputTail>();
  const stop = async () => { await Promise.all(children.map((c) => stopChild(c))); };
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
    const agents = await Promise.all(cluster.nodes.map(async (n) => {
      const stateDir = join(o.dir, `agent-${n.name}`);
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      const agent = cluster.spawn({ node: n.name }, [
        'env', `AMBIT_NODE_NAME=${n.name}`, `AMBIT_CONTROL_URL=ws://${host}:${CONTROL_WS_PORT}`,
        `AMBIT_TOKEN_FILE=${join(controlDir, 'bootstrap-token')}`, `AMBIT_STATE_DIR=${stateDir}`, `AMBIT_LOG_LEVEL=${level}`,
        ...nodeArgv('bench/l4/agent-proc.ts'), ...netns,
      ], { cwd: root });
      children.push(agent);
      tails.set(n.name, new OutputTail(agent));
      await waitForLine(agent, /^READY$/, `node agent ${n.name}`, 60_000);
      return agent;
    }));
    o.log('ambit: agents ready; probing the path');
    // Ready means listening; the first connection may still wait for a workload certificate.
    await waitEcho(cluster, o.client, o.server.ip, APP_PORTS.echo, 'ambit path', 30_000);
    await waitPort(cluster, o.client, o.server.ip, APP_PORTS.http, 'ambit path (http)');
    return {
      target: { host: o.server.ip, ports: APP_PORTS },
      agentPids: () => agents.map((a) => a.pid!).filter((p) => p !== undefined),
      stop,
    };
  } catch (e) {
    const logs = [...tails.entries()].map(([k, t]) => `${k}: ${t.last(4).replace(/\n/g, ' / ')}`).join(' || ');
    await stop();
    throw new BenchError('ambit', `${messageOf(e)}${logs ? ` [${logs}]` : ''}`, { cause: e });
  }
}
