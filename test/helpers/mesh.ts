/**
 * A fluent harness for the network-namespace tier: a one-machine cluster (src/local), a control
 * channel, one real node agent per node, and helpers to run clients inside pods.
 *
 *   const mesh = await createMesh(t, { nodes: 2 });
 *   const a = await mesh.pod({ name: 'a', node: 'node-1', ambient: true });
 *   await mesh.echo(b);
 *   const r = await mesh.http(a, b.ip, 8080);
 *
 * The control channel is a static one driven from the cluster state (the in-process control
 * plane replaces it where available); the agents, capture, TLS and HTTP/2 are all real.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Identity } from '../../src/identity/index.js';
import { Snapshot, serviceKey, type Authorization, type Service, type Workload } from '../../src/model/index.js';
import { createCluster, startEchoServer, type Cluster, type EchoHandle, type Pod } from '../../src/local/index.js';
import * as native from '../../src/native/index.js';
import { createAgent, sendCniRequest, type Agent, type AgentOptions, type ControlChannel } from '../../src/node-agent/index.js';
import { makeTestPki, type TestPki } from './pki.js';
import { parseAllDocuments } from 'yaml';
import { createControlPlane, type ControlPlane } from '../../src/control/app.js';
import type { ConfigSource, KubeObject } from '../../src/control/config/types.js';
import { BootstrapTokenAuthenticator } from '../../src/control/push/index.js';

/** Feeds the control plane the cluster's objects plus the test's extra YAML. */
class ClusterSource implements ConfigSource {
  #fn: ((o: readonly KubeObject[], origin: string) => void) | undefined;
  #last: KubeObject[] = [];
  async start(fn: (o: readonly KubeObject[], origin: string) => void): Promise<void> { this.#fn = fn; fn(this.#last, 'mesh'); }
  async stop(): Promise<void> { this.#fn = undefined; }
  emit(objects: KubeObject[]): void { this.#last = objects; this.#fn?.(objects, 'mesh'); }
}

function yamlObjects(text: string): KubeObject[] {
  return parseAllDocuments(text).map((d) => d.toJS() as KubeObject).filter((o) => o && typeof o === 'object');
}

const AMBIENT = 'istio.io/dataplane-mode';

/** A control channel whose snapshot the test sets; certificates come from a real test CA. */
export class StaticControl extends EventEmitter implements ControlChannel {
  snapshot: Snapshot = Snapshot.empty();
  readonly ready: Promise<void>;
  #resolve!: () => void;
  #version = 1;
  #down = false;
  constructor(readonly pki: TestPki) {
    super();
    this.ready = new Promise((r) => { this.#resolve = r; });
  }
  start(): void { this.#resolve(); }
  async close(): Promise<void> { /* shared by agents; nothing to release */ }
  /** Simulates a control-plane outage for certificate requests. */
  setDown(down: boolean): void { this.#down = down; }
  async requestCertificate(csrPem: string, id: Identity): Promise<{ chainPem: string[]; rootsPem: string }> {
    if (this.#down) throw new Error('control plane unavailable');
    return { chainPem: this.pki.ca.sign(csrPem, id), rootsPem: this.pki.ca.rootsPem };
  }
  publish(input: { workloads: Workload[]; services: Service[]; authorizations: Authorization[] }): Snapshot {
    this.snapshot = Snapshot.build(input, this.#version++);
    this.emit('snapshot', this.snapshot);
    return this.snapshot;
  }
}

export interface MeshPodOptions {
  name: string;
  node: string;
  namespace?: string;
  serviceAccount?: string;
  labels?: Record<string, string>;
  /** label the pod istio.io/dataplane-mode=ambient; default false */
  ambient?: boolean;
  /** hand the netns to the node agent over its CNI socket (like the CNI plugin); default true */
  cni?: boolean;
}

export interface ClientResult {
  ok: boolean;
  /** parsed JSON body (echo server) when ok */
  body?: { name: string; version: string; remoteAddress: string; podIP: string; headers: Record<string, string> };
  /** error code (ECONNRESET, ECONNREFUSED, ...) when not ok */
  error?: string;
}

// A tiny HTTP/TCP client run with `node -e` inside a pod: prints one JSON line.
const CLIENT = `
const net = require('node:net');
const [ip, port, mode, payload, holdMs] = process.argv.slice(1);
const s = net.connect({ host: ip, port: Number(port) });
let out = '';
const done = (o) => { process.stdout.write(JSON.stringify(o) + '\\n'); process.exit(0); };
s.setTimeout(8000, () => done({ ok: false, error: 'ETIMEDOUT' }));
s.on('error', (e) => done({ ok: false, error: e.code || e.message }));
s.on('data', (d) => { out += d; });
s.on('end', () => {
  if (mode === 'tcp') return done({ ok: true, data: out });
  const i = out.indexOf('\\r\\n\\r\\n');
  if (!out.startsWith('HTTP/1.1 200') || i < 0) return done({ ok: false, error: 'bad response: ' + out.slice(0, 80) });
  try { done({ ok: true, body: JSON.parse(out.slice(i + 4)) }); } catch (e) { done({ ok: false, error: 'bad body' }); }
});
s.on('connect', () => {
  if (mode === 'tcp') { s.write(payload); setTimeout(() => s.end(), Number(holdMs || 0)); }
  else s.write('GET / HTTP/1.0\\r\\nhost: ' + ip + '\\r\\nconnection: close\\r\\n\\r\\n');
});
`;

// A long-lived TCP client: each stdin line is sent; each echo is printed as {data}; the close as {closed, error}.
const STREAM_CLIENT = `
const net = require('node:net');
const [ip, port] = process.argv.slice(1);
const s = net.connect({ host: ip, port: Number(port) });
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
s.on('connect', () => out({ connected: true }));
s.on('data', (d) => out({ data: d.toString() }));
s.on('error', (e) => { out({ closed: true, error: e.code || e.message }); process.exit(0); });
s.on('close', () => { out({ closed: true }); process.exit(0); });
process.stdin.on('data', (d) => s.write(d.toString().trim()));
process.stdin.on('end', () => s.end());
`;

/** A TCP connection held open from inside a pod. */
export interface OpenConnection {
  /** sends `text` and resolves with the next chunk echoed back */
  roundTrip(text: string): Promise<string>;
  /** resolves when the connection closes, with the client's error code if any */
  closed: Promise<string | undefined>;
  end(): void;
}

export interface MeshOptions {
  nodes: number;
  /** 'real': the in-process control plane (YAML in, xDS over ws, CA); default 'static' */
  control?: 'static' | 'real';
  /** extra agent options (all agents) */
  agent?: Partial<AgentOptions>;
  /** also give nodes and pods IPv6 (ULA) addresses (src/local createCluster); default false */
  ipv6?: boolean;
}

export class Mesh {
  readonly cluster: Cluster;
  readonly control: StaticControl;
  readonly agents = new Map<string, Agent>();
  readonly #dir: string;
  readonly #agentOpts: Partial<AgentOptions>;
  readonly #policies: Authorization[] = [];
  readonly #echo: EchoHandle[] = [];
  readonly #nsLabels = new Map<string, Record<string, string>>();
  /** real control plane mode */
  real?: { cp: ControlPlane; source: ClusterSource; token: string; url: string; extraYaml: string };

  constructor(cluster: Cluster, control: StaticControl, dir: string, agentOpts: Partial<AgentOptions>) {
    this.cluster = cluster;
    this.control = control;
    this.#dir = dir;
    this.#agentOpts = agentOpts;
  }

  get trustDomain(): string { return this.control.pki.trustDomain; }

  uidOf(p: Pod): string { return `${this.cluster.name}//Pod/${p.namespace}/${p.name}`; }

  /** Netns paths of this cluster only: parallel test files must not find each other's pods. */
  netnsCandidates = async (): Promise<string[]> => this.cluster.netnsNames.map((n) => `/run/netns/${n}`);

  /** Starts `node`'s agent; `extra` overrides the mesh's agent options for this one. */
  async startAgent(node: string, extra: Partial<AgentOptions> = {}): Promise<Agent> {
    const agent = this.#createAgent(node, extra);
    await agent.start();
    this.agents.set(node, agent);
    return agent;
  }

  /** A new agent for `node` (not started; same state directory as the running one). */
  newAgent(node: string, extra: Partial<AgentOptions> = {}): Agent { return this.#createAgent(node, extra); }

  #createAgent(node: string, extra: Partial<AgentOptions> = {}): Agent {
    return createAgent({
      node, controlUrl: this.real?.url ?? 'static://', token: this.real?.token ?? 'static', stateDir: join(this.#dir, node), trustDomain: this.trustDomain,
      ports: { admin: 0, metrics: 0, readiness: 0 }, adminHost: '127.0.0.1', publicHost: '127.0.0.1',
      ...(this.real ? {} : { control: this.control }), netnsCandidates: this.netnsCandidates, unenrolDrainMs: 1000, retryMs: 500, certWaitMs: 1000,
      // a pod that cannot start in the mesh is refused after 3 s rather than the default 20 s
      cniAddWaitMs: 3000,
      ...this.#agentOpts, ...extra,
    });
  }

  /**
   * Replaces a node's agent with a new instance (same state directory), as an upgrade does:
   * - 'overlap' (a rolling update with maxSurge 1, maxUnavailable 0): the new agent starts next
   *   to the old one and takes its pods over; then the old one is terminated (SIGTERM);
   * - 'restart': the old agent is terminated first (it keeps serving while it waits for a
   *   successor), then the new one starts and takes over.
   * Resolves with the new agent once the old one has stopped (its open connections drained).
   */
  async replaceAgent(node: string, mode: 'overlap' | 'restart' = 'overlap', drainMs = 5_000): Promise<Agent> {
    const old = this.agent(node);
    const terminated = mode === 'restart' ? old.terminate(drainMs) : undefined;
    const fresh = this.#createAgent(node);
    try {
      await fresh.start();
    } catch (e) {
      await fresh.stop(0);
      throw e;
    }
    this.agents.set(node, fresh);
    await (terminated ?? old.terminate(drainMs));
    return fresh;
  }

  async stopAgent(node: string, deadlineMs = 1000): Promise<void> {
    const a = this.agents.get(node);
    this.agents.delete(node);
    await a?.stop(deadlineMs);
  }

  agent(node: string): Agent {
    const a = this.agents.get(node);
    if (!a) throw new Error(`no agent on ${node}`);
    return a;
  }

  /** Adds a pod, publishes the model, and (like CNI) hands its netns to the node agent. */
  async pod(o: MeshPodOptions): Promise<Pod> {
    const labels = { app: o.name, ...o.labels, ...(o.ambient ? { [AMBIENT]: 'ambient' } : {}) };
    const p = await this.cluster.addPod({
      name: o.name, node: o.node, labels, namespace: o.namespace ?? 'default', serviceAccount: o.serviceAccount ?? o.name,
    });
    await this.publish();
    const agent = this.agents.get(o.node);
    if (agent && o.cni !== false) {
      const fd = native.openNetns(p.netnsPath);
      try {
        await sendCniRequest({ native, path: agent.socketPath }, { op: 'ADD', name: p.name, namespace: p.namespace, ip: p.ip }, fd);
      } finally {
        native.closeFd(fd);
      }
    }
    return p;
  }

  async setPodLabels(name: string, labels: Record<string, string>): Promise<void> {
    this.cluster.setPodLabels(name, labels);
    await this.publish();
  }

  setNamespaceLabels(ns: string, labels: Record<string, string>): Promise<void> {
    this.#nsLabels.set(ns, labels);
    this.cluster.setNamespaceLabels(ns, labels);
    return this.publish();
  }

  async service(name: string, selector: Record<string, string>, ports: Array<{ port: number; targetPort: number }>, namespace = 'default'): Promise<Service> {
    this.cluster.addService({ name, namespace, selector, ports });
    await this.publish();
    const s = this.control.snapshot.service(`${namespace}/${name}.${namespace}.svc.cluster.local`);
    if (!s) throw new Error('service not in the model');
    return s;
  }

  async setPolicies(p: Authorization[]): Promise<void> {
    this.#policies.splice(0, this.#policies.length, ...p);
    await this.publish();
  }

  /** Extra Kubernetes YAML (AuthorizationPolicy, PeerAuthentication...) for the real control plane. */
  async applyYaml(text: string, o: { waitForAgents?: boolean } = {}): Promise<void> {
    if (!this.real) throw new Error('applyYaml needs control: real');
    this.real.extraYaml = text;
    // routes (VirtualService, HTTPRoute ...) change no agent's snapshot: nothing to wait for there
    if (o.waitForAgents === false) this.real.source.emit([...yamlObjects(this.cluster.toYaml()), ...yamlObjects(text)]);
    else await this.publish();
  }

  /** Resolves once every agent has applied a snapshot satisfying `pred`. */
  async converge(pred: (s: Snapshot) => boolean): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.whenSnapshot(pred)));
  }

  /** Model from the cluster state; then every agent applies it. */
  async publish(): Promise<void> {
    if (this.real) {
      const objects = [...yamlObjects(this.cluster.toYaml()), ...yamlObjects(this.real.extraYaml)];
      const before = new Set([...this.agents.values()].map((a) => a.snapshot()));
      this.real.source.emit(objects);
      const pods = this.cluster.pods.length;
      // wait for a push that carries every pod and is newer than what the agents had
      await this.converge((s) => s.counts.workloads === pods && !before.has(s));
      return;
    }
    const st = this.cluster.state();
    const services: Service[] = st.services.map((s) => ({
      name: s.name, namespace: s.namespace, hostname: `${s.name}.${s.namespace}.svc.cluster.local`,
      vips: [s.clusterIP], ports: s.ports.map((p) => ({ port: p.port, targetPort: p.targetPort })),
    }));
    const workloads: Workload[] = st.pods.map((p) => {
      const nsMode = this.#nsLabels.get(p.namespace)?.[AMBIENT];
      const mode = p.labels[AMBIENT] ?? nsMode;
      const svcKeys = st.services
        .filter((s) => s.namespace === p.namespace && Object.entries(s.selector).every(([k, v]) => p.labels[k] === v))
        .map((s) => serviceKey({ namespace: s.namespace, hostname: `${s.name}.${s.namespace}.svc.cluster.local` }));
      const selected = this.#policies.filter((a) => a.scope === 'workload' && a.namespace === p.namespace).map((a) => `${a.namespace}/${a.name}`);
      return {
        uid: this.uidOf(p), name: p.name, namespace: p.namespace, serviceAccount: p.serviceAccount, trustDomain: this.trustDomain,
        node: p.node, addresses: p.ips, labels: p.labels, canonicalName: p.labels.app ?? p.name, canonicalRevision: p.labels.version ?? 'latest',
        workloadName: p.name, workloadType: 'pod', tunnel: mode === 'ambient' ? 'hbone' : 'none', healthy: true, services: svcKeys,
        authorizationPolicies: selected,
      };
    });
    this.control.publish({ workloads, services, authorizations: this.#policies });
    await Promise.all([...this.agents.values()].map((a) => a.reconcile()));
  }

  async echo(p: Pod, version?: string): Promise<EchoHandle> {
    const h = await startEchoServer(this.cluster, p, { name: p.name, version: version ?? p.name });
    this.#echo.push(h);
    return h;
  }

  /** HTTP GET from inside `from` to ip:port. */
  async http(from: Pod, ip: string, port = 8080): Promise<ClientResult> {
    const r = await this.cluster.exec(from, [process.execPath, '-e', CLIENT, ip, String(port), 'http'], { timeoutMs: 20_000 });
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as ClientResult;
  }

  /** Raw TCP: send `payload`, half-close after `holdMs`, collect the echo. */
  async tcp(from: Pod, ip: string, port: number, payload: string, holdMs = 0): Promise<{ ok: boolean; data?: string; error?: string }> {
    const r = await this.cluster.exec(from, [process.execPath, '-e', CLIENT, ip, String(port), 'tcp', payload, String(holdMs)], { timeoutMs: 20_000 });
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; data?: string; error?: string };
  }

  /** Opens a TCP connection from `from` and keeps it open (for live-policy and drain tests). */
  async openTcp(from: Pod, ip: string, port: number): Promise<OpenConnection> {
    const child = this.cluster.spawn(from, [process.execPath, '-e', STREAM_CLIENT, ip, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const waiters: Array<(o: { data?: string; closed?: boolean; error?: string; connected?: boolean }) => void> = [];
    let buf = '';
    let closedResolve!: (e: string | undefined) => void;
    const closed = new Promise<string | undefined>((r) => { closedResolve = r; });
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const o = JSON.parse(buf.slice(0, nl)) as { data?: string; closed?: boolean; error?: string; connected?: boolean };
        buf = buf.slice(nl + 1);
        if (o.closed) closedResolve(o.error);
        waiters.shift()?.(o);
      }
    });
    child.once('exit', () => closedResolve('exited'));
    const next = () => new Promise<{ data?: string; closed?: boolean; error?: string; connected?: boolean }>((r) => waiters.push(r));
    const first = await next();
    if (!first.connected) throw new Error(`connection from ${from.name} to ${ip}:${port} failed: ${first.error ?? 'closed'}`);
    return {
      roundTrip: async (text) => {
        const p = next();
        child.stdin?.write(text + '\n');
        const o = await p;
        if (o.data === undefined) throw new Error(`connection closed: ${o.error ?? 'eof'}`);
        return o.data;
      },
      closed,
      end: () => { child.stdin?.end(); },
    };
  }

  /**
   * Starts the real control plane (again) on `port` (0: any free port), fed the cluster's objects
   * plus the test's extra YAML, with the state (CA, bootstrap token) of the first start.
   */
  async startControl(port?: number, token?: string): Promise<ControlPlane> {
    const cpDir = join(this.#dir, 'control');
    const { authenticator } = await BootstrapTokenAuthenticator.loadOrCreate(cpDir, this.trustDomain);
    const source = new ClusterSource();
    source.emit([...yamlObjects(this.cluster.toYaml()), ...yamlObjects(this.real?.extraYaml ?? '')]);
    const cp = createControlPlane({
      source, ca: this.control.pki.ca, trustDomain: this.trustDomain, stateDir: cpDir, authenticator, debounceMs: 5,
      listen: { host: '127.0.0.1', plainPort: port ?? this.controlPort, tlsPort: 0, statusPort: 0 },
    });
    this.real = { cp, source, token: token ?? this.real?.token ?? '', url: this.real?.url ?? '', extraYaml: this.real?.extraYaml ?? '' };
    await cp.start();
    this.real.url = `ws://127.0.0.1:${cp.addresses.plain!.port}`;
    return cp;
  }

  /** The real control plane's plain (ws) port. */
  get controlPort(): number {
    const m = /:(\d+)$/.exec(this.real?.url ?? '');
    if (!m) throw new Error('no real control plane was started');
    return Number(m[1]);
  }

  /** Stops the real control plane (agents keep running on what they have, and reconnect). */
  async stopControl(): Promise<void> {
    await this.real?.cp.stop();
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.agents.keys()].map((n) => this.stopAgent(n, 0)));
    await this.real?.cp.stop();
    await Promise.all(this.#echo.map((h) => h.stop().catch(() => undefined)));
    await this.cluster.destroy();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

export async function createMesh(t: ExecutionContext | undefined, o: MeshOptions): Promise<Mesh> {
  const cluster = await createCluster({ nodes: o.nodes, ipv6: o.ipv6 === true });
  const dir = mkdtempSync(join(tmpdir(), 'ambit-mesh-'));
  const mesh = new Mesh(cluster, new StaticControl(makeTestPki()), dir, o.agent ?? {});
  t?.teardown(() => mesh.destroy());
  try {
    if (o.control === 'real') {
      const cpDir = join(dir, 'control');
      mkdirSync(cpDir, { recursive: true });
      const { token } = await BootstrapTokenAuthenticator.loadOrCreate(cpDir, mesh.trustDomain);
      await mesh.startControl(0, token);
    }
    for (const n of cluster.nodes) await mesh.startAgent(n.name);
  } catch (e) {
    await mesh.destroy();
    throw e;
  }
  return mesh;
}
