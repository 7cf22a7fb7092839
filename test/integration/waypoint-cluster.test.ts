/**
 * The waypoint's per-cluster behaviour from the DestinationRule's traffic policy, on loopback
 * (test/helpers/waypoint-harness.ts): consistent hashing on a header, a cookie or the source IP;
 * connection-pool `maxRequestsPerConnection` (HTTP/1.1 and h2c) and `maxRetries`.
 */
import test from 'ava';
import { once } from 'node:events';
import { connect as h2connect, createServer as createH2Server } from 'node:http2';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { setLogLevel } from '../../src/core/index.js';
import type { ServiceL7, TrafficPolicy } from '../../src/model/l7.js';
import { backend, send, type Backend } from '../helpers/waypoint-backend.js';
import { harness } from '../helpers/waypoint-harness.js';

setLogLevel('warn');

const KEY = 'default/echo.default.svc.cluster.local';

function withPolicy(trafficPolicy: TrafficPolicy): ServiceL7 {
  return { service: KEY, http: [], grpc: [], destination: { origin: { kind: 'DestinationRule', namespace: 'default', name: 'echo', rule: 0 }, trafficPolicy, subsets: [] } };
}

async function three(t: import('ava').ExecutionContext): Promise<{ port: number; bs: Backend[]; h: Awaited<ReturnType<typeof harness>> }> {
  const bs = await Promise.all(['a', 'b', 'c'].map((n) => backend(n)));
  const h = await harness({ endpoints: bs.map((b, i) => ({ name: `echo-${b.name}`, ip: `10.244.1.${i + 3}`, port: b.port })) });
  t.teardown(async () => { await h.close(); await Promise.all(bs.map((b) => b.close())); });
  return { port: await h.port('10.96.0.10:80'), bs, h };
}

const nameOf = (body: string): string => (JSON.parse(body) as { name: string }).name;

test('consistent hash on a header: one value always lands on one endpoint, different values spread', async (t) => {
  const { port, h } = await three(t);
  h.set(withPolicy({ consistentHash: { key: { header: 'x-user' }, algorithm: 'ring' } }));
  const chosen = new Map<string, string>();
  for (let u = 0; u < 16; u++) {
    for (let i = 0; i < 4; i++) {
      const r = await send(port, { headers: { 'x-user': `user-${u}` } });
      t.is(r.status, 200);
      const n = nameOf(r.body);
      const before = chosen.get(`user-${u}`);
      if (before === undefined) chosen.set(`user-${u}`, n); else t.is(n, before, `user-${u}`);
    }
  }
  t.true(new Set(chosen.values()).size >= 2, JSON.stringify([...chosen]));
});

test('consistent hash on a cookie (maglev) and on the source IP', async (t) => {
  const { port, h } = await three(t);
  h.set(withPolicy({ consistentHash: { key: { cookie: 'session' }, algorithm: 'maglev' } }));
  const chosen = new Map<string, string>();
  for (let u = 0; u < 16; u++) {
    for (let i = 0; i < 3; i++) {
      const n = nameOf((await send(port, { headers: { cookie: `theme=dark; session=s${u}` } })).body);
      const before = chosen.get(`s${u}`);
      if (before === undefined) chosen.set(`s${u}`, n); else t.is(n, before, `s${u}`);
    }
  }
  t.true(new Set(chosen.values()).size >= 2, JSON.stringify([...chosen]));
  // every request of the harness comes from one client IP: one endpoint takes them all
  h.set(withPolicy({ consistentHash: { key: { sourceIp: true }, algorithm: 'ring' } }));
  const names = new Set<string>();
  for (let i = 0; i < 24; i++) names.add(nameOf((await send(port)).body));
  t.is(names.size, 1);
});

// raw HTTP/1.1 on one connection: resolves with everything read until the server closes
function readAll(s: Socket): Promise<string> {
  let got = '';
  s.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  return new Promise((resolve, reject) => { s.once('end', () => resolve(got)); s.once('error', reject); });
}

