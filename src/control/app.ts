/**
 * The control plane, composed: config source -> translator -> resource tables -> push server,
 * plus the CA on the same channel and the status server. Owns its listeners; `main.ts` decides
 * ports, directories and the authenticator.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { MeshError, errorMessage, logger } from '../core/index.js';
import { Snapshot } from '../model/index.js';
import { buildResourceTables } from '../xds/index.js';
import { CaService, issueControlCert } from './ca/index.js';
import type { CaSigner, ServingCert } from './ca/index.js';
import type { ConfigSource, KubeObject, Rejection } from './config/types.js';
import { PushServer, admitPeer } from './push/index.js';
import type { Authenticator, PeerSyncz, PushServerOptions } from './push/index.js';
import { ControlMetrics, createStatusServer } from './status/index.js';
import { Translator } from './translate/index.js';
import type { TranslateResult } from './translate/index.js';

const log = logger('control');

export interface ListenOptions {
  /** address of the control-channel listeners; default 127.0.0.1 */
  host?: string;
  /** plain ws; default 15010; null = off */
  plainPort?: number | null;
  /** wss with the CA-issued serving certificate; default 15012; null = off */
  tlsPort?: number | null;
  /** address of the status listener; default `host` */
  statusHost?: string;
  /** /ready, /metrics, /debug/*; default 15014; null = off */
  statusPort?: number | null;
  /**
   * open connections per listener (15010, 15012 and the status port each), connected peers
   * included; beyond it a new connection is closed at once; default 10_000. Bounds the fds that
   * unauthenticated clients can hold.
   */
  maxConnections?: number;
  /**
   * the upgrade request (or, on the status port, any request), headers included, must arrive
   * within this, and a connection may not sit silent longer, ms; default 10_000
   */
  requestTimeoutMs?: number;
  /** the TLS handshake on 15012 must finish within this, ms; default 10_000 */
  handshakeTimeoutMs?: number;
}

/** Default of ListenOptions.maxConnections. */
export const DEFAULT_MAX_CONNECTIONS = 10_000;

export interface ControlPlaneOptions {
  source: ConfigSource;
  ca: CaSigner;
  trustDomain: string;
  /** mesh root namespace; default istio-system */
  rootNamespace?: string;
  clusterId?: string;
  /** where state lives (the bootstrap token is written by main.ts); reported in config_dump */
  stateDir: string;
  authenticator: Authenticator;
  listen?: ListenOptions;
  /** push debounce, ms; default 100 */
  debounceMs?: number;
  /** push server limits (buffered bytes, pending responses, payload) */
  push?: Omit<PushServerOptions, 'authenticator' | 'signCertificate' | 'metrics' | 'debounceMs'>;
  /** serve /debug/* to non-loopback callers; default false */
  debugFromAnywhere?: boolean;
  /** lifetime of the wss serving certificate, s; renewed at half-life; default 86400 */
  servingCertTtlSeconds?: number;
  /**
   * told every translated config set (the objects and the translator's rejections), after the
   * push is updated; stopped with the plane. Kubernetes mode: the waypoint reconciler.
   */
  reconcilers?: readonly ConfigReconciler[];
}

/** Something that acts on each complete config set (never blocks the push; does its I/O itself). */
export interface ConfigReconciler {
  update(objects: readonly KubeObject[], rejected: readonly Rejection[]): void;
  /** awaited by the plane's stop() (e.g. a leader releasing its Lease) */
  stop(): void | Promise<void>;
}

export interface ControlPlaneAddresses { plain?: AddressInfo; tls?: AddressInfo; status?: AddressInfo }

export interface ControlPlane {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly addresses: ControlPlaneAddresses;
  readonly push: PushServer;
  readonly metrics: ControlMetrics;
  /** true once the first config set is translated and the listeners are up */
  readonly ready: boolean;
  /** the latest translation (undefined before the first config set) */
  readonly current: TranslateResult | undefined;
  syncz(): PeerSyncz[];
  configDump(): unknown;
}

function rejectionKey(r: Rejection): string {
  return `${r.kind}/${r.namespace}/${r.name}:${r.field}:${r.message}`;
}

