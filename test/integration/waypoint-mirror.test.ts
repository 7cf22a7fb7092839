/**
 * Request mirroring at the waypoint (HTTPRoute RequestMirror, VirtualService mirror + mirrorPercentage), on
 * loopback (test/helpers/waypoint-harness.ts): the copy reaches the mirror backend with `-shadow` appended to the
 * host and the same body; its response is dropped; a slow, failing or busy mirror never delays or fails the
 * request it copies; a body over the bound is not mirrored; mirrors in flight are bounded.
 */
import test from 'ava';
import { connect as h2connect, createServer as createH2Server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { setLogLevel } from '../../src/core/index.js';
import type { Mirror, ServiceL7 } from '../../src/model/l7.js';
import type { ProxyLimits } from '../../src/waypoint/index.js';
import { backend, send, type Backend } from '../helpers/waypoint-backend.js';
import { harness, type Harness } from '../helpers/waypoint-harness.js';

setLogLevel('warn');

const KEY = 'default/echo.default.svc.cluster.local';
const HOST = 'echo.default.svc.cluster.local';

/** Everything to subset v1, mirrored to subset v2. */
function mirrored(mirrors: Mirror[] = [{ host: HOST, service: KEY, subset: 'v2', percent: 100 }]): ServiceL7 {
  return {
    service: KEY, grpc: [],
    http: [{ origin: { kind: 'VirtualService', namespace: 'default', name: 'echo', rule: 0 }, action: { backends: [{ host: HOST, service: KEY, subset: 'v1', weight: 1 }], mirrors } }],
    destination: {
      origin: { kind: 'DestinationRule', namespace: 'default', name: 'echo', rule: 0 }, trafficPolicy: {},
      subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: {} }, { name: 'v2', labels: { version: 'v2' }, trafficPolicy: {} }],
    },
  };
}

async function setup(t: import('ava').ExecutionContext, limits?: Partial<ProxyLimits>, shadow?: Parameters<typeof backend>[1]): Promise<{ h: Harness; port: number; main: Backend; copy: Backend }> {
  const [main, copy] = await Promise.all([backend('v1'), backend('v2', shadow)]);
  const h = await harness({
    endpoints: [{ name: 'echo-v1', ip: '10.244.1.3', port: main.port, labels: { version: 'v1' } }, { name: 'echo-v2', ip: '10.244.2.2', port: copy.port, labels: { version: 'v2' } }],
    ...(limits ? { limits } : {}),
  });
  t.teardown(async () => { await h.close(); await main.close(); await copy.close(); });
  h.set(mirrored());
  return { h, port: await h.port('10.96.0.10:80'), main, copy };
}

const metric = async (h: Harness, result: string): Promise<number> => {
  const m = new RegExp(`ambit_waypoint_mirror_requests_total\\{result="${result}"\\} (\\d+)`).exec(await h.telemetry.metrics());
  return m ? Number(m[1]) : 0;
};

test('a mirrored request reaches the mirror backend with -shadow on the host and the same body; the client gets the main answer', async (t) => {
  const { h, port, main, copy } = await setup(t);
  const r = await send(port, { path: '/get?x=1' });
  t.is(r.status, 200);
  t.is(JSON.parse(r.body).name, 'v1');
  const shadow = await copy.waitFor((s) => s.url === '/get?x=1');
  t.is(shadow.method, 'GET');
  t.is(shadow.headers.host, 'echo-shadow');
  t.is(shadow.headers['x-request-id'], main.seen[0]!.headers['x-request-id']);
  t.is(main.seen[0]!.headers.host, 'echo');
  const post = await send(port, { method: 'POST', path: '/post', body: 'hello mirror', headers: { 'content-type': 'text/plain' } });
  t.is(JSON.parse(post.body).body, 'hello mirror');
  t.is((await copy.waitFor((s) => s.url === '/post')).body, 'hello mirror');
  t.is(await metric(h, 'sent') >= 1, true);
  // mirrorPercentage 0: no copy (the next request's copy shows the earlier one was never sent)
  h.set(mirrored([{ host: HOST, service: KEY, subset: 'v2', percent: 0 }]));
  t.is((await send(port, { path: '/none' })).status, 200);
  h.set(mirrored());
  t.is((await send(port, { path: '/after' })).status, 200);
  await copy.waitFor((s) => s.url === '/after');
  t.false(copy.seen.some((s) => s.url === '/none'));
  t.true(main.seen.some((s) => s.url === '/none'));
});