test('drain: a connection that has not sent its request yet still gets its answer (then closes); an idle keep-alive connection is closed', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); await a.close(); });
  const port = await h.port('10.96.0.10:80');
  const connected = (): Promise<Socket> => new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  // one connection that carried a request and now waits (keep-alive), one fresh
  const idle = await connected();
  const idleText = readAll(idle);
  idle.write('GET /first HTTP/1.1\r\nhost: echo\r\n\r\n');
  await a.waitFor((x) => x.url === '/first');
  const fresh = await connected();
  const freshText = readAll(fresh);
  // both streams reached the proxy before the drain
  while (h.proxy.openConnections < 2) await new Promise((r) => setImmediate(r));
  h.proxy.drain();
  fresh.write('GET /late HTTP/1.1\r\nhost: echo\r\n\r\n');
  const late = await freshText;
  t.regex(late, /^HTTP\/1\.1 200 /);
  t.regex(late, /\r\nconnection: close\r\n/i, 'its answer says the connection ends');
  t.truthy(a.seen.find((x) => x.url === '/late'));
  // the idle one got its first answer, then was closed by the drain without another request
  const first = await idleText;
  t.is(first.match(/HTTP\/1\.1 200 /g)?.length, 1);
});

test('an idle upstream connection the backend closed leaves the pool (its half-open end is closed too); the next request opens a new one', async (t) => {
  t.timeout(20_000);
  // The backend closes every connection after its answer without saying so, as a keep-alive
  // timeout does, and without Node's `keep-alive: timeout=` hint (haproxy and nginx send none;
  // node:http's Agent would drop the socket before that timeout by itself).
  const a = await backend('a', (req) => {
    req.socket.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok', () => req.socket.destroy());
    return true;
  });
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); await a.close(); });
  const port = await h.port('10.96.0.10:80');
  t.is((await send(port)).status, 200);
  await a.closed(1);
  // the waypoint's end of it closes as well (left half-open, it would stay pooled and take the next request)
  const first = h.transport.made[0]!;
  if (!first.destroyed) await once(first, 'close');
  t.is((await send(port)).status, 200);
  t.is(a.connections(), 2);
  t.is(h.transport.made.length, 2);
});

test('maxRequestsPerConnection: an upstream HTTP/1.1 connection is retired after N requests (its last one says connection: close)', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); await a.close(); });
  const port = await h.port('10.96.0.10:80');
  h.set(withPolicy({ connectionPool: { maxRequestsPerConnection: 2 } }));
  for (let i = 0; i < 6; i++) t.is((await send(port, { path: `/r${i}` })).status, 200);
  t.deepEqual(a.seen.map((s) => s.connection), [1, 1, 2, 2, 3, 3]);
  t.deepEqual(a.seen.map((s) => s.headers.connection), ['keep-alive', 'close', 'keep-alive', 'close', 'keep-alive', 'close']);
  // unlimited (the default): the pooled connection carries on
  h.set(withPolicy({}));
  for (let i = 0; i < 3; i++) t.is((await send(port)).status, 200);
  t.is(new Set(a.seen.slice(6).map((s) => s.connection)).size, 1);
  // 1 disables keep-alive
  h.set(withPolicy({ connectionPool: { maxRequestsPerConnection: 1 } }));
  for (let i = 0; i < 3; i++) t.is((await send(port)).status, 200);
  const last = a.seen.slice(9);
  t.deepEqual(last.map((s) => s.headers.connection), ['close', 'close', 'close']);
  t.is(new Set(last.map((s) => s.connection)).size, 3);
});

test('maxRequestsPerConnection: an upstream h2c session takes at most N streams', async (t) => {
  const sessions: unknown[] = [];
  const seen: number[] = [];
  const h2 = createH2Server();
  h2.on('session', (s) => { sessions.push(s); });
  h2.on('stream', (stream) => {
    seen.push(sessions.indexOf(stream.session) + 1);
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
  const h = await harness({ ports: [{ port: 50051, targetPort: 50051, name: 'http2', appProtocol: 'http2' }], endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: (h2.address() as AddressInfo).port }] });
  t.teardown(async () => { await h.close(); h2.close(); });
  h.set(withPolicy({ connectionPool: { maxRequestsPerConnection: 2 } }));
  const session = h2connect(`http://127.0.0.1:${await h.port('10.96.0.10:50051')}`);
  t.teardown(() => session.close());
  const get = (): Promise<number> => new Promise((resolve, reject) => {
    const s = session.request({ ':path': '/' });
    let status = 0;
    s.on('response', (hd) => { status = Number(hd[':status']); });
    s.resume();
    s.on('end', () => resolve(status));
    s.on('error', reject);
  });
  for (let i = 0; i < 5; i++) t.is(await get(), 200);
  // concurrent requests too: never more than two streams per session
  t.deepEqual(await Promise.all([get(), get(), get(), get()]), [200, 200, 200, 200]);
  t.deepEqual(seen.slice(0, 5), [1, 1, 2, 2, 3]);
  const perSession = new Map<number, number>();
  for (const s of seen) perSession.set(s, (perSession.get(s) ?? 0) + 1);
  t.true([...perSession.values()].every((n) => n <= 2), JSON.stringify([...perSession]));
});

