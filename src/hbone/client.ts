/**
 * One HBONE client connection: TCP (through an injected connector), TLS 1.3 with both
 * certificates, the server's SPIFFE id checked against the expected set, then one HTTP/2 session
 * carrying CONNECT streams. The pool (pool.ts) decides which connection a stream goes on.
 */
import { connect as h2connect, constants as h2, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { MeshError, errorMessage, isMeshError, logger } from '../core/index.js';
import { sameIdentity, spiffeUri, verifyTlsPeer, type CertBundle, type Identity } from '../identity/index.js';
import { formatAuthority, type SocketAddress } from './authority.js';
import { startKeepalive } from './keepalive.js';
import { ALPN, DEFAULTS, secureContextFor } from './settings.js';

const log = logger('hbone.client');

/** Opens the TCP connection to an HBONE peer (the node agent's opens it inside the pod netns, marked). */
export type Connector = (addr: SocketAddress) => Promise<Socket>;

/** A CONNECT stream after the peer answered 200: a Duplex carrying the tunnelled bytes. */
export type HboneStream = ClientHttp2Stream & {
  /** the server's verified identity */
  readonly peer: Identity;
  /** response headers of the 200 (pseudo headers removed; e.g. `baggage`) */
  readonly responseHeaders: Readonly<Record<string, string>>;
};

/** Non-200 answer to CONNECT. */
export class HboneStatusError extends MeshError {
  readonly status: number;
  constructor(status: number, message: string) {
    super('AMBIT_HBONE_STATUS', message);
    this.status = status;
    this.name = 'HboneStatusError';
  }
}

/** The stream was refused before the server processed it (GOAWAY race, REFUSED_STREAM): safe to retry. */
export class HboneRetryableError extends MeshError {
  constructor(message: string) {
    super('AMBIT_CONNECT_REFUSED', message);
    this.name = 'HboneRetryableError';
  }
}

export const defaultConnector: Connector = (addr) => new Promise<Socket>((resolve, reject) => {
  const s = netConnect({ host: addr.address, port: addr.port });
  const onError = (e: Error): void => { s.destroy(); reject(e); };
  s.once('error', onError);
  s.once('connect', () => { s.off('error', onError); resolve(s); });
});

export interface DialOptions {
  source: CertBundle;
  expected: readonly Identity[];
  address: SocketAddress;
  connect: Connector;
  connectTimeoutMs: number;
  streamWindow: number;
  connectionWindow: number;
  maxFrameSize: number;
  pingIntervalMs: number;
  pingTimeoutMs: number;
}

function timeoutError(addr: string, ms: number, phase: string): MeshError {
  return new MeshError('AMBIT_CONNECT_TIMEOUT',
    `hbone ${phase} to ${addr} timed out after ${ms} ms; maybe a NetworkPolicy is blocking HBONE port 15008`);
}

/** Run `p` with a deadline; a late result is disposed of with `dispose`. */
function withDeadline<T>(p: Promise<T>, ms: number, onTimeout: () => Error, dispose: (v: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => { done = true; reject(onTimeout()); }, ms);
    p.then((v) => {
      if (done) { dispose(v); return; }
      done = true; clearTimeout(timer); resolve(v);
    }, (e: unknown) => {
      if (done) return;
      done = true; clearTimeout(timer); reject(e);
    });
  });
}

async function openTcp(o: DialOptions, where: string): Promise<Socket> {
  let sock: Socket;
  try {
    sock = await withDeadline(Promise.resolve().then(() => o.connect(o.address)), o.connectTimeoutMs,
      () => timeoutError(where, o.connectTimeoutMs, 'connect'), (s) => s.destroy());
  } catch (e) {
    if (isMeshError(e)) throw e;
    throw new MeshError('AMBIT_CONNECT_REFUSED', `hbone connect to ${where}: ${errorMessage(e)}`, { cause: e });
  }
  sock.setNoDelay(true);
  sock.setKeepAlive(true, DEFAULTS.tcpKeepAliveDelayMs);
  return sock;
}

