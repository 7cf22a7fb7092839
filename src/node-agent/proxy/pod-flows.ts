/**
 * The connections of one pod, carried out: each is decided by a pure function (route.ts for
 * 15001, inbound.ts for 15006 and 15008), then this module does what the decision says: answers
 * the engine (a plan, a target, a status), dials and relays 15006's plaintext, and accounts for
 * every connection (telemetry, the live-policy registry, the count the drain waits on).
 * The listeners and the drain itself are the pod proxy's (pod-proxy.ts).
 */
import { Socket } from 'node:net';
import { errorMessage, logger, MeshError } from '../../core/index.js';
import type { Workload } from '../../model/index.js';
import { AGENT_MARK } from '../enrol/capture.js';
import { connectionLabels, type ConnectionDescription } from '../admin/telemetry.js';
import type { TrackedConnection } from './connections.js';
import { identityOf, podIdentity, type PodInfo, type ProxyContext } from './context.js';
import {
  clientTag, FlowRecord, InboundFlowRecord, type EngineTls, type FlowOwner, type HboneHandler, type InboundTarget, type OutboundHandler, type OutboundPlan,
} from './engine-adapter.js';
import { connectHeaders } from './headers.js';
import { decideInbound, refusedAddr, type InboundOptions, type InboundRequest } from './inbound.js';
import { responseFlag } from './outcome.js';
import { RELAY_BUFFER_BYTES, relay } from './relay.js';
import { buildOutboundRequest, formatAddr, spiffeIdOf, type RouteOptions, type SocketAddr } from './route.js';

const log = logger('node-agent.proxy');

/** What the flows ask of the pod proxy's lifecycle. */
export interface FlowsLifecycle {
  /** the proxy is stopping (and not handed over): new connections are refused */
  refusing(): boolean;
  /** work the drain waits for (a 15006 connection, from its decision to its end) */
  track(work: Promise<void>): void;
}

