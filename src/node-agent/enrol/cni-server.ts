/**
 * The agent side of the CNI hand-off: a unix-socket server that receives one request and at most
 * one netns fd per connection. Sockets are accepted paused so the addon can `recvmsg` the
 * SCM_RIGHTS fd itself; Node never reads from them. Every fd received and not handed on is
 * closed, whatever went wrong.
 */
import { rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { errorMessage, logger, MeshError } from '../../core/index.js';
import { encodeReply, MAX_MESSAGE, parseRequest, type CniAdd, type CniDel } from './cni-protocol.js';
import type { FdPassing } from '../deps.js';
import { listenUnix } from '../unix-socket.js';

const log = logger('node-agent.cni');

export interface CniHandlers {
  /** Enrol (or remember) the pod; owns `netnsFd` from then on (must close it when done). */
  add(req: CniAdd, netnsFd: number): Promise<void>;
  del(req: CniDel): Promise<void>;
}

export interface CniServerOptions {
  native: FdPassing;
  path: string;
  handlers: CniHandlers;
  /** how long a client may take to send its request, ms; default 5_000 */
  recvTimeoutMs?: number;
  /**
   * concurrent connections served; one more is answered with a refusal naming the limit (the
   * runtime retries the ADD) and logged; default 256 (a node of 250 pods can hand them all over
   * at once). Each costs two fds while open: the connection and the pod's netns.
   */
  maxConnections?: number;
}

/**
 * True when `fd` (held by this process) is a network namespace: re-open it through /proc and let
 * the addon check the namespace type (readlink alone is not enough: a bind-mounted netns file
 * reads as its path).
 */
export function isNetnsFd(native: Pick<FdPassing, 'openNetns' | 'closeFd'>, fd: number): boolean {
  try {
    const check = native.openNetns(`/proc/self/fd/${fd}`);
    native.closeFd(check);
    return true;
  } catch {
    return false;
  }
}

/**
 * Sends the one answer and closes. The socket stays paused (the addon reads from it, Node never
 * does), so the client's FIN would never be seen: the connection is destroyed as soon as the
 * answer is flushed instead of waiting for the client to close first.
 */
function finish(socket: Socket, answer: Buffer): void {
  if (socket.destroyed) return;
  socket.end(answer, () => socket.destroy());
  // a client that stopped reading must not hold the connection either
  socket.setTimeout(5_000, () => socket.destroy());
}

export class CniServer {
  readonly #o: Required<CniServerOptions>;
  #server: Server | undefined;
  #ownsPath = false;
  readonly #sockets = new Set<Socket>();
  /** connections refused at the limit since the last warning, and when that was (rate limit) */
  #refused = 0;
  #lastWarn = 0;

  constructor(o: CniServerOptions) {
    this.#o = { recvTimeoutMs: 5_000, maxConnections: 256, ...o };
  }

  /** CNI connections being served now. */
  get activeConnections(): number { return this.#sockets.size; }

  /**
   * Serves the socket: bound at the path (replacing a stale file; the caller made sure no live
   * agent serves it), or the listening socket `fd` taken over from the previous agent.
   */
  async listen(fd?: number): Promise<void> {
    // No server.maxConnections: Node closes connections past it without a word. The limit is
    // kept in #accept, which answers them.
    const server = createServer({ pauseOnConnect: true }, (s) => this.#accept(s));
    // Whoever can connect can hand us a netns to capture: root only (listenUnix).
    await listenUnix(server, fd !== undefined ? { fd } : { path: this.#o.path });
    this.#server = server;
    this.#ownsPath = fd === undefined;
  }

  /** The listening socket, for a successor. */
  fd(): number | undefined {
    return this.#server ? this.#o.native.socketFd(this.#server) : undefined;
  }

  /** Whether `close` removes the path: this agent is the one serving it (not after a handover, or before one completed). */
  set ownsPath(v: boolean) { this.#ownsPath = v; }

  async close(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    for (const c of this.#sockets) c.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    if (this.#ownsPath) rmSync(this.#o.path, { force: true });
    this.#ownsPath = false;
  }

  /** Stop accepting (a successor serves the socket now); requests in progress finish. The path stays. */
  stopAccepting(): void {
    this.#ownsPath = false;
    const s = this.#server;
    this.#server = undefined;
    s?.close(); // stops accepting at once; its callback would wait for every open connection
  }

  #accept(socket: Socket): void {
    socket.on('error', () => { /* the peer went away; nothing to answer */ });
    const max = this.#o.maxConnections;
    if (this.#sockets.size >= max) {
      // Refused with a reason, never dropped: the runtime sees why and retries the ADD. Any fd
      // the client sent is closed with the socket (it was never received).
      this.#refused++;
      const now = Date.now();
      if (now - this.#lastWarn >= 1_000) {
        log.warn('cni request refused: too many at once', { limit: max, refused: this.#refused });
        this.#lastWarn = now;
        this.#refused = 0;
      }
      finish(socket, encodeReply({ ok: false, error: `agent busy: ${max} CNI requests in progress (the limit); retry` }));
      return;
    }
    void this.#serve(socket);
  }

  async #serve(socket: Socket): Promise<void> {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    const { native } = this.#o;
    let fds: number[] = [];
    const reply = (ok: boolean, error?: string) => {
      finish(socket, encodeReply(error === undefined ? { ok } : { ok, error }));
    };
    try {
      const fd = native.socketFd(socket);
      const msg = await native.recvWithFds(fd, MAX_MESSAGE, 1, this.#o.recvTimeoutMs);
      if (!msg) throw new MeshError('AMBIT_CONFIG_INVALID', 'cni request: message: none received before the deadline');
      fds = msg.fds;
      const req = parseRequest(msg.data);
      if (req.op === 'ADD') {
        if (fds.length !== 1) throw new MeshError('AMBIT_CONFIG_INVALID', `cni request: fds: ADD needs exactly one netns fd, got ${fds.length}`);
        const nsFd = fds[0]!;
        if (!isNetnsFd(native, nsFd)) throw new MeshError('AMBIT_NETNS', 'cni request: fds: the fd is not a network namespace');
        fds = []; // ownership passes to the handler
        await this.#o.handlers.add(req, nsFd);
      } else {
        if (fds.length !== 0) throw new MeshError('AMBIT_CONFIG_INVALID', 'cni request: fds: DEL carries no fd');
        await this.#o.handlers.del(req);
      }
      reply(true);
    } catch (e) {
      log.warn('cni request refused', { error: errorMessage(e) });
      reply(false, errorMessage(e));
    } finally {
      for (const f of fds) { try { native.closeFd(f); } catch { /* already closed */ } }
    }
  }
}
