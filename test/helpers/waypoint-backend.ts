/**
 * Loopback HTTP/1.1 backends and a client for waypoint tests (test/helpers/waypoint-harness.ts maps
 * endpoint IPs to these servers): each backend records what it saw, on which connection, and answers
 * JSON `{ name, body }`, unless a test's handler answers instead.
 */
import { createServer, request, type Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface Seen {
  readonly name: string;
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
  /** the backend's connection number (1, 2, ...) that carried the request */
  readonly connection: number;
}

export interface Backend {
  readonly name: string;
  readonly port: number;
  readonly seen: Seen[];
  /** connections accepted so far */
  connections(): number;
  /** resolves when connection number `n` (1, 2, ...) has closed */
  closed(n: number): Promise<void>;
  /** resolves with the first request seen (now or later) that `pred` accepts */
  waitFor(pred: (s: Seen) => boolean): Promise<Seen>;
  close(): Promise<void>;
}

/** `handle` may answer a request itself (return true); otherwise 200 `{ name, body }`. */
export type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen) => boolean;

export async function backend(name: string, handle?: Handler): Promise<Backend> {
  const seen: Seen[] = [];
  const waiters: Array<{ pred: (s: Seen) => boolean; resolve: (s: Seen) => void }> = [];
  const sockets = new Map<Socket, number>();
  let conns = 0;
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => { body += d.toString(); });
    req.on('end', () => {
      const s: Seen = { name, method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, connection: sockets.get(req.socket) ?? 0 };
      seen.push(s);
      for (const w of [...waiters]) if (w.pred(s)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(s); }
      if (handle?.(req, res, s)) return;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name, body }));
    });
  });
  const closes = new Map<number, { done: boolean; waiters: Array<() => void> }>();
  const closeOf = (n: number): { done: boolean; waiters: Array<() => void> } => {
    let c = closes.get(n);
    if (!c) { c = { done: false, waiters: [] }; closes.set(n, c); }
    return c;
  };
  server.on('connection', (s: Socket) => {
    const n = ++conns;
    sockets.set(s, n);
    s.once('close', () => { sockets.delete(s); const c = closeOf(n); c.done = true; for (const w of c.waiters.splice(0)) w(); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    name, port: (server.address() as AddressInfo).port, seen,
    connections: () => conns,
    closed(n) {
      const c = closeOf(n);
      return c.done ? Promise.resolve() : new Promise((resolve) => c.waiters.push(resolve));
    },
    waitFor(pred) {
      const hit = seen.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    close() {
      for (const s of sockets.keys()) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

export interface Reply { status: number; headers: IncomingMessage['headers']; body: string }

/** One request to the waypoint's loopback port (Host `echo` unless given). */
export function send(port: number, o: { path?: string; method?: string; headers?: Record<string, string>; body?: string; agent?: Agent } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, method: o.method ?? 'GET', path: o.path ?? '/', headers: { host: 'echo', ...o.headers }, ...(o.agent ? { agent: o.agent } : {}) }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    r.on('error', reject);
    r.end(o.body);
  });
}
