/**
 * The waypoint's HTTP layer on loopback (plain sockets stand in for HBONE streams; see
 * test/helpers/waypoint-harness.ts): HTTP/1.1 keep-alive and pipelining, header hygiene and
 * limits, trace headers, route-to-self load balancing, h2c with trailers, Upgrade pass-through,
 * refusal of unbound destinations, connect failures, and Istio's request metrics.
 */
import test from 'ava';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { connect as h2connect, createServer as createH2Server, type Http2Server } from 'node:http2';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { setLogLevel } from '../../src/core/index.js';
import type { HttpRoute, RetryPolicy, ServiceL7 } from '../../src/model/l7.js';
import { CLIENT_ID, harness } from '../helpers/waypoint-harness.js';

setLogLevel('warn');

interface Seen { name: string; method: string; url: string; headers: Record<string, string | string[] | undefined>; body: string }

function backend(name: string): Promise<{ server: Server; port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const failed = new Set<string>();
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => { body += d.toString(); });
    req.on('end', () => {
      seen.push({ name, method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      let status = Number(q.get('status') ?? 200);
      // flaky: the first time this server sees a request id it answers 503
      const rid = String(req.headers['x-request-id']);
      if (q.get('fail') === 'first' && !failed.has(rid)) { failed.add(rid); status = 503; }
      const delay = Number(q.get('delayMs') ?? 0);
      if (delay > 0) { setTimeout(() => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify({ name, body })); }, delay); return; }
      res.writeHead(status, { 'content-type': 'application/json', connection: 'x-private', 'x-private': 'hop', 'x-from': name });
      res.end(JSON.stringify({ name, body }));
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: ${req.headers.upgrade}\r\nconnection: Upgrade\r\nx-from: ${name}\r\n\r\n`);
    socket.on('data', (d: Buffer) => socket.write(`${name}:${d.toString()}`));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port, seen })));
}

function get(port: number, path: string, headers: Record<string, string> = {}, agent?: import('node:http').Agent): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, path, headers: { host: 'echo', ...headers }, ...(agent ? { agent } : {}) }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    r.on('error', reject);
    r.end();
  });
}

test('HTTP/1.1 through the waypoint: keep-alive, hygiene, trace headers, both endpoints, metrics', async (t) => {
  const [a, b] = await Promise.all([backend('a'), backend('b')]);
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }, { name: 'echo-b', ip: '10.244.2.2', port: b.port }] });
  t.teardown(async () => { await h.close(); a.server.close(); b.server.close(); });
  const port = await h.port('10.96.0.10:80');
  const { Agent } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const r1 = await get(port, '/one?x=1', {
    'x-envoy-original-path': '/forged', 'x-forwarded-client-cert': 'By=forged', 'x-ambit-thing': 'forged', connection: 'x-secret', 'x-secret': 's',
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  }, agent);
  const r2 = await get(port, '/two', {}, agent);
  t.is(r1.status, 200);
  t.is(r2.status, 200);
  // both endpoints serve (the default balancer, LEAST_REQUEST, picks between idle endpoints at
  // random: ask until both answered, bounded; missing one in 40 is a chance of 2^-39)
  const names = new Set([JSON.parse(r1.body).name, JSON.parse(r2.body).name]);
  for (let i = 0; i < 40 && names.size < 2; i++) names.add(JSON.parse((await get(port, '/more', {}, agent)).body).name);
  t.deepEqual([...names].sort(), ['a', 'b']);
  // response hop-by-hop fields (and the ones `Connection` names) do not reach the client
  t.is(r1.headers['x-private'], undefined);
  const seen = [...a.seen, ...b.seen].sort((x, y) => x.url.localeCompare(y.url));
  const one = seen.find((s) => s.url === '/one?x=1')!;
  t.truthy(one);
  t.is(one.headers['x-envoy-original-path'], undefined);
  t.is(one.headers['x-ambit-thing'], undefined);
  t.is(one.headers['x-secret'], undefined);
  t.is(one.headers['x-forwarded-client-cert'], `By=spiffe://cluster.local/ns/default/sa/waypoint;URI=${CLIENT_ID}`);
  t.is(one.headers.host, 'echo');
  t.regex(String(one.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  // same trace, new span; the caller's span is the parent
  const tp = String(one.headers.traceparent).split('-');
  t.is(tp[1], '0af7651916cd43dd8448eb211c80319c');
  t.not(tp[2], 'b7ad6b7169203331');
  t.is(one.headers['x-b3-parentspanid'], 'b7ad6b7169203331');
  t.is(one.headers['x-b3-spanid'], tp[2]);
  // keep-alive: one downstream connection carried both
  t.is(h.proxy.openConnections, 1);
  const m = await h.telemetry.metrics();
  t.regex(m, /istio_requests_total\{reporter="waypoint",source_workload="client",.*source_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/client".*destination_service="echo.default.svc.cluster.local".*request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="mutual_tls"\} 1/);
  t.regex(m, /istio_request_duration_milliseconds_bucket\{le="\+Inf",reporter="waypoint"/);
});

test('pipelined HTTP/1.1 requests are answered in order', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); a.server.close(); });
  const port = await h.port('10.96.0.10:80');
  const s = netConnect({ host: '127.0.0.1', port });
  s.write('GET /p1 HTTP/1.1\r\nhost: echo\r\n\r\nGET /p2 HTTP/1.1\r\nhost: echo\r\n\r\nGET /p3 HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n');
  let out = '';
  s.on('data', (d: Buffer) => { out += d.toString(); });
  await new Promise((r) => s.once('close', r));
  t.is(out.match(/HTTP\/1\.1 200/g)?.length, 3);
  t.deepEqual(a.seen.map((x) => x.url), ['/p1', '/p2', '/p3']);
});

test('too many request headers: 431, nothing forwarded', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }], limits: { headers: { maxCount: 20, maxBytes: 60 * 1024 } } });
  t.teardown(async () => { await h.close(); a.server.close(); });
  const port = await h.port('10.96.0.10:80');
  const many: Record<string, string> = {};
  for (let i = 0; i < 30; i++) many[`x-h${i}`] = 'v';
  const r = await get(port, '/', many);
  t.is(r.status, 431);
  t.is(a.seen.length, 0);
  const ok = await get(port, '/', { 'x-few': '1' });
  t.is(ok.status, 200);
});

