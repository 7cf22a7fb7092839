/**
 * One proxy per enrolled pod, its lifecycle: three listeners opened INSIDE the pod netns by the
 * addon (15001 outbound capture, 15006 inbound plaintext, 15008 inbound HBONE), all with
 * SO_REUSEPORT (a restarted agent binds next to the old one) and the agent mark (never
 * redirected); the certificate wait before 15001 and 15008 are served; stop, drain and the
 * handover of the listening sockets to a successor.
 *
 * What happens to each connection is not decided here: route.ts (15001) and inbound.ts (15006,
 * 15008) decide, pure; pod-flows.ts carries the decision out.
 */
import { createServer, type Socket, type Server } from 'node:net';
import { Drain, errorMessage, logger, MeshError } from '../../core/index.js';
import type { Identity } from '../../identity/index.js';
import type { Workload } from '../../model/index.js';
import { AGENT_MARK } from '../enrol/capture.js';
import { podIdentity, type ListenerFds, type PodInfo, type PodPorts, type ProxyContext } from './context.js';
import { PodFlows } from './pod-flows.js';

const log = logger('node-agent.proxy');

export class PodProxy {
  readonly pod: PodInfo;
  readonly #ctx: ProxyContext;
  readonly #flows: PodFlows;
  readonly #servers: Server[] = [];
  readonly #drain = new Drain();
  #started = false;
  /** handed to a successor: stopped accepting, still serves what it accepted */
  #released = false;
  /** the listening sockets, while this proxy accepts on them (for a handover) */
  #fds: { -readonly [K in keyof PodPorts]?: number } = {};
  /** engine listener ids (15001, 15008) */
  #engineIds: number[] = [];
  /** listening fds not yet handed to the engine (closed by stop) */
  readonly #pendingFds: number[] = [];

  constructor(ctx: ProxyContext, pod: PodInfo) {
    this.#ctx = ctx;
    this.pod = pod;
    this.#flows = new PodFlows(ctx, pod, {
      // accepted before a handover: still ours to serve (the successor never sees it)
      refusing: () => this.#drain.draining && !this.#released,
      track: (work) => this.#drain.track(work),
    });
  }

  get listening(): boolean { return this.#started; }

  /** The listening sockets (fds this process holds) while listening; a handover sends them on. */
  listenerFds(): ListenerFds | undefined {
    const f = this.#fds;
    return this.#started && f.outbound !== undefined && f.inboundPlain !== undefined && f.hbone !== undefined
      ? { outbound: f.outbound, inboundPlain: f.inboundPlain, hbone: f.hbone } : undefined;
  }
  get openConnections(): number { return this.#flows.open; }

  /** The pod's workload in the current snapshot, if it is there. */
  workload(): Workload | undefined { return this.#ctx.snapshot().workload(this.pod.uid); }

  #identity(): Identity { return podIdentity(this.#ctx, this.pod); }

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
      await this.#serve(open('inboundPlain'), (s) => this.#flows.plain(s));
      await this.#waitForCert();
      this.#pendingFds.splice(this.#pendingFds.indexOf(outboundFd), 1);
      this.#engineIds.push(engine.listenOutbound(outboundFd, this.pod.netns, AGENT_MARK, this.#flows));
      this.#engineIds.push(engine.listenHbone(open('hbone'), this.pod.netns, AGENT_MARK, this.#ctx.trustDomain, this.#flows));
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
    await this.#drainFlows(deadlineMs, engineIds);
    await Promise.all(closing);
  }

  /** Wait for this pod's connections to end, until `deadlineMs`; then cut them. */
  async #drainFlows(deadlineMs: number, engineIds: readonly number[]): Promise<void> {
    const engineIdle = this.#flows.engineIdle();
    if (engineIdle) this.#drain.track(engineIdle);
    await this.#drain.start(deadlineMs, () => {
      this.#flows.cut('drain deadline');
      for (const id of engineIds) this.#ctx.engine.closeFlows(id, 'drain deadline');
    });
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
    await this.#drainFlows(deadlineMs, engineIds);
    await Promise.all(closing);
    // the handlers stay: a peer that has not seen our shutdown notice yet may still open a
    // stream on a session here, and it is served; they go with the engine when the agent stops
  }
}
