/**
 * Connections to endpoints, pooled per endpoint: an HTTP/1.1 keep-alive agent and one HTTP/2
 * (h2c) session per endpoint, each riding HBONE streams the transport opens with the
 * waypoint's own identity. Nothing here decides where a request goes.
 */
import { Agent, type AgentOptions, type ClientRequestArgs } from 'node:http';
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
  /** an idle pooled HTTP/1.1 connection is closed after this, ms; default 60_000 */
  idleMs?: number;
  /** CONNECT headers added to every upstream stream */
  connectHeaders?: () => Readonly<Record<string, string>>;
}

class HboneAgent extends Agent {
  readonly #open: (cb: (err: Error | null, s?: Duplex) => void) => void;
  constructor(o: AgentOptions, open: (cb: (err: Error | null, s?: Duplex) => void) => void) {
    super(o);
    this.#open = open;
  }
  // node:http's Agent calls this to make a socket; the callback form lets it be asynchronous
  override createConnection(_o: ClientRequestArgs, cb: (err: Error | null, s?: Duplex) => void): undefined {
    this.#open(cb);
    return undefined;
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

  /** Open one HBONE stream to `t` (also used for TCP and Upgrade). */
  async open(t: OutboundTarget, signal?: AbortSignal): Promise<Duplex> {
    if (this.#closed) throw new MeshError('AMBIT_DRAINING', 'waypoint upstream pools closed');
    this.stats.connects++;
    try {
      const headers = { ...this.#o.connectHeaders?.(), ...t.headers };
      return socketLike(await this.#transport.connect({ ...t, headers }, signal));
    } catch (e) {
      this.stats.connectFailures++;
      throw e;
    }
  }

  /** The keep-alive agent of an endpoint (created on first use). */
  h1(t: OutboundTarget): Agent {
    const key = this.#key(t);
    let a = this.#h1.get(key);
    if (a) return a;
    a = new HboneAgent({ keepAlive: true, maxFreeSockets: this.#o.maxIdlePerEndpoint ?? 64, timeout: this.#o.idleMs ?? 60_000, scheduling: 'lifo' }, (cb) => {
      this.open(t).then((s) => cb(null, s), (e: unknown) => cb(e instanceof Error ? e : new Error(String(e))));
    });
    this.#h1.set(key, a);
    return a;
  }

  /** The HTTP/2 session of an endpoint; a new one when the last one went away. */
  h2(t: OutboundTarget): Promise<ClientHttp2Session> {
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