function handshake(o: DialOptions, tcp: Socket, where: string): Promise<TLSSocket> {
  return new Promise<TLSSocket>((resolve, reject) => {
    // No `servername`: no SNI goes out (the server is picked by the destination IP), and Node's
    // hostname check is replaced by the SPIFFE check below.
    const tls = tlsConnect({
      socket: tcp,
      secureContext: secureContextFor(o.source),
      ALPNProtocols: ALPN,
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    });
    const timer = setTimeout(() => fail(timeoutError(where, o.connectTimeoutMs, 'tls handshake')), o.connectTimeoutMs);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      tls.destroy();
      tcp.destroy();
      reject(e);
    };
    tls.once('error', (e) => fail(isMeshError(e) ? e
      : new MeshError('AMBIT_CERT_INVALID', `hbone tls handshake with ${where}: ${errorMessage(e)}`, { cause: e })));
    tls.once('close', () => fail(new MeshError('AMBIT_CONNECT_REFUSED', `hbone tls handshake with ${where}: connection closed`)));
    tls.once('secureConnect', () => {
      clearTimeout(timer);
      tls.removeAllListeners('close');
      tls.removeAllListeners('error');
      tls.on('error', () => { /* reported through the h2 session */ });
      resolve(tls);
    });
  });
}

/** Check what the handshake produced; identity from the verified DER chain only. */
function checkPeer(o: DialOptions, tls: TLSSocket, where: string): Identity {
  if (tls.alpnProtocol !== 'h2') {
    throw new MeshError('AMBIT_HBONE_BAD_REQUEST', `hbone peer ${where} did not negotiate ALPN h2`);
  }
  if (tls.getProtocol() !== 'TLSv1.3') throw new MeshError('AMBIT_CERT_INVALID', `hbone peer ${where}: not TLS 1.3`);
  const peer = verifyTlsPeer(tls, o.source.rootsPem);
  if (!o.expected.some((e) => sameIdentity(e, peer))) {
    throw new MeshError('AMBIT_IDENTITY_MISMATCH',
      `hbone peer ${where} presented ${spiffeUri(peer)}, expected ${o.expected.map((e) => spiffeUri(e)).join(' or ')}`);
  }
  return peer;
}

/** Dial and verify; resolves with a ready connection. */
export async function dial(o: DialOptions): Promise<HboneConnection> {
  const where = formatAuthority(o.address);
  const tcp = await openTcp(o, where);
  const tls = await handshake(o, tcp, where);
  let peer: Identity;
  try {
    peer = checkPeer(o, tls, where);
  } catch (e) {
    tls.destroy();
    throw e;
  }
  const session = h2connect(`https://${where}`, {
    createConnection: () => tls,
    settings: {
      enablePush: false,
      initialWindowSize: o.streamWindow,
      maxFrameSize: o.maxFrameSize,
      maxHeaderListSize: DEFAULTS.clientMaxHeaderList,
    },
    maxHeaderListPairs: DEFAULTS.maxHeaderListPairs,
    maxSessionMemory: DEFAULTS.maxSessionMemoryMb,
  });
  const conn = new HboneConnection(session, peer, where, o);
  // The server's SETTINGS (SETTINGS_MAX_CONCURRENT_STREAMS above all) arrive right after the
  // handshake; waiting for them lets the pool count slots correctly from the first stream
  // instead of having nghttp2 queue streams beyond the peer's limit.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(timeoutError(where, o.connectTimeoutMs, 'http/2 settings')), o.connectTimeoutMs);
    const done = (): void => { clearTimeout(timer); session.off('close', onClose); };
    const fail = (e: Error): void => { done(); session.destroy(); reject(e); };
    const onClose = (): void => fail(new MeshError('AMBIT_CONNECT_REFUSED', `hbone peer ${where} closed the connection before its settings`));
    session.once('remoteSettings', () => { done(); resolve(); });
    session.once('close', onClose);
  });
  return conn;
}

/**
 * A verified HTTP/2 session to one peer. Counts the streams it carries so the pool can decide
 * when it is full; once the peer sends GOAWAY it takes no new streams.
 */
export class HboneConnection {
  readonly peer: Identity;
  readonly where: string;
  readonly #session: ClientHttp2Session;
  #active = 0;
  #served = 0;
  #goaway = false;
  #gone = false;
  readonly #closed: Promise<void>;
  #onIdle: (() => void) | undefined;

