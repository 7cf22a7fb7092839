/**
 * The mesh on top of the local cluster, as `ambit up` runs it:
 *
 *   root netns   ambit control  127.0.0.1:{ws 15010, wss 15012, status 15014}
 *                ambit agent --node node-i  admin/metrics/readiness on 127.0.0.1:15000+100*i +{0,20,21}
 *   pod netns    the agents' listeners (15001/15006/15008) and capture rules, opened from outside
 *
 * Why the root namespace: the agents must run there anyway (they reach into every pod netns by
 * path or fd, and they are the host's processes), and the control plane's only clients are the
 * agents; loopback keeps the plain-ws channel off every network. The ports are shifted by
 * `portBase` so tests can run next to a user's `ambit up`.
 *
 * Order: control plane ready -> agents ready -> CNI ADD of every pod (what the container
 * runtime would do; the agent remembers the netns) -> namespace labelled ambient in the watched
 * YAML -> every pod enrolled with a certificate -> one request client -> echo VIP checked.
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { MeshError, errorMessage, logger } from '../core/index.js';
import type { Cluster, Pod, Service } from '../local/index.js';
import { Program, httpGet, selfArgv, waitFor } from './children.js';
import { writeFileAtomic } from './state-file.js';

const log = logger('cli.mesh');

export const AMBIENT_LABEL = 'istio.io/dataplane-mode';
/** unix socket paths are limited to 108 bytes (sun_path) */
const MAX_SOCKET_PATH = 107;
const START_TIMEOUT_MS = 60_000;

export interface MeshOptions {
  readonly cluster: Cluster;
  /** the ambit working directory (.ambit) */
  readonly dir: string;
  /** directory of YAML the control plane watches; cluster.yaml is in it */
  readonly configDir: string;
  /** control 15010/12/14 and agents 15000+100*i are offsets from this; default 15000 */
  readonly portBase?: number;
  /** log level of the programs; default info */
  readonly logLevel?: string;
  /** namespaces labelled ambient; default ['default'] */
  readonly ambientNamespaces?: readonly string[];
  /** called once when a program exits while the mesh is up */
  readonly onFailure: (e: Error) => void;
  /** a reason (e.g. the signal) once the start should be abandoned */
  readonly cancelled?: () => string | undefined;
}

export interface AgentInfo {
  readonly node: string;
  readonly adminPort: number;
  readonly metricsPort: number;
  readonly readinessPort: number;
  readonly socketPath: string;
  readonly logFile: string;
}

export interface RunningMesh {
  readonly controlUrl: string;
  readonly statusPort: number;
  readonly controlLog: string;
  readonly agents: readonly AgentInfo[];
  /** agents drain (SIGTERM), then the control plane stops. Idempotent. */
  stop(): Promise<void>;
  /** last resort on process exit */
  killSync(): void;
  /** pids of the running programs (for the state file, so `ambit down` can stop orphans) */
  programs(): Array<{ name: string; pid: number }>;
}

export interface MeshCheck {
  /** which echo pod answered */
  readonly answeredBy: string;
  /** istio_tcp_connections_opened_total{connection_security_policy="mutual_tls"} on the client's node, after the request */
  readonly mtlsConnectionsOpened: number;
}

