/**
 * Port 15014: readiness, metrics and debug views. The debug views show the whole mesh config, so
 * they answer only loopback callers unless told otherwise (unauthenticated debug endpoints have
 * leaked config in other meshes).
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerOptions, ServerResponse } from 'node:http';
import { errorMessage, logger } from '../../core/index.js';
import type { Registry } from 'prom-client';

export interface StatusSources {
  ready(): boolean;
  registry: Registry;
  configDump(): unknown;
  syncz(): unknown;
}

export interface StatusServerOptions {
  /** serve /debug/* to non-loopback callers too; default false */
  debugFromAnywhere?: boolean;
  /**
   * Node server options (request and header timeouts); the control plane passes the ones of its
   * control listeners. Default: headers within 10 s, a whole request within 30 s.
   */
  http?: ServerOptions;
}

const log = logger('control.status');

function isLoopback(addr: string | undefined): boolean {
  return addr === '127.0.0.1' || addr === '::1' || addr === '::ffff:127.0.0.1';
}

export function createStatusServer(src: StatusSources, o: StatusServerOptions = {}): Server {
  const json = (res: ServerResponse, body: unknown) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(body, null, 2));
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.statusCode = 405; res.end(); return; }
    switch (path) {
      case '/ready':
      case '/healthz/ready': {
        const ok = src.ready();
        res.statusCode = ok ? 200 : 503;
        res.end(ok ? 'ready\n' : 'not ready\n');
        return;
      }
      case '/metrics':
        res.setHeader('content-type', src.registry.contentType);
        res.end(await src.registry.metrics());
        return;
      case '/debug/config_dump':
      case '/debug/syncz':
        if (!o.debugFromAnywhere && !isLoopback(req.socket.remoteAddress)) { res.statusCode = 403; res.end('debug endpoints answer loopback only\n'); return; }
        json(res, path === '/debug/syncz' ? src.syncz() : src.configDump());
        return;
      default:
        res.statusCode = 404;
        res.end('not found\n');
    }
  };
  const server = createServer(o.http ?? { headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    handle(req, res).catch((e: unknown) => {
      log.error('status request failed', { url: req.url, error: errorMessage(e) });
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    });
  });
  return server;
}
