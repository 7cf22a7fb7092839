/**
 * The data-path engine of the addon (native/src/engine*.c), typed. It owns a pod's outbound
 * capture (15001) and HBONE (15008) listeners once handed their fds, and carries every accepted
 * connection itself, on a thread of its own: plain passthrough, or HTTP/2 CONNECT streams over
 * pooled mutual-TLS connections (Node's own OpenSSL and nghttp2). JavaScript keeps every
 * decision, through the callbacks below: they run on the JS thread and answer synchronously;
 * the connection waits for the answer meanwhile. The engine never decides who may talk to whom.
 */
import { MeshError } from '../core/index.js';
import { addon } from './addon.js';
/** A network namespace: a path, or an open netns fd (as in index.ts). */
type Netns = string | number;

/** A TLS context (certificate chain, key, roots) as the engine holds it. Opaque. */
export type EngineTls = { readonly __engineTls: unique symbol };

export type OutboundPlan =
  | { t: 1; ip: string; port: number }
  | {
    t: 2;
    ctx: EngineTls;
    /** pooling key: connections are shared only between plans with the same key and context */
    key: string;
    /** handed back to `verify` with the server's chain (the expected identities, say) */
    tag: string;
    ip: string;
    port: number;
    authority: string;
    /** extra CONNECT headers, "name\0value\0name\0value" (lowercase names) */
    headers: string;
  };

/** Where an allowed HBONE stream goes: the app, dialed from the pod netns (source `spoof` if set). */
export interface InboundTarget { ip: string; port: number; spoof?: string }

/**
 * The shared record of a flow whose app side is a socket JS holds the other end of (an inbound
 * answer `{ fd, link }`, or `open`). Opaque; read it with `Engine.linkState`.
 */
export type EngineLink = { readonly __engineLink: unique symbol };

/** An inbound answer handing the engine one end of a connected socket pair as the app (no dial). */
export interface InboundAdopt { fd: number; link: EngineLink }

/** LinkState.state */
export const LINK = Object.freeze({ OPEN: 0, PEER_EOF: 1, DONE: 2, FAILED: 3 });
/*
 * The codes JS and the engine share are defined once, in native/src/engine.h; the addon exports
 * them (engineCodes()). The constants here are TypeScript's typed view of that table (literal
 * types need them at compile time); every Engine checks they equal the addon's at creation
 * (AMBIT_BUG otherwise), and test/native/engine-codes.test.ts does in CI.
 */
/** LinkState.fail: why a flow failed (native/src/engine.h FAIL_*). */
export const FAIL = Object.freeze({ CONNECT: 1, TLS: 2, STATUS: 3, REFUSED: 4, LOST: 5, RESET: 6, LOCAL: 7 });

/**
 * What the engine published about an adopted flow before it shut or closed its end of the socket:
 * so at EOF, JS knows whether the far side ended cleanly (PEER_EOF, DONE) or the flow failed.
 */
export interface LinkState {
  state: 0 | 1 | 2 | 3;
  /** the stream was established (CONNECT answered 200 / the inbound stream accepted) */
  established: boolean;
  /** FAILED: one of FAIL */
  fail?: number;
  /** FAILED after a CONNECT answer other than 200: that status */
  status?: number;
  /** FAILED: the engine's reason */
  reason?: string;
}

export type HbonePlan = Extract<OutboundPlan, { t: 2 }>;

export interface EngineCallbacks {
  /** A captured connection: a plan, or null to refuse it (the connection is reset). */
  outbound(listenerId: number, flowId: number, dstIp: string, dstPort: number, peerIp: string, peerPort: number): OutboundPlan | null;
  /** A CONNECT stream: where to carry it, or the HTTP status to refuse it with. */
  inbound(listenerId: number, flowId: number, peer: string, authority: string, forwarded: string | undefined,
    remoteIp: string, remotePort: number, localIp: string, localPort: number): InboundTarget | InboundAdopt | number;
  /** The peer's DER chain (leaf first) after OpenSSL verified it: its SPIFFE id, or throw. */
  verify(chain: Buffer[], rootsPem: string, tag: string): string;
  /** The current TLS context of an HBONE listener, or null to refuse the handshake (fail closed). */
  context(listenerId: number): EngineTls | null;
  /**
   * kind 1: the flow is established; kind 2: it closed. Bytes are the app side's. `fail`: why a
   * closed flow failed, one of FAIL (0 when the engine set no code); `error` is text for people.
   */
  event(kind: 1 | 2, flowId: number, fromApp: number, toApp: number, error: string | undefined, fail: number): void;
  /** The engine's own log lines (a back-off, a closed abusive session, a dead peer): level 1 debug, 2 info, 3 warn, 4 error. */
  log?(level: EngineLogLevel, message: string): void;
}

