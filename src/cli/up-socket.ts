/**
 * How `ambit restart` talks to the running `ambit up`: a unix socket in the ambit directory
 * (`<dir>/up.sock`, mode 0600: whoever can use it can restart the mesh). One request per
 * connection, one JSON line each way:
 *
 *   client -> {"op":"restart","target":"agent","name":"node-1"}
 *   up     -> {"progress":"agent node-1: new instance pid 123 taking over from pid 99"}   (any number)
 *   up     -> {"ok":true,"message":"agent node-1 replaced: pid 99 -> 123"} | {"ok":false,"error":"..."}
 *
 *   client -> {"op":"namespace","name":"default","enroll":false}    (ambit namespace enroll|unenroll)
 *
 * A socket rather than a signal and the state file: the answer (what happened, or why not)
 * reaches the terminal that asked, and a second request waits for the first instead of racing it.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { MeshError, errorMessage, isDnsLabel } from '../core/index.js';

export const UP_SOCKET = 'up.sock';
/** one request line; anything longer is refused */
const MAX_REQUEST_BYTES = 1024;
/** one answer line (progress or result) */
const MAX_ANSWER_BYTES = 64 * 1024;
/** connections at once (requests run one at a time anyway) */
const MAX_CONNECTIONS = 8;
/** a client that sends no complete request within this is dropped, ms */
const REQUEST_TIMEOUT_MS = 5_000;

export type RestartTarget = 'agent' | 'control' | 'waypoint';

export interface RestartRequest {
  readonly op: 'restart';
  readonly target: RestartTarget;
  /** node (agent), namespace/name or name (waypoint); absent for control */
  readonly name?: string;
}

/** Label a namespace of the local cluster in (or out of) ambient mode. */
export interface NamespaceRequest {
  readonly op: 'namespace';
  readonly name: string;
  readonly enroll: boolean;
}

export type UpRequest = RestartRequest | NamespaceRequest;

export function upSocketPath(dir: string): string {
  return join(dir, UP_SOCKET);
}

const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$/;

/** Checks any request of the socket; throws naming what is wrong. */
export function parseUpRequest(v: unknown): UpRequest {
  const o = v as { op?: unknown; name?: unknown; enroll?: unknown } | null;
  if (o !== null && typeof o === 'object' && !Array.isArray(o) && o.op === 'namespace') {
    if (typeof o.name !== 'string' || !isDnsLabel(o.name)) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `namespace: ${o.name === undefined ? 'missing name' : `${JSON.stringify(o.name)} is not a namespace name (a DNS label)`}`);
    }
    if (typeof o.enroll !== 'boolean') throw new MeshError('AMBIT_CONFIG_INVALID', 'namespace: "enroll" must be true or false');
    return { op: 'namespace', name: o.name, enroll: o.enroll };
  }
  return parseRestartRequest(v);
}

/** Checks a request (from the socket, or from the command line); throws naming what is wrong. */
export function parseRestartRequest(v: unknown): RestartRequest {
  const o = v as Partial<Record<keyof RestartRequest, unknown>> | null;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new MeshError('AMBIT_CONFIG_INVALID', 'restart: the request is not an object');
  if (o.op !== 'restart') throw new MeshError('AMBIT_CONFIG_INVALID', `restart: unknown op ${JSON.stringify(o.op)}`);
  const target = o.target;
  if (target !== 'agent' && target !== 'control' && target !== 'waypoint') {
    throw new MeshError('AMBIT_CONFIG_INVALID', `restart: ${JSON.stringify(target)} is not one of agent, control, waypoint`);
  }
  if (target === 'control') {
    if (o.name !== undefined) throw new MeshError('AMBIT_CONFIG_INVALID', 'restart control takes no name');
    return { op: 'restart', target };
  }
  const name = o.name;
  if (typeof name !== 'string' || !NAME.test(name) || (target === 'agent' && name.includes('/'))) {
    const what = target === 'agent' ? 'a node name (ambit restart agent node-1)' : 'a waypoint name or namespace/name (ambit restart waypoint default/waypoint)';
    throw new MeshError('AMBIT_CONFIG_INVALID', `restart ${target}: ${name === undefined ? 'missing' : JSON.stringify(name)}: give ${what}`);
  }
  return { op: 'restart', target, name };
}

export type RestartHandler = (r: UpRequest, say: (line: string) => void) => Promise<string>;