test('an upstream connect failure is 503 UF; a destination not bound to this waypoint is refused', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); a.server.close(); });
  h.transport.failIps.add('10.244.1.3');
  const r = await get(await h.port('10.96.0.10:80'), '/');
  t.is(r.status, 503);
  t.regex(await h.telemetry.metrics(), /istio_requests_total\{[^}]*response_code="503"[^}]*response_flags="UF"/);
  // an address that is no Service bound here: the stream is closed, nothing is dialled
  const before = h.transport.connects.length;
  const err = await get(await h.port('10.96.0.99:80'), '/').then(() => 'answered', (e: NodeJS.ErrnoException) => e.code);
  t.is(err, 'ECONNRESET');
  t.is(h.transport.connects.length, before);
});

test('Upgrade (WebSocket handshake) passes through and then carries raw bytes both ways', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); a.server.close(); });
  const s = netConnect({ host: '127.0.0.1', port: await h.port('10.96.0.10:80') });
  s.write('GET /ws HTTP/1.1\r\nhost: echo\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n');
  let out = '';
  await new Promise<void>((resolve) => s.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('\r\n\r\n')) resolve(); }));
  t.regex(out, /^HTTP\/1\.1 101/);
  out = '';
  s.write('ping');
  await new Promise<void>((resolve) => s.on('data', () => { if (out.includes('a:ping')) resolve(); }));
  t.is(out, 'a:ping');
  s.destroy();
});

