/**
 * The agent's side of the native data-path engine (src/native/engine.ts): one engine per agent,
 * shared by every enrolled pod. Listeners are routed to their pod's handler by id; each flow the
 * engine carries has one small record here (telemetry labels, the registry entry) until the
 * engine says it closed. Identity checks on TLS peers run on the JS thread, on the DER chain, with
 * src/hbone's rule (verifyEnginePeer: SPIFFE rules + trust domain / expected identity), as the
 * waypoint's.
 */
import { Counter, Gauge } from 'prom-client';
import { errorMessage, logger, type Level } from '../../core/index.js';
import { clientTag, engineOptions, hboneFailureOf, serverTag, verifyEnginePeer, type HboneSettings } from '../../hbone/index.js';
import type { CertBundle } from '../../identity/index.js';
import { Engine, type EngineStats, type EngineTls, type InboundTarget, type OutboundPlan } from '../../native/index.js';
import type { ConnectionRegistry, TrackedConnection } from './connections.js';
import type { NetnsHandle } from '../deps.js';
import type { SourceIdentity } from '../../policy/index.js';
import { formatAddr } from './route.js';
import { connectionLabels, type AgentTelemetry, type ConnectionDescription, type ConnectionLabels } from '../admin/telemetry.js';
import { responseFlag } from './outcome.js';

const log = logger('node-agent.engine');
/** the engine's log levels (1..4) as the logger's */
const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];

/** Engine counters exported as Prometheus counters: [metric, help, labels -> stats field]. */
const ENGINE_COUNTERS: ReadonlyArray<[string, string, ReadonlyArray<[Record<string, string>, keyof EngineStats]>]> = [
  ['ambit_engine_accept_failures_total', 'Failed accepts on pod listeners, by the limit that was hit', [
    [{ reason: 'EMFILE' }, 'acceptEmfile'], [{ reason: 'ENFILE' }, 'acceptEnfile'], [{ reason: 'ENOBUFS' }, 'acceptEnobufs'], [{ reason: 'ENOMEM' }, 'acceptEnomem'],
  ]],
  ['ambit_engine_connections_closed_total', 'HBONE sessions and flows the engine closed itself, by cause', [
    [{ cause: 'dead_peer' }, 'deadPeers'], [{ cause: 'abusive_session' }, 'abusiveSessions'], [{ cause: 'idle' }, 'idleClosed'],
    [{ cause: 'half_closed' }, 'halfClosed'], [{ cause: 'dial_cancelled' }, 'dialsCancelled'],
  ]],
];

export type { EngineTls, InboundTarget, OutboundPlan };

export interface OutboundHandler {
  outbound(flowId: number, dstIp: string, dstPort: number, peerIp: string, peerPort: number): OutboundPlan | null;
}

export interface HboneHandler {
  context(): EngineTls | null;
  inbound(flowId: number, peer: string, authority: string, forwarded: string | undefined,
    remoteIp: string, remotePort: number, localIp: string, localPort: number): InboundTarget | number;
}

/** Whoever owns a flow (its pod proxy): told when one of its flows ends, for drains. */
export interface FlowOwner { flowEnded(): void }

/**
 * What the agent remembers of one flow the engine carries: as little as telemetry needs at close
 * (addresses are kept as parts and formatted then).
 */
export class FlowRecord {
  opened = false;
  constructor(
    readonly owner: FlowOwner,
    readonly direction: 'inbound' | 'outbound',
    readonly desc: ConnectionDescription,
    readonly srcIp: string,
    readonly srcPort: number,
    readonly dstIp: string,
    readonly dstPort: number,
    readonly hboneAddr: string | undefined,
    readonly started: number,
  ) {}
}