export function createControlPlane(o: ControlPlaneOptions): ControlPlane {
  const metrics = new ControlMetrics();
  const translator = new Translator({ trustDomain: o.trustDomain, rootNamespace: o.rootNamespace ?? 'istio-system', ...(o.clusterId ? { clusterId: o.clusterId } : {}) });
  let current: TranslateResult | undefined;
  const emptySnapshot = Snapshot.empty();
  // node authorization reads the snapshot that is being pushed right now
  const snapshot = (): Snapshot => current?.snapshot ?? emptySnapshot;
  const ca = new CaService({
    ca: o.ca, trustDomain: o.trustDomain, snapshot: () => snapshot(),
    onResult: (ok) => metrics.certificates.inc({ result: ok ? 'issued' : 'refused' }),
  });
  const push = new PushServer({
    ...o.push,
    authenticator: o.authenticator,
    debounceMs: o.debounceMs ?? 100,
    metrics: metrics.push(),
    // whatever the authenticator (TokenReview or bootstrap token), a waypoint session is only for
    // an identity that runs a waypoint pod: it would otherwise read the whole mesh config
    admit: (p) => admitPeer(p, snapshot()),
    signCertificate: (p, r) => ca.sign(p, r),
  });
  let lastRejections = new Set<string>();
  let encodeRejected: { name: string; message: string }[] = [];
  let started = false;
  let listening = false;
  let plain: Server | undefined;
  let tls: HttpsServer | undefined;
  let status: Server | undefined;
  let renewTimer: NodeJS.Timeout | undefined;
  const addresses: ControlPlaneAddresses = {};
  const listen = o.listen ?? {};
  const host = listen.host ?? '127.0.0.1';

  const onConfig = (objects: readonly KubeObject[], origin: string) => {
    let result: TranslateResult;
    try {
      result = translator.update(objects);
    } catch (e) {
      // the translator promises not to throw; if it does, keep serving the last good state
      log.error('translation failed; keeping the previous config', { origin, error: errorMessage(e) });
      return;
    }
    metrics.configUpdates.inc();
    // one log line per rejection, only when it first appears (a re-read must not repeat them all)
    const now = new Set<string>();
    const byKind = new Map<string, number>();
    for (const r of result.rejected) {
      const k = rejectionKey(r);
      now.add(k);
      byKind.set(r.kind, (byKind.get(r.kind) ?? 0) + 1);
      if (!lastRejections.has(k)) log.warn('config rejected', { resource: `${r.kind} ${r.namespace}/${r.name}`, field: r.field, reason: r.message });
    }
    for (const w of result.warnings) {
      const k = 'w:' + rejectionKey(w);
      now.add(k);
      if (!lastRejections.has(k)) log.info('config warning', { resource: `${w.kind} ${w.namespace}/${w.name}`, field: w.field, reason: w.message });
    }
    lastRejections = now;
    metrics.setRejected(byKind);
    current = result;
    const built = buildResourceTables(result.snapshot, result.l7);
    encodeRejected = built.rejected;
    for (const r of built.rejected) log.error('model object cannot be encoded; not pushed', { resource: r.name, reason: r.message });
    push.update(built.tables);
    for (const r of o.reconcilers ?? []) {
      try { r.update(objects, result.rejected); } catch (e) { log.error('reconciler failed', { error: errorMessage(e) }); }
    }
    log.info('config updated', { origin, objects: objects.length, ...result.snapshot.counts, rejected: result.rejected.length });
  };

  // Node's defaults (300 s per request, no connection bound, 120 s TLS handshake) let idle,
  // unauthenticated connections pile up until fds run out. An upgraded WebSocket is no longer a
  // request, so these timeouts never touch a connected peer.
  const requestTimeout = listen.requestTimeoutMs ?? 10_000;
  const maxConnections = listen.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  for (const [k, v] of [['maxConnections', maxConnections], ['requestTimeoutMs', requestTimeout], ['handshakeTimeoutMs', listen.handshakeTimeoutMs ?? 10_000]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new MeshError('AMBIT_CONFIG_INVALID', `listen.${k}: ${v} is not a positive integer`);
  }
  const httpLimits = {
    requestTimeout, headersTimeout: requestTimeout,
    // how often Node looks for requests over their time; its default (30 s) would let one live 40 s
    connectionsCheckingInterval: Math.max(100, Math.min(2_000, requestTimeout / 2)),
  };
  // every listener of the plane (ws, wss, status) gets these; `reason` labels its drops in
  // ambit_control_refused_connections_total so a full status port is told apart from a full
  // control channel
  const harden = (server: Server | HttpsServer, name: string, reason = 'max_connections') => {
    // per listener, so one listener's flood does not hide (or take the log slot of) another's
    let lastDropLog = 0;
    let dropsSinceLog = 0;
    // requestTimeout only runs once a request has begun: a connection that sends nothing at all
    // is caught by the idle timeout instead (Node stops it when the connection is upgraded)
    server.timeout = requestTimeout;
    server.maxConnections = maxConnections;
    server.on('drop', () => {
      metrics.refused.inc({ reason });
      dropsSinceLog++;
      // a flood of drops must not become a flood of log lines: at most one line per 10 s
      const now = Date.now();
      if (now - lastDropLog < 10_000) return;
      log.warn('listener full; connections closed', { listener: name, maxConnections, dropped: dropsSinceLog });
      lastDropLog = now;
      dropsSinceLog = 0;
    });
  };

  const bind = async (server: Server | HttpsServer, port: number, h: string): Promise<AddressInfo> => {
    server.listen(port, h);
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => { throw e; })]);
    return server.address() as AddressInfo;
  };

  const installServingCert = async (): Promise<ServingCert> => {
    const cert = await issueControlCert(o.ca, o.trustDomain, o.servingCertTtlSeconds ?? 86_400);
    const renewIn = Math.max(1000, (cert.notAfter - cert.notBefore) / 2 - (Date.now() - cert.notBefore));
    renewTimer = setTimeout(() => {
      installServingCert().then(
        (c) => { tls?.setSecureContext({ key: c.keyPem, cert: c.chainPem.join('') }); log.info('serving certificate renewed', { notAfter: new Date(c.notAfter).toISOString() }); },
        (e: unknown) => log.error('serving certificate renewal failed', { error: errorMessage(e) }),
      );
    }, Math.min(renewIn, 2 ** 31 - 1));
    renewTimer.unref();
    return cert;
  };

  const cp: ControlPlane = {
    get addresses() { return addresses; },
    push,
    metrics,
    get ready() { return listening && current !== undefined; },
    get current() { return current; },
    syncz: () => push.syncz(),
    configDump: () => ({
      version: push.store.version,
      stateDir: o.stateDir,
      trustDomain: o.trustDomain,
      counts: current?.snapshot.counts,
      workloads: current ? [...current.snapshot.workloads] : [],
      services: current ? [...current.snapshot.services] : [],
      waypoints: current ? [...current.snapshot.waypoints] : [],
      authorizations: current ? [...current.snapshot.authorizations] : [],
      l7: current ? Object.fromEntries(current.l7) : {},
      rejected: current?.rejected ?? [],
      warnings: current?.warnings ?? [],
      notEncoded: encodeRejected,
    }),

    async start() {
      if (started) return;
      started = true;
      const noServe = (_req: unknown, res: import('node:http').ServerResponse) => { res.statusCode = 426; res.end('WebSocket upgrade required\n'); };
      if (listen.plainPort !== null) {
        plain = createServer(httpLimits, noServe);
        harden(plain, 'ws');
        push.attach(plain);
        addresses.plain = await bind(plain, listen.plainPort ?? 15010, host);
      }
      if (listen.tlsPort !== null) {
        const cert = await installServingCert();
        tls = createHttpsServer({
          ...httpLimits, key: cert.keyPem, cert: cert.chainPem.join(''), minVersion: 'TLSv1.3',
          handshakeTimeout: listen.handshakeTimeoutMs ?? 10_000,
        }, noServe);
        harden(tls, 'wss');
        push.attach(tls);
        addresses.tls = await bind(tls, listen.tlsPort ?? 15012, host);
      }
      if (listen.statusPort !== null) {
        status = createStatusServer(
          { ready: () => cp.ready, registry: metrics.registry, configDump: () => cp.configDump(), syncz: () => cp.syncz() },
          { debugFromAnywhere: o.debugFromAnywhere ?? false, http: httpLimits },
        );
        // scrapers and probes hold few connections, but the port is as reachable as 15010
        harden(status, 'status', 'status_max_connections');
        addresses.status = await bind(status, listen.statusPort ?? 15014, listen.statusHost ?? host);
      }
      listening = true;
      await o.source.start(onConfig);
      log.info('control plane started', { plain: addresses.plain?.port, tls: addresses.tls?.port, status: addresses.status?.port });
    },

    async stop() {
      clearTimeout(renewTimer);
      for (const r of o.reconcilers ?? []) await Promise.resolve(r.stop()).catch((e: unknown) => log.warn('reconciler stop failed', { error: errorMessage(e) }));
      listening = false;
      await o.source.stop().catch((e: unknown) => log.warn('config source stop failed', { error: errorMessage(e) }));
      await push.close();
      for (const s of [plain, tls, status]) {
        if (!s) continue;
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
    },
  };
  return cp;
}
