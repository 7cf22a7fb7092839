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
import { Program, httpGet, httpGetAt, selfArgv, waitFor, type ProgramExit } from './children.js';
import { writeFileAtomic, type UpProgram } from './state-file.js';

const log = logger('cli.mesh');

export const AMBIENT_LABEL = 'istio.io/dataplane-mode';
/** unix socket paths are limited to 108 bytes (sun_path) */
const MAX_SOCKET_PATH = 107;
const START_TIMEOUT_MS = 60_000;

export type { ProgramExit } from './children.js';

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
  /** a program exited while the mesh is up (nobody asked it to): the others keep running */
  readonly onExit: (e: ProgramExit) => void;
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
  /** agents stop (SIGINT: stop accepting, finish open connections), then the control plane. Idempotent. */
  stop(): Promise<void>;
  /**
   * Replaces the node's agent: a new instance takes the pods' sockets over from the running one,
   * which then drains and exits (or, after an exit, starts a new one). Progress lines go to
   * `say`; resolves with a summary, rejects when the new instance fails (the old one serves on).
   */
  restartAgent(node: string, say: (line: string) => void): Promise<string>;
  /** Stops the control plane, starts a new one, waits until the running agents reconnected. */
  restartControl(say: (line: string) => void): Promise<string>;
  /** last resort on process exit */
  killSync(): void;
  /** pids and ports of the running programs (for the state file: `ambit down` stops orphans, `ambit status` asks them) */
  programs(): UpProgram[];
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

/**
 * Runs `ambit cni` the way a container runtime does for a chained plugin: ADD with the pod's netns.
 * `program`: run this CNI program instead (the `ambit-cni` the agent installs on a node).
 */