/** 1 debug, 2 info, 3 warn, 4 error */
export type EngineLogLevel = 1 | 2 | 3 | 4;

/** Every code shared with the engine, by group and name, as engine.h defines them. */
export const ENGINE_CODES = Object.freeze({
  listen: Object.freeze({ outbound: 1, hbone: 2 }),
  plan: Object.freeze({ plain: 1, hbone: 2 }),
  event: Object.freeze({ established: 1, closed: 2, flushed: 3 }),
  link: LINK,
  fail: FAIL,
  log: Object.freeze({ debug: 1, info: 2, warn: 3, error: 4 }),
});

/** Where TypeScript's codes and the addon's differ ('' when they agree). */
export function engineCodesMismatch(native: Record<string, Record<string, number>>): string {
  const ours = ENGINE_CODES as unknown as Record<string, Record<string, number>>;
  const diffs: string[] = [];
  for (const group of new Set([...Object.keys(ours), ...Object.keys(native)])) {
    const a = ours[group] ?? {}, b = native[group] ?? {};
    for (const name of new Set([...Object.keys(a), ...Object.keys(b)])) {
      if (a[name] !== b[name]) diffs.push(`${group}.${name}: ts ${a[name]} vs native ${b[name]}`);
    }
  }
  return diffs.join('; ');
}

/**
 * The HBONE settings the engine runs with, every one required: the table and its documentation
 * are src/hbone/settings.ts (HBONE_SETTINGS, engineOptions()); the C code has no defaults.
 */
export interface EngineOptions {
  /** dialing the app or an HBONE peer, ms */
  connectTimeoutMs: number;
  /** TLS handshake and identity check, ms */
  handshakeTimeoutMs: number;
  /** an unused pooled client connection is closed after this, ms (server sessions after twice it) */
  idleMs: number;
  /** streams one client connection carries in its life */
  streamsPerConnection: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of the HBONE server */
  maxConcurrentStreams: number;
  /** HTTP/2 stream window, bytes */
  streamWindow: number;
  /** HTTP/2 connection window, bytes */
  connectionWindow: number;
  /** SETTINGS_MAX_FRAME_SIZE announced and the largest DATA frame sent, bytes */
  maxFrameSize: number;
  /** HTTP/2 PING after this much silence from the peer, ms; 0 disables keepalive PINGs */
  pingIntervalMs: number;
  /** a PING unanswered (no byte at all) this long closes the connection and resets its flows, ms */
  pingTimeoutMs: number;
  /** TCP keepalive on every engine socket: first probe after this idle time, ms (whole seconds); 0 disables */
  tcpKeepaliveIdleMs: number;
  /** TCP keepalive: between probes, ms (whole seconds, >= 1 s) */
  tcpKeepaliveIntervalMs: number;
  /** TCP keepalive: unanswered probes before the connection fails */
  tcpKeepaliveProbes: number;
  /** TCP_USER_TIMEOUT on sockets to other hosts (tunnels, passthrough upstreams), ms; 0 keeps the kernel's */
  tcpUserTimeoutMs: number;
  /** a flow with no byte moved either way this long is reset, ms; 0 disables */
  flowIdleMs: number;
  /** a flow one side of which ended is reset after this long without a byte moved, ms; 0 disables */
  halfClosedMs: number;
  /** protocol errors one HBONE server session may cause before GOAWAY (ENHANCE_YOUR_CALM) */
  abuseBudget: number;
  /** fds under the soft RLIMIT_NOFILE that accepts leave to the rest of the process; 0 disables */
  fdReserve: number;
}