/** `ambit up`'s side. */
export class UpSocketServer {
  readonly path: string;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();

  private constructor(path: string, server: Server) {
    this.path = path;
    this.#server = server;
  }

  /** Listens at `<dir>/up.sock` (a stale file of a dead run is replaced: runUp checked none is alive). */
  static async listen(dir: string, handle: RestartHandler): Promise<UpSocketServer> {
    const path = upSocketPath(dir);
    rmSync(path, { force: true });
    const server = createServer({ pauseOnConnect: false });
    const self = new UpSocketServer(path, server);
    server.on('connection', (s) => self.#accept(s, handle));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const old = process.umask(0o177);
      try {
        server.listen(path, () => { server.off('error', reject); resolve(); });
      } finally {
        process.umask(old);
      }
    });
    chmodSync(path, 0o600);
    return self;
  }

  #accept(s: Socket, handle: RestartHandler): void {
    if (this.#sockets.size >= MAX_CONNECTIONS) {
      s.end(JSON.stringify({ ok: false, error: `ambit up is busy (${MAX_CONNECTIONS} requests open)` }) + '\n');
      return;
    }
    this.#sockets.add(s);
    s.once('close', () => this.#sockets.delete(s));
    s.on('error', () => undefined);
    s.setEncoding('utf8');
    const send = (o: object): void => { if (!s.destroyed) s.write(JSON.stringify(o).slice(0, MAX_ANSWER_BYTES) + '\n'); };
    const timer = setTimeout(() => { send({ ok: false, error: 'no request within 5 s' }); s.end(); }, REQUEST_TIMEOUT_MS);
    let buf = '';
    const onData = (d: string): void => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0 && buf.length <= MAX_REQUEST_BYTES) return;
      clearTimeout(timer);
      s.off('data', onData);
      if (nl < 0 || nl > MAX_REQUEST_BYTES) { send({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` }); s.end(); return; }
      let req: UpRequest;
      try {
        req = parseUpRequest(JSON.parse(buf.slice(0, nl)) as unknown);
      } catch (e) {
        send({ ok: false, error: e instanceof SyntaxError ? 'request is not JSON' : errorMessage(e) });
        s.end();
        return;
      }
      handle(req, (line) => send({ progress: line })).then(
        (message) => { send({ ok: true, message }); s.end(); },
        (e: unknown) => { send({ ok: false, error: errorMessage(e) }); s.end(); },
      );
    };
    s.on('data', onData);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}

/**
 * `ambit restart`'s side: sends the request, hands every progress line to `say`, resolves with
 * the final message or rejects with up's error.
 */
export function sendRestart(dir: string, r: UpRequest, say: (line: string) => void, timeoutMs = 180_000): Promise<string> {
  const path = upSocketPath(dir);
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    s.setEncoding('utf8');
    let buf = '';
    let settled = false;
    const finish = (e: Error | undefined, message?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      if (e) reject(e); else resolve(message!);
    };
    const timer = setTimeout(() => finish(new MeshError('AMBIT_UP_UNREACHABLE', `ambit up did not finish the ${r.op} within ${timeoutMs / 1000} s`)), timeoutMs);
    s.once('connect', () => s.write(JSON.stringify(r) + '\n'));
    s.on('error', (e: NodeJS.ErrnoException) => finish(new MeshError('AMBIT_UP_UNREACHABLE',
      `cannot reach ambit up at ${path}: ${e.code ?? e.message}${e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? ' (is it running with this --dir, and did the mesh start?)' : ''}`)));
    s.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_ANSWER_BYTES * 2) { finish(new MeshError('AMBIT_UP_UNREACHABLE', 'ambit up sent an answer line that is too long')); return; }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let m: { progress?: unknown; ok?: unknown; message?: unknown; error?: unknown };
        try { m = JSON.parse(line) as typeof m; } catch { finish(new MeshError('AMBIT_UP_UNREACHABLE', 'ambit up sent a line that is not JSON')); return; }
        if (typeof m.progress === 'string') { say(m.progress); continue; }
        if (m.ok === true) { finish(undefined, String(m.message ?? '')); return; }
        finish(new MeshError('AMBIT_PROCESS_FAILED', String(m.error ?? `${r.op} failed`)));
        return;
      }
    });
    s.once('end', () => finish(new MeshError('AMBIT_UP_UNREACHABLE', 'ambit up closed the connection without an answer (did it stop?)')));
  });
}