export function meshPorts(portBase: number): { ws: number; wss: number; status: number; agent(i: number): { admin: number; metrics: number; readiness: number } } {
  if (!Number.isInteger(portBase) || portBase < 1024 || portBase + 100 * 201 + 21 > 65535) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--port-base: ${portBase} must be an integer from 1024 to ${65535 - 100 * 201 - 21}`);
  }
  return {
    ws: portBase + 10, wss: portBase + 12, status: portBase + 14,
    agent: (i) => ({ admin: portBase + 100 * i, metrics: portBase + 100 * i + 20, readiness: portBase + 100 * i + 21 }),
  };
}

/** Runs `ambit cni` the way a container runtime does for a chained plugin: ADD with the pod's netns. */
export function cniAdd(pod: Pod, socketPath: string): Promise<void> {
  const conf = {
    cniVersion: '1.0.0', name: 'ambit-local', type: 'ambit-cni', agentSocket: socketPath,
    prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: pod.netnsPath }], ips: pod.ips.map((ip) => ({ address: `${ip}/${ip.includes(':') ? 64 : 24}`, interface: 0 })) },
  };
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CNI_COMMAND: 'ADD', CNI_CONTAINERID: pod.uid, CNI_NETNS: pod.netnsPath, CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_UID=${pod.uid}`,
  };
  const [file, ...pre] = selfArgv();
  return new Promise((resolve, reject) => {
    const child = spawn(file!, [...pre, 'cni'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { if (out.length < 65536) out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { if (err.length < 65536) err += d.toString(); });
    child.once('error', (e) => reject(new MeshError('AMBIT_PROCESS_FAILED', `cni ADD ${pod.namespace}/${pod.name}: ${e.message}`)));
    child.once('close', (code) => {
      if (code === 0) { resolve(); return; }
      reject(new MeshError('AMBIT_PROCESS_FAILED', `cni ADD ${pod.namespace}/${pod.name}: exit ${code ?? '?'}: ${(out + err).trim().slice(0, 2000)}`));
    });
    child.stdin.end(JSON.stringify(conf));
  });
}

interface ConfigDump {
  ready?: boolean;
  enrolled?: Array<{ name: string; namespace: string; listening: boolean }>;
  failed?: Record<string, string>;
  certificates?: Array<{ identity: string; notAfter?: string; state?: string }>;
}

// A one-request HTTP client run inside a pod: prints the answer's JSON body, or {error}.
const HTTP_CLIENT = `
const http = require('node:http');
const [host, port] = process.argv.slice(1);
const req = http.get({ host, port: Number(port), path: '/ambit-up-check', timeout: 8000 }, (res) => {
  let body = '';
  res.on('data', (d) => { if (body.length < 65536) body += d; });
  res.on('end', () => { console.log(JSON.stringify({ status: res.statusCode, body })); });
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => { console.log(JSON.stringify({ error: e.code || e.message })); });
`;

/** One HTTP GET from inside `from`; the echo server's JSON answer, or an error. */
export async function requestFromPod(cluster: Cluster, from: Pod, host: string, port: number): Promise<{ name: string; version: string; remoteAddress: string }> {
  const r = await cluster.exec(from, [process.execPath, '-e', HTTP_CLIENT, host, String(port)], { timeoutMs: 20_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let o: { status?: number; body?: string; error?: string };
  try { o = JSON.parse(line) as typeof o; } catch { throw new Error(`no answer from the client in ${from.name}: ${(r.stdout + r.stderr).trim().slice(0, 500)}`); }
  if (o.error) throw new Error(`${from.name} -> ${host}:${port}: ${o.error}`);
  if (o.status !== 200) throw new Error(`${from.name} -> ${host}:${port}: HTTP ${o.status}`);
  return JSON.parse(o.body ?? '') as { name: string; version: string; remoteAddress: string };
}

/** Sums a Prometheus counter over the series whose labels include all of `match` (exact values). */
export function sumMetric(text: string, name: string, match: Readonly<Record<string, string>>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const brace = line.indexOf('{');
    const close = line.lastIndexOf('}');
    const labels = new Map<string, string>();
    if (brace >= 0 && close > brace) {
      for (const m of line.slice(brace + 1, close).matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels.set(m[1]!, m[2]!);
    }
    if (!Object.entries(match).every(([k, v]) => labels.get(k) === v)) continue;
    const value = Number(line.slice((close >= 0 ? close : name.length) + 1).trim().split(' ')[0]);
    if (Number.isFinite(value)) sum += value;
  }
  return sum;
}

/** Starts the mesh on a built cluster; see the file comment for the order. */
/**
 * The agents run with the V8 flag the DaemonSet sets (daemonset/node-agent.yaml): a burst of new
 * connections grows the young generation and a full GC never gives it back; capped at 4 MB, the
 * RSS per extra idle tunnel fell from ~48 kB to ~28 kB (bench/l4).
 */
const AGENT_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  NODE_OPTIONS: [process.env.NODE_OPTIONS, '--max-semi-space-size=4'].filter(Boolean).join(' '),
};

export async function startMesh(o: MeshOptions): Promise<RunningMesh> {
  const { cluster, dir } = o;
  const ports = meshPorts(o.portBase ?? 15000);
  const logDir = join(dir, 'logs');
  const stateDir = join(dir, 'control');
  mkdirSync(logDir, { recursive: true });
  const level = ['--log-level', o.logLevel ?? 'info'];
  const programs: Program[] = [];
  let stopped: Promise<void> | undefined;
  let failed = false;

  const stop = (): Promise<void> => stopped ??= (async () => {
    const agents = programs.filter((p) => p.name.startsWith('agent'));
    // agents first: they drain their pods' connections and still need the control plane meanwhile
    await Promise.all(agents.map((p) => p.stop(10_000)));
    await Promise.all(programs.filter((p) => !agents.includes(p)).map((p) => p.stop(5_000)));
  })();
  const watch = (p: Program): void => {
    void p.exited.then((how) => {
      if (p.stopping || failed || stopped) return;
      failed = true;
      o.onFailure(p.failure(how));
    });
  };

  try {
    // --- control plane
    const control = new Program({
      name: 'control plane', logFile: join(logDir, 'control.log'),
      args: ['control', ...level, '--dir', dir, '--config-dir', o.configDir, '--state-dir', stateDir, '--listen', '127.0.0.1',
        '--ws-port', String(ports.ws), '--wss-port', String(ports.wss), '--status-port', String(ports.status)],
    });
    programs.push(control);
    await waitFor('control plane ready (/ready)', [control],
      async () => ((await httpGet('127.0.0.1', ports.status, '/ready')).status === 200 ? true : undefined), { timeoutMs: START_TIMEOUT_MS, ...(o.cancelled ? { cancelled: o.cancelled } : {}) });
    const tokenFile = join(stateDir, 'bootstrap-token');
    const controlUrl = `ws://127.0.0.1:${ports.ws}`;

    // --- one agent per node
    const agents: AgentInfo[] = cluster.nodes.map((n, k) => {
      const p = ports.agent(k + 1);
      const agentDir = join(dir, 'agents', n.name);
      const socketPath = join(agentDir, 'agent.sock');
      if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
        throw new MeshError('AMBIT_CONFIG_INVALID', `--dir: ${dir} is too long: the agent socket ${socketPath} exceeds ${MAX_SOCKET_PATH} bytes`);
      }
      return { node: n.name, adminPort: p.admin, metricsPort: p.metrics, readinessPort: p.readiness, socketPath, logFile: join(logDir, `agent-${n.name}.log`) };
    });
    const agentPrograms = agents.map((a) => {
      const prog = new Program({
        name: `agent ${a.node}`, logFile: a.logFile, env: AGENT_ENV,
        args: ['agent', ...level, '--node', a.node, '--control-url', controlUrl, '--token-file', tokenFile,
          '--state-dir', join(dir, 'agents', a.node), '--admin-port', String(a.adminPort), '--metrics-port', String(a.metricsPort),
          '--readiness-port', String(a.readinessPort), '--public-host', '127.0.0.1', '--netns-prefix', cluster.prefix, '--drain-ms', '5000'],
      });
      programs.push(prog);
      return prog;
    });
    await Promise.all(agents.map((a, k) => waitFor(`agent ${a.node} ready (/healthz/ready)`, [control, agentPrograms[k]!],
      async () => ((await httpGet('127.0.0.1', a.readinessPort, '/healthz/ready')).status === 200 ? true : undefined), { timeoutMs: START_TIMEOUT_MS, ...(o.cancelled ? { cancelled: o.cancelled } : {}) })));

    // --- CNI: hand every pod's netns to its node's agent (not yet ambient: remembered, not captured)
    const byNode = new Map(agents.map((a) => [a.node, a]));
    await Promise.all(cluster.pods.map((pod) => cniAdd(pod, byNode.get(pod.node)!.socketPath)));

    // --- opt the namespaces in, through the YAML the control plane watches
    const ambientNs = o.ambientNamespaces ?? ['default'];
    for (const ns of ambientNs) cluster.setNamespaceLabels(ns, { [AMBIENT_LABEL]: 'ambient' });
    writeFileAtomic(join(o.configDir, 'cluster.yaml'), cluster.toYaml());

    // --- every ambient pod enrolled, listening, with its certificate
    await Promise.all(agents.map((a, k) => {
      const want = cluster.pods.filter((p) => p.node === a.node && ambientNs.includes(p.namespace)).map((p) => `${p.namespace}/${p.name}`).sort();
      return waitFor(`agent ${a.node}: pods ${want.join(', ')} enrolled with certificates`, [control, agentPrograms[k]!], async () => {
        const r = await httpGet('127.0.0.1', a.adminPort, '/config_dump');
        if (r.status !== 200) throw new Error(`config_dump: HTTP ${r.status}`);
        const d = JSON.parse(r.body) as ConfigDump;
        const failures = Object.entries(d.failed ?? {});
        if (failures.length > 0) throw new Error(`enrolment failed: ${failures.map(([k2, v]) => `${k2}: ${v}`).join('; ')}`);
        const have = (d.enrolled ?? []).filter((e) => e.listening).map((e) => `${e.namespace}/${e.name}`).sort();
        const certsOk = (d.certificates ?? []).every((c) => c.notAfter !== undefined);
        return d.ready === true && have.join() === want.join() && certsOk ? true : undefined;
      }, { timeoutMs: START_TIMEOUT_MS, ...(o.cancelled ? { cancelled: o.cancelled } : {}) });
    }));

    for (const p of programs) watch(p);
    return {
      controlUrl, statusPort: ports.status, controlLog: control.logFile, agents,
      stop,
      killSync: () => { for (const p of programs) p.killSync(); },
      programs: () => programs.filter((p) => p.running).map((p) => ({ name: p.name, pid: p.pid! })),
    };
  } catch (e) {
    failed = true;
    await stop().catch((e2: unknown) => log.error('stopping the programs failed', { err: errorMessage(e2) }));
    throw e;
  }
}

/**
 * The start-up check: a request from `client` to the service VIP is answered, and the client's
 * node agent counted an mTLS connection for it (so it went through HBONE, not around the mesh).
 */
export async function checkMesh(cluster: Cluster, mesh: RunningMesh, client: Pod, service: Service, port: number): Promise<MeshCheck> {
  const agent = mesh.agents.find((a) => a.node === client.node);
  if (!agent) throw new MeshError('AMBIT_BUG', `no agent on ${client.node}`);
  const metric = 'istio_tcp_connections_opened_total';
  const match = { reporter: 'source', source_workload: client.name, connection_security_policy: 'mutual_tls' };
  const count = async (): Promise<number> => sumMetric((await httpGet('127.0.0.1', agent.metricsPort, '/metrics')).body, metric, match);
  const before = await count();
  const answer = await requestFromPod(cluster, client, service.clusterIP, port);
  const after = await count();
  if (after <= before) {
    throw new MeshError('AMBIT_PROCESS_FAILED',
      `${client.name} -> ${service.clusterIP}:${port} was answered by ${answer.name}, but the agent on ${client.node} counted no mTLS connection for it: the request bypassed the mesh`);
  }
  return { answeredBy: answer.name, mtlsConnectionsOpened: after };
}