export interface EngineListenOptions {
  kind: 'outbound' | 'hbone';
  /** SO_MARK of every socket the engine dials for this listener's pod */
  mark: number;
  /** hbone: handed to `verify` with each client's chain */
  tag?: string;
}

export interface EngineStats {
  flows: number;
  tunnels: number;
  listeners: number;
  /** listeners whose accept currently fails for want of fds or memory (backing off) */
  starved: number;
  /** failed accepts by cause, since the engine started */
  acceptEmfile: number;
  acceptEnfile: number;
  acceptEnobufs: number;
  acceptEnomem: number;
  /** HBONE connections closed because the peer did not answer PING in time */
  deadPeers: number;
  /** HBONE sessions closed with GOAWAY for protocol errors over the budget */
  abusiveSessions: number;
  /** flows reset at the idle limit */
  idleClosed: number;
  /** flows reset at the half-closed limit */
  halfClosed: number;
  /** dials dropped because their client went away */
  dialsCancelled: number;
  /** dials that found the pod's socket pool empty and waited for its helper thread to make one */
  poolWaits: number;
}

const NO_STATS: EngineStats = {
  flows: 0, tunnels: 0, listeners: 0, starved: 0, acceptEmfile: 0, acceptEnfile: 0, acceptEnobufs: 0, acceptEnomem: 0,
  deadPeers: 0, abusiveSessions: 0, idleClosed: 0, halfClosed: 0, dialsCancelled: 0, poolWaits: 0,
};

interface RawEngineAddon {
  engineCreate(cb: EngineCallbacks, o: EngineOptions): object;
  engineTls(chainPem: string, keyPem: string, rootsPem: string): EngineTls;
  engineListen(e: object, fd: number, netns: Netns, o: { kind: number; mark: number; tag?: string }): number;
  engineUnlisten(e: object, id: number, handed?: 0 | 1): void;
  engineCloseFlows(e: object, listenerId: number, reason: string): void;
  engineCloseFlow(e: object, flowId: number, reason: string): void;
  engineFlush(e: object, id: number): void;
  engineStats(e: object): EngineStats;
  engineSource(e: object, netns: Netns, o: { mark: number }): number;
  engineLink(): EngineLink;
  engineLinkState(link: EngineLink): LinkState;
  engineOpen(e: object, sourceId: number, fd: number, plan: HbonePlan, link: EngineLink): number;
  engineDestroy(e: object): void;
  engineCodes(): Record<string, Record<string, number>>;
}

let codesChecked = false;

export class Engine {
  readonly #raw: RawEngineAddon;
  readonly #e: object;
  #destroyed = false;
  /** flush() calls waiting for their EVT_FLUSHED, by id */
  readonly #flushes = new Map<number, () => void>();
  #flushId = 0;

