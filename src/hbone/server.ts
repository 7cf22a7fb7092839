/**
 * HBONE server: one per pod listener (so one certificate, no SNI). Layers, each checked before
 * the next gets a byte:
 *   TCP accept (limits, current certificate) -> TLS 1.3, client certificate required and
 *   chained to the mesh roots -> our own SPIFFE checks on the DER chain (exactly one URI SAN,
 *   same trust domain) -> HTTP/2 (bounded headers/streams, reset-flood guard) -> CONNECT request
 *   checks (method, authority) -> the caller's decision (`onConnect`) -> 200 and byte copying.
 */
import { createServer as h2createServer, constants as h2, type Http2Server, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream, type ServerStreamResponseOptions } from 'node:http2';
import { createServer as netCreateServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { Server as TlsServer, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { MeshError, errorMessage, logger } from '../core/index.js';
import { requireTrustDomain, spiffeUri, verifyTlsPeer, type CertBundle, type Identity } from '../identity/index.js';
import { parseAuthority, type HboneTarget } from './authority.js';
import { startKeepalive } from './keepalive.js';
import { ALPN, DEFAULTS, contextOptions, type Http2Tuning } from './settings.js';
import { startTunnel, type HboneTunnel, type TunnelCloseInfo } from './tunnel.js';

const log = logger('hbone.server');

export interface HboneConnectRequest {
  /** the raw `:authority` */
  authority: string;
  /** the parsed authority (IPs canonical) */
  target: HboneTarget;
  /** the client's verified identity */
  peer: Identity;
  /** request headers without pseudo headers; repeated headers joined with ", " (telemetry only, never identity) */
  headers: Record<string, string>;
  /** address the TCP connection arrived on (the pod IP) */
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** aborted when the client resets the stream or the server shuts down before the answer */
  signal: AbortSignal;
}

export type ConnectResult =
  | {
    status: 200;
    /** connected upstream (use allowHalfOpen sockets so half-close passes through) */
    upstream: Duplex;
    /** extra response headers (e.g. baggage) */
    headers?: Record<string, string>;
    onClose?: (info: TunnelCloseInfo) => void;
  }
  | { status: 400 | 401 | 403 | 503; reason: string };

export interface HboneServerOptions extends Http2Tuning {
  /** the local pod's certificate, read per handshake (rotation); undefined refuses connections */
  identity: () => CertBundle | undefined;
  /** clients must belong to this trust domain */
  trustDomain: string;
  onConnect: (req: HboneConnectRequest) => Promise<ConnectResult>;
  /** SETTINGS_MAX_CONCURRENT_STREAMS per session; default 200 */
  maxConcurrentStreams?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE, bytes; default 64 KiB */
  maxHeaderListSize?: number;
  /** header fields per request; default 128 */
  maxHeaderListPairs?: number;
  /** TLS handshake deadline, ms; default 10_000 */
  handshakeTimeoutMs?: number;
  /** onConnect must answer within this, ms, else 503; default 15_000 */
  connectDecisionTimeoutMs?: number;
  /** streams a session may reset before we answered, in a burst; default 100 */
  resetBurst?: number;
  /** sustained rate of such resets allowed, per second; default 20 */
  resetRatePerSecond?: number;
  /** protocol errors tolerated per session (node maxSessionInvalidFrames); default 100 */
  maxSessionInvalidFrames?: number;
  /** streams refused per session before it is closed (node maxSessionRejectedStreams); default 100 */
  maxSessionRejectedStreams?: number;
}

export interface HboneServerStats {
  sessions: number;
  tunnels: number;
  /** TLS handshakes that produced a verified session */
  handshakes: number;
  /** connections refused at TLS or identity level */
  rejected: number;
  /** sessions closed by the reset-flood guard */
  abusive: number;
}

interface SessionState {
  socket: TLSSocket;
  peer: Identity;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  tokens: number;
  refilledAt: number;
}

const ALLOWED_REFUSALS = new Set([400, 401, 403, 503]);

/**
 * The abort side of one pending CONNECT decision. The AbortController behind `signal` is made
 * only when someone reads the signal: making one per stream was a visible share of the server's
 * CPU per new connection, and the node agent's decision never reads it.
 */
class PendingAbort {
  #ctl: AbortController | undefined;
  #aborted = false;

  get signal(): AbortSignal {
    if (this.#ctl === undefined) {
      this.#ctl = new AbortController();
      if (this.#aborted) this.#ctl.abort();
    }
    return this.#ctl.signal;
  }

  abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#ctl?.abort();
  }
}

/** Node's http2 honours `sendDate` on respond(); its typings do not list it. */
const RESPOND_200: ServerStreamResponseOptions & { sendDate: boolean } = { sendDate: false };

/** A decision waiting for onConnect, in the server's deadline queue. */
interface DecisionDeadline { at: number; expire: () => void }

function flattenHeaders(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  // for-in, not Object.entries: no pair arrays per header on every CONNECT
  for (const k in h) {
    const v = h[k];
    if (k.charCodeAt(0) === 58 /* ':' */ || v === undefined || !Object.hasOwn(h, k)) continue;
    out[k] = Array.isArray(v) ? v.join(', ') : String(v);
  }
  return out;
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? undefined : v;
}

/**
 * A 200 answer that will not be carried (the client reset meanwhile, the deadline passed, the
 * server is closing): the upstream goes, and the caller still hears that its tunnel ended. The
 * caller registered the connection before answering (registry, drain); without onClose that
 * registration would leak once per reset a peer sends.
 */
function dropAnswer(r: Extract<ConnectResult, { status: 200 }>, reason: string): void {
  r.upstream.destroy();
  try {
    r.onClose?.({ bytesIn: 0, bytesOut: 0, durationMs: 0, error: reason });
  } catch (e) {
    log.warn('hbone onClose threw', { error: errorMessage(e) });
  }
}

export class HboneServer {
  readonly #o: HboneServerOptions;
  readonly #net: NetServer;
  readonly #tls: TlsServer;
  readonly #h2: Http2Server;
  readonly #sessions = new Map<Http2Session, SessionState>();
  readonly #tunnels = new Set<HboneTunnel>();
  readonly #sockets = new Set<Socket>();
  readonly #aborts = new Set<PendingAbort>();
  /**
   * Decisions still waiting, oldest first (all have the same timeout, so insertion order is
   * deadline order). One unref'd timer serves them all instead of a timer per stream; the
   * session socket of a pending stream keeps the process alive meanwhile.
   */
  readonly #deadlines = new Set<DecisionDeadline>();
  #deadlineTimer: NodeJS.Timeout | undefined;
  readonly #maxConnections: number;
  readonly #resetBurst: number;
  readonly #resetRate: number;
  readonly #connectionWindow: number;
  readonly #decisionMs: number;
  #ctxBundle: CertBundle | undefined;
  /** set only while a verified TLS socket is handed to the h2 server (its 'session' event is synchronous) */
  #pending: SessionState | undefined;
  #closing = false;
  #stats = { handshakes: 0, rejected: 0, abusive: 0 };

  constructor(o: HboneServerOptions) {
    if (typeof o?.identity !== 'function') throw new MeshError('AMBIT_CONFIG_INVALID', 'hbone server: identity must be a function');
    if (typeof o.onConnect !== 'function') throw new MeshError('AMBIT_CONFIG_INVALID', 'hbone server: onConnect must be a function');
    if (typeof o.trustDomain !== 'string' || o.trustDomain.length === 0) {
      throw new MeshError('AMBIT_CONFIG_INVALID', 'hbone server: trustDomain must be a non-empty string');
    }
    this.#o = o;
    this.#maxConnections = o.maxConnections ?? 4096;
    this.#resetBurst = o.resetBurst ?? 100;
    this.#resetRate = o.resetRatePerSecond ?? 20;
    this.#connectionWindow = o.connectionWindow ?? DEFAULTS.connectionWindow;
    this.#decisionMs = o.connectDecisionTimeoutMs ?? 15_000;

    this.#net = netCreateServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: DEFAULTS.tcpKeepAliveDelayMs },
      (s) => this.#accept(s));
    this.#net.on('error', (e) => log.warn('hbone listener error', { error: errorMessage(e) }));

    // Never listens itself: sockets are handed in by #accept after our own admission checks.
    this.#tls = new TlsServer({
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ALPN,
      handshakeTimeout: o.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
    });
    this.#tls.on('secureConnection', (s: TLSSocket) => this.#secured(s));
    this.#tls.on('tlsClientError', (e: Error) => {
      this.#stats.rejected++;
      log.debug('hbone tls handshake refused', { error: errorMessage(e) });
    });

    this.#h2 = h2createServer({
      settings: {
        enablePush: false,
        maxConcurrentStreams: o.maxConcurrentStreams ?? DEFAULTS.serverMaxConcurrentStreams,
        maxHeaderListSize: o.maxHeaderListSize ?? DEFAULTS.serverMaxHeaderList,
        initialWindowSize: o.streamWindow ?? DEFAULTS.streamWindow,
        maxFrameSize: o.maxFrameSize ?? DEFAULTS.maxFrameSize,
      },
      maxHeaderListPairs: o.maxHeaderListPairs ?? DEFAULTS.maxHeaderListPairs,
      maxSessionInvalidFrames: o.maxSessionInvalidFrames ?? 100,
      maxSessionRejectedStreams: o.maxSessionRejectedStreams ?? 100,
      maxSessionMemory: DEFAULTS.maxSessionMemoryMb,
      unknownProtocolTimeout: 1000,
    });
    this.#h2.on('session', (s: ServerHttp2Session) => this.#session(s));
    this.#h2.on('stream', (st: ServerHttp2Stream, h: IncomingHttpHeaders) => this.#stream(st, h));
  }

  /** Listen on an inherited listening socket (`fd`, opened in the pod netns) or a port. */
  listen(handle: { fd: number } | { port: number; host?: string }): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => reject(new MeshError('AMBIT_SYSCALL', `hbone listen: ${errorMessage(e)}`, { cause: e }));
      this.#net.once('error', onError);
      this.#net.listen(handle, () => { this.#net.off('error', onError); resolve(); });
    });
  }

  /** Bound address (after listen on a port). */
  address(): AddressInfo | undefined {
    const a = this.#net.address();
    return a !== null && typeof a === 'object' ? a : undefined;
  }

  /** Serve an already accepted TCP socket. */
  handle(socket: Socket): void {
    this.#accept(socket);
  }

  /** Live tunnels, so a policy change can close the ones it now denies. */
  connections(): Iterable<HboneTunnel> {
    return [...this.#tunnels];
  }

  stats(): HboneServerStats {
    return { sessions: this.#sessions.size, tunnels: this.#tunnels.size, ...this.#stats };
  }

  /**
   * Ask every connected client to move to a new connection (graceful GOAWAY) while we keep
   * listening: open tunnels finish, new ones go on fresh connections (e.g. after rotation).
   */
  drainSessions(): void {
    for (const s of this.#sessions.keys()) if (!s.closed) s.close();
  }

  /**
   * Stop accepting, send GOAWAY, let tunnels finish until `deadlineMs`, then destroy what is left.
   */
  async close(deadlineMs = 5000): Promise<void> {
    this.#closing = true;
    const listening = new Promise<void>((resolve) => {
      if (!this.#net.listening) { resolve(); return; }
      this.#net.close(() => resolve());
    });
    for (const a of this.#aborts) a.abort();
    this.drainSessions();
    const sessionsGone = (): Promise<unknown> => Promise.all([...this.#sessions.keys()].map((s) =>
      new Promise<void>((resolve) => { if (s.destroyed) resolve(); else s.once('close', () => resolve()); })));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, deadlineMs); });
    await Promise.race([sessionsGone(), deadline]);
    clearTimeout(timer);
    for (const t of this.#tunnels) t.close('hbone server shutting down');
    for (const s of this.#sessions.keys()) s.destroy();
    for (const s of this.#sockets) s.destroy();
    await Promise.all([sessionsGone(), listening]);
  }

  #accept(sock: Socket): void {
    sock.on('error', () => { /* the TLS layer reports */ });
    if (this.#closing) { sock.destroy(); return; }
    if (this.#sockets.size >= this.#maxConnections) {
      log.warn('hbone connection limit reached, refusing', { limit: this.#maxConnections });
      this.#stats.rejected++;
      sock.destroy();
      return;
    }
    let bundle: CertBundle | undefined;
    try {
      bundle = this.#o.identity();
    } catch (e) {
      log.warn('hbone: reading the local certificate failed', { error: errorMessage(e) });
    }
    if (bundle === undefined) {
      // No certificate: refuse rather than serve without identity.
      this.#stats.rejected++;
      sock.destroy();
      return;
    }
    if (bundle !== this.#ctxBundle) {
      try {
        this.#tls.setSecureContext(contextOptions(bundle));
        this.#ctxBundle = bundle;
      } catch (e) {
        log.error('hbone: unusable local certificate, refusing connections', { error: errorMessage(e) });
        this.#stats.rejected++;
        sock.destroy();
        return;
      }
    }
    sock.setNoDelay(true);
    sock.setKeepAlive(true, DEFAULTS.tcpKeepAliveDelayMs);
    this.#sockets.add(sock);
    sock.once('close', () => this.#sockets.delete(sock));
    this.#tls.emit('connection', sock);
  }

  #secured(tls: TLSSocket): void {
    let peer: Identity;
    try {
      if (tls.alpnProtocol !== 'h2') throw new MeshError('AMBIT_HBONE_BAD_REQUEST', `alpn ${String(tls.alpnProtocol)} is not h2`);
      if (tls.getProtocol() !== 'TLSv1.3') throw new MeshError('AMBIT_CERT_INVALID', 'not TLS 1.3');
      const roots = this.#ctxBundle?.rootsPem;
      if (roots === undefined) throw new MeshError('AMBIT_CERT_INVALID', 'no trust bundle');
      peer = verifyTlsPeer(tls, roots);
      requireTrustDomain(peer, this.#o.trustDomain);
    } catch (e) {
      this.#stats.rejected++;
      log.debug('hbone client refused', { remote: tls.remoteAddress, error: errorMessage(e) });
      tls.destroy();
      return;
    }
    this.#stats.handshakes++;
    tls.on('error', () => { /* the h2 session reports */ });
    const state: SessionState = {
      socket: tls,
      peer,
      localAddress: tls.localAddress ?? '',
      localPort: tls.localPort ?? 0,
      remoteAddress: tls.remoteAddress ?? '',
      remotePort: tls.remotePort ?? 0,
      tokens: this.#resetBurst,
      refilledAt: Date.now(),
    };
    this.#pending = state;
    try {
      this.#h2.emit('connection', tls);
    } finally {
      this.#pending = undefined;
    }
  }

  #session(s: ServerHttp2Session): void {
    const state = this.#pending;
    if (state === undefined) {
      // Only sockets that passed #secured may become sessions; anything else is a bug: fail closed.
      s.destroy();
      return;
    }
    this.#sessions.set(s, state);
    s.on('error', (e) => log.debug('hbone session error', { peer: spiffeUri(state.peer), error: errorMessage(e) }));
    s.on('frameError', () => { /* the stream concerned is reset */ });
    const grow = (): void => { try { s.setLocalWindowSize(this.#connectionWindow); } catch { /* closed */ } };
    if (s.connecting === false) grow(); else s.once('connect', grow);
    startKeepalive(s, {
      intervalMs: this.#o.pingIntervalMs ?? DEFAULTS.pingIntervalMs,
      timeoutMs: this.#o.pingTimeoutMs ?? DEFAULTS.pingTimeoutMs,
      onTimeout: () => s.destroy(),
    });
    s.once('close', () => {
      this.#sessions.delete(s);
      // A destroyed session does not always take its TLS socket down with it (seen with a
      // peer that keeps sending): make sure nothing lingers.
      if (!state.socket.destroyed) state.socket.destroy();
    });
  }

  /** Token bucket over streams the client reset before we answered (rapid reset, CVE-2023-44487). */
  #prematureReset(s: Http2Session, st: SessionState): void {
    const now = Date.now();
    st.tokens = Math.min(this.#resetBurst, st.tokens + ((now - st.refilledAt) / 1000) * this.#resetRate);
    st.refilledAt = now;
    st.tokens -= 1;
    if (st.tokens < 0 && !s.destroyed) {
      this.#stats.abusive++;
      log.warn('hbone session reset flood, closing', { peer: spiffeUri(st.peer), remote: st.remoteAddress });
      s.goaway(h2.NGHTTP2_ENHANCE_YOUR_CALM);
      s.destroy();
      st.socket.destroy();
    }
  }

  #stream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => { /* reset streams are routine */ });
    const session = stream.session;
    const st = session === undefined ? undefined : this.#sessions.get(session);
    if (st === undefined || session === undefined) { stream.close(h2.NGHTTP2_REFUSED_STREAM); return; }
    let answered = false;
    const refuse = (status: number, reason: string): void => {
      answered = true;
      log.debug('hbone CONNECT refused', { status, reason, peer: spiffeUri(st.peer) });
      if (stream.destroyed || stream.closed) return;
      if (!stream.headersSent) stream.respond({ ':status': status }, { endStream: true });
      // Whatever the client already sent is dropped, never forwarded (no early data).
      stream.close(h2.NGHTTP2_NO_ERROR);
    };
    if (this.#closing) { refuse(503, 'server shutting down'); return; }
    const method = single(headers[':method']);
    if (method !== 'CONNECT') { refuse(400, `method ${String(method).slice(0, 20)} is not CONNECT`); return; }
    if (headers[':protocol'] !== undefined || headers[':path'] !== undefined || headers[':scheme'] !== undefined) {
      refuse(400, 'CONNECT must not carry :protocol, :path or :scheme');
      return;
    }
    const authority = single(headers[':authority']) ?? '';
    let target: HboneTarget;
    try {
      target = parseAuthority(authority);
    } catch (e) {
      refuse(400, errorMessage(e));
      return;
    }
    const abort = new PendingAbort();
    this.#aborts.add(abort);
    stream.once('close', () => {
      this.#aborts.delete(abort);
      if (!answered) {
        abort.abort();
        this.#prematureReset(session, st);
      }
    });
    const req: HboneConnectRequest = {
      authority, target, peer: st.peer, headers: flattenHeaders(headers),
      localAddress: st.localAddress, localPort: st.localPort, remoteAddress: st.remoteAddress, remotePort: st.remotePort,
      get signal(): AbortSignal { return abort.signal; },
    };
    void this.#decide(req).then((r) => {
      this.#aborts.delete(abort);
      if (r.status !== 200) {
        refuse(ALLOWED_REFUSALS.has(r.status) ? r.status : 503, r.reason);
        return;
      }
      if (answered || stream.destroyed || stream.closed || this.#closing) {
        // The client is gone (or we are shutting down): the upstream connection is not needed.
        dropAnswer(r, this.#closing ? 'server shutting down' : 'client reset the stream before the answer');
        if (!answered) refuse(503, 'server shutting down');
        return;
      }
      answered = true;
      try {
        // No `date`: the client never reads it, and it was one more header to build per tunnel.
        stream.respond({ ...(r.headers ?? {}), ':status': 200 }, RESPOND_200);
      } catch (e) {
        dropAnswer(r, `response headers: ${errorMessage(e)}`);
        refuse(503, `response headers: ${errorMessage(e)}`);
        return;
      }
      const tunnel = startTunnel(stream, r.upstream, {
        peer: st.peer, target, authority, remoteAddress: st.remoteAddress, remotePort: st.remotePort,
        ...(r.onClose ? { onClose: r.onClose } : {}),
        onDone: (t) => this.#tunnels.delete(t),
      });
      this.#tunnels.add(tunnel);
    });
  }

  #addDeadline(d: DecisionDeadline): void {
    this.#deadlines.add(d);
    if (this.#deadlineTimer === undefined) this.#armDeadlines(d.at);
  }

  #armDeadlines(at: number): void {
    this.#deadlineTimer = setTimeout(() => this.#expireDeadlines(), Math.max(0, Math.ceil(at - performance.now())));
    this.#deadlineTimer.unref();
  }

  /** Expires every decision past its deadline, then re-arms for the oldest one left (if any). */
  #expireDeadlines(): void {
    this.#deadlineTimer = undefined;
    const now = performance.now();
    for (const d of this.#deadlines) {
      if (d.at > now) { this.#armDeadlines(d.at); return; }
      this.#deadlines.delete(d);
      d.expire();
    }
  }

  /** onConnect, bounded in time and never throwing; a late upstream is closed. */
  #decide(req: HboneConnectRequest): Promise<ConnectResult> {
    return new Promise<ConnectResult>((resolve) => {
      let done = false;
      const deadline: DecisionDeadline = {
        at: performance.now() + this.#decisionMs,
        expire: () => {
          done = true;
          resolve({ status: 503, reason: `onConnect did not answer in ${this.#decisionMs} ms` });
        },
      };
      this.#addDeadline(deadline);
      const clearTimer = (): void => { this.#deadlines.delete(deadline); };
      let p: Promise<ConnectResult>;
      try {
        p = Promise.resolve(this.#o.onConnect(req));
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then((r) => {
        if (done) {
          if (r?.status === 200 && r.upstream) dropAnswer(r, `answered after the ${this.#decisionMs} ms decision deadline`);
          return;
        }
        done = true;
        clearTimer();
        if (r === null || typeof r !== 'object' || (r.status === 200 && (r.upstream === undefined || r.upstream === null))) {
          resolve({ status: 503, reason: 'onConnect returned no usable result' });
        } else {
          resolve(r);
        }
      }, (e: unknown) => {
        if (done) return;
        done = true;
        clearTimer();
        resolve({ status: 503, reason: `onConnect failed: ${errorMessage(e)}` });
      });
    });
  }
}
