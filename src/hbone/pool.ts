/**
 * HBONE client pool. Streams are multiplexed over HTTP/2 connections keyed by
 * (source identity, expected server identities, destination address, source connector): two
 * identities never share a connection, so the server's view of "who is calling" stays exact.
 *
 * Per key: 1..n connections. A connection takes new streams until it has carried
 * `maxStreamsPerConnection` (or the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached), or the
 * peer sent GOAWAY; then the next open dials another. Concurrent opens for one key share a single
 * dial. A connection with no stream for `idleTimeoutMs` is closed.
 */
import { MeshError, logger } from '../core/index.js';
import { identityKey, type CertBundle, type Identity } from '../identity/index.js';
import { canonicalIp, formatAuthority, parseAuthority, type SocketAddress } from './authority.js';
import {
  HboneConnection, HboneRetryableError, defaultConnector, dial, type Connector, type DialOptions, type HboneStream,
} from './client.js';
import { DEFAULTS, KiB, type Http2Tuning } from './settings.js';

const log = logger('hbone.pool');

export interface HbonePoolOptions extends Http2Tuning {
  /** TCP connector; default `net.connect` in the current netns */
  connect?: Connector;
  /** streams one connection carries over its life before a new one is dialled; default 100 */
  maxStreamsPerConnection?: number;
  /** close a connection after this long without streams, ms; default 300_000 */
  idleTimeoutMs?: number;
  /** TCP connect, TLS handshake and CONNECT response each, ms; default 10_000 */
  connectTimeoutMs?: number;
}

export interface HboneOpenRequest {
  /** client certificate (a function is called per open, so rotation applies to new connections) */
  source: CertBundle | (() => CertBundle);
  /** the server must present exactly one SPIFFE id, equal to one of these */
  expectedIdentities: readonly Identity[];
  /** pod IP:15008 or waypoint IP:15008 */
  address: SocketAddress;
  /** CONNECT target: `ip:port`, `[v6]:port` or `host:port` */
  authority: string;
  /** extra request headers (forwarded, baggage, traceparent...); lowercase names */
  headers?: Record<string, string>;
  /** per-request connector (the one of the source pod); default the pool's */
  connect?: Connector;
  /**
   * Pool-key component naming where connections come from (e.g. the source pod IP). Defaults to
   * the identity of `connect` when given, so give a stable key when the connector is a fresh
   * closure per request, or nothing would be shared.
   */
  sourceKey?: string;
}

export interface HbonePoolStats {
  connections: number;
  /** streams open now */
  streams: number;
  keys: number;
}

interface Entry {
  conns: HboneConnection[];
  dialing: Promise<HboneConnection> | undefined;
}

const MAX_HEADERS = 32;
const MAX_HEADER_BYTES = 8 * KiB;
const TOKEN = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
/** Connection-specific headers are illegal in HTTP/2; the pseudo headers are ours to set. */
const FORBIDDEN_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'te']);

function badRequest(msg: string): never {
  throw new MeshError('AMBIT_HBONE_BAD_REQUEST', msg);
}

function checkHeaders(h: Record<string, string> | undefined): Record<string, string> {
  if (h === undefined) return {};
  const entries = Object.entries(h);
  if (entries.length > MAX_HEADERS) badRequest(`hbone open: more than ${MAX_HEADERS} headers`);
  let bytes = 0;
  for (const [k, v] of entries) {
    if (!TOKEN.test(k) || FORBIDDEN_HEADERS.has(k)) badRequest(`hbone open: header name ${JSON.stringify(k.slice(0, 40))} not allowed`);
    if (typeof v !== 'string' || /[\r\n\0]/.test(v)) badRequest(`hbone open: header ${k}: value must be a string without CR, LF or NUL`);
    bytes += k.length + v.length;
  }
  if (bytes > MAX_HEADER_BYTES) badRequest(`hbone open: headers larger than ${MAX_HEADER_BYTES} bytes`);
  return { ...h };
}

function positive(name: string, v: number | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < min) throw new MeshError('AMBIT_CONFIG_INVALID', `hbone pool: ${name} must be a number >= ${min}`);
  return v;
}

export class HbonePool {
  readonly #connect: Connector;
  readonly #idKeys = new WeakMap<Identity, string>();
  readonly #maxStreams: number;
  readonly #idleMs: number;
  readonly #connectTimeoutMs: number;
  readonly #dialBase: Omit<DialOptions, 'source' | 'expected' | 'address' | 'connect'>;
  readonly #maxConnections: number;
  readonly #entries = new Map<string, Entry>();
  readonly #idleTimers = new Map<HboneConnection, NodeJS.Timeout>();
  readonly #connectorIds = new WeakMap<Connector, number>();
  #nextConnectorId = 1;
  #connections = 0;
  #closed = false;

