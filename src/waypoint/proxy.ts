/**
 * The waypoint's data path for one accepted HBONE stream: HTTP/1.1 or h2c (sniffed from the
 * first bytes) on L7 ports, opaque TCP on the others. Per request: hygiene and limits, trace
 * headers, the routing plan (router.ts), then attempts against endpoints over HBONE with
 * per-try and route timeouts and retries, the response streamed back with backpressure, and
 * telemetry. Decisions come from pure modules; this file does the I/O.
 */
import { createServer as createH1Server, request as h1request, type IncomingMessage, type Server as H1Server, type ServerResponse } from 'node:http';
import {
  createServer as createH2Server, constants as H2, type ClientHttp2Stream, type Http2Server, type Http2ServerRequest, type Http2ServerResponse,
  type Http2Session, type IncomingHttpHeaders as H2Headers, type ServerHttp2Session,
} from 'node:http2';
import type { Duplex, Readable } from 'node:stream';
import { errorMessage, logger } from '../core/index.js';
import { spiffeUri } from '../identity/index.js';
import type { Snapshot, Waypoint, Workload } from '../model/index.js';
import type { ServiceL7, HeaderModifier } from '../model/index.js';
import { resolveBinding, type Binding } from './bindings.js';
import {
  DEFAULT_HEADER_LIMITS, forwardableRequestHeaders, forwardableResponseHeaders, getHeader, headerListTooLarge, removeHeader, setHeader, toOutgoing,
  upgradeOf, type HeaderLimits, type HeaderList,
} from './headers.js';
import { attemptTimeoutMs, ClusterTable, grpcTimeoutMs, retryBackoffMs, shouldRetry, type AttemptOutcome, type Cluster } from './l7/index.js';
import { planRequest, planTcp, type ForwardPlan, type LocalReply, type MirrorTarget, type RequestFacts, type RequestPlan } from './router.js';
import { requestLabels, type WaypointTelemetry } from './telemetry.js';
import { propagateTrace, type TraceIds } from './trace.js';
import type { InboundStreamInfo, OutboundTarget } from './transport.js';
import { type UpstreamPools } from './upstream.js';

const log = logger('waypoint.proxy');

const H2_PREFACE = 'PRI * HTTP/2.0\r\n';

export interface ProxyLimits {
  readonly headers: HeaderLimits;
  /** request body kept for retries; beyond it the request is streamed and not retried; default 64 KiB */
  readonly retryBufferBytes: number;
  /** time to receive a request's headers, ms; default 30_000 */
  readonly headersTimeoutMs: number;
  /** an idle downstream connection is closed after this, ms; default 60_000 */
  readonly idleTimeoutMs: number;
  /** a request without a route timeout is bounded by this, ms (0 = none); default 0 (Istio: disabled) */
  readonly defaultRequestTimeoutMs: number;
  /** concurrent streams per downstream h2 session; default 250 */
  readonly maxConcurrentStreams: number;
  /** request body copied for mirrors; a longer body is not mirrored (counted as skipped_body); default 64 KiB */
  readonly mirrorBodyBytes: number;
  /** mirrored requests in flight at once; more are skipped (counted as skipped_busy); default 64 */
  readonly maxConcurrentMirrors: number;
  /** a mirrored request is cut after this (or the route timeout when shorter), ms; default 10_000 */
  readonly mirrorTimeoutMs: number;
}

export const DEFAULT_PROXY_LIMITS: ProxyLimits = {
  headers: DEFAULT_HEADER_LIMITS, retryBufferBytes: 64 * 1024, headersTimeoutMs: 30_000, idleTimeoutMs: 60_000,
  defaultRequestTimeoutMs: 0, maxConcurrentStreams: 250, mirrorBodyBytes: 64 * 1024, maxConcurrentMirrors: 64, mirrorTimeoutMs: 10_000,
};

export interface ProxyDeps {
  readonly pools: UpstreamPools;
  readonly telemetry: WaypointTelemetry;
  readonly snapshot: () => Snapshot;
  readonly l7: (serviceKey: string) => ServiceL7 | undefined;
  /** this waypoint's Gateway in the current snapshot (undefined: not known yet, refuse) */
  readonly me: () => Waypoint | undefined;
  readonly limits?: Partial<ProxyLimits>;
  readonly random?: () => number;
  /** the waypoint's own SPIFFE id, for x-forwarded-client-cert */
  readonly identity: () => string;
}

/** What one downstream connection carries. */
interface Conn {
  readonly info: InboundStreamInfo;
  readonly binding: Binding;
  readonly source: Workload | undefined;
}

type DownReq = IncomingMessage | Http2ServerRequest;
type DownRes = ServerResponse | Http2ServerResponse;

const GRPC_STATUS_OF_HTTP: Record<number, string> = { 400: '13', 401: '16', 403: '7', 404: '12', 429: '14', 431: '13', 502: '14', 503: '14', 504: '14' };

function isGrpc(headers: HeaderList): boolean {
  const ct = getHeader(headers, 'content-type');
  return ct !== undefined && ct.toLowerCase().startsWith('application/grpc');
}

function applyModifier(list: HeaderList, m: HeaderModifier | undefined): void {
  if (!m) return;
  for (const n of m.remove) removeHeader(list, n);
  for (const [k, v] of m.set) setHeader(list, k, v);
  for (const [k, v] of m.add) {
    const cur = getHeader(list, k);
    if (cur === undefined) list.push([k, v]); else setHeader(list, k, `${cur},${v}`);
  }
}

