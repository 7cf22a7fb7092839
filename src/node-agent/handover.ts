/**
 * Handover: a new agent on a node takes every pod's listening sockets from the running one, so a
 * restart or an upgrade refuses no connection.
 *
 * Why passing fds (SCM_RIGHTS over a unix socket) rather than SO_REUSEPORT: with fd passing both
 * agents hold the SAME listening sockets; the old one merely stops polling them, so a connection
 * queued in a backlog is accepted by the new one, never reset. With SO_REUSEPORT each agent has
 * its own socket and backlog; closing the old socket resets what is queued in it unless
 * `net.ipv4.tcp_migrate_req=1` is set in every pod netns, and the kernel hashes new connections
 * onto the old socket until it is closed (a window with no guarantee). The netns fds travel the
 * same way, so the new agent needs no scan to find the pods.
 *
 * The conversation, one message each way at a time (so stream framing is never ambiguous), JSON
 * of at most 16 KiB plus fds, on `<stateDir>/handover.sock` (root only, mode 0600):
 *
 *   new -> old  {op:"hello"}           old -> new  {op:"state", shared:[roles], pods:n, known:m}  + the shared fds
 *   new -> old  {op:"pod", i}          old -> new  {op:"pod", uid, name, namespace, ip, netnsPath?}  + 15001, 15006, 15008 (+ netns)
 *   new -> old  {op:"known", i}        old -> new  {op:"known", name, namespace, ip, netnsPath?}  (+ netns)
 *   new -> old  {op:"commit"}          old -> new  {op:"committed"}   (the old agent has stopped accepting)
 *
 * From "hello" on, the old agent changes nothing (no enrolment pass; CNI requests wait). If the
 * new agent goes away before "commit", the old one carries on as if nothing happened; the new one
 * closes every fd it received. Shared sockets ("cni", "handover", "admin", "metrics", "readiness")
 * are the old agent's own listeners: the new one serves them, so the node's ports and socket
 * paths never change hands through a gap.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { errorMessage, logger, MeshError } from '../core/index.js';
import type { FdPassing } from './deps.js';
import type { ListenerFds } from './proxy/context.js';
import { listenUnix } from './unix-socket.js';

const log = logger('node-agent.handover');

export const HANDOVER_SOCKET = 'handover.sock';
const MAX_MESSAGE = 16 * 1024;
/** 15001, 15006, 15008, netns; or the shared sockets */
const MAX_FDS = 8;
/** most pods and known netns one handover moves (Kubernetes allows 110 pods per node by default) */
const MAX_PODS = 4096;

export type SharedRole = 'cni' | 'handover' | 'admin' | 'metrics' | 'readiness';
const ROLES: readonly SharedRole[] = ['cni', 'handover', 'admin', 'metrics', 'readiness'];

export interface HandoverNative extends FdPassing {
  unixConnect(path: string, kind?: 'stream' | 'seqpacket'): number;
}

/** A pod as the old agent describes it (its netns: a path, or an fd that travels with it). */
export interface PodRecord {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly ip?: string | undefined;
  readonly netnsPath?: string | undefined;
  /** fingerprint of the capture rules the old agent installed in the pod (captureFingerprint) */
  readonly capture?: string | undefined;
  /** the old agent installed the return path (source spoofing) */
  readonly returnPath?: boolean | undefined;
}

/** A netns the old agent knows but does not serve (not ambient): only remembered. */
export interface KnownRecord {
  readonly name: string;
  readonly namespace: string;
  readonly ip?: string | undefined;
  readonly netnsPath?: string | undefined;
}

/** What the old agent offers once frozen. Fds stay the old agent's (they are copied over). */
export interface Offer {
  readonly shared: ReadonlyArray<{ role: SharedRole; fd: number }>;
  readonly pods: ReadonlyArray<{ pod: PodRecord; netnsFd?: number | undefined; fds: ListenerFds }>;
  readonly known: ReadonlyArray<{ pod: KnownRecord; netnsFd?: number | undefined }>;
}

