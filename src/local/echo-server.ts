/**
 * A test backend to run inside a pod:
 *
 *   node --import tsx src/local/echo-server.ts --port 8080 --tcp-port 9090 --name echo-v1 --version v1
 *
 * HTTP on --port answers every request with JSON describing who answered (name, version, pod
 * addresses) and what arrived (client address, method, path, headers, body size). Query
 * parameters `status=<code>` and `delayMs=<ms>` shape the answer for fault tests; `fail=first`
 * makes a flaky backend: the first time the server sees a request's `x-request-id` it answers
 * 503 (a request without one always gets 503), so a retry that carries the id succeeds. A
 * WebSocket upgrade on the HTTP port gets an echo (each message sent back, prefixed with the
 * server's name and a colon). Raw TCP on
 * --tcp-port echoes bytes back. When both listen, one JSON line goes to stdout:
 * {"event":"listening","http":8080,"tcp":9090}, which starters wait for.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Server } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

/** Request bodies are counted, not kept; this caps the time a single upload may take. */
const MAX_BODY = 16 * 1024 * 1024;
const MAX_DELAY_MS = 60_000;
/** request ids remembered for `fail=first` */
const MAX_SEEN_IDS = 10_000;
const seenIds = new Set<string>();

/** `fail=first`: 503 unless this request id was seen (and failed) before. */
function flakyFails(req: IncomingMessage): boolean {
  const id = req.headers['x-request-id'];
  if (typeof id !== 'string' || id === '') return true;
  if (seenIds.has(id)) return false;
  if (seenIds.size >= MAX_SEEN_IDS) seenIds.clear();
  seenIds.add(id);
  return true;
}

export interface EchoServerArgs {
  readonly port: number;
  /** 0: no TCP echo listener */
  readonly tcpPort: number;
  readonly name: string;
  readonly version: string;
}

export function parseEchoArgs(argv: readonly string[]): EchoServerArgs {
  const vals = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--(port|tcp-port|name|version)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`echo-server: unknown argument ${JSON.stringify(a)}; use --port, --tcp-port, --name, --version`);
    const v = m[2] ?? argv[++i];
    if (v === undefined) throw new Error(`echo-server: --${m[1]} needs a value`);
    vals.set(m[1]!, v);
  }
  const port = toPort(vals.get('port') ?? '8080', 'port', false);
  const tcpPort = toPort(vals.get('tcp-port') ?? '9090', 'tcp-port', true);
  const name = vals.get('name') ?? hostname();
  if (name.length === 0 || name.length > 128) throw new Error('echo-server: --name must be 1..128 chars');
  const version = vals.get('version') ?? name;
  if (version.length > 128) throw new Error('echo-server: --version must be at most 128 chars');
  return { port, tcpPort, name, version };
}

function toPort(v: string, flag: string, zeroOk: boolean): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535 || (n === 0 && !zeroOk)) throw new Error(`echo-server: --${flag} must be a port number`);
  return n;
}

/** `::ffff:10.0.0.1` -> `10.0.0.1`: clients think in the address family they used. */
function plain(addr: string | undefined): string | undefined {
  return addr?.startsWith('::ffff:') ? addr.slice(7) : addr;
}

function podAddresses(): string[] {
  const out: string[] = [];
  for (const [ifname, list] of Object.entries(networkInterfaces())) {
    if (ifname === 'lo') continue;
    for (const a of list ?? []) if (!a.internal && !a.address.startsWith('fe80:')) out.push(a.address);
  }
  return out;
}

function handle(args: EchoServerArgs, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://echo');
  const status = url.searchParams.get('fail') === 'first' && flakyFails(req) ? 503 : Number(url.searchParams.get('status') ?? '200');
  const delayMs = Math.min(Math.max(Number(url.searchParams.get('delayMs') ?? '0') || 0, 0), MAX_DELAY_MS);
  let bodyBytes = 0;
  req.on('data', (chunk: Buffer) => {
    bodyBytes += chunk.length;
    if (bodyBytes > MAX_BODY) {
      res.writeHead(413, { connection: 'close' }).end();
      req.destroy();
    }
  });
  req.on('end', () => {
    const addrs = podAddresses();
    const body = JSON.stringify({
      name: args.name,
      version: args.version,
      hostname: hostname(),
      podIP: addrs.find((a) => !a.includes(':')) ?? addrs[0] ?? null,
      podIPs: addrs,
      localAddress: plain(req.socket.localAddress),
      localPort: req.socket.localPort,
      remoteAddress: plain(req.socket.remoteAddress),
      remotePort: req.socket.remotePort,
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      httpVersion: req.httpVersion,
      headers: req.headers,
      bodyBytes,
    }) + '\n';
    const send = (): void => {
      if (res.writableEnded) return;
      res.writeHead(Number.isInteger(status) && status >= 200 && status <= 599 ? status : 400, {
        'content-type': 'application/json',
        'x-echo-server': args.name,
      }).end(body);
    };
    if (delayMs > 0) setTimeout(send, delayMs); else send();
  });
}

function listen(server: Server | ReturnType<typeof createHttpServer>, port: number): Promise<number> {
  // Dual stack when the namespace has IPv6, plain IPv4 otherwise.
  const attempt = (host: string): Promise<number> => new Promise((resolve, reject) => {
    const onError = (e: Error): void => { reject(e); };
    server.once('error', onError);
    server.listen({ port, host }, () => {
      server.off('error', onError);
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : port);
    });
  });
  return attempt('::').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'EAFNOSUPPORT' || e.code === 'EADDRNOTAVAIL') return attempt('0.0.0.0');
    throw e;
  });
}

export async function runEchoServer(args: EchoServerArgs): Promise<{ http: number; tcp: number; close(): void }> {
  const http = createHttpServer((req, res) => handle(args, req, res));
  http.keepAliveTimeout = 30_000;
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  http.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(isBinary ? data : `${args.name}:${data.toString()}`));
      ws.on('error', () => ws.terminate());
    });
  });
  const httpPort = await listen(http, args.port);
  let tcp: Server | undefined;
  let tcpPort = 0;
  if (args.tcpPort !== 0) {
    tcp = createTcpServer((sock) => {
      sock.on('error', () => sock.destroy());
      sock.pipe(sock); // pipe() applies backpressure: nothing is buffered without bound
    });
    tcpPort = await listen(tcp, args.tcpPort);
  }
  return {
    http: httpPort,
    tcp: tcpPort,
    close: () => { http.close(); http.closeAllConnections(); tcp?.close(); },
  };
}

function isMain(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try { return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url)); } catch { return false; }
}

if (isMain()) {
  try {
    const args = parseEchoArgs(process.argv.slice(2));
    const s = await runEchoServer(args);
    process.stdout.write(JSON.stringify({ event: 'listening', http: s.http, tcp: s.tcp, name: args.name }) + '\n');
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 2;
  }
}