export function cniAdd(pod: Pod, socketPath: string, program?: string): Promise<void> {
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
    const child = program !== undefined
      ? spawn(program, [], { env, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(file!, [...pre, 'cni'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
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
  instance?: { pid?: number; state?: string };
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

/**
 * The agents run with the V8 flag the DaemonSet sets (daemonset/node-agent.yaml): a burst of new
 * connections grows the young generation and a full GC never gives it back; capped at 4 MB, the
 * RSS per extra idle tunnel fell from ~48 kB to ~28 kB (bench/l4).
 */
const AGENT_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  NODE_OPTIONS: [process.env.NODE_OPTIONS, '--max-semi-space-size=4'].filter(Boolean).join(' '),
};

/** An agent's drain after a handover (its `--drain-ms`), and how long `ambit up` gives it on top before SIGKILL. */
const AGENT_DRAIN_MS = 5_000;
const AGENT_STOP_GRACE_MS = 15_000;

/**
 * Starts the mesh on a built cluster (see the file comment for the order) and supervises it: a
 * program that exits afterwards is reported through `onExit` and the rest keeps serving;
 * `restartAgent` and `restartControl` replace one (or start it again after an exit).
 */
export async function startMesh(o: MeshOptions): Promise<RunningMesh> {
  const { cluster, dir } = o;
  const ports = meshPorts(o.portBase ?? 15000);
  const logDir = join(dir, 'logs');
  const stateDir = join(dir, 'control');
  mkdirSync(logDir, { recursive: true });
  const level = ['--log-level', o.logLevel ?? 'info'];
  /** every program that may still run: current instances and old ones draining */
  const programs = new Set<Program>();
  /** the current instance per role ("control plane", "agent node-1") */
  const current = new Map<string, Program>();
  let stopped: Promise<void> | undefined;
  /** set once the start is done: from then on an exit is reported, not a failed start */
  let supervising = false;
  /** new instances a restart is still waiting for: the restart reports their failure */
  const onTrial = new Set<Program>();
  /** restarts run one at a time */
  let ops: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const r = ops.then(fn);
    ops = r.catch(() => undefined);
    return r;
  };
  const cancelled = (): string | undefined => (stopped ? 'ambit up is stopping' : o.cancelled?.());

  const stop = (): Promise<void> => stopped ??= (async () => {
    const all = [...programs];
    const agents = all.filter((p) => p.name.startsWith('agent'));
    // Agents first, with SIGINT: stop accepting and let open connections finish (bounded by
    // --drain-ms). SIGTERM would keep each one serving until a successor took over, which at a
    // teardown never comes: its whole drain deadline, for nothing.
    await Promise.all(agents.map((p) => p.stop(AGENT_STOP_GRACE_MS, 'SIGINT')));
    await Promise.all(all.filter((p) => !agents.includes(p)).map((p) => p.stop(5_000)));
  })();

  const spawnProgram = (role: string, restartArgs: string, po: Omit<ConstructorParameters<typeof Program>[0], 'name'>): Program => {
    const p = new Program({ ...po, name: role });
    programs.add(p);
    current.set(role, p);
    void p.exited.then((how) => {
      programs.delete(p);
      if (p.stopping || stopped || !supervising || onTrial.has(p)) return;
      o.onExit({ name: role, pid: p.pid, how, logFile: p.logFile, restart: restartArgs });
    });
    return p;
  };

  const controlArgs = ['control', ...level, '--dir', dir, '--config-dir', o.configDir, '--state-dir', stateDir, '--listen', '127.0.0.1',
    '--ws-port', String(ports.ws), '--wss-port', String(ports.wss), '--status-port', String(ports.status)];
  const controlLog = join(logDir, 'control.log');
  const startControl = (append: boolean): Program => spawnProgram('control plane', 'control', { logFile: controlLog, args: controlArgs, append });
  const controlReady = (p: Program): Promise<true> => waitFor('control plane ready (/ready)', [p],
    async () => ((await httpGet('127.0.0.1', ports.status, '/ready')).status === 200 ? true : undefined), { timeoutMs: START_TIMEOUT_MS, cancelled });
  const tokenFile = join(stateDir, 'bootstrap-token');
  const controlUrl = `ws://127.0.0.1:${ports.ws}`;

  const agents: AgentInfo[] = cluster.nodes.map((n, k) => {
    const p = ports.agent(k + 1);
    const agentDir = join(dir, 'agents', n.name);
    const socketPath = join(agentDir, 'agent.sock');
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `--dir: ${dir} is too long: the agent socket ${socketPath} exceeds ${MAX_SOCKET_PATH} bytes`);
    }
    return { node: n.name, adminPort: p.admin, metricsPort: p.metrics, readinessPort: p.readiness, socketPath, logFile: join(logDir, `agent-${n.name}.log`) };
  });
  const startAgent = (a: AgentInfo, append: boolean): Program => spawnProgram(`agent ${a.node}`, `agent ${a.node}`, {
    logFile: a.logFile, env: AGENT_ENV, append,
    args: ['agent', ...level, '--node', a.node, '--control-url', controlUrl, '--token-file', tokenFile,
      '--state-dir', join(dir, 'agents', a.node), '--admin-port', String(a.adminPort), '--metrics-port', String(a.metricsPort),
      '--readiness-port', String(a.readinessPort), '--public-host', '127.0.0.1', '--netns-prefix', cluster.prefix, '--drain-ms', String(AGENT_DRAIN_MS)],
  });

  /** The agents the control plane should see connected: those running now. */
  const connectedAgents = async (): Promise<number> =>
    sumMetric((await httpGet('127.0.0.1', ports.status, '/metrics')).body, 'ambit_control_connected_clients', { role: 'agent' });

  const restartAgent = (node: string, say: (line: string) => void): Promise<string> => {
    const a = agents.find((x) => x.node === node);
    if (!a) return Promise.reject(new MeshError('AMBIT_CONFIG_INVALID', `restart: no agent "${node}"; nodes: ${agents.map((x) => x.node).join(', ')}`));
    return serial(async () => {
      if (cancelled()) throw new MeshError('AMBIT_PROCESS_FAILED', `restart agent ${node}: ${cancelled()}`);
      const role = `agent ${node}`;
      const old = current.get(role);
      const live = old?.running === true ? old : undefined;
      // The new instance first: it takes every pod's listening sockets from the running one
      // (src/node-agent/handover.ts) before that one stops accepting, so nothing is refused.
      const fresh = startAgent(a, true);
      onTrial.add(fresh);
      say(live ? `agent ${node}: new instance pid ${fresh.pid} taking over from pid ${live.pid}` : `agent ${node}: starting pid ${fresh.pid}`);
      // its own admin socket (per instance; the node's admin port stays the old one's until the handover)
      const own = join(dir, 'agents', node, `agent-${fresh.pid}.sock`);
      let pods: number;
      try {
        pods = await waitFor(`agent ${node}: new instance pid ${fresh.pid} serving`, [fresh], async () => {
          const r = await httpGetAt({ socketPath: own }, '/config_dump');
          if (r.status !== 200) return undefined;
          const d = JSON.parse(r.body) as ConfigDump;
          return d.instance?.state === 'serving' && d.ready === true ? (d.enrolled ?? []).length : undefined;
        }, { timeoutMs: START_TIMEOUT_MS, cancelled });
      } catch (e) {
        // the old instance (if any) keeps serving: a failed handover leaves it in charge
        await fresh.stop(AGENT_STOP_GRACE_MS, 'SIGINT');
        if (!live) throw e;
        current.set(role, live);
        throw new MeshError('AMBIT_PROCESS_FAILED', `the new instance failed; pid ${live.pid} keeps serving (if it is stuck: kill -9 ${live.pid}, `
          + `then restart again to start a new one on its own): ${errorMessage(e)}`, { cause: e });
      } finally {
        onTrial.delete(fresh);
      }
      say(`agent ${node}: pid ${fresh.pid} serving ${pods} pod(s)${live ? ' on the sockets it took over' : ''}`);
      if (!live) return `agent ${node} started (pid ${fresh.pid})`;
      // SIGTERM to a handed-over agent: its open connections finish (up to --drain-ms), then it exits
      await live.stop(AGENT_DRAIN_MS + AGENT_STOP_GRACE_MS);
      say(`agent ${node}: old instance pid ${live.pid} drained and exited (${await live.exited})`);
      return `agent ${node} replaced: pid ${live.pid} -> ${fresh.pid}`;
    });
  };

  const restartControl = (say: (line: string) => void): Promise<string> => serial(async () => {
    if (cancelled()) throw new MeshError('AMBIT_PROCESS_FAILED', `restart control: ${cancelled()}`);
    const old = current.get('control plane');
    // one control plane at a time (fixed ports); the agents keep serving their last config meanwhile
    if (old?.running) {
      say(`control plane: stopping pid ${old.pid}`);
      await old.stop(10_000);
      say(`control plane: pid ${old.pid} exited (${await old.exited})`);
    }
    const fresh = startControl(true);
    say(`control plane: starting pid ${fresh.pid}`);
    onTrial.add(fresh);
    try { await controlReady(fresh); } finally { onTrial.delete(fresh); }
    const started = Date.now();
    const want = agents.filter((a) => current.get(`agent ${a.node}`)?.running).length;
    say(`control plane: pid ${fresh.pid} ready; waiting for ${want} agent(s) to reconnect`);
    await waitFor(`${want} agent(s) reconnected to the control plane`, [fresh],
      async () => ((await connectedAgents()) >= want ? true : undefined), { timeoutMs: START_TIMEOUT_MS, cancelled });
    say(`control plane: ${want} agent(s) reconnected ${((Date.now() - started) / 1000).toFixed(1)} s after it was ready`);
    return `control plane restarted: pid ${old?.pid ?? '-'} -> ${fresh.pid}`;
  });

  try {
    // --- control plane
    const control = startControl(false);
    await controlReady(control);

    // --- one agent per node
    const agentPrograms = agents.map((a) => startAgent(a, false));
    await Promise.all(agents.map((a, k) => waitFor(`agent ${a.node} ready (/healthz/ready)`, [control, agentPrograms[k]!],
      async () => ((await httpGet('127.0.0.1', a.readinessPort, '/healthz/ready')).status === 200 ? true : undefined), { timeoutMs: START_TIMEOUT_MS, cancelled })));

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
      }, { timeoutMs: START_TIMEOUT_MS, cancelled });
    }));

    // an exit between the start and now failed one of the waits above; from here on it is reported
    supervising = true;
    for (const p of [...current.values()]) {
      if (!p.running) throw p.failure(p.child.signalCode ? `signal ${p.child.signalCode}` : `code ${p.child.exitCode ?? '?'}`);
    }
    return {
      controlUrl, statusPort: ports.status, controlLog, agents,
      stop,
      restartAgent,
      restartControl,
      killSync: () => { for (const p of programs) p.killSync(); },
      programs: () => [...programs].filter((p) => p.running).map((p) => {
        const a = agents.find((x) => p.name === `agent ${x.node}`);
        const own = a ? { admin: a.adminPort, metrics: a.metricsPort, readiness: a.readinessPort }
          : p.name === 'control plane' ? { status: ports.status } : undefined;
        return { name: p.name, pid: p.pid!, ...(own ? { ports: own } : {}) };
      }),
    };
  } catch (e) {
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