/** The old agent's side. */
export interface Donor {
  /** freeze (no enrolment changes) and describe the pods */
  begin(): Promise<Offer>;
  /** the successor serves everything: stop accepting (the drain goes on afterwards) */
  commit(): Promise<void>;
  /** the successor went away before committing: carry on */
  abort(): void;
}

// --- wire helpers

type Msg = Record<string, unknown> & { op: string };

function encode(m: Msg): Buffer {
  const b = Buffer.from(JSON.stringify(m));
  if (b.length > MAX_MESSAGE) throw new MeshError('AMBIT_LIMIT', `handover: message of ${b.length} bytes exceeds ${MAX_MESSAGE}`);
  return b;
}

function decode(data: Buffer): Msg {
  let v: unknown;
  try { v = JSON.parse(data.toString('utf8')); } catch { throw new MeshError('AMBIT_HANDOVER', 'handover: a message is not JSON'); }
  if (v === null || typeof v !== 'object' || typeof (v as Msg).op !== 'string') throw new MeshError('AMBIT_HANDOVER', 'handover: a message has no op');
  return v as Msg;
}

function str(m: Msg, k: string, optional = false): string | undefined {
  const v = m[k];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096) throw new MeshError('AMBIT_HANDOVER', `handover: ${m.op}.${k} must be a non-empty string`);
  return v;
}

function count(m: Msg, k: string): number {
  const v = m[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_PODS) throw new MeshError('AMBIT_HANDOVER', `handover: ${m.op}.${k} must be an integer 0..${MAX_PODS}`);
  return v;
}

function closeAll(native: Pick<FdPassing, 'closeFd'>, fds: Iterable<number>): void {
  for (const fd of fds) { try { native.closeFd(fd); } catch { /* already closed */ } }
}

// --- the old agent's side

/** The old agent's handover server. One handover at a time; another caller is told "busy". */
export class HandoverServer {
  readonly #native: HandoverNative;
  readonly #donor: Donor;
  readonly #server: Server;
  readonly #timeoutMs: number;
  #busy = false;
  #committed = false;
  readonly #sockets = new Set<Socket>();
  #current: Promise<void> = Promise.resolve();