test('a body over the mirror bound is not mirrored (counted); the request itself goes through whole', async (t) => {
  const { h, port, copy } = await setup(t, { mirrorBodyBytes: 1024 });
  const big = 'x'.repeat(4096);
  const r = await send(port, { method: 'POST', path: '/big', body: big });
  t.is(r.status, 200);
  t.is(JSON.parse(r.body).body, big);
  t.is(await metric(h, 'skipped_body'), 1);
  t.is((await send(port, { method: 'POST', path: '/small', body: 'ok' })).status, 200);
  await copy.waitFor((s) => s.url === '/small');
  t.false(copy.seen.some((s) => s.url === '/big'));
});

/** Mirror outcomes are only visible in the metrics: wait until `result` reaches `n`. */
async function counted(h: Harness, result: string, n: number): Promise<void> {
  while (await metric(h, result) < n) await new Promise((r) => setTimeout(r, 5));
}

test('a mirror that never answers delays nothing; mirrors in flight are bounded', async (t) => {
  const held: Array<() => void> = [];
  const { h, port, copy } = await setup(t, { maxConcurrentMirrors: 1 }, (req, res) => {
    if (req.url?.startsWith('/slow')) { held.push(() => res.writeHead(500).end()); return true; }
    return false;
  });
  t.teardown(() => { for (const r of held) r(); });
  // the copy hangs: the client still gets its answer
  t.is((await send(port, { path: '/slow1' })).status, 200);
  await copy.waitFor((s) => s.url === '/slow1');
  // the only mirror slot is taken: the next copy is skipped, the request is served
  t.is((await send(port, { path: '/slow2' })).status, 200);
  t.is(await metric(h, 'skipped_busy'), 1);
  // the slot frees when the copy's (discarded) 500 arrives
  held.shift()!();
  await counted(h, 'sent', 1);
  t.is((await send(port, { path: '/slow3' })).status, 200);
  await copy.waitFor((s) => s.url === '/slow3');
  t.false(copy.seen.some((s) => s.url === '/slow2'));
});

test('a mirror that cannot be reached fails nothing (counted as failed)', async (t) => {
  const { h, port, main } = await setup(t);
  h.transport.failIps.add('10.244.2.2');
  const r = await send(port, { method: 'POST', path: '/down', body: 'b' });
  t.is(r.status, 200);
  t.is(JSON.parse(r.body).body, 'b');
  await counted(h, 'failed', 1);
  t.is(main.seen.length, 1);
});

test('h2c: the copy goes over the mirror endpoint\'s HTTP/2 session with :authority <host>-shadow', async (t) => {
  const servers: Http2Server[] = [];
  const seen: Array<{ name: string; authority: string; path: string; body: string }> = [];
  const start = async (name: string): Promise<number> => {
    const s = createH2Server();
    s.on('stream', (stream, hd) => {
      let body = '';
      stream.on('data', (d: Buffer) => { body += d.toString(); });
      stream.on('end', () => {
        seen.push({ name, authority: String(hd[':authority']), path: String(hd[':path']), body });
        stream.respond({ ':status': 200 });
        stream.end(name);
      });
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return (s.address() as AddressInfo).port;
  };
  const [p1, p2] = [await start('v1'), await start('v2')];
  const h = await harness({
    ports: [{ port: 8080, targetPort: 8080, name: 'http2', appProtocol: 'http2' }],
    endpoints: [{ name: 'echo-v1', ip: '10.244.1.3', port: p1, labels: { version: 'v1' } }, { name: 'echo-v2', ip: '10.244.2.2', port: p2, labels: { version: 'v2' } }],
  });
  t.teardown(async () => { await h.close(); for (const s of servers) s.close(); });
  h.set(mirrored());
  const session = h2connect(`http://127.0.0.1:${await h.port('10.96.0.10:8080')}`);
  t.teardown(() => session.close());
  const answer = await new Promise<string>((resolve, reject) => {
    const s = session.request({ ':method': 'POST', ':path': '/h2', ':authority': 'echo:8080' });
    let body = '';
    s.on('data', (d: Buffer) => { body += d.toString(); });
    s.on('end', () => resolve(body));
    s.on('error', reject);
    s.end('payload');
  });
  t.is(answer, 'v1');
  await counted(h, 'sent', 1);
  t.deepEqual(seen.find((x) => x.name === 'v2'), { name: 'v2', authority: 'echo-shadow:8080', path: '/h2', body: 'payload' });
});