/** Collects the request body for replay up to a bound; past it, replay is impossible. */
class BodyRecorder {
  readonly chunks: Buffer[] = [];
  size = 0;
  overflow = false;
  complete = false;
  constructor(readonly limit: number) {}
  add(b: Buffer): void {
    if (this.overflow) return;
    this.size += b.length;
    if (this.size > this.limit) { this.overflow = true; this.chunks.length = 0; return; }
    this.chunks.push(b);
  }
  get replayable(): boolean { return this.complete && !this.overflow; }
}

interface Exchange {
  readonly conn: Conn;
  readonly req: DownReq;
  readonly res: DownRes;
  readonly h2: boolean;
  readonly start: number;
  readonly trace: TraceIds;
  readonly grpc: boolean;
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  status: number;
  grpcStatus: string | undefined;
  flags: Set<string>;
  details: string;
  bytesIn: number;
  bytesOut: number;
  attempts: number;
  upstreamHost: string | undefined;
  upstreamMs: number | undefined;
  destination: Workload | undefined;
  plan: RequestPlan | undefined;
  done: boolean;
}

export class HttpProxy {
  readonly #d: ProxyDeps;
  readonly #limits: ProxyLimits;
  readonly #random: () => number;
  readonly #h1: H1Server;
  readonly #h2: Http2Server;
  readonly #conns = new WeakMap<object, Conn>();
  readonly #open = new Set<Duplex>();
  /** open HTTP/2 sessions (drain() sends each GOAWAY) */
  readonly #sessions = new Set<ServerHttp2Session>();
  #pendingH2: Conn | undefined;
  /** load balancers, pool limits and outlier detection per backend (Service, subset, port) */
  readonly #clusters = new ClusterTable<Workload>();
  #draining = false;
  /** destroy() ran: nothing more is served */
  #cut = false;
  #mirrorsInFlight = 0;