test('maxRetries: retries beyond the cluster budget are not attempted; the request ends with its own error', async (t) => {
  // first sight of a request id: 503; the retry of `/hold` waits until released
  const failed = new Set<string>();
  const held: Array<() => void> = [];
  const a = await backend('a', (req, res) => {
    const rid = String(req.headers['x-request-id']);
    if (!failed.has(rid)) { failed.add(rid); res.writeHead(503).end('first'); return true; }
    if (req.url === '/hold') { held.push(() => res.writeHead(200).end('late')); return true; }
    return false;
  });
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { for (const r of held) r(); await h.close(); await a.close(); });
  const port = await h.port('10.96.0.10:80');
  const retries = { attempts: 3, retryOn: ['5xx'], retriableStatusCodes: [], backoffBaseMs: 1 };
  h.set({ ...withPolicy({ connectionPool: { maxRetries: 1 } }), http: [{ origin: { kind: 'VirtualService', namespace: 'default', name: 'echo', rule: 0 }, action: { backends: [{ host: 'echo.default.svc.cluster.local', service: KEY, weight: 1 }], mirrors: [], retries } }] });
  // one request's retry is in flight: it holds the cluster's only retry
  const first = send(port, { path: '/hold' });
  await a.waitFor((s) => s.url === '/hold' && a.seen.filter((x) => x.url === '/hold').length === 2);
  const over = await send(port, { path: '/b' });
  t.is(over.status, 503, 'no retry: the first attempt\'s 503');
  t.is(a.seen.filter((s) => s.url === '/b').length, 1);
  t.regex(await h.telemetry.metrics(), /ambit_waypoint_retry_overflow_total\{destination_service="echo.default.svc.cluster.local"\} 1/);
  held.shift()!();
  t.is((await first).status, 200);
  // the budget is back
  t.is((await send(port, { path: '/c' })).status, 200);
  t.is(a.seen.filter((s) => s.url === '/c').length, 2);
});

test('connectTimeout: an endpoint whose stream is never established is abandoned after the DestinationRule\'s connectTimeout (503 UF), and the attempt is cancelled', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); await a.close(); });
  h.transport.hangIps.add('10.244.1.3');
  h.set(withPolicy({ connectionPool: { connectTimeoutMs: 50 } }));
  const port = await h.port('10.96.0.10:80');
  const r = await send(port);
  t.is(r.status, 503);
  t.is(h.transport.cancelled, 1, 'the hanging connect was cancelled, not left behind');
  t.regex(await h.telemetry.metrics(), /istio_requests_total\{[^}]*response_code="503"[^}]*response_flags="UF"[^}]*\} 1/);
  // the endpoint answers again: the same policy lets requests through
  h.transport.hangIps.clear();
  t.is((await send(port)).status, 200);
});

test('idleTimeout: a pooled upstream HTTP/1.1 connection idle for the DestinationRule\'s idleTimeout is closed; the next request opens a new one', async (t) => {
  const a = await backend('a');
  const h = await harness({ endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: a.port }] });
  t.teardown(async () => { await h.close(); await a.close(); });
  h.set(withPolicy({ connectionPool: { idleTimeoutMs: 50 } }));
  const port = await h.port('10.96.0.10:80');
  t.is((await send(port)).status, 200);
  await a.closed(1);
  t.is((await send(port)).status, 200);
  t.deepEqual(a.seen.map((s) => s.connection), [1, 2]);
});
