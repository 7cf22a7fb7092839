/**
 * The node agent, composed: control channel (xDS) -> snapshot -> enrolment of this node's
 * ambient pods (capture rules + per-pod proxies) -> certificates per local identity; plus the
 * CNI socket, admin, metrics and readiness servers. Every I/O seam can be injected for tests.
 */
import { mkdirSync, rmSync, statSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { errorMessage, logger, MeshError } from '../core/index.js';
import { CertManager, spiffeUri, type CertBundle, type Identity } from '../identity/index.js';
import { Snapshot } from '../model/index.js';
import * as realNative from '../native/index.js';
import type { EngineOptions } from '../native/index.js';
import { XdsClient, type TokenSource } from '../xds/index.js';
import { closeHttp, serveHttpAt, type HttpWhere, type Route } from './admin/admin.js';
import { applyCapture, captureFingerprint, removeCapture, type CapturePorts } from './enrol/capture.js';
import { admitCniAdd, DEFAULT_EXEMPT_NAMESPACES, type CniAddFacts } from './enrol/cni-admission.js';
import { CniServer } from './enrol/cni-server.js';
import type { CniAdd } from './enrol/cni-protocol.js';
import { sendCniRequest } from './enrol/cni-client.js';
import { ConnectionRegistry } from './proxy/connections.js';
import type { NativeApi, NetnsHandle } from './deps.js';
import { AgentEngine } from './proxy/engine-adapter.js';
import { Enrolment, type AdoptedListeners } from './enrol/enrolment.js';
import { HANDOVER_SOCKET, HandoverClient, HandoverServer, releaseReceived, type Donor, type HandoverNative, type Offer, type Received, type SharedRole } from './handover.js';
import { checkNotServed } from './unix-socket.js';
import { defaultNetnsCandidates, findNetnsByIp } from './enrol/netns-scan.js';
import { PodProxy } from './proxy/pod-proxy.js';
import { DEFAULT_POD_PORTS, type PodPorts } from './proxy/context.js';
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
  /**
   * readiness also waits for this (the agent's CNI plugin installed and chained on the node, see
   * main.ts); default: nothing to wait for
   */
  readyAfter?: Promise<unknown>;
  /**
   * Takes the agent's CNI plugin off the node (main.ts): served as `POST /cni/uninstall` on the
   * admin port (loopback only; `ambit uninstall` reaches it through the API server's
   * port-forward). Its answer is the JSON body. Absent: no such route.
   */
  cniUninstall?: () => Promise<unknown>;
  /**
   * after handing its pods to a successor, how long open connections may take to finish, ms;
   * default 25_000 (the DaemonSet's drain)
   */
  drainMs?: number;
  /** a successor gives up taking over when config, certificates or the old agent take longer, ms; default 30_000 */
  handoverTimeoutMs?: number;
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

/** Where an agent instance is in its life (config_dump `instance.state`). */
export type InstanceState = 'starting' | 'taking-over' | 'serving' | 'terminating' | 'handed-over' | 'stopped';

export interface Agent {
  /**
   * connect to the control plane, open the CNI socket and servers; resolves when listening (not
   * when ready). When another agent serves this state directory, takes its pods over instead
   * (handover.ts): resolves once this agent accepts on every pod's sockets and the old one stopped.
   */
  start(): Promise<void>;
  /** drain: stop accepting, let connections finish until `deadlineMs`, then close. Capture rules stay. */
  stop(deadlineMs?: number): Promise<void>;
  /**
   * SIGTERM: keep serving (accepting too) for up to `deadlineMs` while a successor may take over;
   * once one has, let open connections finish (same deadline), then stop. Without a successor,
   * stop at the deadline. Nothing is refused while a successor is on its way.
   */
  terminate(deadlineMs: number): Promise<void>;
  /** resolves once a successor took over this agent's pods */
  readonly handedOver: Promise<void>;
  /** this instance: pid, its own admin socket (all routes; per instance, so two can run at once), state */
  readonly instance: { readonly pid: number; readonly adminSocket: string; readonly state: InstanceState };
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

let instanceSeq = 0;

export function createAgent(o: AgentOptions): Agent {
  const native = o.native ?? realNative;
  const handoverNative: HandoverNative | undefined = 'unixConnect' in native ? native as HandoverNative : undefined;
  const handoverTimeoutMs = o.handoverTimeoutMs ?? 30_000;
  const drainMs = o.drainMs ?? 25_000;
  // per instance: two agents of one node (old and new) run side by side during a handover
  const adminSocket = join(o.stateDir, `agent-${process.pid}${instanceSeq++ > 0 ? `-${instanceSeq}` : ''}.sock`);
  const handoverPath = join(o.stateDir, HANDOVER_SOCKET);
  let state: InstanceState = 'starting';
  /** listeners taken over from the previous agent, by workload uid, until enrolment uses them */
  const adopted = new Map<string, AdoptedListeners>();
  let markHandedOver!: () => void;
  const handedOver = new Promise<void>((resolve) => { markHandedOver = resolve; });
  /** set while a successor is taking over: CNI requests wait for its outcome */
  let handoverGate: Promise<boolean> | undefined;
  let releasing: Promise<void> | undefined;
  const trustDomain = o.trustDomain ?? 'cluster.local';
  const podPorts: PodPorts = { ...DEFAULT_POD_PORTS, ...o.ports?.pod };
  const capturePorts: CapturePorts = { outbound: podPorts.outbound, inboundPlain: podPorts.inboundPlain, hbone: podPorts.hbone };
  const fingerprint = captureFingerprint(capturePorts);
  const control: ControlChannel = o.control ?? new XdsClient({
    url: o.controlUrl, token: o.token, node: o.node, role: 'agent', ...(o.controlCaPem ? { caPem: o.controlCaPem } : {}),
  });
  const certs: AgentCerts = o.certs ?? new CertManager({ request: (csr, id) => control.requestCertificate(csr, id) });
  const telemetry = new AgentTelemetry();
  const connections = new ConnectionRegistry();
  // the addon's engine carries every 15001/15008 connection (HBONE is never terminated in Node)
  const engine = new AgentEngine({ telemetry, connections, engine: { ...o.engineOptions, ...(o.connectTimeoutMs ? { connectTimeoutMs: o.connectTimeoutMs } : {}) } });
  // the engine holds connection events back briefly to batch them: a scrape counts them all first
  // (bounded, like every admin answer)
  telemetry.beforeScrape = () => engine.flush();
  const socketPath = join(o.stateDir, 'agent.sock');
  const candidates = o.netnsCandidates ?? defaultNetnsCandidates;
  const selfNetns = netnsIdOf('/proc/self/ns/net');

  let controlReady = false;
  /** the first reconcile after the control plane synced has finished (pods found or failed) */
  let synced = false;
  let started = false;
  let stopping: Promise<void> | undefined;
  const servers: Server[] = [];
  /** the node's well-known admin/metrics/readiness listeners (handed to a successor) */
  const wellKnown = new Map<'admin' | 'metrics' | 'readiness', Server>();
  let handover: HandoverServer | undefined;
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
    applyCapture: async (ns, adopted) => {
      // taking over: the previous agent's rules carry live traffic; identical ones stay untouched
      const spoof = o.spoofSource ?? true;
      if (adopted && adopted.capture === fingerprint && (adopted.returnPath === true) === spoof) return { returnPath: spoof };
      return applyCapture(ns, { ports: capturePorts, returnPath: spoof, ...(adopted ? { live: true } : {}) });
    },
    takeAdopted: (uid) => {
      const a = adopted.get(uid);
      adopted.delete(uid);
      return a;
    },
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

  let afterDone = o.readyAfter === undefined;
  o.readyAfter?.then(() => { afterDone = true; notifyReady(); }, () => undefined);

  const cni = new CniServer({
    native, path: socketPath,
    handlers: {
      add: async (req, fd) => {
        // a successor is taking over: its outcome decides who enrols this pod
        if (handoverGate && await handoverGate) {
          try {
            await sendCniRequest({ native, path: socketPath }, { op: 'ADD', name: req.name, namespace: req.namespace, ...(req.ip ? { ip: req.ip } : {}) }, fd);
          } finally {
            native.closeFd(fd);
          }
          return;
        }
        await admit(req, fd);
      },
      del: (req) => enrolment.del(req.namespace, req.name),
    },
  });

  const isReady = (): boolean => {
    if (!controlReady || !synced || !started || stopping || releasing || !afterDone) return false;
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
      instance: { pid: process.pid, state, adminSocket },
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

  const adminRoutes: Record<string, Route> = {
    '/config_dump': () => ({ status: 200, type: 'application/json', body: JSON.stringify(configDump(), null, 1) }),
    ...(o.cniUninstall ? {
      'POST /cni/uninstall': async () => ({ status: 200, type: 'application/json', body: JSON.stringify(await o.cniUninstall!()) + '\n' }),
    } : {}),
  };
  const metricsRoute: Route = async () => ({ status: 200, type: telemetry.registry.contentType, body: await telemetry.metrics() });
  const metricsRoutes: Record<string, Route> = { '/metrics': metricsRoute, '/stats/prometheus': metricsRoute };
  const readinessRoutes: Record<string, Route> = {
    '/healthz/ready': () => (isReady() ? { status: 200, type: 'text/plain', body: 'ready\n' } : { status: 503, type: 'text/plain', body: 'not ready\n' }),
  };
  /** this agent bound (or, after a takeover, inherited) the node's socket paths and removes them at stop */
  let ownsPaths = false;

  /** The node's admin, metrics and readiness listeners: the previous agent's (taken over) or bound here. */
  const serveWellKnown = async (shared: ReadonlyMap<SharedRole, number>): Promise<void> => {
    const host = o.publicHost ?? '0.0.0.0';
    const doors = [
      ['admin', { host: o.adminHost ?? '127.0.0.1', port: o.ports?.admin ?? 15000 }, adminRoutes],
      ['metrics', { host, port: o.ports?.metrics ?? 15020 }, metricsRoutes],
      ['readiness', { host, port: o.ports?.readiness ?? 15021 }, readinessRoutes],
    ] as const;
    for (const [role, tcp, routes] of doors) {
      const fd = shared.get(role);
      const where: HttpWhere = fd !== undefined ? { fd } : tcp;
      const r = await serveHttpAt(where, routes);
      wellKnown.set(role, r.server);
      bound[role] = r.port;
    }
  };

  /**
   * The new agent's side of a handover: configuration and certificates first (the old agent
   * serves meanwhile), then the sockets; every pod enrolled on its old sockets; then the old
   * agent is told to stop accepting. On failure everything received is closed and the old agent
   * carries on.
   */
  const takeOver = async (client: HandoverClient, resume: () => void): Promise<void> => {
    let got: Received | undefined;
    let timer: NodeJS.Timeout | undefined;
    const bounded = <T>(p: Promise<T>, what: string): Promise<T> => Promise.race([p, new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new MeshError('AMBIT_HANDOVER', `handover: ${what} not within ${handoverTimeoutMs} ms`)), handoverTimeoutMs);
    })]).finally(() => clearTimeout(timer));
    try {
      await bounded(control.ready, 'configuration from the control plane');
      const ids = new Map<string, Identity>();
      for (const w of control.snapshot.workloadsOnNode(o.node)) {
        if (w.tunnel === 'hbone') ids.set(`${w.namespace}/${w.serviceAccount}`, { trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount });
      }
      await bounded(Promise.all([...ids.values()].map((id) => certs.get(id))), 'certificates for this node\'s pods');
      got = await client.receive();
      for (const p of got.pods) {
        adopted.set(p.pod.uid, { fds: p.fds, capture: p.pod.capture, returnPath: p.pod.returnPath });
        const netns = p.netnsFd ?? p.pod.netnsPath;
        if (netns !== undefined) enrolment.remember({ name: p.pod.name, namespace: p.pod.namespace, ip: p.pod.ip, netns, ownedFd: p.netnsFd });
      }
      for (const k of got.known) {
        const netns = k.netnsFd ?? k.pod.netnsPath;
        if (netns !== undefined) enrolment.remember({ name: k.pod.name, namespace: k.pod.namespace, ip: k.pod.ip, netns, ownedFd: k.netnsFd });
      }
      const taken = got.pods.map((p) => p.pod.uid);
      got = { ...got, pods: [], known: [] }; // listener and netns fds belong to the enrolment now
      resume();
      await bounded(enrolment.reconcile(), 'enrolment on the taken-over sockets');
      const failed = taken.filter((uid) => enrolment.failures.has(uid));
      if (failed.length > 0) {
        throw new MeshError('AMBIT_HANDOVER', `handover: cannot serve ${failed.map((u) => `${u}: ${enrolment.failures.get(u)}`).join('; ')}`);
      }
      // pods gone from the model meanwhile: their sockets are not ours to serve
      for (const a of adopted.values()) for (const fd of Object.values(a.fds)) { try { native.closeFd(fd); } catch { /* closed */ } }
      adopted.clear();
      const shared = got.shared;
      const take = (role: SharedRole): number | undefined => { const fd = shared.get(role); shared.delete(role); return fd; };
      const cniFd = take('cni');
      if (cniFd !== undefined) await cni.listen(cniFd);
      else { checkNotServed(handoverNative, socketPath, 'CNI socket'); await cni.listen(); }
      handover = new HandoverServer({ native: handoverNative!, donor, timeoutMs: handoverTimeoutMs });
      const hoFd = take('handover');
      await handover.listen(hoFd !== undefined ? { fd: hoFd } : { path: handoverPath });
      const doors = new Map<SharedRole, number>();
      for (const role of ['admin', 'metrics', 'readiness'] as const) { const fd = take(role); if (fd !== undefined) doors.set(role, fd); }
      await serveWellKnown(doors);
      await client.commit();
      cni.ownsPath = true;
      ownsPaths = true;
      log.info('handover: took over', { pods: taken.length });
    } catch (e) {
      client.close();
      if (got) releaseReceived(native, got);
      for (const a of adopted.values()) for (const fd of Object.values(a.fds)) { try { native.closeFd(fd); } catch { /* closed */ } }
      adopted.clear();
      resume();
      throw e instanceof MeshError ? e : new MeshError('AMBIT_HANDOVER', `handover: ${errorMessage(e)}`, { cause: e });
    }
  };

  /**
   * After a handover, the engine may still hold what no proxy counts yet: HBONE sessions whose
   * peers have not seen our shutdown notice (their next stream still arrives here, and is served)
   * and connections waiting for a decision. Resolves true once it carries nothing (every session
   * closed by its peer), false at `until`. The engine offers counts, not events: a short poll,
   * only during this drain.
   */
  const engineIdle = async (until: number): Promise<boolean> => {
    if (!engine) return true;
    // Pooled client connections stay open until idle, and peers' sessions see our notice within
    // a round trip: once nothing has flowed for a second, what is left is idle.
    let quietSince = Date.now();
    for (;;) {
      const st = engine.stats();
      if (st.flows > 0) quietSince = Date.now();
      if (st.flows === 0 && (st.tunnels === 0 || Date.now() - quietSince >= 1_000)) return true;
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  /** The old agent's side of a handover (handover.ts drives it). */
  let frozen: (() => void) | undefined;
  let gateOpen: ((handed: boolean) => void) | undefined;
  const donor: Donor = {
    async begin(): Promise<Offer> {
      if (!started || stopping || releasing) throw new MeshError('AMBIT_HANDOVER', `this agent is ${state}`);
      handoverGate = new Promise<boolean>((resolve) => { gateOpen = resolve; });
      frozen = await enrolment.pause();
      const shared: Array<{ role: SharedRole; fd: number }> = [];
      const cniFd = cni.fd();
      if (cniFd !== undefined) shared.push({ role: 'cni', fd: cniFd });
      const hoFd = handover?.fd();
      if (hoFd !== undefined) shared.push({ role: 'handover', fd: hoFd });
      for (const [role, server] of wellKnown) shared.push({ role, fd: native.socketFd(server) });
      const pods: Array<Offer['pods'][number]> = [];
      const served = new Set<string>();
      for (const [uid, e] of enrolment.enrolled) {
        const fds = e.proxy.listenerFds?.();
        if (!fds) continue;
        const w = e.workload;
        served.add(`${w.namespace}/${w.name}`);
        pods.push({ pod: { uid, name: w.name, namespace: w.namespace, ip: w.addresses[0], capture: fingerprint, returnPath: e.returnPath, ...(typeof e.netns === 'string' ? { netnsPath: e.netns } : {}) }, fds,
          ...(typeof e.netns === 'number' ? { netnsFd: e.netns } : {}) });
      }
      const known: Array<Offer['known'][number]> = [];
      for (const [key, k] of enrolment.known) {
        if (served.has(key)) continue;
        known.push({ pod: { name: k.name, namespace: k.namespace, ip: k.ip, ...(typeof k.netns === 'string' ? { netnsPath: k.netns } : {}) },
          ...(typeof k.netns === 'number' ? { netnsFd: k.netns } : {}) });
      }
      return { shared, pods, known };
    },
    async commit(): Promise<void> {
      // the successor accepts on every socket: stop accepting here (they stay open there)
      ownsPaths = false;
      cni.stopAccepting();
      handover?.stopAccepting();
      // stop accepting at once; requests in progress finish (close's callback would wait for them)
      for (const sv of wellKnown.values()) { sv.close(); sv.closeIdleConnections(); }
      wellKnown.clear();
      clearInterval(retryTimer);
      const until = Date.now() + drainMs;
      releasing = enrolment.release(drainMs).then(() => engineIdle(until)).then((idle) => {
        state = 'handed-over';
        log.info(idle ? 'handover: open connections drained' : 'handover: drain deadline reached');
      });
      frozen?.();
      gateOpen?.(true);
      if (state !== 'terminating') state = 'handed-over';
      markHandedOver();
    },
    abort(): void {
      frozen?.();
      frozen = undefined;
      gateOpen?.(false);
      handoverGate = undefined;
    },
  };

  const agent: Agent = {
    socketPath,
    telemetry,
    connections,
    get ports() { return { ...bound }; },

    handedOver,
    get instance() { return { pid: process.pid, adminSocket, state }; },

    async start() {
      if (started) return;
      mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
      const predecessor = handoverNative ? HandoverClient.connect(handoverNative, handoverPath, handoverTimeoutMs) : undefined;
      // taking over: no enrolment pass until the old agent's sockets are in hand (a pass would
      // open listeners of its own next to them)
      let resume = predecessor ? await enrolment.pause() : undefined;
      control.on('snapshot', onSnapshot);
      control.ready.then(async () => {
        controlReady = true;
        connections.recheck(control.snapshot);
        await enrolment.reconcile().catch((e: unknown) => log.error('reconcile failed', { error: errorMessage(e) }));
        synced = true;
        notifyReady();
      }, () => undefined);
      control.start();
      // this instance's own door, whatever happens to the node's well-known ports
      rmSync(adminSocket, { force: true });
      servers.push((await serveHttpAt({ path: adminSocket }, { ...adminRoutes, ...metricsRoutes, ...readinessRoutes })).server);
      try {
        if (predecessor) {
          state = 'taking-over';
          await takeOver(predecessor, () => { resume?.(); resume = undefined; });
        } else {
          // a live agent here without a handover socket keeps its sockets: fail, remove nothing
          checkNotServed(handoverNative, socketPath, 'CNI socket');
          await cni.listen();
          if (handoverNative) {
            handover = new HandoverServer({ native: handoverNative, donor, timeoutMs: handoverTimeoutMs });
            await handover.listen({ path: handoverPath });
          }
          ownsPaths = true;
          await serveWellKnown(new Map());
        }
      } finally {
        resume?.();
      }
      started = true;
      state = 'serving';
      retryTimer = setInterval(() => {
        if (enrolment.failures.size > 0) enrolment.reconcile().then(notifyReady, () => undefined);
      }, o.retryMs ?? 5_000);
      retryTimer.unref();
      notifyReady();
      log.info('agent started', { node: o.node, socket: socketPath, adminSocket, tookOver: predecessor !== undefined, ...bound });
    },

    stop(deadlineMs = 5_000) {
      stopping ??= (async () => {
        clearInterval(retryTimer);
        await cni.close();
        await handover?.close();
        if (ownsPaths) rmSync(handoverPath, { force: true });
        ownsPaths = false;
        await enrolment.stop(deadlineMs);
        // the last connections' events (access lines, counters) may still wait in the engine for
        // company: take them before destroying it (bounded: never waits on a stuck engine thread)
        await engine.flush();
        engine.destroy();
        await Promise.all(servers.splice(0).map(closeHttp));
        await Promise.all([...wellKnown.values()].map(closeHttp));
        wellKnown.clear();
        await control.close();
        certs.close();
        state = 'stopped';
        log.info('agent stopped', { node: o.node });
      })();
      return stopping;
    },

    async terminate(deadlineMs) {
      if (stopping) return stopping;
      const until = Date.now() + deadlineMs;
      if (state === 'serving') state = 'terminating';
      log.info('terminating: serving until a successor takes over or the deadline', { deadlineMs });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'deadline'>((resolve) => { timer = setTimeout(() => resolve('deadline'), deadlineMs); });
      let how = await Promise.race([handedOver.then(() => 'handed' as const), deadline]);
      if (how === 'deadline' && handoverGate) {
        // a successor is taking over right now: it holds every socket already, cutting it off
        // would only fail the handover; give it its own bound to finish
        log.info('terminating: deadline reached during a handover; waiting for it', { timeoutMs: handoverTimeoutMs });
        let t2: NodeJS.Timeout | undefined;
        const gate = handoverGate;
        how = await Promise.race([gate.then((handed) => (handed ? 'handed' as const : 'deadline' as const)),
          new Promise<'deadline'>((resolve) => { t2 = setTimeout(() => resolve('deadline'), handoverTimeoutMs); })]);
        clearTimeout(t2);
      }
      if (how === 'handed') {
        // the successor accepts now; our open connections finish, bounded by what is left
        await Promise.race([releasing, deadline]);
      }
      clearTimeout(timer);
      return agent.stop(Math.max(0, until - Date.now()));
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