/** An inbound flow is also its own entry in the live-policy registry (no second object, no closure). */
export class InboundFlowRecord extends FlowRecord implements Omit<TrackedConnection, 'id' | 'direction'> {
  declare readonly direction: 'inbound';
  constructor(
    owner: FlowOwner, desc: ConnectionDescription, srcIp: string, srcPort: number, dstIp: string, dstPort: number, hboneAddr: string, started: number,
    readonly podUid: string,
    readonly srcIdentity: SourceIdentity,
    readonly flowId: number,
    readonly engine: AgentEngine,
  ) {
    super(owner, 'inbound', desc, srcIp, srcPort, dstIp, dstPort, hboneAddr, started);
  }

  close(reason: string): void { this.engine.closeFlow(this.flowId, reason); }
}

/** verify tags: "td:<trust domain>" (servers) or "id:<uri>,<uri>" (clients: the expected identities). */
export { clientTag, serverTag };

export class AgentEngine {
  readonly #engine: Engine;
  readonly #telemetry: AgentTelemetry;
  readonly #connections: ConnectionRegistry;
  readonly #outbound = new Map<number, OutboundHandler>();
  readonly #hbone = new Map<number, HboneHandler>();
  readonly #flows = new Map<number, FlowRecord>();
  readonly #contexts = new WeakMap<CertBundle, EngineTls>();