function stripMapped(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** CONNECT headers as the engine takes them: "name\0value\0...". */
function joinHeaders(h: Record<string, string>): string {
  let out = '';
  for (const k in h) out += out === '' ? `${k}\0${h[k]}` : `\0${k}\0${h[k]}`;
  return out;
}

export class PodFlows implements FlowOwner, OutboundHandler, HboneHandler {
  readonly #ctx: ProxyContext;
  readonly #pod: PodInfo;
  readonly #life: FlowsLifecycle;
  /** routing options fixed for the proxy's life: its own ports are the self-call set */
  readonly #route: RouteOptions;
  readonly #inbound: InboundOptions;
  /** 15006 relays: destroyed at the drain deadline */
  readonly #live = new Set<{ destroy(reason?: string): void }>();
  /** this pod's flows the engine still carries */
  #engineOpen = 0;
  #engineIdle: (() => void) | undefined;

  constructor(ctx: ProxyContext, pod: PodInfo, life: FlowsLifecycle) {
    this.#ctx = ctx;
    this.#pod = pod;
    this.#life = life;
    const { outbound, inboundPlain, hbone } = ctx.ports;
    const agentPorts = [outbound, inboundPlain, hbone];
    this.#route = { agentPorts, hbonePort: hbone, ...(ctx.random ? { random: ctx.random } : {}) };
    this.#inbound = { agentPorts };
  }

  /** Connections open now (relays in Node and flows in the engine). */
  get open(): number { return this.#live.size + this.#engineOpen; }

  /** Resolves when the engine carries no flow of this pod any more; undefined when it carries none now. */
  engineIdle(): Promise<void> | undefined {
    if (this.#engineOpen === 0) return undefined;
    return new Promise<void>((resolve) => {
      const before = this.#engineIdle;
      this.#engineIdle = () => { before?.(); resolve(); };
    });
  }

  /** The drain deadline: cut the relays Node carries (the engine's flows are closed by listener). */
  cut(reason: string): void {
    for (const r of [...this.#live]) r.destroy(reason);
  }

  /** FlowOwner: one of this pod's engine flows ended. */
  flowEnded(): void {
    if (--this.#engineOpen <= 0) {
      this.#engineOpen = 0;
      this.#engineIdle?.();
      this.#engineIdle = undefined;
    }
  }

  #workload(): Workload | undefined { return this.#ctx.snapshot().workload(this.#pod.uid); }

  #track(flowId: number, r: FlowRecord): void {
    this.#ctx.engine.track(flowId, r);
    this.#engineOpen++;
  }

  /** A connection refused before it was carried: reset it (if we hold it) and account for it. */
  #refused(app: Socket | undefined, started: number, direction: 'inbound' | 'outbound', srcAddr: string, dstAddr: string,
    desc: ConnectionDescription, error: string, hboneAddr?: string): void {
    app?.resetAndDestroy();
    log.debug('connection refused', { pod: this.#pod.name, direction, src: srcAddr, dst: dstAddr, error });
    this.#ctx.telemetry.closed({
      direction, srcAddr, dstAddr, hboneAddr, labels: connectionLabels(desc), bytesRecv: 0, bytesSent: 0,
      durationMs: Date.now() - started, error,
    }, false);
  }

  // === 15006: inbound plaintext, carried in Node ===

  /** A captured plaintext connection towards the pod. */
  plain(app: Socket): void {
    app.on('error', () => { /* reported through the relay or the refusal */ });
    const started = Date.now();
    const { native } = this.#ctx;
    const srcIp = stripMapped(app.remoteAddress);
    const srcPort = app.remotePort ?? 0;
    const srcAddr = formatAddr(srcIp, srcPort);
    let dst: SocketAddr;
    try {
      const o = native.originalDst(native.socketFd(app));
      dst = { ip: stripMapped(o.address), port: o.port };
    } catch (e) {
      log.warn('inbound: no original destination', { pod: this.#pod.name, error: errorMessage(e) });
      app.resetAndDestroy();
      return;
    }
    const req: InboundRequest = { via: 'plain', src: { ip: srcIp, port: srcPort }, dst };
    const d = decideInbound(this.#ctx.snapshot(), this.#pod, req, this.#inbound);
    const desc: ConnectionDescription = { reporter: 'destination', source: d.source, destination: d.workload, mtls: false };
    const dstAddr = formatAddr(dst.ip, dst.port);
    if (d.kind === 'refuse') {
      this.#refused(app, started, 'inbound', srcAddr, dstAddr, { ...desc, responseFlags: d.responseFlag }, d.detail);
      return;
    }
    this.#life.track((async () => {
      let upstream: Socket;
      try {
        upstream = await this.#dial(d.target, d.spoof);
      } catch (e) {
        this.#refused(app, started, 'inbound', srcAddr, dstAddr, { ...desc, responseFlags: responseFlag({ kind: 'dial-failed' }) }, errorMessage(e));
        return;
      }
      if (app.destroyed) { upstream.destroy(); return; }
      await this.#carryPlain(upstream, app, { srcIp, srcPort, dst: d.target, desc, started, srcAddr, dstAddr });
    })());
  }

  /** A TCP connection from inside the pod netns, marked so capture leaves it alone. */
  async #dial(to: SocketAddr, spoofFrom?: string): Promise<Socket> {
    const fd = await this.#ctx.native.connectInNetns(this.#pod.netns, {
      address: to.ip, port: to.port, mark: AGENT_MARK, timeoutMs: this.#ctx.connectTimeoutMs ?? 10_000,
      ...(spoofFrom ? { transparent: true, localAddress: spoofFrom, localPort: 0 } : {}),
    });
    // A 16 kB high-water mark paused the relay every few chunks of a bulk transfer.
    // (net.Socket hands its options to Duplex; the typings just do not list the field.)
    const opts = { fd, readable: true, writable: true, allowHalfOpen: true, writableHighWaterMark: RELAY_BUFFER_BYTES };
    const s = new Socket(opts);
    s.setNoDelay(true);
    return s;
  }

  /**
   * Relays an inbound connection to the app (`appSide` is the socket towards the app; bytes are
   * counted on it: received = towards the app) and keeps it registered so a policy change can
   * close it.
   */
  async #carryPlain(appSide: Socket, client: Socket, c: {
    srcIp: string; srcPort: number; dst: SocketAddr; desc: ConnectionDescription; started: number; srcAddr: string; dstAddr: string;
  }): Promise<void> {
    const labels = connectionLabels(c.desc);
    this.#ctx.telemetry.opened(labels);
    const r = relay(appSide, client);
    this.#live.add(r);
    const tracked: TrackedConnection = this.#ctx.connections.add({
      direction: 'inbound', podUid: this.#pod.uid, srcIp: c.srcIp, srcPort: c.srcPort,
      dstIp: c.dst.ip, dstPort: c.dst.port, close: (reason) => r.destroy(reason),
    });
    const res = await r.done;
    this.#live.delete(r);
    this.#ctx.connections.remove(tracked);
    this.#ctx.telemetry.closed({
      direction: 'inbound', srcAddr: c.srcAddr, dstAddr: c.dstAddr, labels,
      bytesRecv: res.toApp, bytesSent: res.fromApp, durationMs: Date.now() - c.started, error: res.error,
    }, true);
  }

  // === 15001 and 15008: the engine asks, these answer synchronously ===

  /** HboneHandler: the TLS context of the pod's HBONE listener, or null (no certificate: fail closed). */
  context(): EngineTls | null {
    const b = this.#ctx.cert(podIdentity(this.#ctx, this.#pod));
    if (!b) return null;
    try {
      return this.#ctx.engine.tls(b);
    } catch (e) {
      log.warn('hbone: certificate unusable', { pod: this.#pod.name, error: errorMessage(e) });
      return null;
    }
  }

  /** OutboundHandler: a captured outbound connection, answered with a plan (buildOutboundRequest's) or null. */
  outbound(flowId: number, dstIp: string, dstPort: number, peerIp: string, peerPort: number): OutboundPlan | null {
    const started = Date.now();
    if (this.#life.refusing()) return null;
    // Addresses are formatted only for a refusal: an accepted flow keeps them as parts.
    const refuse = (d: ConnectionDescription, error: string, hboneAddr?: string): null => {
      this.#refused(undefined, started, 'outbound', formatAddr(peerIp, peerPort), formatAddr(dstIp, dstPort), d, error, hboneAddr);
      return null;
    };
    const src = this.#workload();
    if (!src) return refuse({ reporter: 'source', mtls: false, responseFlags: responseFlag({ kind: 'outbound-refused', reason: 'pod-unknown' }) }, 'pod unknown to the mesh');
    const req = buildOutboundRequest(this.#ctx.snapshot(), src, { ip: dstIp, port: dstPort }, this.#route);
    const srcId = spiffeIdOf(src);
    const desc: ConnectionDescription = {
      reporter: 'source', source: src, sourcePrincipal: srcId, destination: req.destWorkload, service: req.service,
      mtls: req.kind === 'hbone',
    };
    if (req.kind === 'deny') {
      return refuse({ ...desc, responseFlags: responseFlag({ kind: 'outbound-refused', reason: req.denial }) }, req.reason);
    }
    if (req.kind !== 'hbone') {
      this.#track(flowId, new FlowRecord(this, 'outbound', desc, peerIp, peerPort, dstIp, dstPort, undefined, started));
      return { t: 1, ip: req.address.ip, port: req.address.port };
    }
    const hboneAddr = formatAddr(req.address.ip, req.address.port);
    // Fail closed: without our certificate mesh traffic is refused, never sent in plaintext.
    const cert = this.#ctx.cert(identityOf(src));
    let ctx: EngineTls;
    try {
      if (!cert) throw new MeshError('AMBIT_CERT_INVALID', `no valid certificate for ${srcId}`);
      ctx = this.#ctx.engine.tls(cert);
    } catch (e) {
      return refuse({ ...desc, responseFlags: responseFlag({ kind: 'outbound-refused', reason: 'no-certificate' }) }, errorMessage(e), hboneAddr);
    }
    const tag = clientTag(req.expectedIdentities);
    this.#track(flowId, new FlowRecord(this, 'outbound', desc, peerIp, peerPort, dstIp, dstPort, hboneAddr, started));
    return {
      t: 2, ctx, tag, ip: req.address.ip, port: req.address.port, authority: req.authority,
      key: `${this.#pod.uid} ${srcId} ${tag} ${hboneAddr}`,
      headers: joinHeaders(connectHeaders(src, peerIp, peerPort, req.service)),
    };
  }

  /** HboneHandler: a CONNECT stream on 15008, decided as 15006's connections are (decideInbound). */
  inbound(flowId: number, peerId: string, authority: string, forwarded: string | undefined,
    remoteIp: string, remotePort: number, localIp: string, localPort: number): InboundTarget | number {
    const started = Date.now();
    const req: InboundRequest = {
      via: 'hbone', peer: peerId, authority, forwarded, src: { ip: remoteIp, port: remotePort }, local: { ip: localIp, port: localPort },
      draining: this.#life.refusing(),
    };
    const d = decideInbound(this.#ctx.snapshot(), this.#pod, req, this.#inbound);
    const desc: ConnectionDescription = {
      reporter: 'destination', source: d.source, sourcePrincipal: peerId, destination: d.workload, mtls: true, serviceHost: d.serviceHost,
    };
    if (d.kind === 'refuse') {
      log.debug('hbone refused', { pod: this.#pod.name, status: d.status, reason: d.reason, detail: d.detail, peer: peerId });
      // Addresses are formatted only for a refusal: an accepted flow keeps them as parts.
      this.#ctx.telemetry.closed({
        direction: 'inbound', srcAddr: formatAddr(remoteIp, remotePort), dstAddr: refusedAddr(d, req),
        labels: connectionLabels({ ...desc, responseFlags: d.responseFlag }), bytesRecv: 0, bytesSent: 0, durationMs: Date.now() - started, error: d.detail,
      }, false);
      return d.status;
    }
    const { target, peer } = d;
    if (peer === undefined) return 500; // decideInbound names the peer of every HBONE stream it allows
    const r = new InboundFlowRecord(this, desc, remoteIp, remotePort, target.ip, target.port, formatAddr(localIp, localPort), started,
      this.#pod.uid, peer, flowId, this.#ctx.engine);
    this.#ctx.connections.add(r);
    this.#track(flowId, r);
    return d.spoof !== undefined ? { ip: target.ip, port: target.port, spoof: d.spoof } : { ip: target.ip, port: target.port };
  }
}