  constructor(session: ClientHttp2Session, peer: Identity, where: string, o: DialOptions) {
    this.#session = session;
    this.peer = peer;
    this.where = where;
    session.on('error', (e) => log.debug('session error', { peer: where, error: errorMessage(e) }));
    session.on('frameError', () => { /* the stream concerned gets the error */ });
    session.on('connect', () => {
      try { session.setLocalWindowSize(o.connectionWindow); } catch { /* closed meanwhile */ }
    });
    session.on('goaway', () => { this.#goaway = true; });
    this.#closed = new Promise<void>((resolve) => session.once('close', () => { this.#goaway = true; this.#gone = true; resolve(); }));
    startKeepalive(session, {
      intervalMs: o.pingIntervalMs,
      timeoutMs: o.pingTimeoutMs,
      onTimeout: () => {
        log.info('ping timeout, dropping hbone connection', { peer: where });
        session.destroy(new MeshError('AMBIT_CONNECT_TIMEOUT', `hbone peer ${where}: no PING ack in ${o.pingTimeoutMs} ms`));
      },
    });
  }

  get active(): number { return this.#active; }
  get served(): number { return this.#served; }
  /** closing or closed: takes no new streams */
  get closed(): boolean { return this.#session.closed || this.#session.destroyed; }
  /** the session has fully closed */
  get gone(): boolean { return this.#gone; }
  /** resolves when the session is gone */
  get whenClosed(): Promise<void> { return this.#closed; }

  /** May this connection take another stream? */
  canTake(maxStreams: number): boolean {
    if (this.#goaway || this.closed) return false;
    if (this.#served >= maxStreams) return false;
    const peerMax = this.#session.remoteSettings?.maxConcurrentStreams;
    return peerMax === undefined || this.#active < peerMax;
  }

  /** Exhausted or going away: will never take a stream again. */
  finished(maxStreams: number): boolean {
    return this.#goaway || this.closed || this.#served >= maxStreams;
  }

  /** Claim a stream slot synchronously (before any await) so concurrent opens count right. */
  reserve(): void {
    this.#active++;
    this.#served++;
  }

  /** Set by the pool: called when the last stream ends. */
  set onIdle(fn: (() => void) | undefined) { this.#onIdle = fn; }

  #release(): void {
    this.#active--;
    if (this.#active === 0) this.#onIdle?.();
  }

  /**
   * Send CONNECT on a reserved slot and wait for the answer. Resolves on 200; rejects with
   * HboneStatusError for any other status. The slot is released when the stream closes.
   */
  request(authority: string, headers: Record<string, string>, timeoutMs: number): Promise<HboneStream> {
    let stream: ClientHttp2Stream;
    try {
      stream = this.#session.request({ ...headers, ':method': 'CONNECT', ':authority': authority }, { endStream: false });
    } catch (e) {
      this.#release();
      if (this.closed || this.#goaway) return Promise.reject(new HboneRetryableError(`hbone connection to ${this.where} is closing`));
      return Promise.reject(new MeshError('AMBIT_HBONE_BAD_REQUEST', `hbone CONNECT ${authority}: ${errorMessage(e)}`, { cause: e }));
    }
    stream.once('close', () => this.#release());
    // Errors after the 200 reach the user through pipeline()/'close'; an unhandled 'error'
    // event must never take the process down.
    stream.on('error', () => {});
    return new Promise<HboneStream>((resolve, reject) => {
      let settled = false;
      const settle = (e?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stream.off('close', onClose);
        if (e) {
          if (!stream.destroyed) stream.close(h2.NGHTTP2_CANCEL);
          reject(e);
        }
      };
      const timer = setTimeout(() => settle(new MeshError('AMBIT_CONNECT_TIMEOUT',
        `hbone CONNECT ${authority} via ${this.where}: no response in ${timeoutMs} ms`)), timeoutMs);
      const onClose = (): void => {
        const code = stream.rstCode;
        if (code === h2.NGHTTP2_REFUSED_STREAM || (code === undefined && this.#goaway)) {
          settle(new HboneRetryableError(`hbone CONNECT ${authority} via ${this.where}: stream refused`));
        } else {
          settle(new MeshError('AMBIT_CONNECT_REFUSED',
            `hbone CONNECT ${authority} via ${this.where}: closed before a response (code ${code ?? 'none'})`));
        }
      };
      stream.once('close', onClose);
      stream.once('response', (h) => {
        const status = Number(h[':status']);
        if (status !== 200) {
          settle(new HboneStatusError(status, `hbone CONNECT ${authority} via ${this.where}: status ${status}`));
          return;
        }
        const responseHeaders: Record<string, string> = {};
        for (const [k, v] of Object.entries(h)) {
          if (!k.startsWith(':') && v !== undefined) responseHeaders[k] = Array.isArray(v) ? v.join(', ') : String(v);
        }
        settle();
        Object.defineProperties(stream, {
          peer: { value: this.peer, enumerable: true },
          responseHeaders: { value: Object.freeze(responseHeaders), enumerable: true },
        });
        resolve(stream as HboneStream);
      });
    });
  }

  /** GOAWAY and let the streams finish. */
  close(): void {
    this.#goaway = true;
    if (!this.closed) this.#session.close();
  }

  destroy(): void {
    this.#goaway = true;
    this.#session.destroy();
  }
}