  /** `engine`: overrides of the HBONE settings table (src/hbone/settings.ts) */
  constructor(o: { telemetry: AgentTelemetry; connections: ConnectionRegistry; engine?: Partial<HboneSettings> }) {
    this.#telemetry = o.telemetry;
    this.#connections = o.connections;
    this.#engine = new Engine({
      outbound: (lid, fid, dip, dport, pip, pport) => this.#outbound.get(lid)?.outbound(fid, dip, dport, pip, pport) ?? null,
      inbound: (lid, fid, peer, authority, fwd, rip, rport, lip, lport) => {
        const h = this.#hbone.get(lid);
        return h ? h.inbound(fid, peer, authority, fwd, rip, rport, lip, lport) : 503;
      },
      verify: (chain, roots, tag) => verifyPeer(chain, roots, tag),
      context: (lid) => this.#hbone.get(lid)?.context() ?? null,
      event: (kind, fid, fromApp, toApp, error, fail) => this.#event(kind, fid, fromApp, toApp, error, fail),
      log: (level, message) => { log[LEVELS[level - 1] ?? 'warn'](message); },
    }, engineOptions(o.engine));
    this.#metrics(o.telemetry);
  }

  /** The engine's counters on the agent's registry, read at scrape time (no per-event cost). */
  #metrics(telemetry: AgentTelemetry): void {
    const registers = [telemetry.registry];
    const stats = (): EngineStats => this.#engine.stats();
    for (const [name, help, series] of ENGINE_COUNTERS) {
      const labelNames = Object.keys(series[0]![0]);
      new Counter({
        name, help, labelNames, registers,
        collect() {
          // the engine's totals as they are (it only counts up): reset and set, no per-event cost
          const s = stats();
          this.reset();
          for (const [labels, field] of series) this.inc(labels, s[field]);
        },
      });
    }
    new Gauge({
      name: 'ambit_engine_listeners_starved', help: 'Pod listeners that cannot accept (out of fds or memory; the agent reports not ready)', registers,
      collect() { this.set(stats().starved); },
    });
  }

  /** Listeners that cannot accept now (out of fds or memory): the agent is not ready meanwhile. */
  starved(): number { return this.#engine.stats().starved; }

  /** The engine's TLS context for a certificate bundle (one per bundle: rotation makes a new one). */
  tls(b: CertBundle): EngineTls {
    let c = this.#contexts.get(b);
    if (c === undefined) {
      c = this.#engine.tls(b.chainPem.join(''), b.keyPem, b.rootsPem);
      this.#contexts.set(b, c);
    }
    return c;
  }

  listenOutbound(fd: number, netns: NetnsHandle, mark: number, h: OutboundHandler): number {
    const id = this.#engine.listen(fd, netns, { kind: 'outbound', mark });
    this.#outbound.set(id, h);
    return id;
  }

  listenHbone(fd: number, netns: NetnsHandle, mark: number, trustDomain: string, h: HboneHandler): number {
    const id = this.#engine.listen(fd, netns, { kind: 'hbone', mark, tag: serverTag(trustDomain) });
    this.#hbone.set(id, h);
    return id;
  }

  /**
   * Stop accepting on a listener; its open flows go on. `handed` (a handover to a new agent):
   * everything this engine already accepted is still decided and served, so the handlers stay
   * until `forget(id)`; otherwise a connection still waiting for its decision is refused.
   */
  unlisten(id: number, handed = false): void {
    this.#engine.unlisten(id, handed);
    if (!handed) this.forget(id);
  }

  /** Drop a closed listener's handlers (after a handover drain). */
  forget(id: number): void {
    this.#outbound.delete(id);
    this.#hbone.delete(id);
  }

  /** Remember a flow the engine was just told to carry. */
  track(flowId: number, r: FlowRecord): void { this.#flows.set(flowId, r); }

  closeFlow(flowId: number, reason: string): void { this.#engine.closeFlow(flowId, reason); }

  closeFlows(listenerId: number, reason: string): void { this.#engine.closeFlows(listenerId, reason); }

  stats(): EngineStats { return this.#engine.stats(); }

  /**
   * Resolves once every connection event the engine had before this call is delivered
   * (Engine.flush), or after `withinMs` at the latest: a scrape or a stop never hangs on a stuck
   * engine thread.
   */
  flush(withinMs = 1000): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, withinMs);
      timer.unref();
      const done = (): void => { clearTimeout(timer); resolve(); };
      this.#engine.flush().then(done, done);
    });
  }

  destroy(): void {
    this.#engine.destroy();
    for (const r of this.#flows.values()) {
      if (r instanceof InboundFlowRecord) this.#connections.remove(r as InboundFlowRecord & TrackedConnection);
      r.owner.flowEnded();
    }
    this.#flows.clear();
  }

  #event(kind: 1 | 2, flowId: number, fromApp: number, toApp: number, error: string | undefined, fail: number): void {
    const r = this.#flows.get(flowId);
    if (r === undefined) return;
    if (kind === 1) {
      r.opened = true;
      this.#telemetry.opened(labelsOf(r, undefined, 0));
      return;
    }
    this.#flows.delete(flowId);
    if (r instanceof InboundFlowRecord) this.#connections.remove(r as InboundFlowRecord & TrackedConnection);
    const inbound = r.direction === 'inbound';
    this.#telemetry.closed({
      direction: r.direction, srcAddr: formatAddr(r.srcIp, r.srcPort), dstAddr: formatAddr(r.dstIp, r.dstPort), hboneAddr: r.hboneAddr,
      labels: labelsOf(r, error, fail),
      bytesRecv: inbound ? toApp : fromApp, bytesSent: inbound ? fromApp : toApp, durationMs: Date.now() - r.started, error,
    }, r.opened);
    r.owner.flowEnded();
  }
}

/** A flow that ended before it was established, with an error, is labelled by the engine's failure code. */
function labelsOf(r: FlowRecord, error: string | undefined, fail: number): ConnectionLabels {
  if (r.opened || (error === undefined && fail === 0)) return connectionLabels(r.desc);
  return connectionLabels({ ...r.desc, responseFlags: responseFlag({ kind: 'flow-failed', failure: hboneFailureOf(fail) }) });
}

/** The peer's identity after OpenSSL verified the chain (src/hbone/peer.ts: SPIFFE rules, then the tag's). */
function verifyPeer(chain: Buffer[], roots: string, tag: string): string {
  try {
    return verifyEnginePeer(chain, roots, tag);
  } catch (e) {
    log.debug('tls peer refused', { error: errorMessage(e) });
    throw e;
  }
}
