/**
 * The waypoint path: client -> its node's agent -> waypoint -> the server node's agent -> server,
 * HBONE on every hop. The waypoint is set up as `ambit up` does it (src/cli/local-waypoints.ts):
 * a Gateway of class istio-waypoint for services, its pod (outside the capture) and Service, and
 * the server's Service labelled istio.io/use-waypoint; the program is `ambit waypoint` with
 * --netns naming its pod, run in its node's namespace like the agents.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Pod, Service } from '../../src/local/index.js';
import { BenchError } from '../common/errors.js';
import { OutputTail, stopChild } from '../common/proc.js';
import { repoRoot } from '../common/results.js';
import { HTTP_GET } from '../l4/pod-scripts.js';
import { nodeArgv, type AmbitMesh } from '../l4/mesh.js';

export const WAYPOINT_NAME = 'waypoint';
const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
/** the waypoint's admin ports in its node's namespace (the agent has 15000/15020/15021 there) */
const WP_PORTS = { admin: 25000, metrics: 25020, readiness: 25021 } as const;

/** The Gateway resource (what `ambit waypoint apply --for service` writes). */
export function gatewayYaml(namespace: string): string {
  return [
    'apiVersion: gateway.networking.k8s.io/v1',
    'kind: Gateway',
    'metadata:',
    `  name: ${WAYPOINT_NAME}`,
    `  namespace: ${namespace}`,
    '  labels:',
    '    istio.io/waypoint-for: service',
    'spec:',
    '  gatewayClassName: istio-waypoint',
    '  listeners:',
    '    - name: mesh',
    '      port: 15008',
    '      protocol: HBONE',
    '',
  ].join('\n');
}

/** Why the waypoint path cannot run on this tree, or undefined when the program exists. */
export function waypointMissing(): string | undefined {
  const root = repoRoot();
  const fromSources = import.meta.url.endsWith('.ts');
  const main = fromSources ? join(root, 'src', 'waypoint', 'main.ts') : join(root, 'dist', 'src', 'waypoint', 'main.js');
  return existsSync(main) ? undefined : `no waypoint program in this tree (${main})`;
}

/** The cluster objects of the waypoint path; call before the control plane starts (it reads them at start). */
export async function addWaypointObjects(cluster: Cluster, o: { namespace: string; node: string; server: Pod; port: number }): Promise<{ pod: Pod; service: Service; yaml: Record<string, string> }> {
  const pod = await cluster.addPod({
    name: `${WAYPOINT_NAME}-pod`, namespace: o.namespace, node: o.node, serviceAccount: WAYPOINT_NAME,
    labels: { [GATEWAY_NAME_LABEL]: WAYPOINT_NAME, 'istio.io/dataplane-mode': 'none' },
  });
  cluster.addService({ name: WAYPOINT_NAME, namespace: o.namespace, selector: { [GATEWAY_NAME_LABEL]: WAYPOINT_NAME }, ports: [{ name: 'mesh', port: 15008, targetPort: 15008 }] });
  const service = cluster.addService({
    name: 'server', namespace: o.namespace, selector: { app: o.server.labels.app ?? 'server' }, labels: { 'istio.io/use-waypoint': WAYPOINT_NAME },
    ports: [{ name: 'http', port: o.port, targetPort: o.port, appProtocol: 'http' }],
  });
  return { pod, service, yaml: { 'waypoint.yaml': gatewayYaml(o.namespace) } };
}

export interface RunningWaypoint {
  readonly pid: number;
  /** requests the waypoint counted (istio_requests_total, reporter="waypoint"), all labels summed */
  requests(): Promise<number>;
  stop(): Promise<void>;
}

async function get(cluster: Cluster, node: string, path: string): Promise<{ ok: boolean; body: string }> {
  const r = await cluster.exec({ node }, [process.execPath, '-e', HTTP_GET, `http://127.0.0.1:${path}`], { timeoutMs: 10_000 });
  return { ok: r.code === 0, body: r.code === 0 ? r.stdout : r.stderr.trim() };
}

export async function startWaypoint(o: {
  cluster: Cluster; mesh: AmbitMesh; pod: Pod; log: (l: string) => void; logLevel?: string;
  /** write a V8 CPU profile of the waypoint here (node --cpu-prof; written when it exits) */
  profileDir?: string;
}): Promise<RunningWaypoint> {
  const node = o.pod.node;
  const child: ChildProcess = o.cluster.spawn({ node }, [
    ...nodeArgv('src/cli/main.ts', o.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${o.profileDir}`] : []), 'waypoint', '--log-level', o.logLevel ?? 'warn',
    '--name', WAYPOINT_NAME, '--namespace', o.pod.namespace, '--service-account', WAYPOINT_NAME, '--netns', o.pod.netnsPath, '--node', node,
    '--control-url', o.mesh.controlUrl, '--token-file', o.mesh.tokenFile,
    '--admin-port', String(WP_PORTS.admin), '--metrics-port', String(WP_PORTS.metrics), '--readiness-port', String(WP_PORTS.readiness),
    '--public-host', '127.0.0.1', '--drain-ms', '1000',
  ], { cwd: repoRoot() });
  const tail = new OutputTail(child);
  // SIGINT: stop after the short drain, without SIGTERM's termination grace (a --cpu-prof profile
  // is written only when the process exits by itself)
  const stop = () => stopChild(child, 5000, 'SIGINT');
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new BenchError('waypoint', `exited (${child.signalCode ?? `code ${child.exitCode}`}): ${tail.last(4).replace(/\n/g, ' | ')}`);
      if ((await get(o.cluster, node, `${WP_PORTS.readiness}/healthz/ready`)).ok) break;
      if (Date.now() > deadline) throw new BenchError('waypoint', `not ready after 60 s: ${tail.last(4).replace(/\n/g, ' | ')}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (e) {
    await stop();
    throw e;
  }
  o.log('waypoint ready');
  return {
    pid: child.pid!,
    stop,
    requests: async () => {
      const r = await get(o.cluster, node, `${WP_PORTS.metrics}/metrics`);
      if (!r.ok) throw new BenchError('waypoint metrics', r.body);
      let n = 0;
      for (const line of r.body.split('\n')) {
        if (line.startsWith('istio_requests_total{') && line.includes('reporter="waypoint"')) n += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
      }
      return n;
    },
  };
}
