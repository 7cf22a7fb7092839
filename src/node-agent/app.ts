/**
 * The node agent, composed: control channel (xDS) -> snapshot -> enrolment of this node's
 * ambient pods (capture rules + per-pod proxies) -> certificates per local identity; plus the
 * CNI socket, admin, metrics and readiness servers. Every I/O seam can be injected for tests.
 */
import { mkdirSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { statSync } from 'node:fs';
import { errorMessage, logger, MeshError } from '../core/index.js';
import { CertManager, spiffeUri, type CertBundle, type Identity } from '../identity/index.js';
import { Snapshot } from '../model/index.js';
import * as realNative from '../native/index.js';
import type { EngineOptions } from '../native/index.js';
import { XdsClient, type TokenSource } from '../xds/index.js';
import { closeHttp, serveHttp } from './admin/admin.js';
import { applyCapture, removeCapture, type CapturePorts } from './enrol/capture.js';
import { admitCniAdd, DEFAULT_EXEMPT_NAMESPACES, type CniAddFacts } from './enrol/cni-admission.js';
import { CniServer } from './enrol/cni-server.js';
import type { CniAdd } from './enrol/cni-protocol.js';
import { ConnectionRegistry } from './proxy/connections.js';
import type { NativeApi, NetnsHandle } from './deps.js';
import { AgentEngine } from './proxy/engine-adapter.js';
import { Enrolment } from './enrol/enrolment.js';
import { defaultNetnsCandidates, findNetnsByIp } from './enrol/netns-scan.js';
import { DEFAULT_POD_PORTS, PodProxy, type PodPorts } from './proxy/pod-proxy.js';
import { AgentTelemetry } from './admin/telemetry.js';

const log = logger('node-agent');

export interface AgentPorts {
  /** admin (`/config_dump`) on `adminHost`; default 15000; 0 = any free port */
  admin?: number;
  /** Prometheus; default 15020 */
  metrics?: number;
  /** readiness; default 15021 */
  readiness?: number;
  /** listeners inside each pod netns; default 15001/15006/15008 */
  pod?: Partial<PodPorts>;
}

/** The control channel as the agent uses it (an XdsClient satisfies it). */
export interface ControlChannel {
  readonly snapshot: Snapshot;
  readonly ready: Promise<void>;
  /**
   * The snapshot is current (connected, answered since the last connect). Left out: current
   * once `ready` resolved. A pod the config does not know is held captured while the config is
   * current, and its CNI ADD waits while it is not.
   */
  readonly current?: boolean;
  on(event: 'snapshot', fn: (s: Snapshot) => void): unknown;
  start(): void;
  close(): Promise<void>;
  requestCertificate(csrPem: string, id: Identity): Promise<{ chainPem: string[]; rootsPem: string }>;
}

/** Certificates as the agent uses them (a CertManager satisfies it). */
export interface AgentCerts {
  get(id: Identity): Promise<CertBundle>;
  peek(id: Identity): CertBundle | undefined;
  track(id: Identity): void;
  untrack(id: Identity): void;
  close(): void;
}

export interface AgentOptions {
  /** this node's name, as pods' `node` in the model */
  node: string;
  /** ws:// or wss:// URL of the control plane */
  controlUrl: string;
  /** bearer token for the control plane, or a function asked on every connect (rotating token files) */
  token: TokenSource;
  /** PEM roots to verify a wss:// control plane */
  controlCaPem?: string;
  /** holds agent.sock; created if missing */
  stateDir: string;
  /** default 'cluster.local' */
  trustDomain?: string;
  ports?: AgentPorts;
  /** default 127.0.0.1 */
  adminHost?: string;
  /** host for metrics and readiness; default 0.0.0.0 */
  publicHost?: string;
  /** install return-path routes so the app sees real client IPs; default true */
  spoofSource?: boolean;
  /** upstream TCP connect timeout, ms; default 10_000 */
  connectTimeoutMs?: number;
  /** drain deadline for a pod leaving the mesh, ms; default 5_000 */
  unenrolDrainMs?: number;
  /** how long a new pod's listeners wait for its first certificate, ms; default 5_000 */
  certWaitMs?: number;
  /** retry failed enrolments this often, ms; default 5_000 */
  retryMs?: number;
  /**
   * How long a CNI ADD waits for its pod to be fit to start inside the mesh (config, capture,
   * certificate, listeners) before it is refused with the reason, ms; default 20_000: below
   * `ambit cni`'s 25 s answer deadline and the runtime's own CNI timeout, which then retries.
   */
  cniAddWaitMs?: number;
  /** namespaces whose pods a CNI ADD never holds back; default kube-system, ambit-system */
  exemptNamespaces?: readonly string[];
  // --- seams ---
  native?: NativeApi;
  control?: ControlChannel;
  certs?: AgentCerts;
  /** netns paths to scan for running pods; default /var/run/netns/* and /proc/<pid>/ns/net */
  netnsCandidates?: () => Promise<string[]>;
  random?: () => number;
  /** the native engine's limits and deadlines (keepalive, idle, abuse budget; defaults in EngineOptions) */
  engineOptions?: EngineOptions;
}

export interface EnrollRequest {
  name: string;
  namespace: string;
  /** netns path, or an fd the agent takes ownership of */
  netns: NetnsHandle;
  ip?: string;
}

export interface Agent {
  /** connect to the control plane, open the CNI socket and servers; resolves when listening (not when ready) */
  start(): Promise<void>;
  /** drain: stop accepting, let connections finish until `deadlineMs`, then close. Capture rules stay. */
  stop(deadlineMs?: number): Promise<void>;
  /** what CNI ADD does, for callers that hold the netns (the local cluster) */
  enroll(r: EnrollRequest): Promise<void>;
  unenroll(namespace: string, name: string): Promise<void>;
  /** resolves once ready (control plane synced and every enrolled pod listening) */
  whenReady(): Promise<void>;
  isReady(): boolean;
  /** one reconcile pass (tests: wait until a snapshot change has been applied) */
  reconcile(): Promise<void>;
  snapshot(): Snapshot;
  /** resolves once a snapshot satisfying `pred` has been applied (pods enrolled/unenrolled, policy rechecked) */
  whenSnapshot(pred: (s: Snapshot) => boolean): Promise<Snapshot>;
  enrolledPods(): Array<{ uid: string; name: string; namespace: string; ips: readonly string[]; listening: boolean; returnPath: boolean }>;
  readonly socketPath: string;
  /** bound ports (after start) */
  readonly ports: { admin: number; metrics: number; readiness: number };
  readonly telemetry: AgentTelemetry;
  readonly connections: ConnectionRegistry;
}

function netnsIdOf(ns: NetnsHandle): string | undefined {
  try {
    const s = statSync(typeof ns === 'number' ? `/proc/self/fd/${ns}` : ns);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

export function createAgent(o: AgentOptions): Agent {
  const native = o.native ?? realNative;
  const trustDomain = o.trustDomain ?? 'cluster.local';
  const podPorts: PodPorts = { ...DEFAULT_POD_PORTS, ...o.ports?.pod };
  const capturePorts: CapturePorts = { outbound: podPorts.outbound, inboundPlain: podPorts.inboundPlain, hbone: podPorts.hbone };
  const control: ControlChannel = o.control ?? new XdsClient({
    url: o.controlUrl, token: o.token, node: o.node, role: 'agent', ...(o.controlCaPem ? { caPem: o.controlCaPem } : {}),
  });
  const certs: AgentCerts = o.certs ?? new CertManager({ request: (csr, id) => control.requestCertificate(csr, id) });
  const telemetry = new AgentTelemetry();
  const connections = new ConnectionRegistry();
  // the addon's engine carries every 15001/15008 connection (HBONE is never terminated in Node)
  const engine = new AgentEngine({ telemetry, connections, engine: { ...o.engineOptions, ...(o.connectTimeoutMs ? { connectTimeoutMs: o.connectTimeoutMs } : {}) } });
  const socketPath = join(o.stateDir, 'agent.sock');
  const candidates = o.netnsCandidates ?? defaultNetnsCandidates;
  const selfNetns = netnsIdOf('/proc/self/ns/net');

  let controlReady = false;
  /** the first reconcile after the control plane synced has finished (pods found or failed) */
  let synced = false;
  let started = false;
  let stopping: Promise<void> | undefined;
  const servers: Server[] = [];
  const bound = { admin: 0, metrics: 0, readiness: 0 };
  let retryTimer: NodeJS.Timeout | undefined;
  const readyWaiters = new Set<() => void>();
  const snapshotWaiters = new Set<{ pred: (s: Snapshot) => boolean; resolve: (s: Snapshot) => void }>();
  const notifySnapshot = (snap: Snapshot) => {
    for (const w of [...snapshotWaiters]) if (w.pred(snap)) { snapshotWaiters.delete(w); w.resolve(snap); }
  };

  const enrolment = new Enrolment({
    node: o.node,
    snapshot: () => control.snapshot,
    applyCapture: (ns) => applyCapture(ns, { ports: capturePorts, returnPath: o.spoofSource ?? true }),
    removeCapture: (ns) => removeCapture(ns),
    findNetns: async (ip) => {
      const exclude = new Set<string>();
      if (selfNetns) exclude.add(selfNetns);
      for (const e of enrolment.enrolled.values()) { const id = netnsIdOf(e.netns); if (id) exclude.add(id); }
      const found = await findNetnsByIp(native, ip, await candidates(), exclude);
      return found?.path;
    },
    createProxy: (pod) => new PodProxy({
      native, snapshot: () => control.snapshot, cert: (id) => certs.peek(id), fetchCert: (id) => certs.get(id), telemetry, connections,
      engine, trustDomain, ports: podPorts, ...(o.certWaitMs !== undefined ? { certWaitMs: o.certWaitMs } : {}), ...(o.connectTimeoutMs ? { connectTimeoutMs: o.connectTimeoutMs } : {}),
      ...(o.random ? { random: o.random } : {}),
    }, pod),
    trackIdentity: (id) => { certs.track(id); },
    untrackIdentity: (id) => { certs.untrack(id); },
    closeFd: (fd) => { try { native.closeFd(fd); } catch { /* already closed */ } },
    enrolledChanged: (n) => telemetry.setActivePods(n),
    ...(o.unenrolDrainMs !== undefined ? { unenrolDrainMs: o.unenrolDrainMs } : {}),
  });

  // CNI ADDs waiting for the agent's state to change (a snapshot applied, a reconcile pass)
  const changeWaiters = new Set<() => void>();
  const wakeAdmissions = () => { for (const fn of changeWaiters) fn(); changeWaiters.clear(); };
  const exempt = new Set(o.exemptNamespaces ?? DEFAULT_EXEMPT_NAMESPACES);
  const admit = async (req: CniAdd, fd: number): Promise<void> => {
    const facts = (): CniAddFacts => ({
      namespace: req.namespace, name: req.name, ip: req.ip, node: o.node, snapshot: control.snapshot,
      synced, current: control.current ?? controlReady, exemptNamespaces: exempt,
    });
    const how = await admitCniAdd({
      facts,
      remember: async () => {
        enrolment.remember({ name: req.name, namespace: req.namespace, ip: req.ip, netns: fd, ownedFd: fd });
        if (synced) await enrolment.reconcile();
      },
      hold: () => enrolment.hold(req.namespace, req.name),
      forget: () => enrolment.forgetIdle(req.namespace, req.name),
      state: (w) => {
        const e = enrolment.enrolled.get(w.uid);
        return {
          enrolled: e !== undefined, listening: e?.proxy.listening ?? false, failure: enrolment.failures.get(w.uid),
          hasCert: certs.peek({ trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount }) !== undefined,
        };
      },
      fetchCert: (id) => { certs.get(id).catch(() => undefined); },
      // no event tells of a certificate's arrival: look again a little later as well
      changed: () => new Promise<void>((resolve) => {
        changeWaiters.add(resolve);
        setTimeout(() => { changeWaiters.delete(resolve); resolve(); }, 200).unref();
      }),
      now: Date.now,
    }, Date.now() + (o.cniAddWaitMs ?? 20_000));
    log.info('cni add admitted', { pod: `${req.namespace}/${req.name}`, as: how });
    notifyReady();
  };

  const cni = new CniServer({
    native, path: socketPath,
    handlers: {
      add: admit,
      del: (req) => enrolment.del(req.namespace, req.name),
    },
  });

  const isReady = (): boolean => {
    if (!controlReady || !synced || !started || stopping) return false;
    // a pod listener that cannot accept (out of fds or memory) until the engine's back-off ends
    if (engine.starved() > 0) return false;
    for (const e of enrolment.enrolled.values()) if (!e.proxy.listening) return false;
    return true;
  };
  const notifyReady = () => {
    wakeAdmissions();
    if (!isReady()) return;
    for (const fn of [...readyWaiters]) fn();
    readyWaiters.clear();
  };

  const onSnapshot = (snap: Snapshot) => {
    // Live policy first: a revoked connection must not outlive the change by a reconcile pass.
    connections.recheck(snap);
    enrolment.reconcile().then(() => { notifyReady(); notifySnapshot(snap); }, (e: unknown) => log.error('reconcile failed', { error: errorMessage(e) }));
  };

  const configDump = () => {
    const snap = control.snapshot;
    const certList: Array<{ identity: string; notBefore: string; notAfter: string } | { identity: string; state: string }> = [];
    const seen = new Set<string>();
    for (const e of enrolment.enrolled.values()) {
      const w = e.workload;
      const id: Identity = { trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount };
      const name = spiffeUri(id);
      if (seen.has(name)) continue;
      seen.add(name);
      const b = certs.peek(id);
      certList.push(b ? { identity: name, notBefore: new Date(b.notBefore).toISOString(), notAfter: new Date(b.notAfter).toISOString() } : { identity: name, state: 'unavailable' });
    }
    return {
      node: o.node,
      ready: isReady(),
      snapshot: {
        version: snap.version, counts: snap.counts,
        workloads: [...snap.workloads], services: [...snap.services], authorizations: [...snap.authorizations],
      },
      enrolled: agent.enrolledPods(),
      failed: Object.fromEntries(enrolment.failures),
      connections: connections.size,
      // the native data path: flows it carries, HBONE sessions, listeners
      engine: engine.stats(),
      certificates: certList,
    };
  };

  const agent: Agent = {
    socketPath,
    telemetry,
    connections,
    get ports() { return { ...bound }; },

    async start() {
      if (started) return;
      mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
      control.on('snapshot', onSnapshot);
      control.ready.then(async () => {
        controlReady = true;
        connections.recheck(control.snapshot);
        await enrolment.reconcile().catch((e: unknown) => log.error('reconcile failed', { error: errorMessage(e) }));
        synced = true;
        notifyReady();
      }, () => undefined);
      control.start();
      await cni.listen();
      const host = o.publicHost ?? '0.0.0.0';
      const admin = await serveHttp(o.adminHost ?? '127.0.0.1', o.ports?.admin ?? 15000, {
        '/config_dump': () => ({ status: 200, type: 'application/json', body: JSON.stringify(configDump(), null, 1) }),
      });
      const metricsRoute = async () => ({ status: 200, type: telemetry.registry.contentType, body: await telemetry.metrics() });
      const metrics = await serveHttp(host, o.ports?.metrics ?? 15020, { '/metrics': metricsRoute, '/stats/prometheus': metricsRoute });
      const readiness = await serveHttp(host, o.ports?.readiness ?? 15021, {
        '/healthz/ready': () => (isReady() ? { status: 200, type: 'text/plain', body: 'ready\n' } : { status: 503, type: 'text/plain', body: 'not ready\n' }),
      });
      servers.push(admin.server, metrics.server, readiness.server);
      bound.admin = admin.port; bound.metrics = metrics.port; bound.readiness = readiness.port;
      started = true;
      retryTimer = setInterval(() => {
        if (enrolment.failures.size > 0) enrolment.reconcile().then(notifyReady, () => undefined);
      }, o.retryMs ?? 5_000);
      retryTimer.unref();
      log.info('agent started', { node: o.node, socket: socketPath, ...bound });
    },

    stop(deadlineMs = 5_000) {
      stopping ??= (async () => {
        clearInterval(retryTimer);
        await cni.close();
        await enrolment.stop(deadlineMs);
        engine.destroy();
        await Promise.all(servers.splice(0).map(closeHttp));
        await control.close();
        certs.close();
        log.info('agent stopped', { node: o.node });
      })();
      return stopping;
    },

    async enroll(r) {
      if (!r.name || !r.namespace) throw new MeshError('AMBIT_CONFIG_INVALID', 'enroll: name and namespace are required');
      await enrolment.add({ name: r.name, namespace: r.namespace, ip: r.ip, netns: r.netns, ...(typeof r.netns === 'number' ? { ownedFd: r.netns } : {}) });
      notifyReady();
    },

    unenroll: (namespace, name) => enrolment.del(namespace, name),

    whenReady() {
      if (isReady()) return Promise.resolve();
      return new Promise<void>((resolve) => readyWaiters.add(resolve));
    },
    isReady,
    reconcile: async () => { await enrolment.reconcile(); notifyReady(); },
    snapshot: () => control.snapshot,
    whenSnapshot(pred) {
      return new Promise<Snapshot>((resolve) => {
        snapshotWaiters.add({ pred, resolve });
        // already there (and applied: reconcile passes are serialised, so wait for one)
        if (pred(control.snapshot)) void enrolment.reconcile().then(() => notifySnapshot(control.snapshot));
      });
    },
    enrolledPods: () => [...enrolment.enrolled.entries()].map(([uid, e]) => ({
      uid, name: e.workload.name, namespace: e.workload.namespace, ips: e.workload.addresses, listening: e.proxy.listening, returnPath: e.returnPath,
    })),
  };
  return agent;
}
