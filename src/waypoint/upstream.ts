/**
 * Connections to endpoints, pooled per endpoint: an HTTP/1.1 keep-alive agent and one HTTP/2
 * (h2c) session per endpoint, each riding HBONE streams the transport opens with the
 * waypoint's own identity. Nothing here decides where a request goes.
 */
import { Agent, type AgentOptions, type ClientRequest, type ClientRequestArgs } from 'node:http';
import { connect as h2connect, constants as h2c, type ClientHttp2Session } from 'node:http2';
import type { Duplex } from 'node:stream';
import { MeshError, errorMessage, logger } from '../core/index.js';
import type { OutboundTarget, WaypointTransport } from './transport.js';

const log = logger('waypoint.upstream');

/** Node's HTTP machinery calls these on its sockets; a bare Duplex from a transport may lack them. */
export function socketLike<T extends Duplex>(s: T): T {
  const x = s as unknown as Record<string, unknown>;
  for (const m of ['setKeepAlive', 'setNoDelay', 'ref', 'unref']) if (typeof x[m] !== 'function') x[m] = () => s;
  if (typeof x.setTimeout !== 'function') x.setTimeout = () => s;
  return s;
}

export interface UpstreamOptions {
  /** idle keep-alive connections kept per endpoint; default 64 */
  maxIdlePerEndpoint?: number;
  /** an idle pooled connection (HTTP/1.1, or an h2c session) is closed after this, ms; default 60_000 (a target's `idleTimeoutMs` wins) */
  idleMs?: number;
  /** CONNECT headers added to every upstream stream */
  connectHeaders?: () => Readonly<Record<string, string>>;
  /** a stream not established within this is abandoned (connect failure), ms; default 10_000 (Istio's connectTimeout) */
  connectTimeoutMs?: number;
}

/** Istio's default DestinationRule `connectionPool.tcp.connectTimeout` */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

const agentAddRequest = (Agent.prototype as unknown as { addRequest(req: ClientRequest, o: unknown): void }).addRequest;

/**
 * Keep-alive agent over HBONE streams. With `maxRequestsPerConnection` (N > 0) a connection is retired after
 * its Nth request: that request carries `connection: close`, so the connection ends cleanly (our end sent, then
 * closed) after its response and is never pooled again.
 */
class HboneAgent extends Agent {
  readonly #open: (cb: (err: Error | null, s?: Duplex) => void) => void;
  /** 0 = unlimited; set by the caller per request (the cluster's connection-pool policy) */
  maxRequestsPerConnection = 0;
  /** where new connections go (the latest request's target: same endpoint, current connect timeout) */
  target!: OutboundTarget;
  readonly #uses = new WeakMap<object, number>();
  /** the request node:http's Agent is finding a socket for (addRequest is synchronous up to createConnection) */
  #adding: ClientRequest | undefined;
  constructor(o: AgentOptions, open: (cb: (err: Error | null, s?: Duplex) => void) => void) {
    super(o);
    this.#open = open;
  }
  addRequest(req: ClientRequest, o: unknown): void {
    this.#adding = req;
    try { agentAddRequest.call(this, req, o); } finally { this.#adding = undefined; }
  }
  // node:http's Agent calls this to make a socket; the callback form lets it be asynchronous
  override createConnection(_o: ClientRequestArgs, cb: (err: Error | null, s?: Duplex) => void): undefined {
    const req = this.#adding;
    // the new connection's first request: its headers are not written yet
    if (req) this.#used(req, 1);
    this.#open((err, s) => {
      if (s) {
        this.#uses.set(s, 1);
        // An HBONE stream is half-open capable (TCP and Upgrade need that), but an HTTP/1.1
        // connection whose server ended it is over: end ours too, so it closes and leaves the pool.
        // Left half-open, an idle pooled connection closed by the server (its keep-alive timeout)
        // would be handed the next request, written into a stream nobody reads any more.
        (s as Duplex & { allowHalfOpen: boolean }).allowHalfOpen = false;
      }
      cb(err, s);
    });
    return undefined;
  }
  // a pooled connection taken for one more request
  override reuseSocket(socket: Duplex, req: ClientRequest): void {
    super.reuseSocket(socket as never, req);
    const n = (this.#uses.get(socket) ?? 0) + 1;
    this.#uses.set(socket, n);
    this.#used(req, n);
  }
  #used(req: ClientRequest, n: number): void {
    const max = this.maxRequestsPerConnection;
    if (max > 0 && n >= max && !req.headersSent) req.setHeader('connection', 'close');
  }
}

interface H2Entry { session: ClientHttp2Session | undefined; opening: Promise<ClientHttp2Session> | undefined }

export class UpstreamPools {
  readonly #transport: WaypointTransport;
  readonly #o: UpstreamOptions;
  readonly #h1 = new Map<string, HboneAgent>();
  readonly #h2 = new Map<string, H2Entry>();
  #closed = false;
  readonly stats = { connects: 0, connectFailures: 0 };

  constructor(transport: WaypointTransport, o: UpstreamOptions = {}) {
    this.#transport = transport;
    this.#o = o;
  }

  #key(t: OutboundTarget): string { return `${t.ip}|${t.port}|${t.authority}|${t.expectedIdentity}`; }