test('h2c with prior knowledge and gRPC-style trailers', async (t) => {
  const h2: Http2Server = createH2Server();
  h2.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
    stream.end(Buffer.from(`path=${headers[':path']} te=${headers.te}`));
  });
  await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
  const h = await harness({ ports: [{ port: 50051, targetPort: 50051, name: 'grpc', appProtocol: 'grpc' }], endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: (h2.address() as AddressInfo).port }] });
  t.teardown(async () => { await h.close(); h2.close(); });
  const port = await h.port('10.96.0.10:50051');
  const session = h2connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const res = await new Promise<{ status: number; body: string; trailers: Record<string, unknown> }>((resolve, reject) => {
    const s = session.request({ ':method': 'POST', ':path': '/pkg.Svc/Call', 'content-type': 'application/grpc', te: 'trailers' });
    let status = 0; let body = ''; let trailers: Record<string, unknown> = {};
    s.on('response', (hd) => { status = Number(hd[':status']); });
    s.on('trailers', (tr) => { trailers = tr; });
    s.on('data', (d: Buffer) => { body += d.toString(); });
    s.on('end', () => resolve({ status, body, trailers }));
    s.on('error', reject);
    s.end(Buffer.from([0, 0, 0, 0, 0]));
  });
  t.is(res.status, 200);
  t.is(res.body, 'path=/pkg.Svc/Call te=trailers');
  t.is(res.trailers['grpc-status'], '0');
  t.regex(await h.telemetry.metrics(), /istio_requests_total\{[^}]*request_protocol="grpc",response_code="200",grpc_response_status="0"/);
});

test('drain: an HTTP/2 client gets GOAWAY; its stream already open still gets its answer', async (t) => {
  const h2: Http2Server = createH2Server();
  // the backend answers only when the test says so: the stream is open across the drain
  let answer: (() => void) | undefined;
  const asked = new Promise<void>((r) => {
    h2.on('stream', (stream) => { answer = () => { stream.respond({ ':status': 200 }); stream.end('late'); }; r(); });
  });
  await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
  const h = await harness({ ports: [{ port: 80, targetPort: 8080, name: 'http2', appProtocol: 'http2' }], endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: (h2.address() as AddressInfo).port }] });
  t.teardown(async () => { await h.close(); h2.close(); });
  const port = await h.port('10.96.0.10:80');
  const session = h2connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  const goaway = new Promise<void>((r) => session.once('goaway', () => r()));
  const res = new Promise<{ status: number; body: string }>((resolve, reject) => {
    const s = session.request({ ':method': 'GET', ':path': '/slow' });
    let status = 0; let body = '';
    s.on('response', (hd) => { status = Number(hd[':status']); });
    s.on('data', (d: Buffer) => { body += d.toString(); });
    s.on('end', () => resolve({ status, body }));
    s.on('error', reject);
    s.end();
  });
  await asked;
  h.proxy.drain();
  await goaway;
  answer!();
  t.deepEqual(await res, { status: 200, body: 'late' });
});

const KEY = 'default/echo.default.svc.cluster.local';
const HOST = 'echo.default.svc.cluster.local';
const origin = (rule: number) => ({ kind: 'VirtualService' as const, namespace: 'default', name: 'echo', rule });
const to = (subset: string, weight = 1) => ({ host: HOST, service: KEY, subset, weight });
const RETRY: RetryPolicy = { attempts: 3, perTryTimeoutMs: 2000, retryOn: ['5xx', 'reset', 'connect-failure', 'retriable-4xx'], retriableStatusCodes: [], backoffBaseMs: 25 };

/** The seed's VirtualService + DestinationRule, as the control plane translates them. */
function seedL7(o: { retries?: RetryPolicy; timeoutMs?: number } = {}): ServiceL7 {
  const http: HttpRoute[] = [
    { origin: origin(0), match: { headers: [{ name: 'end-user', match: { exact: 'jason' }, invert: false }], queryParams: [] }, action: { backends: [to('v2')], mirrors: [] } },
    { origin: origin(1), action: { backends: [to('v1', 90), to('v2', 10)], mirrors: [], ...(o.retries ? { retries: o.retries } : {}), ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}) } },
  ];
  return {
    service: KEY, http, grpc: [],
    destination: {
      origin: { kind: 'DestinationRule', namespace: 'default', name: 'echo', rule: 0 }, trafficPolicy: {},
      subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: {} }, { name: 'v2', labels: { version: 'v2' }, trafficPolicy: {} }],
    },
  };
}

