/**
 * HBONE for a program that handles the bytes of each stream itself in JavaScript (the waypoint):
 * the engine does mutual TLS, the peer identity rules, HTTP/2 and the pool; each CONNECT stream
 * reaches JavaScript as an HboneSocket (a net.Socket), inbound and outbound alike.
 */
import { EventEmitter } from 'node:events';
import { errorMessage, logger, MeshError } from '../core/index.js';
import type { CertBundle } from '../identity/index.js';
import { closeFd, Engine, unixSocketPair, type EngineLink, type EngineTls, type HbonePlan, type LinkState, type Netns } from '../native/index.js';
import { AGENT_PORT, parseAuthority } from './authority.js';
import { clientTag, serverTag, verifyEnginePeer } from './peer.js';
import { engineOptions, type HboneSettings } from './settings.js';
import { HboneSocket, type HboneFlowResult, type HboneSocketHost, type HboneStreamInfo } from './socket.js';

const log = logger('hbone');

/** The HBONE port. */
export const HBONE_PORT = AGENT_PORT.hbone;
const SELF_NETNS = '/proc/self/ns/net';
/** CONNECT headers the engine takes, "name\0value\0..." (native/src/engine_js.c) */
const MAX_HEADER_BYTES = 8191;
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;

export interface HboneListenOptions {
  /** SPIFFE trust domain every client must belong to */
  trustDomain: string;
  /** the listener's current certificate, asked at each handshake; null refuses it (fail closed) */
  certificate: () => CertBundle | null;
  /**
   * A CONNECT after the client's identity was verified: 'accept', or the HTTP status (400..599)
   * to refuse it with. Synchronous (the stream waits for it); a throw refuses with 500.
   * Default: accept.
   */
  decide?: (info: HboneStreamInfo) => 'accept' | number;
  /** SO_MARK of sockets the engine opens for this listener; default 0 */
  mark?: number;
}

export interface HboneConnectOptions {
  /** the HBONE peer to dial (an agent or a waypoint) */
  ip: string;
  /** default 15008 */
  port?: number;
  /** the CONNECT `:authority`: the real target, `ip:port` (or `host:port`) */
  authority: string;
  /** SPIFFE URIs the server may present; any other identity fails the stream (AMBIT_HBONE_TLS) */
  expect: readonly string[];
  /** our own certificate (the client certificate the server verifies) */
  identity: CertBundle;
  /** extra CONNECT headers (lowercase names), e.g. `forwarded`, `baggage` */
  headers?: Readonly<Record<string, string>>;
  /** netns the connection to the peer leaves from (path or fd); default the process's own */
  netns?: Netns;
  /** SO_MARK of that connection; default 0 */
  mark?: number;
}

/** 'stream' (socket: HboneSocket, info: HboneStreamInfo) for each accepted CONNECT. */
export class HboneListener extends EventEmitter {
  constructor(readonly id: number, readonly close: () => void) { super(); }
}

export interface HboneEndpointOptions {
  /** HBONE settings; each one not given is the table's (settings.ts HBONE_SETTINGS) */
  settings?: Partial<HboneSettings>;
}

interface ListenerRec { l: HboneListener; o: HboneListenOptions }

/**
 * One engine (one thread) with the listeners and sources of one program. Events:
 * 'established' (info) and 'closed' (info, result: HboneFlowResult) for every stream, the
 * telemetry hooks the agent's flows have too.
 */
export class HboneEndpoint extends EventEmitter implements HboneSocketHost {
  readonly #engine: Engine;
  readonly #listeners = new Map<number, ListenerRec>();
  readonly #sources = new Map<string, number>();
  readonly #flows = new Map<number, HboneSocket>();
  readonly #contexts = new WeakMap<CertBundle, EngineTls>();
  #closed = false;