  /**
   * Open one HBONE stream to `t` (also used for TCP and Upgrade), established within the target's
   * connect timeout (else the pools' default): past it the attempt is cancelled and fails with
   * AMBIT_CONNECT_TIMEOUT, a connect failure like a refusal.
   */
  async open(t: OutboundTarget, signal?: AbortSignal): Promise<Duplex> {
    if (this.#closed) throw new MeshError('AMBIT_DRAINING', 'waypoint upstream pools closed');
    this.stats.connects++;
    const ms = t.connectTimeoutMs ?? this.#o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const cut = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; cut.abort(); }, ms);
    const onAbort = (): void => cut.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const headers = { ...this.#o.connectHeaders?.(), ...t.headers };
      return socketLike(await this.#transport.connect({ ...t, headers }, cut.signal));
    } catch (e) {
      this.stats.connectFailures++;
      if (timedOut) throw new MeshError('AMBIT_CONNECT_TIMEOUT', `upstream connect timeout: ${t.authority} not established within ${ms} ms`);
      throw e;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * The keep-alive agent of an endpoint (created on first use).
   * @param maxRequestsPerConnection a connection is closed after this many requests; 0 (default) = unlimited
   */
  h1(t: OutboundTarget, maxRequestsPerConnection = 0): Agent {
    const key = this.#key(t);
    let a = this.#h1.get(key);
    if (a) {
      a.maxRequestsPerConnection = maxRequestsPerConnection;
      a.target = t;
      // node:http's Agent gives a freed socket `options.timeout` as its idle timeout
      (a as unknown as { options: AgentOptions }).options.timeout = t.idleTimeoutMs ?? this.#o.idleMs ?? 60_000;
      return a;
    }
    a = new HboneAgent({ keepAlive: true, maxFreeSockets: this.#o.maxIdlePerEndpoint ?? 64, timeout: t.idleTimeoutMs ?? this.#o.idleMs ?? 60_000, scheduling: 'lifo' }, (cb) => {
      this.open(agent.target).then((s) => cb(null, s), (e: unknown) => cb(e instanceof Error ? e : new Error(String(e))));
    });
    const agent = a;
    a.target = t;
    a.maxRequestsPerConnection = maxRequestsPerConnection;
    this.#h1.set(key, a);
    return a;
  }

  /**
   * The HTTP/2 session of an endpoint for one request (stream); a new one when the last one went away.
   * @param maxRequestsPerConnection a session takes at most this many streams, then is retired: no new streams,
   *   closed gracefully once the caller's stream (opened before the next turn of the event loop) and the ones
   *   before it are done; 0 (default) = unlimited
   */
  h2(t: OutboundTarget, maxRequestsPerConnection = 0): Promise<ClientHttp2Session> {
    return maxRequestsPerConnection > 0 ? this.#h2Limited(t, maxRequestsPerConnection) : this.#h2Session(t);
  }

  async #h2Limited(t: OutboundTarget, maxRequestsPerConnection: number): Promise<ClientHttp2Session> {
    for (;;) {
      const s = await this.#h2Session(t);
      const n = (this.#h2Uses.get(s) ?? 0) + 1;
      // waiters of one opening share it: the ones beyond the limit go round for the next session
      if (n > maxRequestsPerConnection) continue;
      this.#h2Uses.set(s, n);
      if (n === maxRequestsPerConnection) {
        const e = this.#h2.get(this.#key(t));
        if (e?.session === s) e.session = undefined;
        setImmediate(() => { if (!s.closed && !s.destroyed) s.close(); });
      }
      return s;
    }
  }

  readonly #h2Uses = new WeakMap<ClientHttp2Session, number>();

  #h2Session(t: OutboundTarget): Promise<ClientHttp2Session> {
    const key = this.#key(t);
    let e = this.#h2.get(key);
    if (!e) { e = { session: undefined, opening: undefined }; this.#h2.set(key, e); }
    const s = e.session;
    if (s && !s.closed && !s.destroyed && !(s as unknown as { goawayReceived?: boolean }).goawayReceived) return Promise.resolve(s);
    const entry = e;
    entry.opening ??= (async () => {
      try {
        const sock = await this.open(t);
        const session = h2connect(`http://${t.authority}`, {
          createConnection: () => sock,
          settings: { enablePush: false, initialWindowSize: 1 << 20 },
          maxSessionMemory: 64,
        });
        session.on('error', (err) => log.debug('upstream h2 session error', { authority: t.authority, error: errorMessage(err) }));
        const forget = (): void => { if (entry.session === session) entry.session = undefined; };
        session.once('close', forget);
        session.once('goaway', forget);
        await new Promise<void>((resolve, reject) => {
          session.once('connect', () => resolve());
          session.once('error', reject);
          session.once('close', () => reject(new MeshError('AMBIT_CONNECT_REFUSED', `h2 session to ${t.authority} closed during setup`)));
        });
        session.unref();
        // idle: no frame either way for the cluster's idle timeout
        session.setTimeout(t.idleTimeoutMs ?? this.#o.idleMs ?? 60_000, () => session.close());
        entry.session = session;
        return session;
      } finally {
        entry.opening = undefined;
      }
    })();
    return entry.opening;
  }

  /** Endpoints no longer in the model: their pooled connections go. */
  retain(keep: (t: { ip: string; authority: string }) => boolean): void {
    for (const [k, a] of this.#h1) {
      const [ip, , authority] = k.split('|');
      if (!keep({ ip: ip!, authority: authority! })) { a.destroy(); this.#h1.delete(k); }
    }
    for (const [k, e] of this.#h2) {
      const [ip, , authority] = k.split('|');
      if (!keep({ ip: ip!, authority: authority! })) { e.session?.close(); this.#h2.delete(k); }
    }
  }

  counts(): { h1Agents: number; h2Sessions: number } {
    let h2 = 0;
    for (const e of this.#h2.values()) if (e.session) h2++;
    return { h1Agents: this.#h1.size, h2Sessions: h2 };
  }

  close(): void {
    this.#closed = true;
    for (const a of this.#h1.values()) a.destroy();
    for (const e of this.#h2.values()) e.session?.close();
    this.#h1.clear();
    this.#h2.clear();
  }
}

export const H2_CANCEL = h2c.NGHTTP2_CANCEL;
