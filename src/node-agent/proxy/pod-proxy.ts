/**
 * One proxy per enrolled pod: three listeners opened INSIDE the pod netns by the addon (15001
 * outbound capture, 15006 inbound plaintext, 15008 inbound HBONE), all with SO_REUSEPORT (a
 * restarted agent binds next to the old one) and the agent mark (never redirected). Every
 * upstream socket the proxy opens in the pod netns carries the same mark.
 *
 * Each connection is decided first (pure route/policy), then carried out.
 */
import { createServer, Socket, type Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { Drain, errorMessage, logger, MeshError } from '../../core/index.js';
import type { CertBundle, Identity } from '../../identity/index.js';
import { parseSpiffeUri } from '../../identity/index.js';
import { serviceKey, type Snapshot, type Workload } from '../../model/index.js';
import { evaluateL4 } from '../../policy/index.js';
import { AGENT_MARK } from '../enrol/capture.js';
import type { ConnectionRegistry, TrackedConnection } from './connections.js';
import { clientTag, FlowRecord, InboundFlowRecord, type AgentEngine, type FlowOwner, type InboundTarget, type OutboundPlan } from './engine-adapter.js';
import type { NetnsHandle, NetnsSockets } from '../deps.js';
import { connectHeaders, forwardedHost } from './headers.js';
import { RELAY_BUFFER_BYTES, relay } from './relay.js';
import { buildOutboundRequest, formatAddr, spiffeIdOf, type RouteOptions, type SocketAddr } from './route.js';
import { connectionLabels, type AgentTelemetry, type ConnectionDescription, type ResponseFlag } from '../admin/telemetry.js';
import { AGENT_PORT } from '../../hbone/index.js';

export interface PodPorts {
  /** default 15001 */
  outbound: number;
  /** default 15006 */
  inboundPlain: number;
  /** default 15008 */
  hbone: number;
}

export const DEFAULT_POD_PORTS: PodPorts = AGENT_PORT;

/** The three listening sockets of a pod proxy (fds), as a handover passes them on. */
export type ListenerFds = Readonly<Record<keyof PodPorts, number>>;
/** What every pod proxy of an agent shares. Narrow: no model writers, no CA. */
export interface ProxyContext {
  native: NetnsSockets;
  snapshot(): Snapshot;
  /** synchronous certificate lookup; undefined means no valid certificate (fail closed) */
  cert(id: Identity): CertBundle | undefined;
  /** fetch the certificate (used once at start, so the HBONE listener comes up with it) */
  fetchCert?(id: Identity): Promise<CertBundle>;
  /** how long start waits for the first certificate, ms; default 5_000 (then starts without: fail closed) */
  certWaitMs?: number;
  /** the addon's data-path engine: it carries 15001 and 15008; 15006 stays in Node */
  engine: AgentEngine;
  telemetry: AgentTelemetry;
  connections: ConnectionRegistry;
  trustDomain: string;
  ports: PodPorts;
  /** TCP connect timeout for upstreams, ms; default 10_000 */
  connectTimeoutMs?: number;
  random?: () => number;
}

export interface PodInfo {
  /** uid of the workload in the model */
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  ips: readonly string[];
  netns: NetnsHandle;
  /** the return-path routes are installed: inbound upstreams can spoof the client's address */
  spoof: boolean;
  /**
   * Listening sockets taken over from the previous agent (handover): served instead of opening
   * new ones, so no connection queued on them is lost. The proxy owns them from `start` on.
   */
  listenFds?: ListenerFds;
}

const log = logger('node-agent.proxy');

function identityOf(w: Pick<Workload, 'trustDomain' | 'namespace' | 'serviceAccount'>): Identity {
  return { trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount };
}

/**
 * Parsed expected server identities, shared across connections: parsing a SPIFFE id per new
 * connection showed in the client agent's profile, and the hbone pool remembers the key of a
 * frozen identity. Bounded: cleared when it grows past what any mesh here names.
 */
const EXPECTED_CACHE_MAX = 4096;
const expectedCache = new Map<string, Identity>();

function expectedIdentity(uri: string): Identity {
  let id = expectedCache.get(uri);
  if (id === undefined) {
    id = Object.freeze(parseSpiffeUri(uri));
    if (expectedCache.size >= EXPECTED_CACHE_MAX) expectedCache.clear();
    expectedCache.set(uri, id);
  }
  return id;
}

function parseAuthority(a: string): SocketAddr | undefined {
  if (a.length > 64) return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(a);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { ip: (m[1] ?? m[2])!.toLowerCase(), port };
}

function stripMapped(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/**
 * The `Forwarded: host=` a peer sent, kept only when it names a Service the model knows. It
 * becomes a metric label value, and every distinct value is a series kept for the agent's life:
 * a peer must not be able to mint them.
 */
function knownServiceHost(snap: Snapshot, forwarded: string | undefined): string | undefined {
  const host = forwardedHost(forwarded);
  if (host === undefined) return undefined;
  const ns = host.split('.')[1];
  return ns !== undefined && snap.service(serviceKey({ namespace: ns, hostname: host })) !== undefined ? host : undefined;
}

/** CONNECT headers as the engine takes them: "name\0value\0...". */
function joinHeaders(h: Record<string, string>): string {
  let out = '';
  for (const k in h) out += out === '' ? `${k}\0${h[k]}` : `\0${k}\0${h[k]}`;
  return out;
}

export class PodProxy implements FlowOwner {
  readonly pod: PodInfo;
  readonly #ctx: ProxyContext;
  readonly #servers: Server[] = [];
  readonly #drain = new Drain();
  /** every relay of this pod, inbound and outbound: destroyed at the drain deadline */
  readonly #live = new Set<{ destroy(reason?: string): void }>();
  #started = false;
  /** handed to a successor: stopped accepting, still serves what it accepted */
  #released = false;
  /** the listening sockets, while this proxy accepts on them (for a handover) */
  #fds: { -readonly [K in keyof PodPorts]?: number } = {};
  /** engine listener ids (15001, 15008) and this pod's flows the engine still carries */
  #engineIds: number[] = [];
  /** listening fds not yet handed to the engine (closed by stop) */
  readonly #pendingFds: number[] = [];
  #engineOpen = 0;
  #engineIdle: (() => void) | undefined;

  /** routing options fixed for the proxy's life: its own ports are the self-call set */
  readonly #route: RouteOptions;

  constructor(ctx: ProxyContext, pod: PodInfo) {
    this.#ctx = ctx;
    this.pod = pod;
    const { outbound, inboundPlain, hbone } = ctx.ports;
    this.#route = { agentPorts: [outbound, inboundPlain, hbone], hbonePort: hbone, ...(ctx.random ? { random: ctx.random } : {}) };
  }

  get listening(): boolean { return this.#started; }

  /** The listening sockets (fds this process holds) while listening; a handover sends them on. */
  listenerFds(): ListenerFds | undefined {
    const f = this.#fds;
    return this.#started && f.outbound !== undefined && f.inboundPlain !== undefined && f.hbone !== undefined
      ? { outbound: f.outbound, inboundPlain: f.inboundPlain, hbone: f.hbone } : undefined;
  }
  get openConnections(): number { return this.#live.size + this.#engineOpen; }

  /** FlowOwner: one of this pod's engine flows ended. */
  flowEnded(): void {
    if (--this.#engineOpen <= 0) {
      this.#engineOpen = 0;
      this.#engineIdle?.();
      this.#engineIdle = undefined;
    }
  }

  /** The pod's workload in the current snapshot, if it is there. */
  workload(): Workload | undefined { return this.#ctx.snapshot().workload(this.pod.uid); }

  #identity(): Identity {
    const w = this.workload();
    return w ? identityOf(w) : { trustDomain: this.#ctx.trustDomain, namespace: this.pod.namespace, serviceAccount: this.pod.serviceAccount };
  }

  async start(): Promise<void> {
    if (this.#started) return;
    const { native, ports } = this.#ctx;
    const family = this.pod.ips.some((ip) => ip.includes(':')) ? '::' : '0.0.0.0';
    const adopted = this.pod.listenFds;
    const open = (key: keyof PodPorts) => {
      const fd = adopted?.[key] ?? native.listenInNetns(this.pod.netns, { address: family, port: ports[key], mark: AGENT_MARK, reusePort: true, transparent: true, backlog: 511 });
      this.#fds[key] = fd;
      return fd;
    };
    try {
      // Taking over from a previous agent: its certificate first (the old agent keeps serving
      // meanwhile), so no connection accepted here is refused for want of one.
      if (adopted) await this.#waitForCert(true);
      const engine = this.#ctx.engine;
      // 15001 listens at once but is handed to the engine only once the certificate is here (or
      // the wait gave up): until then the pod's new connections wait in the kernel's accept queue
      // instead of being refused for want of a certificate (a restarted agent).
      const outboundFd = open('outbound');
      this.#pendingFds.push(outboundFd);
      await this.#serve(open('inboundPlain'), (s) => this.#onInboundPlain(s));
      await this.#waitForCert();
      this.#pendingFds.splice(this.#pendingFds.indexOf(outboundFd), 1);
      this.#engineIds.push(engine.listenOutbound(outboundFd, this.pod.netns, AGENT_MARK, {
        outbound: (fid, dip, dport, pip, pport) => this.#engineOutbound(engine, fid, dip, dport, pip, pport),
      }));
      this.#engineIds.push(engine.listenHbone(open('hbone'), this.pod.netns, AGENT_MARK, this.#ctx.trustDomain, {
        context: () => this.#engineContext(engine),
        inbound: (fid, peer, authority, fwd, rip, rport, lip, lport) => this.#engineInbound(engine, fid, peer, authority, fwd, rip, rport, lip, lport),
      }));
    } catch (e) {
      // adopted sockets not handed to a server or the engine yet are still ours to close
      for (const key of ['outbound', 'inboundPlain', 'hbone'] as const) {
        const fd = adopted?.[key];
        if (fd !== undefined && this.#fds[key] === undefined) { try { native.closeFd(fd); } catch { /* closed */ } }
      }
      await this.stop(0);
      throw new MeshError('AMBIT_NETNS', `pod ${this.pod.namespace}/${this.pod.name}: cannot ${adopted ? 'take over' : 'open'} listeners: ${errorMessage(e)}`, { cause: e });
    }
    this.#started = true;
  }

  /**
   * Best effort: a control plane that is down must not keep the pod's listeners from coming up.
   * `required` (taking over a previous agent's listeners): no certificate in time is an error, so
   * the handover is abandoned and the previous agent goes on serving.
   */
  async #waitForCert(required = false): Promise<void> {
    const fetch = this.#ctx.fetchCert;
    if (!fetch || this.#ctx.cert(this.#identity())) return;
    let timer: NodeJS.Timeout | undefined;
    let error = 'no certificate in time';
    await Promise.race([
      fetch(this.#identity()).catch((e: unknown) => {
        error = errorMessage(e);
        if (!required) log.warn('no certificate yet', { pod: this.pod.name, error });
      }),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, this.#ctx.certWaitMs ?? 5_000); }),
    ]);
    clearTimeout(timer);
    if (required && !this.#ctx.cert(this.#identity())) throw new MeshError('AMBIT_CERT_INVALID', `no certificate to take over the listeners with: ${error}`);
  }

  async #serve(fd: number, onConn: (s: Socket) => void): Promise<void> {
    // noDelay: replies to the app are often small writes; Nagle would hold one back until the
    // app's (possibly delayed) ACK of the previous one.
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false, noDelay: true }, (s) => {
      if (this.#drain.draining) { s.resetAndDestroy(); return; }
      onConn(s);
    });
    this.#servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => { server.off('error', reject); resolve(); });
    });
    server.on('error', (e) => log.warn('listener error', { pod: this.pod.name, error: e.message }));
  }

  /**
   * Stop accepting, let open connections finish until `deadlineMs`, then cut them. The capture
   * rules are not touched: with nothing listening on 15001 the pod's outbound connections are
   * refused, never sent in plaintext.
   */
  async stop(deadlineMs: number): Promise<void> {
    this.#started = false;
    this.#fds = {};
    const closing = this.#servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    const engine = this.#ctx.engine;
    const engineIds = this.#engineIds.splice(0);
    for (const fd of this.#pendingFds.splice(0)) { try { this.#ctx.native.closeFd(fd); } catch { /* already closed */ } }
    for (const id of engineIds) engine.unlisten(id);
    if (this.#engineOpen > 0) this.#drain.track(new Promise<void>((resolve) => { this.#engineIdle = resolve; }));
    await this.#drain.start(deadlineMs, () => {
      for (const r of [...this.#live]) r.destroy('drain deadline');
      for (const id of engineIds) engine.closeFlows(id, 'drain deadline');
    });
    await Promise.all(closing);
  }

  /**
   * A handover: the listening sockets now belong to a new agent, which accepts on them. Stop
   * accepting here (the sockets stay open in the new agent, so nothing queued is lost), serve
   * everything already accepted (connections waiting for a decision, HBONE streams the peers sent
   * before they saw our shutdown notice), and let open connections finish until `deadlineMs`.
   */
  async release(deadlineMs: number): Promise<void> {
    if (!this.#started) return;
    this.#released = true;
    this.#started = false;
    this.#fds = {};
    const closing = this.#servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    const engine = this.#ctx.engine;
    const engineIds = this.#engineIds.splice(0);
    for (const id of engineIds) engine.unlisten(id, true);
    if (this.#engineOpen > 0) this.#drain.track(new Promise<void>((resolve) => { this.#engineIdle = resolve; }));
    await this.#drain.start(deadlineMs, () => {
      for (const r of [...this.#live]) r.destroy('drain deadline');
      for (const id of engineIds) engine.closeFlows(id, 'drain deadline');
    });
    await Promise.all(closing);
    // the handlers stay: a peer that has not seen our shutdown notice yet may still open a
    // stream on a session here, and it is served; they go with the engine when the agent stops
  }

  /** A TCP connection from inside the pod netns, marked so capture leaves it alone. */
  async #dial(to: SocketAddr, spoofFrom?: string): Promise<Socket> {
    const fd = await this.#ctx.native.connectInNetns(this.pod.netns, {
      address: to.ip, port: to.port, mark: AGENT_MARK, timeoutMs: this.#ctx.connectTimeoutMs ?? 10_000,
      ...(spoofFrom ? { transparent: true, localAddress: spoofFrom, localPort: 0 } : {}),
    });
    // The hbone server copies the tunnel into this socket with pipe(): a 16 kB high-water mark
    // paused the HTTP/2 stream every few chunks of a bulk transfer.
    // (net.Socket hands its options to Duplex; the typings just do not list the field.)
    const opts = { fd, readable: true, writable: true, allowHalfOpen: true, writableHighWaterMark: RELAY_BUFFER_BYTES };
    const s = new Socket(opts);
    s.setNoDelay(true);
    return s;
  }

  #refuse(app: Socket | undefined, started: number, direction: 'inbound' | 'outbound', srcAddr: string, dstAddr: string,
    desc: ConnectionDescription, error: string, hboneAddr?: string): void {
    app?.resetAndDestroy();
    log.debug('connection refused', { pod: this.pod.name, direction, src: srcAddr, dst: dstAddr, error });
    this.#ctx.telemetry.closed({
      direction, srcAddr, dstAddr, hboneAddr, labels: connectionLabels(desc), bytesRecv: 0, bytesSent: 0,
      durationMs: Date.now() - started, error,
    }, false);
  }

  // === inbound plaintext (15006) ===

  #onInboundPlain(app: Socket): void {
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
      log.warn('inbound: no original destination', { pod: this.pod.name, error: errorMessage(e) });
      app.resetAndDestroy();
      return;
    }
    const w = this.workload();
    const snap = this.#ctx.snapshot();
    const source = snap.workloadByIp(srcIp);
    const desc: ConnectionDescription = { reporter: 'destination', source, destination: w, mtls: false };
    const dstAddr = formatAddr(dst.ip, dst.port);
    const bad = this.#checkTarget(dst);
    if (bad || !w) {
      this.#refuse(app, started, 'inbound', srcAddr, dstAddr, { ...desc, responseFlags: 'DENY' }, bad ?? 'pod unknown to the mesh');
      return;
    }
    const decision = evaluateL4(snap.policiesFor(w), { srcIp, dstIp: dst.ip, dstPort: dst.port });
    if (!decision.allowed) {
      this.#refuse(app, started, 'inbound', srcAddr, dstAddr, { ...desc, responseFlags: 'DENY' }, `policy: ${decision.reason}`);
      return;
    }
    this.#drain.track((async () => {
      let upstream: Socket;
      try {
        upstream = await this.#dial(dst, this.pod.spoof ? srcIp : undefined);
      } catch (e) {
        this.#refuse(app, started, 'inbound', srcAddr, dstAddr, { ...desc, responseFlags: 'CONNECT' }, errorMessage(e));
        return;
      }
      if (app.destroyed) { upstream.destroy(); return; }
      // the app side here is `upstream`; count bytes on the socket facing the app
      await this.#carryInbound(upstream, app, { srcIp, srcPort, dst, desc, started, srcAddr, dstAddr });
    })());
  }

  /** Why `dst` is not a legal inbound target for this pod, or undefined when it is. */
  #checkTarget(dst: SocketAddr): string | undefined {
    if (!this.pod.ips.includes(dst.ip)) return `target ${dst.ip} is not this pod's address`;
    const p = this.#ctx.ports;
    if ([p.outbound, p.inboundPlain, p.hbone].includes(dst.port)) return `target port ${dst.port} is an agent port`;
    return undefined;
  }

  /**
   * Relays an inbound connection to the app (`appSide` is the socket towards the app) and keeps
   * it registered so a policy change can close it. Bytes: received = towards the app.
   */
  async #carryInbound(appSide: Socket, client: Duplex, c: {
    srcIp: string; srcPort: number; dst: SocketAddr; desc: ConnectionDescription; started: number; srcAddr: string; dstAddr: string;
  }): Promise<void> {
    const labels = connectionLabels(c.desc);
    this.#ctx.telemetry.opened(labels);
    const r = relay(appSide, client);
    this.#live.add(r);
    const tracked: TrackedConnection = this.#ctx.connections.add({
      direction: 'inbound', podUid: this.pod.uid, srcIp: c.srcIp, srcPort: c.srcPort,
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

  // === the native data path (15001, 15008 carried by the engine) ===

  #engineContext(engine: AgentEngine): ReturnType<AgentEngine['tls']> | null {
    const b = this.#ctx.cert(this.#identity());
    if (!b) return null; // fail closed: no certificate, no handshake
    try {
      return engine.tls(b);
    } catch (e) {
      log.warn('hbone: certificate unusable', { pod: this.pod.name, error: errorMessage(e) });
      return null;
    }
  }

  #engineTrack(engine: AgentEngine, flowId: number, r: FlowRecord): void {
    engine.track(flowId, r);
    this.#engineOpen++;
  }

  /** A captured outbound connection: the same decision as #onOutbound, answered as an engine plan. */
  #engineOutbound(engine: AgentEngine, flowId: number, dstIp: string, dstPort: number, peerIp: string, peerPort: number): OutboundPlan | null {
    const started = Date.now();
    // accepted before a handover: still ours to serve (the successor never sees it)
    if (this.#drain.draining && !this.#released) return null;
    // Addresses are formatted only for a refusal: an accepted flow keeps them as parts.
    const refuse = (d: ConnectionDescription, error: string, hboneAddr?: string): null => {
      this.#refuse(undefined, started, 'outbound', formatAddr(peerIp, peerPort), formatAddr(dstIp, dstPort), d, error, hboneAddr);
      return null;
    };
    const src = this.workload();
    if (!src) return refuse({ reporter: 'source', mtls: false, responseFlags: 'DENY' }, 'pod unknown to the mesh');
    const req = buildOutboundRequest(this.#ctx.snapshot(), src, { ip: dstIp, port: dstPort }, this.#route);
    const srcId = spiffeIdOf(src);
    const desc: ConnectionDescription = {
      reporter: 'source', source: src, sourcePrincipal: srcId, destination: req.destWorkload, service: req.service,
      mtls: req.kind === 'hbone',
    };
    if (req.kind === 'deny') {
      return refuse({ ...desc, responseFlags: req.reason.startsWith('no healthy') ? 'NO_HEALTHY_UPSTREAM' : 'DENY' }, req.reason);
    }
    if (req.kind !== 'hbone') {
      this.#engineTrack(engine, flowId, new FlowRecord(this, 'outbound', desc, peerIp, peerPort, dstIp, dstPort, undefined, started));
      return { t: 1, ip: req.address.ip, port: req.address.port };
    }
    const hboneAddr = formatAddr(req.address.ip, req.address.port);
    // Fail closed: without our certificate mesh traffic is refused, never sent in plaintext.
    const cert = this.#ctx.cert(identityOf(src));
    let ctx: ReturnType<AgentEngine['tls']>;
    try {
      if (!cert) throw new MeshError('AMBIT_CERT_INVALID', `no valid certificate for ${srcId}`);
      ctx = engine.tls(cert);
    } catch (e) {
      return refuse({ ...desc, responseFlags: 'TLS_FAILURE' }, errorMessage(e), hboneAddr);
    }
    const tag = clientTag(req.expectedIdentities);
    this.#engineTrack(engine, flowId, new FlowRecord(this, 'outbound', desc, peerIp, peerPort, dstIp, dstPort, hboneAddr, started));
    return {
      t: 2, ctx, tag, ip: req.address.ip, port: req.address.port, authority: req.authority,
      key: `${this.pod.uid} ${srcId} ${tag} ${hboneAddr}`,
      headers: joinHeaders(connectHeaders(src, peerIp, peerPort, req.service)),
    };
  }

  /** A CONNECT stream on 15008: the same checks as #onHbone, answered synchronously. */
  #engineInbound(engine: AgentEngine, flowId: number, peerId: string, authority: string, forwarded: string | undefined,
    remoteIp: string, remotePort: number, localIp: string, localPort: number): InboundTarget | number {
    const started = Date.now();
    const snap = this.#ctx.snapshot();
    const w = this.workload();
    const byIp = snap.workloadByIp(remoteIp);
    const source = byIp && spiffeIdOf(byIp) === peerId ? byIp : undefined;
    const desc: ConnectionDescription = {
      reporter: 'destination', source, sourcePrincipal: peerId, destination: w, mtls: true,
      serviceHost: knownServiceHost(snap, forwarded),
    };
    const target = parseAuthority(authority);
    // Addresses are formatted only for a refusal: an accepted flow keeps them as parts.
    const fail = (status: 400 | 401 | 503, reason: string, flag: ResponseFlag): number => {
      log.debug('hbone refused', { pod: this.pod.name, status, reason, peer: peerId });
      const dstAddr = target ? formatAddr(target.ip, target.port) : authority.slice(0, 64);
      this.#ctx.telemetry.closed({ direction: 'inbound', srcAddr: formatAddr(remoteIp, remotePort), dstAddr, labels: connectionLabels({ ...desc, responseFlags: flag }), bytesRecv: 0, bytesSent: 0, durationMs: Date.now() - started, error: reason }, false);
      return status;
    };
    if (this.#drain.draining && !this.#released) return fail(503, 'draining', 'CONNECT');
    if (!target) return fail(400, `bad authority ${JSON.stringify(authority.slice(0, 64))}`, 'CONNECT');
    if (target.ip !== localIp) return fail(400, `ip mismatch: authority ${target.ip}, connection arrived on ${localIp}`, 'CONNECT');
    const bad = this.#checkTarget(target);
    if (bad) return fail(400, bad, 'CONNECT');
    if (!w) return fail(503, 'pod unknown to the mesh', 'CONNECT');
    let peer;
    try {
      peer = expectedIdentity(peerId);
    } catch (e) {
      return fail(400, `peer identity: ${errorMessage(e)}`, 'CONNECT');
    }
    const decision = evaluateL4(snap.policiesFor(w), { srcIdentity: peer, srcIp: remoteIp, dstIp: target.ip, dstPort: target.port });
    if (!decision.allowed) return fail(401, `policy: ${decision.reason}`, 'DENY');
    const r = new InboundFlowRecord(this, desc, remoteIp, remotePort, target.ip, target.port, formatAddr(localIp, localPort), started,
      this.pod.uid, peer, flowId, engine);
    this.#ctx.connections.add(r);
    this.#engineTrack(engine, flowId, r);
    return this.pod.spoof ? { ip: target.ip, port: target.port, spoof: remoteIp } : { ip: target.ip, port: target.port };
  }
}
