/**
 * The waypoint, composed: control channel (role waypoint: addresses, policies, L7 configs) ->
 * its own certificate (its service account's identity) -> the HBONE transport (the addon's
 * engine) accepting streams for what is bound to it -> the HTTP/TCP proxy; plus admin, metrics
 * and readiness servers and a graceful drain. Every I/O seam can be injected for tests.
 */
import type { Server } from 'node:http';
import { errorMessage, logger, MeshError } from '../core/index.js';
import { CertManager, spiffeUri, type CertBundle, type Identity } from '../identity/index.js';
import { serviceKey, Snapshot, waypointKey, type Waypoint } from '../model/index.js';
import type { ServiceL7 } from '../model/index.js';
import { XdsClient, type TokenSource } from '../xds/index.js';
import { closeHttp, serveHttp } from './admin.js';
import { resolveBinding } from './bindings.js';
import { HttpProxy, type ProxyLimits } from './proxy.js';
import { WaypointTelemetry } from './telemetry.js';
import type { WaypointTransport } from './transport.js';
import { UpstreamPools } from './upstream.js';

const log = logger('waypoint');

export interface WaypointPorts {
  /** HBONE listener (in the pod's netns); default 15008 */
  hbone?: number;
  /** admin (`/config_dump`) on `adminHost`; default 15000; 0 = any free port */
  admin?: number;
  /** Prometheus; default 15020 */
  metrics?: number;
  /** readiness; default 15021 */
  readiness?: number;
}

/** The control channel as the waypoint uses it (an XdsClient satisfies it). */
export interface WaypointControl {
  readonly snapshot: Snapshot;
  readonly l7: ReadonlyMap<string, ServiceL7>;
  readonly ready: Promise<void>;
  on(event: 'snapshot', fn: (s: Snapshot) => void): unknown;
  on(event: 'l7', fn: (l7: ReadonlyMap<string, ServiceL7>) => void): unknown;
  start(): void;
  close(): Promise<void>;
  requestCertificate(csrPem: string, id: Identity): Promise<{ chainPem: string[]; rootsPem: string }>;
}

export interface WaypointCerts {
  get(id: Identity): Promise<CertBundle>;
  peek(id: Identity): CertBundle | undefined;
  track(id: Identity): void;
  close(): void;
}

/** What a transport needs from the waypoint to listen and dial. */
export interface TransportContext {
  /** pod netns path the listener and upstream sockets live in; undefined: this process's netns */
  readonly netns?: string | undefined;
  readonly hbonePort: number;
  /** the waypoint's identity and its current certificate (undefined until fetched: refuse handshakes) */
  readonly identity: Identity;
  certificate(): CertBundle | undefined;
  /** the SO_MARK for sockets in the pod netns */
  readonly mark: number;
  /**
   * Before a CONNECT is accepted: 'accept' when its authority is a destination bound to this
   * waypoint, else the HTTP status to refuse it with (synchronous; the stream waits).
   */
  decide(authority: string, peer: string): 'accept' | number;
}

export interface WaypointOptions {
  /** the Gateway's name (`istio.io/use-waypoint` values point at it) */
  name: string;
  namespace: string;
  /** service account the waypoint runs as (its identity); default the Gateway name */
  serviceAccount?: string;
  /** node name this waypoint runs on (for the control plane's logs); default '' */
  node?: string;
  controlUrl: string;
  token: TokenSource;
  controlCaPem?: string;
  /** default 'cluster.local' */
  trustDomain?: string;
  /** netns path of the waypoint's pod (the local mesh); default: the process's own */
  netns?: string;
  ports?: WaypointPorts;
  /** default 127.0.0.1 */
  adminHost?: string;
  /** metrics and readiness; default 0.0.0.0 */
  publicHost?: string;
  limits?: Partial<ProxyLimits>;
  // --- seams ---
  control?: WaypointControl;
  certs?: WaypointCerts;
  /** builds the HBONE transport; default the addon's engine */
  transport?: (ctx: TransportContext) => WaypointTransport;
  random?: () => number;
}

