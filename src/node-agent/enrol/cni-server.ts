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
  /** concurrent connections served; more are refused; default 64 */
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

  constructor(o: CniServerOptions) {
    this.#o = { recvTimeoutMs: 5_000, maxConnections: 64, ...o };
  }

  async listen(): Promise<void> {
    rmSync(this.#o.path, { force: true }); // a stale socket file of a previous agent
    const server = createServer({ pauseOnConnect: true }, (s) => { void this.#serve(s); });
    server.maxConnections = this.#o.maxConnections;
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

  async #serve(socket: Socket): Promise<void> {
    this.#sockets.add(socket);
    socket.on('error', () => { /* the peer went away; nothing to answer */ });
    socket.on('close', () => this.#sockets.delete(socket));
    const { native } = this.#o;
    let fds: number[] = [];
    const reply = (ok: boolean, error?: string) => {
      if (!socket.destroyed) socket.end(encodeReply(error === undefined ? { ok } : { ok, error }));
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