  constructor(o: HboneEndpointOptions = {}) {
    super();
    this.#engine = new Engine({
      outbound: () => null,
      inbound: (lid, fid, peer, authority, fwd, rip, rport, lip, lport) => this.#inbound(lid, fid, {
        flowId: fid, direction: 'inbound', peer, authority, forwarded: fwd, remote: { ip: rip, port: rport }, local: { ip: lip, port: lport },
      }),
      verify: (chain, roots, tag) => {
        try {
          return verifyEnginePeer(chain, roots, tag);
        } catch (e) {
          log.debug('tls peer refused', { error: errorMessage(e) });
          throw e;
        }
      },
      context: (lid) => {
        const r = this.#listeners.get(lid);
        const b = r?.o.certificate() ?? null;
        return b === null ? null : this.tls(b);
      },
      event: (kind, fid, fromApp, toApp, error) => this.#event(kind, fid, fromApp, toApp, error),
    }, engineOptions(o.settings));
  }

  /** The engine's TLS context for a certificate bundle (one per bundle object). */
  tls(b: CertBundle): EngineTls {
    let c = this.#contexts.get(b);
    if (c === undefined) {
      c = this.#engine.tls(b.chainPem.join(''), b.keyPem, b.rootsPem);
      this.#contexts.set(b, c);
    }
    return c;
  }

  /**
   * Serve HBONE on a listening TCP socket (e.g. from listenInNetns; the engine owns the fd from
   * here). Sockets the engine opens for it live in `netns`.
   */
  listen(fd: number, netns: Netns, o: HboneListenOptions): HboneListener {
    this.#open();
    const id = this.#engine.listen(fd, netns, { kind: 'hbone', mark: o.mark ?? 0, tag: serverTag(o.trustDomain) });
    const l = new HboneListener(id, () => {
      if (!this.#listeners.delete(id)) return;
      this.#engine.unlisten(id);
    });
    this.#listeners.set(id, { l, o });
    return l;
  }

  /**
   * An HBONE stream to `authority` through the peer at ip:port, on a pooled connection (one per
   * netns, mark, identity, expected identities and peer). Returns at once: bytes written before
   * the stream is established wait in the socket. Failures come as the socket's 'error', an
   * HboneError (`retrySafe` says whether nothing reached the target). Throws on bad options.
   */
  connect(o: HboneConnectOptions): HboneSocket {
    this.#open();
    const port = o.port ?? HBONE_PORT;
    parseAuthority(o.authority);
    if (o.expect.length === 0 || o.expect.some((u) => !u.startsWith('spiffe://') || u.includes(','))) {
      throw new MeshError('AMBIT_CONFIG_INVALID', 'hbone connect: expect must list SPIFFE URIs (spiffe://...)');
    }
    const plan: HbonePlan = {
      t: 2, ctx: this.tls(o.identity), ip: o.ip, port, authority: o.authority, headers: headerBlock(o.headers ?? {}),
      key: `${o.ip}|${port}|${o.expect.join(',')}`, tag: clientTag(o.expect),
    };
    const source = this.#source(o.netns ?? SELF_NETNS, o.mark ?? 0);
    const [mine, theirs] = unixSocketPair('stream');
    const link = this.#engine.link();
    let id: number;
    try {
      id = this.#engine.open(source, theirs, plan, link);
    } catch (e) {
      closeFd(mine);
      throw e;
    }
    const info: HboneStreamInfo = {
      flowId: id, direction: 'outbound', peer: undefined, authority: o.authority, forwarded: o.headers?.['forwarded'],
      remote: { ip: o.ip, port }, local: { ip: '0.0.0.0', port: 0 },
    };
    const s = new HboneSocket(mine, info, link, this);
    this.#flows.set(id, s);
    return s;
  }

  stats(): { flows: number; tunnels: number; listeners: number } { return this.#engine.stats(); }

  /**
   * Stops everything: listeners, pooled connections, open streams (cut; their sockets are
   * destroyed without an error, 'close' with no 'end', as server.closeAllConnections() does).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#engine.destroy();
    for (const s of this.#flows.values()) s.destroy();
    this.#flows.clear();
    this.#listeners.clear();
  }

  /** @internal HboneSocketHost */
  linkState(link: EngineLink): LinkState { return this.#engine.linkState(link); }

  /** @internal HboneSocketHost */
  abort(flowId: number, reason: string): void {
    if (!this.#closed) this.#engine.closeFlow(flowId, reason);
  }

  #open(): void {
    if (this.#closed) throw new MeshError('AMBIT_HBONE_ABORTED', 'hbone: the endpoint is closed');
  }

  #source(netns: Netns, mark: number): number {
    const key = `${typeof netns}:${netns}|${mark}`;
    let id = this.#sources.get(key);
    if (id === undefined) {
      id = this.#engine.source(netns, { mark });
      this.#sources.set(key, id);
    }
    return id;
  }

  #inbound(lid: number, fid: number, info: HboneStreamInfo): { fd: number; link: EngineLink } | number {
    const r = this.#listeners.get(lid);
    if (r === undefined) return 503;
    let verdict: 'accept' | number;
    try {
      verdict = r.o.decide ? r.o.decide(info) : 'accept';
    } catch (e) {
      log.warn('hbone decide threw; refusing the stream', { error: errorMessage(e) });
      return 500;
    }
    if (verdict !== 'accept') return Number.isInteger(verdict) && verdict >= 400 && verdict <= 599 ? verdict : 500;
    let pair: [number, number];
    try {
      pair = unixSocketPair('stream');
    } catch (e) {
      log.warn('hbone: no socket pair for an accepted stream', { error: errorMessage(e) });
      return 503;
    }
    const link = this.#engine.link();
    const s = new HboneSocket(pair[0], info, link, this);
    this.#flows.set(fid, s);
    // not from inside the engine's callback: a listener's throw must not lose the answer
    process.nextTick(() => {
      if (r.l.listenerCount('stream') === 0) s.destroy();
      else r.l.emit('stream', s, info);
    });
    return { fd: pair[1], link };
  }

  #event(kind: 1 | 2, fid: number, fromApp: number, toApp: number, error: string | undefined): void {
    const s = this.#flows.get(fid);
    if (s === undefined) return;
    if (kind === 1) {
      s._hboneEvent(1);
      this.emit('established', s.info);
      return;
    }
    this.#flows.delete(fid);
    const result: HboneFlowResult = { sent: fromApp, received: toApp, error };
    s._hboneEvent(2, result);
    this.emit('closed', s.info, result);
  }
}

/** CONNECT headers as the engine takes them, checked (a bad header is the caller's bug). */
function headerBlock(h: Readonly<Record<string, string>>): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(h)) {
    if (!HEADER_NAME.test(name) || name === 'host') throw new MeshError('AMBIT_CONFIG_INVALID', `hbone connect: bad header name ${JSON.stringify(name)}`);
    if (typeof value !== 'string' || /[\0\r\n]/.test(value)) throw new MeshError('AMBIT_CONFIG_INVALID', `hbone connect: bad value for header ${name}`);
    parts.push(name, value);
  }
  const block = parts.join('\0');
  if (Buffer.byteLength(block) > MAX_HEADER_BYTES || parts.length / 2 > 14) {
    throw new MeshError('AMBIT_CONFIG_INVALID', 'hbone connect: at most 14 extra headers, 8 KiB');
  }
  return block;
}