test('the seed VirtualService: header canary, 90/10 split, retries turn 503s into 200s, route timeout gives 504 UT', async (t) => {
  const [a, b] = await Promise.all([backend('v1'), backend('v2')]);
  const h = await harness({ endpoints: [{ name: 'echo-v1', ip: '10.244.1.3', port: a.port, labels: { version: 'v1' } }, { name: 'echo-v2', ip: '10.244.2.2', port: b.port, labels: { version: 'v2' } }] });
  t.teardown(async () => { await h.close(); a.server.close(); b.server.close(); });
  const port = await h.port('10.96.0.10:80');
  h.set(seedL7());
  for (let i = 0; i < 5; i++) t.is(JSON.parse((await get(port, '/', { 'end-user': 'jason' })).body).name, 'v2');
  const counts = { v1: 0, v2: 0 };
  for (let i = 0; i < 200; i++) counts[JSON.parse((await get(port, '/')).body).name as 'v1' | 'v2']++;
  t.true(counts.v1 > counts.v2 * 3, JSON.stringify(counts));
  t.true(counts.v2 > 0, JSON.stringify(counts));
  // flaky backends: without a retry policy the 503 reaches the client
  t.is((await get(port, '/?fail=first')).status, 503);
  h.set(seedL7({ retries: RETRY }));
  for (let i = 0; i < 5; i++) t.is((await get(port, '/?fail=first')).status, 200);
  t.regex(await h.telemetry.metrics(), /istio_requests_total\{[^}]*response_code="503"[^}]*\} 1\n/);
  h.set(seedL7({ timeoutMs: 100 }));
  const slow = await get(port, '/?delayMs=2000');
  t.is(slow.status, 504);
  t.regex(await h.telemetry.metrics(), /istio_requests_total\{[^}]*response_code="504"[^}]*response_flags="UT"/);
  // no rule matches: 404 NR
  h.set({ service: KEY, http: [{ origin: origin(0), match: { path: { type: 'exact', value: '/only', segmented: false, ignoreCase: false }, headers: [], queryParams: [] }, action: { backends: [to('v1')], mirrors: [] } }], grpc: [], ...{ destination: seedL7().destination! } });
  t.is((await get(port, '/other')).status, 404);
  t.is((await get(port, '/only')).status, 200);
});

test('DestinationRule connection pool: requests over http2MaxRequests get 503 UO while one is in flight', async (t) => {
  const a = await backend('v1');
  const h = await harness({ endpoints: [{ name: 'echo-v1', ip: '10.244.1.3', port: a.port, labels: { version: 'v1' } }] });
  t.teardown(async () => { await h.close(); a.server.close(); });
  const port = await h.port('10.96.0.10:80');
  // no routes (the service routes to itself), a DestinationRule with a pool limit
  h.set({ service: KEY, http: [], grpc: [], destination: { origin: { kind: 'DestinationRule', namespace: 'default', name: 'echo', rule: 0 }, trafficPolicy: { connectionPool: { http2MaxRequests: 1 } }, subsets: [] } });
  const slow = get(port, '/?delayMs=1500');
  // the slow one is admitted first (its backend has seen it) before the second arrives
  while (a.seen.length === 0) await new Promise((r) => setTimeout(r, 10));
  const over = await get(port, '/');
  t.is(over.status, 503);
  t.is((await slow).status, 200);
  t.regex(await h.telemetry.metrics(), /istio_requests_total\{[^}]*response_code="503"[^}]*response_flags="UO"/);
  t.is((await get(port, '/')).status, 200);
});