  constructor(o: { native: HandoverNative; donor: Donor; timeoutMs?: number }) {
    this.#native = o.native;
    this.#donor = o.donor;
    this.#timeoutMs = o.timeoutMs ?? 60_000;
    this.#server = createServer({ pauseOnConnect: true }, (s) => {
      const free = !this.#busy && !this.#committed;
      const p = this.#serve(s);
      if (free) this.#current = p;
    });
    this.#server.maxConnections = 4;
  }

  get server(): Server { return this.#server; }

  listen(where: { path: string } | { fd: number }): Promise<void> { return listenUnix(this.#server, where); }

  /** The listening socket, for the successor. */
  fd(): number | undefined {
    try { return this.#native.socketFd(this.#server); } catch { return undefined; }
  }

  /** Stops accepting (after a handover: the successor serves the socket); the conversation in progress goes on. */
  stopAccepting(): void {
    if (this.#server.listening) this.#server.close();
  }

  /** Stops serving (the socket lives on where it was handed over to). The path is never removed here. */
  async close(): Promise<void> {
    // after a commit the successor still waits for our answer: let the conversation end first
    if (this.#committed) await this.#current;
    for (const s of this.#sockets) s.destroy();
    if (this.#server.listening) await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #serve(socket: Socket): Promise<void> {
    this.#sockets.add(socket);
    socket.on('error', () => { /* the peer went away */ });
    socket.on('close', () => this.#sockets.delete(socket));
    const native = this.#native;
    const fd = native.socketFd(socket);
    const send = (m: Msg, fds: number[] = []): void => { native.sendWithFds(fd, encode(m), fds); };
    if (this.#busy || this.#committed) {
      try { send({ op: 'error', error: this.#committed ? 'this agent has handed over already' : 'a handover is in progress' }); } catch { /* gone */ }
      socket.destroy();
      return;
    }
    this.#busy = true;
    let offer: Offer | undefined;
    try {
      for (;;) {
        const msg = await native.recvWithFds(fd, MAX_MESSAGE, 0, this.#timeoutMs);
        if (!msg) break; // EOF or silence: the successor went away
        closeAll(native, msg.fds);
        const req = decode(msg.data);
        if (req.op === 'hello') {
          if (offer) throw new MeshError('AMBIT_HANDOVER', 'handover: hello twice');
          offer = await this.#donor.begin();
          log.info('handover: a successor asked; pods frozen', { pods: offer.pods.length });
          send({ op: 'state', shared: offer.shared.map((s) => s.role), pods: offer.pods.length, known: offer.known.length }, offer.shared.map((s) => s.fd));
        } else if (req.op === 'pod' && offer) {
          const p = offer.pods[count(req, 'i')];
          if (!p) throw new MeshError('AMBIT_HANDOVER', 'handover: pod index out of range');
          const fds = [p.fds.outbound, p.fds.inboundPlain, p.fds.hbone, ...(p.netnsFd !== undefined ? [p.netnsFd] : [])];
          send({ op: 'pod', ...p.pod, netnsFd: p.netnsFd !== undefined }, fds);
        } else if (req.op === 'known' && offer) {
          const k = offer.known[count(req, 'i')];
          if (!k) throw new MeshError('AMBIT_HANDOVER', 'handover: known index out of range');
          send({ op: 'known', ...k.pod, netnsFd: k.netnsFd !== undefined }, k.netnsFd !== undefined ? [k.netnsFd] : []);
        } else if (req.op === 'commit' && offer) {
          this.#committed = true;
          await this.#donor.commit();
          send({ op: 'committed' });
          log.info('handover: the successor took over');
          break;
        } else {
          throw new MeshError('AMBIT_HANDOVER', `handover: unexpected ${JSON.stringify(req.op.slice(0, 20))}`);
        }
      }
    } catch (e) {
      log.warn('handover failed', { error: errorMessage(e) });
      try { send({ op: 'error', error: errorMessage(e) }); } catch { /* gone */ }
    } finally {
      this.#busy = false;
      if (offer && !this.#committed) {
        log.warn('handover abandoned by the successor: carrying on');
        this.#donor.abort();
      }
      socket.destroy();
    }
  }
}

// --- the new agent's side

export interface ReceivedPod {
  readonly pod: PodRecord;
  readonly netnsFd?: number | undefined;
  readonly fds: ListenerFds;
}

export interface ReceivedKnown {
  readonly pod: KnownRecord;
  readonly netnsFd?: number | undefined;
}

/** What the new agent received; it owns every fd in it (close what it does not use). */
export interface Received {
  readonly shared: Map<SharedRole, number>;
  readonly pods: ReceivedPod[];
  readonly known: ReceivedKnown[];
}

/** The new agent's side of one handover: connect, receive, then commit (or abort). */
export class HandoverClient {
  readonly #native: HandoverNative;
  readonly #fd: number;
  readonly #timeoutMs: number;
  #closed = false;

  private constructor(native: HandoverNative, fd: number, timeoutMs: number) {
    this.#native = native;
    this.#fd = fd;
    this.#timeoutMs = timeoutMs;
  }

  /** Connects to a running agent's handover socket; undefined when none answers (no predecessor). */
  static connect(native: HandoverNative, path: string, timeoutMs = 30_000): HandoverClient | undefined {
    let fd: number;
    try { fd = native.unixConnect(path, 'stream'); } catch { return undefined; }
    return new HandoverClient(native, fd, timeoutMs);
  }

  async #call(m: Msg, maxFds: number): Promise<{ msg: Msg; fds: number[] }> {
    if (this.#closed) throw new MeshError('AMBIT_HANDOVER', 'handover: connection closed');
    this.#native.sendWithFds(this.#fd, encode(m), []);
    const r = await this.#native.recvWithFds(this.#fd, MAX_MESSAGE, maxFds, this.#timeoutMs);
    if (!r) throw new MeshError('AMBIT_HANDOVER', `handover: the running agent did not answer ${m.op} within ${this.#timeoutMs} ms (or went away)`);
    let msg: Msg;
    try {
      msg = decode(r.data);
    } catch (e) {
      closeAll(this.#native, r.fds);
      throw e;
    }
    if (msg.op === 'error') {
      closeAll(this.#native, r.fds);
      throw new MeshError('AMBIT_HANDOVER', `handover refused by the running agent: ${String(msg.error).slice(0, 300)}`);
    }
    return { msg, fds: r.fds };
  }

  /** Asks for everything. On failure every fd received so far is closed. */
  async receive(): Promise<Received> {
    const got: Received = { shared: new Map(), pods: [], known: [] };
    try {
      const { msg: st, fds } = await this.#call({ op: 'hello', pid: process.pid }, MAX_FDS);
      const roles = st.shared;
      if (st.op !== 'state' || !Array.isArray(roles) || roles.length !== fds.length || !roles.every((r) => ROLES.includes(r as SharedRole))) {
        closeAll(this.#native, fds);
        throw new MeshError('AMBIT_HANDOVER', 'handover: bad state message');
      }
      roles.forEach((r, i) => got.shared.set(r as SharedRole, fds[i]!));
      const pods = count(st, 'pods');
      const known = count(st, 'known');
      for (let i = 0; i < pods; i++) {
        const { msg, fds: pf } = await this.#call({ op: 'pod', i }, 4);
        const withNetns = msg.netnsFd === true;
        if (msg.op !== 'pod' || pf.length !== (withNetns ? 4 : 3)) {
          closeAll(this.#native, pf);
          throw new MeshError('AMBIT_HANDOVER', `handover: pod ${i}: expected ${withNetns ? 4 : 3} fds, got ${pf.length}`);
        }
        try {
          const pod: PodRecord = {
            uid: str(msg, 'uid')!, name: str(msg, 'name')!, namespace: str(msg, 'namespace')!, ip: str(msg, 'ip', true), netnsPath: str(msg, 'netnsPath', true),
            capture: str(msg, 'capture', true), returnPath: msg.returnPath === true,
          };
          got.pods.push({ pod, fds: { outbound: pf[0]!, inboundPlain: pf[1]!, hbone: pf[2]! }, ...(withNetns ? { netnsFd: pf[3]! } : {}) });
        } catch (e) {
          closeAll(this.#native, pf);
          throw e;
        }
      }
      for (let i = 0; i < known; i++) {
        const { msg, fds: kf } = await this.#call({ op: 'known', i }, 1);
        const withNetns = msg.netnsFd === true;
        if (msg.op !== 'known' || kf.length !== (withNetns ? 1 : 0)) {
          closeAll(this.#native, kf);
          throw new MeshError('AMBIT_HANDOVER', `handover: known netns ${i}: bad message`);
        }
        try {
          const pod: KnownRecord = { name: str(msg, 'name')!, namespace: str(msg, 'namespace')!, ip: str(msg, 'ip', true), netnsPath: str(msg, 'netnsPath', true) };
          got.known.push({ pod, ...(withNetns ? { netnsFd: kf[0]! } : {}) });
        } catch (e) {
          closeAll(this.#native, kf);
          throw e;
        }
      }
      return got;
    } catch (e) {
      releaseReceived(this.#native, got);
      this.close();
      throw e;
    }
  }

  /** Tells the old agent to stop accepting; resolves once it has. */
  async commit(): Promise<void> {
    const { msg, fds } = await this.#call({ op: 'commit' }, 0);
    closeAll(this.#native, fds);
    if (msg.op !== 'committed') throw new MeshError('AMBIT_HANDOVER', 'handover: bad commit answer');
    this.close();
  }

  /** Ends the conversation (before commit: the old agent carries on). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try { this.#native.closeFd(this.#fd); } catch { /* closed */ }
  }
}

/** Closes every fd of a received offer (after a failed handover). */
export function releaseReceived(native: Pick<FdPassing, 'closeFd'>, r: Received): void {
  closeAll(native, r.shared.values());
  for (const p of r.pods) closeAll(native, [p.fds.outbound, p.fds.inboundPlain, p.fds.hbone, ...(p.netnsFd !== undefined ? [p.netnsFd] : [])]);
  for (const k of r.known) if (k.netnsFd !== undefined) closeAll(native, [k.netnsFd]);
}
