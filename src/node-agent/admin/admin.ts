/**
 * The agent's HTTP side doors: admin (`/config_dump`, on 127.0.0.1 only), Prometheus
 * (`/metrics`, `/stats/prometheus`) and readiness (`/healthz/ready`); admin also `POST /cni/uninstall`
 * when the agent installs a CNI plugin. Routes other than GET are keyed "METHOD /path". Separate listeners, so a
 * scrape never queues behind a config dump and a readiness probe never waits on either.
 * Certificates appear with identity and validity only: never keys.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorMessage } from '../../core/index.js';

export type Route = (req: IncomingMessage) => Promise<{ status: number; type: string; body: string }> | { status: number; type: string; body: string };

export function serveHttp(host: string, port: number, routes: Record<string, Route>): Promise<{ server: Server; port: number }> {
  return serveHttpAt({ host, port }, routes);
}

/** Where an HTTP side door listens: a TCP port, a unix socket path, or a listening socket taken over. */
export type HttpWhere = { host: string; port: number } | { path: string } | { fd: number };

/** Serves `routes`; resolves with the server and its TCP port (0 for a unix socket). */
export async function serveHttpAt(where: HttpWhere, routes: Record<string, Route>): Promise<{ server: Server; port: number }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    // GET routes by their path; any other method's routes as "METHOD /path"
    const route = req.method === 'GET' ? routes[path] : routes[`${req.method ?? ''} ${path}`];
    if (!route) {
      // the path is served, by another method
      const other = path in routes || Object.keys(routes).some((k) => k.endsWith(` ${path}`));
      res.writeHead(other ? 405 : 404, { 'content-type': 'text/plain' }).end(other ? 'method not allowed\n' : 'not found\n');
      return;
    }
    Promise.resolve().then(() => route(req)).then(
      (r) => { res.writeHead(r.status, { 'content-type': r.type }).end(r.body); },
      (e: unknown) => { res.writeHead(500, { 'content-type': 'text/plain' }).end(errorMessage(e) + '\n'); },
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.maxHeadersCount = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => { server.off('error', reject); resolve(); };
    if ('fd' in where) server.listen({ fd: where.fd }, done);
    else if ('path' in where) server.listen(where.path, done);
    else server.listen(where.port, where.host, done);
  });
  const a = server.address();
  return { server, port: a !== null && typeof a === 'object' ? (a as AddressInfo).port : 0 };
}

export function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
