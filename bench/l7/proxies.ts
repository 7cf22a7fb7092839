/**
 * The L7 peers, from Debian: haproxy in http mode and nginx (proxy_pass), and a bare node:http
 * proxy (the runtime's floor), all in one proxy pod, all keeping connections to the server alive
 * and reusing them across client connections. Defaults otherwise: haproxy one process with a
 * thread per CPU, nginx one worker per CPU, node one process.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Pod } from '../../src/local/index.js';
import { BenchError } from '../common/errors.js';
import { OutputTail, stopChild } from '../common/proc.js';
import { waitPort } from '../l4/apps.js';

export const PROXY_PORTS = { haproxy: 8081, nginx: 8082, node: 8083 } as const;

/**
 * The runtime's floor: a bare node:http reverse proxy (what any HTTP proxy written on Node pays per
 * request: the server's parser and objects, a keep-alive client request, the response piped back),
 * with nothing of a mesh (no routing, policy, telemetry or HBONE). argv: port, upstream host, port.
 */
export const NODE_PROXY = `const http = require('node:http');
const [port, host, uport] = process.argv.slice(1);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64, scheduling: 'lifo' });
http.createServer((req, res) => {
  const up = http.request({ host, port: Number(uport), method: req.method, path: req.url, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end(); });
  req.pipe(up);
}).listen(Number(port));`;

/** haproxy.cfg: an HTTP reverse proxy on `port` to `upstream` (host:port), keep-alive on both sides. */
export function haproxyHttpConfig(port: number, upstream: string): string {
  return [
    'global',
    '  maxconn 8000',
    'defaults',
    '  mode http',
    '  option http-keep-alive',
    '  timeout connect 5s',
    '  timeout client 600s',
    '  timeout server 600s',
    '  timeout http-keep-alive 600s',
    'frontend l7',
    `  bind :${port}`,
    '  default_backend app',
    'backend app',
    // server connections are shared between client connections whenever it is safe
    '  http-reuse always',
    `  server app ${upstream}`,
    '',
  ].join('\n');
}

/** nginx.conf: the same reverse proxy; upstream keepalive needs HTTP/1.1 and no Connection header. */
export function nginxConfig(o: { port: number; upstream: string; dir: string }): string {
  return [
    'daemon off;',
    'worker_processes auto;',
    `pid ${join(o.dir, 'nginx.pid')};`,
    'error_log stderr error;',
    'worker_rlimit_nofile 16384;',
    'events { worker_connections 8000; }',
    'http {',
    '  access_log off;',
    `  client_body_temp_path ${join(o.dir, 'body')};`,
    `  proxy_temp_path ${join(o.dir, 'proxy')};`,
    `  fastcgi_temp_path ${join(o.dir, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(o.dir, 'uwsgi')};`,
    `  scgi_temp_path ${join(o.dir, 'scgi')};`,
    '  keepalive_timeout 600s;',
    '  keepalive_requests 1000000;',
    `  upstream app { server ${o.upstream}; keepalive 64; keepalive_requests 1000000; }`,
    '  server {',
    `    listen ${o.port};`,
    '    location / {',
    '      proxy_pass http://app;',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Connection "";',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}

export interface Proxies {
  /** process ids per peer (nginx: its master; workers are found as its children) */
  readonly pids: { readonly haproxy: number; readonly nginx: number; readonly node: number };
  stop(): Promise<void>;
}

export async function startProxies(o: { cluster: Cluster; pod: Pod; dir: string; tools: Readonly<Record<string, string>>; upstream: string }): Promise<Proxies> {
  const hcfg = join(o.dir, 'l7-haproxy.cfg');
  writeFileSync(hcfg, haproxyHttpConfig(PROXY_PORTS.haproxy, o.upstream));
  const ndir = join(o.dir, 'nginx');
  mkdirSync(ndir, { recursive: true });
  const ncfg = join(ndir, 'nginx.conf');
  writeFileSync(ncfg, nginxConfig({ port: PROXY_PORTS.nginx, upstream: o.upstream, dir: ndir }));
  const children: ChildProcess[] = [];
  const stop = async () => { await Promise.all(children.map((c) => stopChild(c))); };
  try {
    const h = o.cluster.spawn(o.pod, [o.tools.haproxy!, '-db', '-f', hcfg]);
    children.push(h);
    const ht = new OutputTail(h);
    const n = o.cluster.spawn(o.pod, [o.tools.nginx!, '-c', ncfg, '-p', ndir]);
    children.push(n);
    const nt = new OutputTail(n);
    const [uhost, uport] = [o.upstream.slice(0, o.upstream.lastIndexOf(':')), o.upstream.slice(o.upstream.lastIndexOf(':') + 1)];
    const j = o.cluster.spawn(o.pod, [process.execPath, '-e', NODE_PROXY, String(PROXY_PORTS.node), uhost, uport]);
    children.push(j);
    const jt = new OutputTail(j);
    try {
      await waitPort(o.cluster, o.pod, '127.0.0.1', PROXY_PORTS.haproxy, 'l7 haproxy');
      await waitPort(o.cluster, o.pod, '127.0.0.1', PROXY_PORTS.nginx, 'l7 nginx');
      await waitPort(o.cluster, o.pod, '127.0.0.1', PROXY_PORTS.node, 'l7 node');
    } catch (e) {
      throw new BenchError('l7 peers', `${e instanceof Error ? e.message : String(e)} (haproxy: ${ht.last(3)} | nginx: ${nt.last(3)} | node: ${jt.last(3)})`, { cause: e });
    }
    return { pids: { haproxy: h.pid!, nginx: n.pid!, node: j.pid! }, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