  constructor(d: ProxyDeps) {
    this.#d = d;
    this.#limits = { ...DEFAULT_PROXY_LIMITS, ...d.limits };
    this.#random = d.random ?? Math.random;
    const lim = this.#limits;
    this.#h1 = createH1Server({ maxHeaderSize: lim.headers.maxBytes + 1024, requestTimeout: 0, headersTimeout: lim.headersTimeoutMs, keepAliveTimeout: lim.idleTimeoutMs, requireHostHeader: false });
    // one more than allowed, so an over-limit request is seen (and answered 431), not truncated
    this.#h1.maxHeadersCount = lim.headers.maxCount + 1;
    this.#h1.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res, false));
    this.#h1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => { void this.#onUpgrade(req, socket, head); });
    this.#h1.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      if (socket.writable && !(socket as { _httpMessage?: unknown })._httpMessage) {
        socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      } else socket.destroy();
    });
    this.#h2 = createH2Server({
      settings: { maxConcurrentStreams: lim.maxConcurrentStreams, maxHeaderListSize: lim.headers.maxBytes },
      maxHeaderListPairs: lim.headers.maxCount + 8, maxSessionMemory: 32,
    });
    this.#h2.on('session', (s: ServerHttp2Session) => {
      const c = this.#pendingH2;
      if (c) this.#conns.set(s, c);
      s.setTimeout(lim.idleTimeoutMs, () => s.close());
      this.#sessions.add(s);
      s.once('close', () => this.#sessions.delete(s));
      // a session that starts while draining is told at once
      if (this.#draining) s.close();
    });
    this.#h2.on('request', (req: Http2ServerRequest, res: Http2ServerResponse) => this.#onRequest(req, res, true));
  }

  get openConnections(): number { return this.#open.size; }

  /** An accepted HBONE stream: resolve its destination, then HTTP or TCP. */
  accept(stream: Duplex, info: InboundStreamInfo): void {
    const snap = this.#d.snapshot();
    const me = this.#d.me();
    // While draining, streams still come: those the engine accepted before its GOAWAY went out.
    // They are served (the drain deadline bounds them); only after destroy() is a stream refused.
    if (this.#cut || !me) { stream.destroy(); return; }
    const v = resolveBinding(snap, me, info.authority);
    if (!v.ok) {
      log.debug('refused stream', { authority: info.authority, peer: info.peerIdentity, reason: v.reason });
      stream.destroy();
      return;
    }
    const src = snap.workloadByIp(info.remoteIp);
    const source = src && spiffeUri(src) === info.peerIdentity ? src : undefined;
    const conn: Conn = { info, binding: v.binding, source };
    this.#open.add(stream);
    stream.once('close', () => this.#open.delete(stream));
    stream.on('error', () => undefined);
    if (v.binding.protocol === 'tcp') { this.#tcp(stream, conn); return; }
    this.#sniff(stream, conn);
  }

  #sniff(stream: Duplex, conn: Conn): void {
    let got: Buffer = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = got.length === 0 ? d : Buffer.concat([got, d]);
      if (got.length < 4 && H2_PREFACE.startsWith(got.toString('latin1'))) return;
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.pause();
      stream.unshift(got);
      const h2 = got.length >= 4 && got.subarray(0, 4).toString('latin1') === 'PRI ';
      if (h2) {
        // the session takes the bytes already read (readableLength) and reads on by itself
        this.#pendingH2 = conn;
        try { this.#h2.emit('connection', stream); } finally { this.#pendingH2 = undefined; }
      } else {
        this.#conns.set(stream, conn);
        this.#h1.emit('connection', stream);
        stream.resume();
      }
    };
    const onEnd = (): void => { stream.destroy(); };
    stream.on('data', onData);
    stream.once('end', onEnd);
  }

  #connOf(req: DownReq, h2: boolean): Conn | undefined {
    if (h2) return this.#conns.get((req as Http2ServerRequest).stream.session as Http2Session);
    return this.#conns.get(req.socket as object);
  }

  #onRequest(req: DownReq, res: DownRes, h2: boolean): void {
    const conn = this.#connOf(req, h2);
    if (!conn) { res.writeHead(500).end(); return; }
    // draining: this answer is the connection's last
    if (!h2 && this.#draining) (res as ServerResponse).shouldKeepAlive = false;
    const headers = forwardableRequestHeaders(req.rawHeaders);
    const trace = propagateTrace(headers, undefined);
    const url = h2 ? (req as Http2ServerRequest).url : (req as IncomingMessage).url ?? '/';
    const authority = (h2 ? (req as Http2ServerRequest).authority : getHeader(headers, 'host')) ?? conn.info.authority;
    const ex: Exchange = {
      conn, req, res, h2, start: Date.now(), trace, grpc: isGrpc(headers), method: req.method ?? 'GET', path: url, authority,
      status: 0, grpcStatus: undefined, flags: new Set(), details: '', bytesIn: 0, bytesOut: 0, attempts: 0, upstreamHost: undefined,
      upstreamMs: undefined, destination: undefined, plan: undefined, done: false,
    };
    this.#d.telemetry.started(this.#protocolLabel(ex));
    res.once('close', () => this.#finish(ex));
    const tooLarge = headerListTooLarge(req.rawHeaders, this.#limits.headers);
    if (tooLarge) { this.#local(ex, { kind: 'respond', status: 431, flags: '', details: 'request_headers_too_large', body: 'request header fields too large' }); return; }
    this.#forward(ex, headers).catch((e: unknown) => {
      log.error('request failed', { error: errorMessage(e), path: ex.path.slice(0, 200) });
      if (!res.headersSent) this.#local(ex, { kind: 'respond', status: 500, flags: '', details: 'internal_error' });
      else this.#abortDown(ex);
    });
  }

  #protocolLabel(ex: Exchange): 'http' | 'grpc' | 'http2' {
    return ex.grpc ? 'grpc' : ex.h2 ? 'http2' : 'http';
  }

  #facts(ex: Exchange, headers: HeaderList): RequestFacts {
    return {
      method: ex.method, target: ex.path, authority: ex.authority,
      headers, grpc: ex.grpc, sourcePrincipal: ex.conn.info.peerIdentity, sourceIp: ex.conn.info.remoteIp,
    };
  }

  #plan(conn: Conn, facts: RequestFacts): RequestPlan {
    return planRequest(this.#d.snapshot(), conn.binding, this.#d.l7, facts, this.#random, this.#d.me()?.service);
  }

  async #forward(ex: Exchange, headers: HeaderList): Promise<void> {
    const plan = this.#plan(ex.conn, this.#facts(ex, headers));
    ex.plan = plan;
    if (plan.delayMs !== undefined && plan.delayMs > 0) {
      ex.flags.add('DI');
      await new Promise((r) => setTimeout(r, plan.delayMs));
      if (ex.done) return;
    }
    if (plan.kind === 'respond') { this.#local(ex, plan); return; }
    // the original client, for the app (the destination's agent only sees the waypoint's identity)
    setHeader(headers, 'x-forwarded-client-cert', `By=${this.#d.identity()};URI=${ex.conn.info.peerIdentity}`);
    setHeader(headers, 'x-forwarded-proto', 'http');
    const fwdFor = getHeader(headers, 'x-forwarded-for');
    setHeader(headers, 'x-forwarded-for', fwdFor ? `${fwdFor}, ${ex.conn.info.remoteIp}` : ex.conn.info.remoteIp);
    for (const m of plan.requestHeaders ?? []) applyModifier(headers, m);
    const path = plan.path;
    const authority = plan.authority;
    removeHeader(headers, 'host');

    let timeoutMs = plan.timeoutMs ?? (this.#limits.defaultRequestTimeoutMs || undefined);
    if (ex.grpc) {
      const g = grpcTimeoutMs(getHeader(headers, 'grpc-timeout'));
      if (g !== undefined) timeoutMs = timeoutMs === undefined ? g : Math.min(timeoutMs, g);
    }
    if (timeoutMs !== undefined && timeoutMs <= 0) timeoutMs = undefined;
    const deadline = timeoutMs !== undefined ? ex.start + timeoutMs : undefined;
    const retries = plan.retries && plan.retries.attempts > 0 ? plan.retries : undefined;
    const mirrors = plan.mirrors.length > 0 ? plan.mirrors : undefined;
    // the body is kept for retries and mirrors, up to the larger of their bounds
    const bodyLimit = Math.max(retries ? this.#limits.retryBufferBytes : 0, mirrors ? this.#limits.mirrorBodyBytes : 0);
    const body = new BodyRecorder(bodyLimit);
    const hasBody = ex.method !== 'GET' && ex.method !== 'HEAD' || getHeader(headers, 'content-length') !== undefined || getHeader(headers, 'transfer-encoding') !== undefined;
    const down = ex.req as Readable;
    if (!hasBody) body.complete = true;
    // An HTTP/1.1 request without a length has no body: its attempts end the upstream request at
    // once (headers and end in one write) instead of piping an empty stream. An HTTP/2 request
    // says so only with END_STREAM, so it is always piped.
    const pipeBody = hasBody || ex.h2;
    down.on('data', (d: Buffer) => { ex.bytesIn += d.length; if (bodyLimit > 0) body.add(d); });
    // the counting listener must not start the flow: bytes go nowhere until an attempt pipes them
    if (pipeBody) down.pause(); else down.resume();
    down.once('end', () => { body.complete = true; });

    const cl = this.#clusterOf(plan);
    const admitted = cl.admit(ex.h2 || ex.grpc ? 'http2' : 'http1');
    if ('kind' in admitted) { this.#local(ex, { kind: 'respond', status: admitted.status, flags: admitted.flag, details: admitted.details, ...(admitted.body !== undefined ? { body: admitted.body } : {}) }); return; }
    ex.res.once('close', () => admitted.release());
    for (let i = 0; i < (plan.mirrorsUnresolved ?? 0); i++) this.#d.telemetry.mirror('skipped_no_endpoint');
    if (mirrors) {
      // copies go once the body is complete (it is the main request's bytes that make it flow), never before
      const out = toOutgoing(headers);
      const send = (): void => {
        for (const m of mirrors) {
          if (body.overflow || body.size > this.#limits.mirrorBodyBytes) this.#d.telemetry.mirror('skipped_body');
          else this.#mirror(ex, m, out, path, hasBody ? body.chunks : [], timeoutMs);
        }
      };
      if (body.complete) send(); else down.once('end', send);
    }
    const maxAttempts = 1 + (retries?.attempts ?? 0);
    let last: AttemptOutcome | undefined;
    const tried = new Set<string>();
    // a retry holds one of the cluster's maxRetries from its backoff to the end of its attempt
    let retryHeld = false;
    const releaseRetry = (): void => { if (retryHeld) { retryHeld = false; cl.retryDone(); } };
    for (let i = 0; i < maxAttempts; i++) {
      if (ex.done) return;
      if (i > 0) {
        if (!retries || hasBody && (!body.replayable || body.size > this.#limits.retryBufferBytes)) break;
        const wait = retryBackoffMs(retries, i, this.#random());
        if (deadline !== undefined && Date.now() + wait >= deadline) break;
        if (!cl.tryRetry()) { this.#d.telemetry.retryOverflow(plan.service.hostname); break; }
        retryHeld = true;
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (ex.done) { releaseRetry(); return; }
      }
      const picked = cl.pick(Date.now(), this.#random, { exclude: tried, hashKey: plan.hashKey });
      if ('kind' in picked) { releaseRetry(); this.#local(ex, { kind: 'respond', status: 503, flags: picked.flag, details: picked.details, body: 'no healthy upstream' }); return; }
      const ep = picked;
      tried.add(ep.uid);
      ex.attempts = i + 1;
      ex.destination = ep;
      const tryMs = attemptTimeoutMs(timeoutMs, retries, ex.start, Date.now());
      if (tryMs === 0) { releaseRetry(); break; }
      cl.started(ep);
      let outcome: AttemptOutcome | 'committed';
      try {
        outcome = await this.#attempt(ex, plan, ep, path, authority, headers, body, i === 0 && pipeBody ? down : undefined, tryMs, retries !== undefined && i + 1 < maxAttempts, deadline);
      } finally { releaseRetry(); }
      cl.finished(ep, outcome === 'committed' ? { kind: 'response', status: ex.status > 0 ? ex.status : 502 } : outcome, Date.now());
      if (outcome === 'committed') return;
      last = outcome;
      if (!shouldRetry(retries, i + 1, outcome)) break;
    }
    if (ex.done) return;
    if (deadline !== undefined && Date.now() >= deadline - 1) {
      this.#local(ex, { kind: 'respond', status: 504, flags: 'UT', details: 'upstream_response_timeout', body: 'upstream request timeout' });
      return;
    }
    const retried = ex.attempts > 1 ? 'URX' : '';
    if (last?.kind === 'response') {
      // a retriable answer was held back; after the last attempt it is what the client gets
      this.#local(ex, { kind: 'respond', status: last.status, flags: retried, details: 'via_upstream', body: '' });
    } else if (last?.kind === 'timeout') {
      this.#local(ex, { kind: 'respond', status: 504, flags: ['UT', retried].filter(Boolean).join(','), details: 'upstream_per_try_timeout', body: 'upstream request timeout' });
    } else if (last?.kind === 'connect-failure') {
      this.#local(ex, { kind: 'respond', status: 503, flags: ['UF', retried].filter(Boolean).join(','), details: 'upstream_reset_before_response_started{connection_failure}', body: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure' });
    } else {
      this.#local(ex, { kind: 'respond', status: 503, flags: ['UC', retried].filter(Boolean).join(','), details: 'upstream_reset_before_response_started{connection_termination}', body: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination' });
    }
  }

  /** The backend's cluster state (the plan's endpoints are already narrowed to its subset). */
  #clusterOf(plan: Pick<ForwardPlan, 'trafficPolicy' | 'service' | 'cluster' | 'targetPort' | 'endpoints'>): Cluster<Workload> {
    const dest = plan.trafficPolicy ? { origin: { kind: 'DestinationRule' as const, namespace: plan.service.namespace, name: plan.cluster, rule: 0 }, trafficPolicy: plan.trafficPolicy, subsets: [] } : undefined;
    return this.#clusters.cluster({ service: plan.cluster, host: plan.service.hostname, port: plan.targetPort }, dest, plan.endpoints);
  }

  /** One endpoint for a connection-level use (Upgrade, TCP): the cluster's load balancer. */
  #pick(plan: ForwardPlan): Workload | undefined {
    const p = this.#clusterOf(plan).pick(Date.now(), this.#random, { hashKey: plan.hashKey });
    return 'kind' in p ? undefined : p;
  }

  #target(plan: Pick<ForwardPlan, 'targetPort' | 'trafficPolicy'>, ep: Workload): OutboundTarget {
    const ip = ep.addresses[0]!;
    const pool = plan.trafficPolicy?.connectionPool;
    return {
      ip, port: 15008, authority: ip.includes(':') ? `[${ip}]:${plan.targetPort}` : `${ip}:${plan.targetPort}`, expectedIdentity: spiffeUri(ep),
      ...(pool?.connectTimeoutMs !== undefined ? { connectTimeoutMs: pool.connectTimeoutMs } : {}),
      ...(pool?.idleTimeoutMs !== undefined ? { idleTimeoutMs: pool.idleTimeoutMs } : {}),
    };
  }

  /**
   * Fire and forget: one copy of the request to a mirror target (Envoy's shadow), its response read and dropped.
   * Never touches the exchange: a mirror cannot delay or fail the request it copies. Bounded: at most
   * `maxConcurrentMirrors` in flight, each cut after `mirrorTimeoutMs`; the target cluster's pool limits apply.
   */
  #mirror(ex: Exchange, m: MirrorTarget, headers: Readonly<Record<string, string | string[]>>, path: string, body: readonly Buffer[], routeTimeoutMs: number | undefined): void {
    const tel = this.#d.telemetry;
    if (this.#mirrorsInFlight >= this.#limits.maxConcurrentMirrors || this.#draining) { tel.mirror('skipped_busy'); return; }
    const useH2 = ex.grpc || ex.conn.binding.protocol === 'http2' || ex.conn.binding.protocol === 'grpc';
    const cl = this.#clusterOf(m);
    const picked = cl.pick(Date.now(), this.#random);
    if ('kind' in picked) { tel.mirror('skipped_no_endpoint'); return; }
    const admitted = cl.admit(useH2 ? 'http2' : 'http1');
    if ('kind' in admitted) { tel.mirror('skipped_busy'); return; }
    const ep = picked;
    const target = this.#target(m, ep);
    this.#mirrorsInFlight++;
    cl.started(ep);
    let done = false;
    let cancel: (() => void) | undefined;
    const finish = (o: AttemptOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.#mirrorsInFlight--;
      admitted.release();
      cl.finished(ep, o, Date.now());
      tel.mirror(o.kind === 'response' ? 'sent' : 'failed');
    };
    const ms = Math.max(1, Math.min(routeTimeoutMs ?? this.#limits.mirrorTimeoutMs, this.#limits.mirrorTimeoutMs));
    const timer = setTimeout(() => { cancel?.(); finish({ kind: 'timeout' }); }, ms);
    const maxPerConn = m.trafficPolicy?.connectionPool?.maxRequestsPerConnection;
    try {
      if (useH2) {
        this.#d.pools.h2(target, maxPerConn).then((session) => {
          if (done) return;
          try {
            const s = session.request({ ...headers, ':method': ex.method, ':path': path, ':authority': m.authority, ':scheme': 'http' }, { endStream: false });
            cancel = () => { if (!s.destroyed) s.close(H2.NGHTTP2_CANCEL); };
            let status = 0;
            s.once('response', (rh: H2Headers) => { status = Number(rh[':status']); });
            s.resume();
            s.once('error', () => undefined);
            s.once('close', () => finish(status > 0 ? { kind: 'response', status } : { kind: 'reset' }));
            for (const c of body) s.write(c);
            s.end();
          } catch { finish({ kind: 'refused-stream' }); }
        }, () => finish({ kind: 'connect-failure' }));
      } else {
        const r = h1request({ agent: this.#d.pools.h1(target, maxPerConn), method: ex.method, path, headers: { ...headers, host: m.authority }, setHost: false });
        cancel = () => { r.destroy(); };
        r.once('response', (res: IncomingMessage) => {
          res.resume();
          res.once('close', () => finish(res.complete ? { kind: 'response', status: res.statusCode ?? 0 } : { kind: 'reset' }));
        });
        r.once('error', () => finish({ kind: 'reset' }));
        for (const c of body) r.write(c);
        r.end();
      }
    } catch (e) {
      log.debug('mirror failed', { error: errorMessage(e), cluster: m.cluster });
      cancel?.();
      finish({ kind: 'reset' });
    }
  }

  /**
   * One attempt. Resolves 'committed' once the response went to the client (or the exchange
   * ended), or the outcome when it may be retried (nothing was sent downstream then).
   */
  #attempt(ex: Exchange, plan: ForwardPlan, ep: Workload, path: string, authority: string, headers: HeaderList, body: BodyRecorder,
    stream: Readable | undefined, tryMs: number | undefined, mayRetry: boolean, deadline: number | undefined): Promise<AttemptOutcome | 'committed'> {
    const target = this.#target(plan, ep);
    ex.upstreamHost = `${target.ip}:${plan.targetPort}`;
    const useH2 = ex.grpc || ex.conn.binding.protocol === 'http2' || ex.conn.binding.protocol === 'grpc';
    const t0 = Date.now();
    return new Promise<AttemptOutcome | 'committed'>((resolve) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      let cancel: (() => void) | undefined;
      const settle = (o: AttemptOutcome | 'committed'): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        offDown();
        resolve(o);
      };
      // the client went away: cancel the attempt
      const onDownClose = (): void => { if (!ex.res.writableFinished) { cancel?.(); settle('committed'); } };
      ex.res.once('close', onDownClose);
      const offDown = (): void => { ex.res.off('close', onDownClose); };
      if (tryMs !== undefined) timer = setTimeout(() => { cancel?.(); settle({ kind: 'timeout' }); }, Math.max(1, tryMs));

      const sendBody = (w: NodeJS.WritableStream & { end(): void }): void => {
        if (stream) { stream.pipe(w); return; }
        for (const c of body.chunks) w.write(c);
        w.end();
      };
      const onResponse = (status: number, rawHeaders: string[], grpcStatus: string | undefined, upstream: Readable, trailers: () => Record<string, string | string[]> | undefined): void => {
        if (settled) { upstream.destroy(); return; }
        const outcome: AttemptOutcome = { kind: 'response', status, grpcStatus: grpcStatus !== undefined ? Number(grpcStatus) : undefined };
        if (mayRetry && shouldRetry(plan.retries, 1, outcome)) {
          upstream.resume();
          cancel?.();
          settle(outcome);
          return;
        }
        clearTimeout(timer);
        ex.upstreamMs = Date.now() - t0;
        ex.status = status;
        ex.grpcStatus = grpcStatus;
        ex.details = 'via_upstream';
        const list = forwardableResponseHeaders(rawHeaders);
        for (const m of plan.responseHeaders ?? []) applyModifier(list, m);
        const res = ex.res;
        try {
          res.writeHead(status, toOutgoing(list));
        } catch (e) {
          log.debug('bad upstream response headers', { error: errorMessage(e) });
          upstream.destroy();
          settled = true; offDown();
          this.#local(ex, { kind: 'respond', status: 502, flags: 'UPE', details: 'upstream_headers_invalid' });
          resolve('committed');
          return;
        }
        upstream.on('data', (d: Buffer) => { ex.bytesOut += d.length; });
        // the route timeout covers the whole response: past it, the stream is cut (UT)
        let routeTimer: NodeJS.Timeout | undefined;
        if (deadline !== undefined) {
          routeTimer = setTimeout(() => { ex.flags.add('UT'); upstream.destroy(); this.#abortDown(ex); settle('committed'); }, Math.max(1, deadline - Date.now()));
          ex.res.once('close', () => clearTimeout(routeTimer));
        }
        upstream.pipe(res as unknown as NodeJS.WritableStream, { end: false });
        upstream.once('end', () => {
          const t = trailers();
          if (t) {
            const g = t['grpc-status'];
            if (typeof g === 'string') ex.grpcStatus = g;
            try { (res as { addTrailers(h: Record<string, string | string[]>): void }).addTrailers(t); } catch { /* bad trailer: dropped */ }
          }
          res.end();
          settle('committed');
        });
        upstream.once('error', () => { ex.flags.add('UR'); this.#abortDown(ex); settle('committed'); });
        upstream.once('close', () => { if (!upstream.readableEnded) { ex.flags.add('UR'); this.#abortDown(ex); settle('committed'); } });
        // the downstream answer is now the upstream's: the route timeout still applies
      };

      if (useH2) {
        this.#d.pools.h2(target, plan.trafficPolicy?.connectionPool?.maxRequestsPerConnection).then((session) => {
          if (settled) return;
          const h: Record<string, string | string[]> = { ...toOutgoing(headers), ':method': ex.method, ':path': path, ':authority': authority, ':scheme': 'http' };
          let s: ClientHttp2Stream;
          try {
            s = session.request(h, { endStream: false });
          } catch {
            settle({ kind: 'refused-stream' });
            return;
          }
          cancel = () => { if (!s.destroyed) s.close(H2.NGHTTP2_CANCEL); };
          let trailers: Record<string, string | string[]> | undefined;
          s.once('trailers', (t: H2Headers) => { trailers = plainHeaders(t); });
          s.once('response', (rh: H2Headers) => {
            const status = Number(rh[':status']);
            const raw: string[] = [];
            for (const [k, v] of Object.entries(rh)) {
              if (k.startsWith(':') || v === undefined) continue;
              for (const x of Array.isArray(v) ? v : [String(v)]) raw.push(k, x);
            }
            const g = rh['grpc-status'];
            onResponse(status, raw, typeof g === 'string' ? g : undefined, s, () => trailers);
          });
          s.once('error', () => undefined);
          s.once('close', () => {
            if (!settled) settle(s.rstCode === H2.NGHTTP2_REFUSED_STREAM ? { kind: 'refused-stream' } : { kind: 'reset' });
          });
          sendBody(s as unknown as NodeJS.WritableStream & { end(): void });
        }, () => settle({ kind: 'connect-failure' }));
        return;
      }

      const outgoing = toOutgoing(headers);
      outgoing['host'] = authority;
      const r = h1request({ agent: this.#d.pools.h1(target, plan.trafficPolicy?.connectionPool?.maxRequestsPerConnection), method: ex.method, path, headers: outgoing, setHost: false });
      let connected = false;
      cancel = () => { r.destroy(); };
      r.once('socket', (sock) => {
        if ((sock as { connecting?: boolean }).connecting === false || (sock as { readyState?: string }).readyState === 'open') connected = true;
        else sock.once('connect', () => { connected = true; });
        // a pooled socket is already connected: no event comes
        connected = true;
      });
      r.once('response', (upRes: IncomingMessage) => {
        onResponse(upRes.statusCode ?? 502, upRes.rawHeaders, undefined, upRes, () => (upRes.rawTrailers.length > 0 ? plainHeaders(upRes.trailers as H2Headers) : undefined));
      });
      r.once('error', (e: NodeJS.ErrnoException) => {
        const code = (e as { code?: string }).code ?? '';
        settle(code.startsWith('AMBIT_CONNECT') || code === 'AMBIT_HBONE_STATUS' || code === 'AMBIT_IDENTITY_MISMATCH' || !connected ? { kind: 'connect-failure' } : { kind: 'reset' });
      });
      sendBody(r as unknown as NodeJS.WritableStream & { end(): void });
    });
  }

  async #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const conn = this.#conns.get(socket);
    const up = upgradeOf(req.rawHeaders);
    if (!conn || !up) { socket.destroy(); return; }
    const headers = forwardableRequestHeaders(req.rawHeaders);
    const trace = propagateTrace(headers);
    const start = Date.now();
    const facts: RequestFacts = {
      method: req.method ?? 'GET', target: req.url ?? '/', authority: getHeader(headers, 'host') ?? conn.info.authority,
      headers, grpc: false, sourcePrincipal: conn.info.peerIdentity, sourceIp: conn.info.remoteIp,
    };
    const plan = this.#plan(conn, facts);
    const finish = (status: number, flags: string, dest: Workload | undefined, upstreamHost: string | undefined): void => {
      const labels = requestLabels({ source: conn.source, sourcePrincipal: conn.info.peerIdentity, destination: dest, service: conn.binding.service, protocol: 'http', status, flags });
      this.#d.telemetry.request(labels, {
        start, method: facts.method, path: req.url ?? '/', protocol: 'HTTP/1.1', status, flags, details: status === 101 ? 'upgrade' : 'upgrade_failed',
        bytesReceived: 0, bytesSent: 0, durationMs: Date.now() - start, requestId: trace.requestId, authority: facts.authority, downstreamRemote: conn.info.remoteIp, attempts: 1,
        upstreamHost, traceId: trace.traceId,
      });
    };
    this.#d.telemetry.started('http');
    if (plan.kind === 'respond') {
      socket.end(`HTTP/1.1 ${plan.status} x\r\ncontent-length: ${Buffer.byteLength(plan.body ?? '')}\r\nconnection: close\r\n\r\n${plan.body ?? ''}`);
      finish(plan.status, plan.flags, undefined, undefined);
      return;
    }
    const ep = this.#pick(plan);
    if (!ep) { socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'); finish(503, 'UH', undefined, undefined); return; }
    const target = this.#target(plan, ep);
    let upstream: Duplex;
    try {
      upstream = await this.#d.pools.open(target);
    } catch {
      socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      finish(503, 'UF', ep, target.authority);
      return;
    }
    setHeader(headers, 'x-forwarded-client-cert', `By=${this.#d.identity()};URI=${conn.info.peerIdentity}`);
    for (const m of plan.requestHeaders) applyModifier(headers, m);
    let text = `${req.method ?? 'GET'} ${plan.path} HTTP/1.1\r\nhost: ${plan.authority}\r\nconnection: Upgrade\r\nupgrade: ${up}\r\n`;
    for (const [k, v] of headers) if (k !== 'host') text += `${k}: ${v.replace(/[\r\n]/g, '')}\r\n`;
    upstream.write(text + '\r\n');
    if (head.length > 0) upstream.write(head);
    let status = 0;
    upstream.once('data', (d: Buffer) => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(d.subarray(0, 16).toString('latin1'));
      status = m ? Number(m[1]) : 502;
      finish(status, '', ep, target.authority);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
    upstream.pipe(socket);
    socket.pipe(upstream);
    upstream.once('close', () => { socket.destroy(); if (status === 0) finish(502, 'UC', ep, target.authority); });
    socket.once('close', () => upstream.destroy());
  }

  /** Opaque TCP to an endpoint of the bound service (or the bound pod). */
  #tcp(stream: Duplex, conn: Conn): void {
    const plan = planTcp(this.#d.snapshot(), conn.binding, this.#d.l7, { sourcePrincipal: conn.info.peerIdentity, sourceIp: conn.info.remoteIp }, this.#d.me()?.service);
    const start = Date.now();
    const labelsFor = (dest: Workload | undefined, flags: string) => requestLabels({
      source: conn.source, sourcePrincipal: conn.info.peerIdentity, destination: dest, service: conn.binding.service, protocol: 'tcp', status: 0, flags,
    });
    if (plan.kind === 'respond') {
      const l = labelsFor(undefined, plan.flags);
      this.#d.telemetry.tcpOpened(l);
      this.#d.telemetry.tcpClosed(l, 0, 0, { durationMs: 0, error: plan.details, downstreamRemote: conn.info.remoteIp });
      stream.destroy();
      return;
    }
    // the cluster counts the connection (least request) and its connect outcome (outlier detection: over TCP,
    // connect failures are the errors)
    const cl = this.#clusterOf(plan);
    const admitted = cl.admitTcp();
    if ('kind' in admitted) {
      const l = labelsFor(undefined, admitted.flag);
      this.#d.telemetry.tcpOpened(l);
      this.#d.telemetry.tcpClosed(l, 0, 0, { durationMs: 0, error: admitted.details, downstreamRemote: conn.info.remoteIp });
      stream.destroy();
      return;
    }
    stream.once('close', () => admitted.release());
    const picked = cl.pick(Date.now(), this.#random, { hashKey: plan.hashKey });
    if ('kind' in picked) { stream.destroy(); return; }
    const ep = picked;
    const target = this.#target(plan, ep);
    stream.pause();
    cl.started(ep);
    this.#d.pools.open(target).then((up) => {
      const l = labelsFor(ep, '');
      this.#d.telemetry.tcpOpened(l);
      let sent = 0;
      let received = 0;
      stream.on('data', (d: Buffer) => { received += d.length; });
      up.on('data', (d: Buffer) => { sent += d.length; });
      stream.pipe(up);
      up.pipe(stream);
      stream.resume();
      let closed = false;
      const close = (err?: Error): void => {
        if (closed) return;
        closed = true;
        stream.destroy();
        up.destroy();
        cl.finished(ep, { kind: 'response', status: 200 }, Date.now());
        this.#d.telemetry.tcpClosed(l, sent, received, { durationMs: Date.now() - start, error: err ? errorMessage(err) : undefined, downstreamRemote: conn.info.remoteIp, upstreamHost: target.authority });
      };
      up.once('error', close);
      stream.once('error', close);
      up.once('close', () => { if (!stream.writableEnded) stream.end(); setImmediate(close); });
      stream.once('close', () => close());
    }, (e: unknown) => {
      cl.finished(ep, { kind: 'connect-failure' }, Date.now());
      const l = labelsFor(ep, 'UF');
      this.#d.telemetry.tcpOpened(l);
      this.#d.telemetry.tcpClosed(l, 0, 0, { durationMs: Date.now() - start, error: errorMessage(e), downstreamRemote: conn.info.remoteIp, upstreamHost: target.authority });
      stream.destroy();
    });
  }

  /** A local answer (no upstream response); gRPC requests get a gRPC status instead of an HTTP error. */
  #local(ex: Exchange, r: LocalReply): void {
    if (ex.done || ex.res.headersSent) { this.#abortDown(ex); return; }
    ex.status = r.status;
    ex.details = r.details;
    for (const f of r.flags.split(',')) if (f) ex.flags.add(f);
    const res = ex.res;
    const headers: Record<string, string | string[]> = r.headers ? toOutgoing(r.headers) : {};
    let body = r.body ?? '';
    if (ex.grpc && (r.status >= 400 || r.grpcStatus !== undefined)) {
      const g = r.grpcStatus !== undefined ? String(r.grpcStatus) : GRPC_STATUS_OF_HTTP[r.status] ?? '2';
      ex.grpcStatus = g;
      ex.status = 200;
      headers['content-type'] = 'application/grpc';
      headers['grpc-status'] = g;
      headers['grpc-message'] = encodeURIComponent(body || r.details);
      body = '';
      res.writeHead(200, headers);
      res.end();
      return;
    }
    headers['content-type'] ??= 'text/plain';
    headers['content-length'] = String(Buffer.byteLength(body));
    if (!ex.h2 && r.status >= 500) headers['connection'] = 'close';
    try {
      res.writeHead(r.status, headers);
      res.end(body);
      ex.bytesOut += Buffer.byteLength(body);
    } catch {
      this.#abortDown(ex);
    }
  }

  /** The response cannot be completed: the client must see the failure, never wait. */
  #abortDown(ex: Exchange): void {
    if (ex.h2) {
      const s = (ex.req as Http2ServerRequest).stream;
      if (!s.destroyed) s.close(H2.NGHTTP2_INTERNAL_ERROR);
    } else {
      ex.req.socket?.destroy();
    }
  }

  #finish(ex: Exchange): void {
    if (ex.done) return;
    ex.done = true;
    if (!ex.res.writableFinished) {
      if (ex.status === 0 || !ex.flags.has('UR')) ex.flags.add('DC');
    }
    const plan = ex.plan;
    const labels = requestLabels({
      source: ex.conn.source, sourcePrincipal: ex.conn.info.peerIdentity, destination: ex.destination,
      service: plan?.kind === 'forward' ? plan.service : ex.conn.binding.service,
      protocol: this.#protocolLabel(ex), status: ex.status, grpcStatus: ex.grpcStatus, flags: [...ex.flags].join(','),
    });
    const h = ex.req.headers;
    this.#d.telemetry.request(labels, {
      start: ex.start, method: ex.method, path: ex.path, protocol: ex.h2 ? 'HTTP/2' : `HTTP/${(ex.req as IncomingMessage).httpVersion ?? '1.1'}`,
      status: ex.status, flags: labels.response_flags, details: ex.details, bytesReceived: ex.bytesIn, bytesSent: ex.bytesOut,
      durationMs: Date.now() - ex.start, upstreamMs: ex.upstreamMs, requestId: ex.trace.requestId, authority: ex.authority,
      userAgent: typeof h['user-agent'] === 'string' ? h['user-agent'] : undefined,
      xff: typeof h['x-forwarded-for'] === 'string' ? h['x-forwarded-for'] : undefined,
      upstreamHost: ex.upstreamHost, upstreamCluster: plan?.kind === 'forward' ? plan.cluster : undefined,
      downstreamRemote: ex.conn.info.remoteIp, routeName: plan?.routeName, traceId: ex.trace.traceId, grpcStatus: ex.grpcStatus, attempts: ex.attempts,
    });
  }

  /**
   * Drain: every HTTP/1.1 connection closes after its current answer. One idle between requests is
   * closed now (its client opens the next one, to another instance). One that has not sent its
   * first request yet is left to send it: its stream was accepted before the drain (the engine
   * sends GOAWAY and closes its listener first), and ending it would lose that request, which a
   * client of HTTP/1.0 or of a new connection never retries. The drain deadline bounds them all.
   * HTTP/2 sessions get GOAWAY.
   */
  drain(): void {
    this.#draining = true;
    for (const s of this.#open) {
      // node:http's current answer on the connection: undefined before its first request (and on
      // streams that are not HTTP/1.1), null between answers
      const current = (s as { _httpMessage?: ServerResponse | null })._httpMessage;
      if (current === undefined) continue;
      if (current === null) {
        s.end();
      } else if (!current.headersSent) {
        current.shouldKeepAlive = false;
      } else {
        current.once('finish', () => s.end());
      }
    }
    // GOAWAY: streams already open finish, the client opens its next ones elsewhere
    // (Http2Server.close() alone only stops new sessions)
    for (const session of this.#sessions) session.close();
  }

  /** Cut what is left. */
  destroy(): void {
    this.#draining = true;
    this.#cut = true;
    for (const s of this.#open) s.destroy();
    this.#open.clear();
  }
}

function plainHeaders(h: H2Headers | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !k.startsWith(':')) out[k] = v as string | string[];
  return out;
}