export interface WaypointApp {
  /** connect, fetch the certificate, listen; resolves when listening (not necessarily ready) */
  start(): Promise<void>;
  /** drain: stop accepting, finish requests until the deadline, then close */
  stop(deadlineMs?: number): Promise<void>;
  /**
   * SIGTERM (a rolling update, a scale-down): not ready at once, so the pod's endpoint is
   * withdrawn, but still serving new connections and requests for `graceMs`, while agents that
   * have not yet seen the withdrawal keep sending here; then `stop(deadlineMs)`. `stop()` during
   * the grace ends it early.
   */
  terminate(graceMs: number, deadlineMs?: number): Promise<void>;
  isReady(): boolean;
  whenReady(): Promise<void>;
  readonly ports: { admin: number; metrics: number; readiness: number };
  readonly telemetry: WaypointTelemetry;
  readonly identity: Identity;
  /** the proxy's entry point, for transports and tests */
  readonly proxy: HttpProxy;
  snapshot(): Snapshot;
  /** resolves once the control channel delivered config satisfying `pred` */
  whenConfig(pred: (s: Snapshot, l7: ReadonlyMap<string, ServiceL7>) => boolean): Promise<void>;
}

export function spiffeOf(id: Identity): string {
  return spiffeUri(id);
}

export function createWaypoint(o: WaypointOptions): WaypointApp {
  const trustDomain = o.trustDomain ?? 'cluster.local';
  const identity: Identity = { trustDomain, namespace: o.namespace, serviceAccount: o.serviceAccount ?? o.name };
  const control: WaypointControl = o.control ?? new XdsClient({
    url: o.controlUrl, token: o.token, node: o.node ?? '', role: 'waypoint', identity, ...(o.controlCaPem ? { caPem: o.controlCaPem } : {}),
  });
  const certs: WaypointCerts = o.certs ?? new CertManager({ request: (csr, id) => control.requestCertificate(csr, id) });
  const telemetry = new WaypointTelemetry();
  const key = waypointKey({ namespace: o.namespace, name: o.name });
  let cert: CertBundle | undefined;
  const me = (): Waypoint | undefined => control.snapshot.waypoint(key);
  const ctx: TransportContext = {
    netns: o.netns, hbonePort: o.ports?.hbone ?? 15008, identity, mark: 0x539,
    certificate: () => certs.peek(identity) ?? cert,
    decide: (authority) => {
      const wp = me();
      if (!wp || stopping) return 503;
      const v = resolveBinding(control.snapshot, wp, authority);
      return v.ok ? 'accept' : v.status;
    },
  };
  if (!o.transport) throw new MeshError('AMBIT_CONFIG_INVALID', 'waypoint: no HBONE transport (the engine transport is not available in this build)');
  const transport = o.transport(ctx);
  const pools = new UpstreamPools(transport);
  const proxy = new HttpProxy({
    pools, telemetry, snapshot: () => control.snapshot, l7: (k) => control.l7.get(k), me,
    identity: () => spiffeOf(identity), ...(o.limits ? { limits: o.limits } : {}), ...(o.random ? { random: o.random } : {}),
  });

  let controlReady = false;
  let listening = false;
  let stopping: Promise<void> | undefined;
  let terminating: Promise<void> | undefined;
  let endGrace: (() => void) | undefined;
  const servers: Server[] = [];
  const bound = { admin: 0, metrics: 0, readiness: 0 };
  const readyWaiters = new Set<() => void>();
  const configWaiters = new Set<{ pred: (s: Snapshot, l7: ReadonlyMap<string, ServiceL7>) => boolean; resolve: () => void }>();

  const isReady = (): boolean => controlReady && listening && !stopping && !terminating && ctx.certificate() !== undefined && me() !== undefined;
  const notify = (): void => {
    if (isReady()) { for (const fn of [...readyWaiters]) fn(); readyWaiters.clear(); }
    for (const w of [...configWaiters]) if (w.pred(control.snapshot, control.l7)) { configWaiters.delete(w); w.resolve(); }
  };

  const bindings = (snap: Snapshot) => {
    const wp = snap.waypoint(key);
    const services: string[] = [];
    const workloads: string[] = [];
    if (wp) {
      for (const s of snap.services) if (s.waypoint?.service === wp.service) services.push(serviceKey(s));
      for (const w of snap.workloads) if (w.waypoint?.service === wp.service) workloads.push(`${w.namespace}/${w.name}`);
    }
    return { waypoint: wp ?? null, services, workloads };
  };

  const configDump = () => {
    const snap = control.snapshot;
    const b = ctx.certificate();
    const bound = bindings(snap);
    return {
      waypoint: { name: o.name, namespace: o.namespace, identity: spiffeOf(identity), netns: o.netns ?? null },
      ready: isReady(),
      bound,
      snapshot: { version: snap.version, counts: snap.counts },
      l7: Object.fromEntries([...control.l7].filter(([k]) => bound.services.includes(k))),
      certificate: b ? { identity: spiffeOf(identity), notBefore: new Date(b.notBefore).toISOString(), notAfter: new Date(b.notAfter).toISOString() } : { identity: spiffeOf(identity), state: 'unavailable' },
      connections: proxy.openConnections,
      upstream: { ...pools.counts(), ...pools.stats },
      ...(transport.stats ? { transport: transport.stats() } : {}),
    };
  };

  const app: WaypointApp = {
    telemetry, identity, proxy,
    get ports() { return { ...bound }; },
    snapshot: () => control.snapshot,
    isReady,
    whenReady() {
      if (isReady()) return Promise.resolve();
      return new Promise((resolve) => readyWaiters.add(resolve));
    },
    whenConfig(pred) {
      if (pred(control.snapshot, control.l7)) return Promise.resolve();
      return new Promise((resolve) => configWaiters.add({ pred, resolve }));
    },

    async start() {
      control.on('snapshot', () => notify());
      control.on('l7', () => notify());
      control.ready.then(() => { controlReady = true; notify(); }, () => undefined);
      control.start();
      certs.track(identity);
      // first certificate: retried by the cert manager's backoff until the session is admitted
      const fetchCert = (): void => {
        certs.get(identity).then((b) => { cert = b; log.info('certificate ready', { identity: spiffeOf(identity), notAfter: new Date(b.notAfter).toISOString() }); notify(); }, (e: unknown) => {
          if (stopping) return;
          log.warn('certificate not available yet; retrying', { error: errorMessage(e) });
          setTimeout(fetchCert, 1000).unref();
        });
      };
      fetchCert();
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
      await transport.listen((stream, info) => proxy.accept(stream, info));
      listening = true;
      notify();
      log.info('waypoint started', { waypoint: key, identity: spiffeOf(identity), netns: o.netns ?? 'own', ...bound });
    },

    terminate(graceMs, deadlineMs) {
      if (stopping) return stopping;
      terminating ??= new Promise<void>((resolve) => {
        log.info('terminating: not ready, still serving until the grace ends', { waypoint: key, graceMs });
        const timer = setTimeout(resolve, graceMs);
        endGrace = () => { clearTimeout(timer); resolve(); };
      }).then(() => app.stop(deadlineMs));
      return terminating;
    },

    stop(deadlineMs = 5_000) {
      endGrace?.();
      stopping ??= (async () => {
        await transport.stopAccepting().catch(() => undefined);
        proxy.drain();
        const until = Date.now() + deadlineMs;
        while (proxy.openConnections > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        proxy.destroy();
        pools.close();
        await transport.close().catch(() => undefined);
        await Promise.all(servers.splice(0).map(closeHttp));
        await control.close();
        certs.close();
        log.info('waypoint stopped', { waypoint: key });
      })();
      return stopping;
    },
  };
  return app;
}