  constructor(o: HbonePoolOptions = {}) {
    this.#connect = o.connect ?? defaultConnector;
    this.#maxStreams = positive('maxStreamsPerConnection', o.maxStreamsPerConnection, DEFAULTS.maxStreamsPerConnection);
    this.#idleMs = positive('idleTimeoutMs', o.idleTimeoutMs, DEFAULTS.idleTimeoutMs, 0);
    this.#connectTimeoutMs = positive('connectTimeoutMs', o.connectTimeoutMs, DEFAULTS.connectTimeoutMs);
    this.#maxConnections = positive('maxConnections', o.maxConnections, 4096);
    this.#dialBase = {
      connectTimeoutMs: this.#connectTimeoutMs,
      streamWindow: positive('streamWindow', o.streamWindow, DEFAULTS.streamWindow, 65_535),
      connectionWindow: positive('connectionWindow', o.connectionWindow, DEFAULTS.connectionWindow, 65_535),
      maxFrameSize: positive('maxFrameSize', o.maxFrameSize, DEFAULTS.maxFrameSize, 16_384),
      pingIntervalMs: positive('pingIntervalMs', o.pingIntervalMs, DEFAULTS.pingIntervalMs, 0),
      pingTimeoutMs: positive('pingTimeoutMs', o.pingTimeoutMs, DEFAULTS.pingTimeoutMs),
    };
  }

  /**
   * Open a CONNECT stream to `req.authority` through the HBONE peer at `req.address`. Resolves
   * after the peer answered 200. Rejects with `AMBIT_HBONE_STATUS` (HboneStatusError, `.status`)
   * on any other answer, `AMBIT_IDENTITY_MISMATCH` when the server is not who we expect,
   * `AMBIT_CONNECT_TIMEOUT` / `AMBIT_CONNECT_REFUSED` when it cannot be reached.
   */
  async open(req: HboneOpenRequest): Promise<HboneStream> {
    if (this.#closed) throw new MeshError('AMBIT_DRAINING', 'hbone pool is closed');
    const source = typeof req.source === 'function' ? req.source() : req.source;
    if (source === undefined || source === null) throw new MeshError('AMBIT_CERT_INVALID', 'hbone open: no source certificate');
    if (!Array.isArray(req.expectedIdentities) || req.expectedIdentities.length === 0) {
      badRequest('hbone open: expectedIdentities must name at least one identity');
    }
    const ip = canonicalIp(req.address?.address);
    const port = req.address?.port;
    if (ip === undefined || !Number.isInteger(port) || port < 1 || port > 65535) {
      badRequest(`hbone open: address ${JSON.stringify(req.address)} must be an IP and a port 1..65535`);
    }
    // The server would refuse a malformed authority anyway; catching it here keeps garbage off the wire.
    parseAuthority(req.authority);
    const headers = checkHeaders(req.headers);
    const address = { address: ip, port };
    const connect = req.connect ?? this.#connect;
    const key = this.#key(source.identity, req.expectedIdentities, address, req.sourceKey, req.connect);
    const dialOptions: DialOptions = { ...this.#dialBase, source, expected: [...req.expectedIdentities], address, connect };
    // One retry, only for streams the peer provably did not process (GOAWAY race).
    for (let attempt = 0; ; attempt++) {
      const conn = await this.#acquire(key, dialOptions);
      try {
        return await conn.request(req.authority, headers, this.#connectTimeoutMs);
      } catch (e) {
        if (e instanceof HboneRetryableError && attempt === 0) continue;
        throw e;
      }
    }
  }

  #key(src: Identity, expected: readonly Identity[], addr: SocketAddress, sourceKey?: string, connect?: Connector): string {
    let from = 'default';
    if (sourceKey !== undefined) from = `k:${sourceKey}`;
    else if (connect !== undefined) {
      let id = this.#connectorIds.get(connect);
      if (id === undefined) { id = this.#nextConnectorId++; this.#connectorIds.set(connect, id); }
      from = `c:${id}`;
    }
    // One expected identity is the usual case: no Set, no sort.
    const dst = expected.length === 1 ? this.#idKey(expected[0]!) : [...new Set(expected.map((e) => this.#idKey(e)))].sort().join(',');
    // Built per open: a plain join, not JSON.stringify. Unambiguous because no part before
    // `from` can hold a newline (SPIFFE ids and authorities are validated), and `from` is last.
    return `${this.#idKey(src)}\n${dst}\n${formatAuthority(addr)}\n${from}`;
  }

  /**
   * identityKey (which also validates), remembered for frozen identities: the node agent hands
   * the same frozen objects on every open, and a frozen object cannot turn invalid later.
   */
  #idKey(id: Identity): string {
    if (!Object.isFrozen(id)) return identityKey(id);
    let k = this.#idKeys.get(id);
    if (k === undefined) { k = identityKey(id); this.#idKeys.set(id, k); }
    return k;
  }

  async #acquire(key: string, o: DialOptions): Promise<HboneConnection> {
    for (;;) {
      if (this.#closed) throw new MeshError('AMBIT_DRAINING', 'hbone pool is closed');
      let entry = this.#entries.get(key);
      if (entry === undefined) {
        entry = { conns: [], dialing: undefined };
        this.#entries.set(key, entry);
      }
      const ready = entry.conns.find((c) => c.canTake(this.#maxStreams));
      if (ready !== undefined) {
        this.#touch(ready);
        ready.reserve();
        return ready;
      }
      if (entry.dialing !== undefined) {
        // Share the dial in flight, including its failure.
        await entry.dialing;
        continue;
      }
      if (this.#connections >= this.#maxConnections) {
        this.#forget(key, entry);
        throw new MeshError('AMBIT_LIMIT', `hbone pool: ${this.#maxConnections} connections open`);
      }
      const dialing = dial(o);
      entry.dialing = dialing;
      this.#connections++;
      let conn: HboneConnection;
      try {
        conn = await dialing;
      } catch (e) {
        entry.dialing = undefined;
        this.#connections--;
        this.#forget(key, entry);
        throw e;
      }
      entry.dialing = undefined;
      if (this.#closed) { conn.destroy(); this.#connections--; continue; }
      this.#adopt(key, entry, conn);
    }
  }

  #adopt(key: string, entry: Entry, conn: HboneConnection): void {
    entry.conns.push(conn);
    log.debug('hbone connection up', { peer: conn.where });
    conn.onIdle = () => {
      // A connection that can never take another stream has no reason to linger.
      if (conn.finished(this.#maxStreams)) { conn.close(); return; }
      this.#armIdle(conn);
    };
    void conn.whenClosed.then(() => {
      this.#connections--;
      this.#touch(conn);
      const i = entry.conns.indexOf(conn);
      if (i >= 0) entry.conns.splice(i, 1);
      this.#forget(key, entry);
    });
  }

  #armIdle(conn: HboneConnection): void {
    this.#touch(conn);
    if (this.#idleMs === 0) { conn.close(); return; }
    const t = setTimeout(() => {
      this.#idleTimers.delete(conn);
      if (conn.active === 0) conn.close();
    }, this.#idleMs);
    t.unref();
    this.#idleTimers.set(conn, t);
  }

  #touch(conn: HboneConnection): void {
    const t = this.#idleTimers.get(conn);
    if (t !== undefined) { clearTimeout(t); this.#idleTimers.delete(conn); }
  }

  #forget(key: string, entry: Entry): void {
    if (entry.conns.length === 0 && entry.dialing === undefined && this.#entries.get(key) === entry) this.#entries.delete(key);
  }

  stats(): HbonePoolStats {
    let conns = 0;
    let streams = 0;
    for (const e of this.#entries.values()) {
      conns += e.conns.length;
      for (const c of e.conns) streams += c.active;
    }
    return { connections: conns, streams, keys: this.#entries.size };
  }

  /**
   * GOAWAY every connection; open streams may finish until `deadlineMs` (default 5000), then the
   * rest are destroyed. New opens fail with `AMBIT_DRAINING`.
   */
  async close(deadlineMs = 5000): Promise<void> {
    this.#closed = true;
    const all = [...this.#entries.values()].flatMap((e) => e.conns);
    for (const t of this.#idleTimers.values()) clearTimeout(t);
    this.#idleTimers.clear();
    for (const c of all) c.close();
    if (all.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, deadlineMs); });
    await Promise.race([Promise.all(all.map((c) => c.whenClosed)), deadline]);
    clearTimeout(timer);
    for (const c of all) if (!c.gone) c.destroy();
    await Promise.all(all.map((c) => c.whenClosed));
  }
}