  constructor(cb: EngineCallbacks, o: EngineOptions) {
    this.#raw = addon() as unknown as RawEngineAddon;
    if (!codesChecked) {
      const diff = engineCodesMismatch(this.#raw.engineCodes());
      if (diff !== '') throw new MeshError('AMBIT_BUG', `engine: codes differ between native/src/engine.h and src/native/engine.ts: ${diff}`);
      codesChecked = true;
    }
    // the flush answers are the engine's own business: the caller's event() never sees them
    const flushed = ENGINE_CODES.event.flushed;
    const own: EngineCallbacks = {
      outbound: (...a) => cb.outbound(...a),
      inbound: (...a) => cb.inbound(...a),
      verify: (...a) => cb.verify(...a),
      context: (...a) => cb.context(...a),
      event: (kind, flowId, fromApp, toApp, error, fail) => {
        if ((kind as number) !== flushed) { cb.event(kind, flowId, fromApp, toApp, error, fail); return; }
        const done = this.#flushes.get(flowId);
        this.#flushes.delete(flowId);
        done?.();
      },
      ...(cb.log ? { log: (level: EngineLogLevel, message: string) => cb.log!(level, message) } : {}),
    };
    this.#e = this.#raw.engineCreate(own, o);
  }

  /**
   * Resolves once every event the engine had to tell before this call has been delivered. The
   * events of flows JS holds no socket of (telemetry) may wait up to 20 ms to share a wake-up of
   * the JS thread with others (engine.h, NEWS_MS); a metrics scrape flushes first, so it counts
   * everything that happened before it.
   */
  flush(): Promise<void> {
    if (this.#destroyed) return Promise.resolve();
    const id = (this.#flushId % 0xffff_fffe) + 1;
    this.#flushId = id;
    return new Promise<void>((resolve) => {
      this.#flushes.set(id, resolve);
      try {
        this.#raw.engineFlush(this.#e, id);
      } catch (e) {
        this.#flushes.delete(id);
        throw e;
      }
    });
  }

  /** Build a TLS context; throws AMBIT_CERT_INVALID naming what was wrong with the PEM. */
  tls(chainPem: string, keyPem: string, rootsPem: string): EngineTls {
    return this.#raw.engineTls(chainPem, keyPem, rootsPem);
  }

  /** Hand a listening socket (the engine owns it from here) and the pod netns it serves. */
  listen(fd: number, netns: Netns, o: EngineListenOptions): number {
    // The addon frees the engine once its uv handles have closed after destroy: never pass it on.
    if (this.#destroyed) throw closedError();
    return this.#raw.engineListen(this.#e, fd, netns, { kind: ENGINE_CODES.listen[o.kind], mark: o.mark, ...(o.tag !== undefined ? { tag: o.tag } : {}) });
  }

  /**
   * A source to open flows from (`open`): the netns the engine dials HBONE peers from, and the
   * SO_MARK of those sockets. No socket of its own; closed with `unlisten`. Pooled connections
   * are shared only between flows of one source (and one TLS context and pool key).
   */
  source(netns: Netns, o: { mark: number }): number {
    if (this.#destroyed) throw closedError();
    return this.#raw.engineSource(this.#e, netns, { mark: o.mark });
  }

  /** A fresh link for an adopted flow (answer `{ fd, link }` to `inbound`, or pass to `open`). */
  link(): EngineLink {
    return this.#raw.engineLink();
  }

  /** What the engine published about the link's flow (see LinkState); valid after destroy too. */
  linkState(link: EngineLink): LinkState {
    return this.#raw.engineLinkState(link);
  }

  /**
   * A new flow whose app side is `fd` (one end of a connected, non-blocking socket pair; the
   * engine owns it from here, also when this throws), carried by the HBONE plan from the
   * source's netns, as if captured and answered with that plan. Returns the flow id its
   * established and closed events carry.
   */
  open(sourceId: number, fd: number, plan: HbonePlan, link: EngineLink): number {
    if (this.#destroyed) {
      // the fd is the engine's from here: a destroyed one closes it as it refuses
      addon().closeFd(fd);
      throw closedError();
    }
    return this.#raw.engineOpen(this.#e, sourceId, fd, plan, link);
  }

  /**
   * Stop accepting; HBONE sessions get GOAWAY, open flows go on. `handed`: the listening socket now
   * belongs to another agent (a handover): sessions get a shutdown notice instead and everything
   * already accepted here (handshakes, streams in flight) is still served, so no client is refused.
   */
  unlisten(id: number, handed = false): void {
    if (!this.#destroyed) this.#raw.engineUnlisten(this.#e, id, handed ? 1 : 0);
  }

  /** Reset one flow (policy change). Asynchronous: its close event follows (none if it was gone). */
  closeFlow(flowId: number, reason: string): void {
    if (!this.#destroyed) this.#raw.engineCloseFlow(this.#e, flowId, reason.slice(0, 190));
  }

  /** Reset every flow of a listener (0: all), e.g. at a drain deadline. Asynchronous, as closeFlow. */
  closeFlows(listenerId: number, reason: string): void {
    if (!this.#destroyed) this.#raw.engineCloseFlows(this.#e, listenerId, reason.slice(0, 190));
  }

  stats(): EngineStats {
    return this.#destroyed ? { ...NO_STATS } : this.#raw.engineStats(this.#e);
  }

  /** Cut everything without events. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#raw.engineDestroy(this.#e);
    // nothing more comes: whoever waits for a flush has all there will be
    for (const done of this.#flushes.values()) done();
    this.#flushes.clear();
  }
}

function closedError(): MeshError {
  return new MeshError('AMBIT_ENGINE_CLOSED', 'engine: already destroyed');
}
