/**
 * The agent side of the CNI hand-off: a unix-socket server that receives one request and at most
 * one netns fd per connection. Sockets are accepted paused so the addon can `recvmsg` the
 * SCM_RIGHTS fd itself; Node never reads from them. Every fd received and not handed on is
 * closed, whatever went wrong.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { errorMessage, logger, MeshError } from '../../core/index.js';
import { encodeReply, MAX_MESSAGE, parseRequest, type CniAdd, type CniDel } from './cni-protocol.js';
import type { FdPassing } from '../deps.js';

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

/** Sets the process umask, returning the old one; undefined where that is not allowed. */
function setUmask(mask: number): number | undefined {
  try {
    return process.umask(mask);
  } catch {
    return undefined;
  }
}

export class CniServer {
  readonly #o: Required<CniServerOptions>;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  /** connections refused at the limit since the last warning, and when that was (rate limit) */
  #refused = 0;
  #lastWarn = 0;

  constructor(o: CniServerOptions) {
    this.#o = { recvTimeoutMs: 5_000, maxConnections: 256, ...o };
  }

  /** CNI connections being served now. */
  get activeConnections(): number { return this.#sockets.size; }

  async listen(): Promise<void> {
    rmSync(this.#o.path, { force: true }); // a stale socket file of a previous agent
    // No server.maxConnections: Node closes connections past it without a word. The limit is
    // kept in #accept, which answers them.
    const server = createServer({ pauseOnConnect: true }, (s) => this.#accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Whoever can connect can hand us a netns to capture: root only. bind() happens inside
      // listen(), so a strict umask around it means the socket is never, even briefly, open to
      // others (a container may run us with umask 0); the chmod below covers the case where the
      // umask cannot be changed (worker threads).
      const old = setUmask(0o177);
      try {
        server.listen(this.#o.path, () => { server.off('error', reject); resolve(); });
      } finally {
        if (old !== undefined) setUmask(old);
      }
    });
    this.#server = server;
    try {
      chmodSync(this.#o.path, 0o600);
    } catch (e) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      this.#server = undefined;
      throw new MeshError('AMBIT_CONFIG_INVALID', `cni socket ${this.#o.path}: cannot restrict its mode to 0600: ${errorMessage(e)}`, { cause: e });
    }
  }

  async close(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    for (const c of this.#sockets) c.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    rmSync(this.#o.path, { force: true });
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
