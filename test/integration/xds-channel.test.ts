/**
 * The control channel end to end on loopback: real ws, real protobuf frames, real push server.
 */
import test from 'ava';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import type { Authorization, Service, Workload } from '../../src/model/index.js';
import { Snapshot } from '../../src/model/index.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, XdsClient, buildResourceTables } from '../../src/xds/index.js';
import type { ResourceTables } from '../../src/xds/index.js';
import { encodeControlMessage } from '../../src/xds/codec.js';
import { schema } from '../../src/xds/schema.js';
import { MeshError } from '../../src/core/index.js';
import { BootstrapTokenAuthenticator, PushServer } from '../../src/control/push/index.js';
import type { PushServerOptions } from '../../src/control/push/index.js';
import { servePush } from '../helpers/push-harness.js';

const TOKEN = 'test-bootstrap-token-0123456789';

function wl(i: number, over: Partial<Workload> = {}): Workload {
  return {
    uid: `c//Pod/ns/w${i}`, name: `w${i}`, namespace: 'ns', serviceAccount: `sa${i % 3}`, trustDomain: 'cluster.local', node: `n${i % 2}`,
    addresses: [`10.0.${i >> 8}.${i & 255}`], labels: { app: `a${i}` }, canonicalName: `a${i}`, canonicalRevision: 'latest', workloadName: `w${i}`,
    workloadType: 'pod', tunnel: 'hbone', healthy: true, services: ['ns/s.ns.svc.cluster.local'], authorizationPolicies: [], ...over,
  };
}
const svc: Service = { name: 's', namespace: 'ns', hostname: 's.ns.svc.cluster.local', vips: ['10.96.0.1'], ports: [{ port: 80, targetPort: 8080 }] };
const pol: Authorization = { name: 'p', namespace: 'ns', scope: 'namespace', action: 'allow', dryRun: false, rules: [{ clauses: [] }] };

function tables(workloads: Workload[], services: Service[] = [svc], authorizations: Authorization[] = [pol]): ResourceTables {
  return buildResourceTables(Snapshot.build({ workloads, services, authorizations })).tables;
}

interface Harness {
  server: Server;
  url: string;
  push: PushServer;
  /** swap the push server behind the same port (a control-plane restart) */
  setPush(p: PushServer): void;
  newPush(o?: Partial<PushServerOptions>): PushServer;
  client(o?: { role?: 'agent' | 'waypoint'; node?: string }): XdsClient;
}

async function harness(t: import('ava').ExecutionContext, o: Partial<PushServerOptions> = {}): Promise<Harness> {
  const auth = new BootstrapTokenAuthenticator({ token: TOKEN, trustDomain: 'cluster.local' });
  const newPush = (x: Partial<PushServerOptions> = {}) => new PushServer({ authenticator: auth, debounceMs: 1, ...o, ...x });
  let push = newPush();
  const server = createServer((_req, res) => { res.statusCode = 404; res.end(); });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => push.handleUpgrade(req, socket, head));
  const pushes: PushServer[] = [push];
  const { url, track } = await servePush(t, server, () => Promise.all(pushes.map((p) => p.close())));
  return {
    server, url,
    get push() { return push; },
    setPush(p) { push = p; pushes.push(p); },
    newPush,
    client(co = {}) {
      return track(new XdsClient({ url, token: TOKEN, node: co.node ?? 'n0', role: co.role ?? 'agent', backoff: { initialMs: 5, maxMs: 50 } }));
    },
  };
}

/** Wait until the client's snapshot satisfies `pred`. */
async function until(c: XdsClient, pred: (s: Snapshot) => boolean): Promise<Snapshot> {
  if (pred(c.snapshot)) return c.snapshot;
  return new Promise((resolve) => {
    const on = (s: Snapshot) => { if (pred(s)) { c.off('snapshot', on); resolve(s); } };
    c.on('snapshot', on);
  });
}

test('full state first, then only the delta; removals arrive as removed names', async (t) => {
  const h = await harness(t);
  h.push.update(tables([wl(1), wl(2), wl(3)]));
  h.push.flush();
  const c = h.client();
  c.start();
  await c.ready;
  t.deepEqual(c.snapshot.counts, { workloads: 3, services: 1, authorizations: 1, waypoints: 0 });
  t.is(c.stats.resources, 5);
  t.is(c.snapshot.workload('c//Pod/ns/w2')!.addresses[0], '10.0.0.2');
  const before = { ...c.stats };
  h.push.update(tables([wl(1), wl(2, { healthy: false }), wl(4)], [], [pol]));
  const snap = await until(c, (s) => s.workload('c//Pod/ns/w4') !== undefined && s.services.next().done === true);
  t.false(snap.workload('c//Pod/ns/w2')!.healthy);
  t.is(snap.workload('c//Pod/ns/w3'), undefined);
  t.is(snap.service('ns/s.ns.svc.cluster.local'), undefined);
  // w2 changed, w4 added; w3 and the service removed; the authorization did not change: one Address response only
  t.is(c.stats.resources - before.resources, 2);
  t.is(c.stats.removed - before.removed, 2);
  t.is(c.stats.responses - before.responses, 1);
  t.true(snap.version > 0);
});

test('a NACKed resource is tracked per client while the good ones are applied', async (t) => {
  const h = await harness(t);
  const tb = tables([wl(1), wl(2)]);
  // inject a resource whose payload carries a 3-byte IP: the client must reject it by name
  const bad = schema().Address.encode({ workload: { uid: 'c//Pod/ns/bad', name: 'bad', namespace: 'ns', serviceAccount: 'x', trustDomain: 'cluster.local', addresses: [Uint8Array.from([1, 2, 3])] } }).finish();
  tb.get(ADDRESS_TYPE)!.set('c//Pod/ns/bad', { version: 'bad1', payload: bad });
  h.push.update(tb);
  h.push.flush();
  const c = h.client();
  const nacked = new Promise<void>((resolve) => h.push.on('ack', (_id, type, _v, nack) => { if (nack && type === ADDRESS_TYPE) resolve(); }));
  c.start();
  await c.ready;
  await nacked;
  t.deepEqual(c.snapshot.counts.workloads, 2);
  t.truthy(c.snapshot.workload('c//Pod/ns/w1'));
  t.is(c.stats.nacks, 1);
  const [peer] = h.push.syncz();
  const addr = peer!.types.find((x) => x.typeUrl === ADDRESS_TYPE)!;
  t.regex(addr.lastNack!.message, /c\/\/Pod\/ns\/bad: workload\.addresses\[0\]: IP address must be 4 or 16 bytes, got 3/);
  t.deepEqual(addr.rejected.map((r) => r.name), ['c//Pod/ns/bad']);
  // the good resources count as applied: the version is ACKed
  t.is(addr.versionAcked, addr.versionSent);
  t.is(peer!.types.find((x) => x.typeUrl === AUTHORIZATION_TYPE)!.lastNack, undefined);
  // fixing the resource clears the rejection
  const fixed = tables([wl(1), wl(2)]);
  h.push.update(fixed);
  await once(h.push, 'converged');
  t.deepEqual(h.push.syncz()[0]!.types.find((x) => x.typeUrl === ADDRESS_TYPE)!.rejected, []);
});

test('on reconnect a client leaves rejected names out of its versions, so only those are sent again', async (t) => {
  const h = await harness(t);
  const tb = tables([wl(1), wl(2)]);
  const bad = schema().Address.encode({ workload: { uid: 'c//Pod/ns/bad', name: 'bad', namespace: 'ns', serviceAccount: 'x', trustDomain: 'cluster.local', workloadType: 7 } }).finish();
  tb.get(ADDRESS_TYPE)!.set('c//Pod/ns/bad', { version: 'bad1', payload: bad });
  h.push.update(tb);
  h.push.flush();
  const c = h.client();
  c.start();
  await c.ready;
  t.is(c.stats.nacks, 1);
  const before = { ...c.stats };
  const [peer] = h.push.syncz();
  const renacked = new Promise<void>((resolve) => h.push.on('ack', (id, type, _v, nack) => { if (id !== peer!.id && nack && type === ADDRESS_TYPE) resolve(); }));
  t.true(h.push.disconnect(peer!.id));
  await renacked;
  // w1, w2, the service and the policy were held with the server's versions: only `bad` travels
  t.is(c.stats.resources - before.resources, 1);
  t.is(c.stats.nacks, 2);
  t.is(c.snapshot.counts.workloads, 2);
});

test('a reconnecting client sends its versions and receives only the difference', async (t) => {
  const h = await harness(t);
  const many = Array.from({ length: 50 }, (_, i) => wl(i));
  h.push.update(tables(many));
  h.push.flush();
  const c = h.client();
  c.start();
  await c.ready;
  t.is(c.stats.resources, 52);
  // a control-plane restart with slightly different state: a fresh server knows nothing of the
  // client, but versions are content hashes, so only w7 (changed), w50 (new) and w3 (gone) travel
  const next = h.newPush();
  const changed = many.filter((w) => w.name !== 'w3').map((w) => (w.name === 'w7' ? wl(7, { labels: { app: 'new' } }) : w));
  next.update(tables([...changed, wl(50)]));
  next.flush();
  const old = h.push;
  h.setPush(next);
  const before = { ...c.stats };
  const reconnected = once(c, 'connected');
  await old.close();
  await reconnected;
  const snap = await until(c, (s) => s.workload('c//Pod/ns/w50') !== undefined);
  t.is(snap.workload('c//Pod/ns/w3'), undefined);
  t.is(snap.workload('c//Pod/ns/w7')!.labels.app, 'new');
  t.is(snap.counts.workloads, 50);
  // wait for the authorization response too (empty) before counting
  await until(c, () => c.stats.responses - before.responses >= 2);
  t.is(c.stats.resources - before.resources, 2);
  t.is(c.stats.removed - before.removed, 1);
  t.is(c.stats.connects, 2);
});

test('a burst of config changes becomes one push per client', async (t) => {
  const h = await harness(t, { debounceMs: 30, maxDelayMs: 10_000 });
  h.push.update(tables([wl(1)]));
  h.push.flush();
  const clients = [h.client({ node: 'n0' }), h.client({ node: 'n1' })];
  for (const c of clients) c.start();
  await Promise.all(clients.map((c) => c.ready));
  const before = clients.map((c) => c.stats.responses);
  let pushes = 0;
  h.push.on('pushed', () => pushes++);
  for (let i = 0; i < 20; i++) h.push.update(tables([wl(1, { labels: { n: String(i) } })]));
  await once(h.push, 'converged');
  t.is(pushes, 1);
  clients.forEach((c, i) => {
    t.is(c.stats.responses - before[i]!, 1);
    t.is(c.snapshot.workload('c//Pod/ns/w1')!.labels.n, '19');
  });
});

test('a client that stops reading is disconnected and counted', async (t) => {
  let slow = 0;
  const h = await harness(t, {
    maxBufferedBytes: 256 * 1024,
    metrics: { connected: () => {}, pushed: () => {}, nack: () => {}, converged: () => {}, slowDisconnect: () => { slow++; } },
  });
  const big = (tag: string) => tables(Array.from({ length: 2000 }, (_, i) => wl(i, { labels: { pad: tag.repeat(1000) } })));
  h.push.update(big('a'));
  h.push.flush();
  const ws = new WebSocket(h.url, { headers: { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'n0' } });
  await once(ws, 'open');
  const gone = once(h.push, 'disconnected');
  ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: ADDRESS_TYPE, responseNonce: '', initialResourceVersions: {}, subscribe: ['*'], unsubscribe: [] } }));
  await once(ws, 'message');
  (ws as unknown as { _socket: Socket })._socket.pause();
  // every push adds ~2 MB the peer does not read; the kernel buffers fill, then the server-side
  // queue passes the limit
  for (let i = 0; i < 40 && !slow; i++) {
    h.push.update(big(String(i % 10)));
    h.push.flush();
    await new Promise((r) => setImmediate(r));
  }
  const [peer] = await gone as [{ node: string }];
  t.is(peer.node, 'n0');
  t.is(slow, 1);
  t.is(h.push.peerCount, 0);
  ws.terminate();
});

test('a client that never ACKs is disconnected after too many pending responses', async (t) => {
  const h = await harness(t, { maxPendingResponses: 3 });
  h.push.update(tables([wl(1)]));
  h.push.flush();
  const ws = new WebSocket(h.url, { headers: { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'n0' } });
  await once(ws, 'open');
  const closed = once(ws, 'close');
  ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: ADDRESS_TYPE, responseNonce: '', initialResourceVersions: {}, subscribe: ['*'], unsubscribe: [] } }));
  await once(ws, 'message');
  for (let i = 0; i < 5 && ws.readyState === ws.OPEN; i++) {
    h.push.update(tables([wl(1, { labels: { i: String(i) } })]));
    h.push.flush();
  }
  const [code, reason] = await closed as [number, Buffer];
  t.is(code, 4008);
  t.regex(reason.toString(), /slow client: 3 responses of Address not acknowledged/);
});

for (const [title, headers] of [
  ['no token', {}],
  ['a wrong token', { authorization: 'Bearer wrong-token-wrong-token-wrong' }],
  ['a malformed authorization header', { authorization: `Basic ${TOKEN}` }],
  ['a bad node name', { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'Bad Node!' }],
  ['an unknown role', { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'n0', 'x-ambit-role': 'admin' }],
] as const) {
  test(`an upgrade with ${title} is refused with 401 and gets no session`, async (t) => {
    const h = await harness(t);
    const ws = new WebSocket(h.url, { headers });
    ws.on('error', () => {});
    const [, res] = await once(ws, 'unexpected-response') as [unknown, IncomingMessage];
    t.is(res.statusCode, 401);
    res.resume();
    ws.terminate();
    t.is(h.push.peerCount, 0);
  });
}

test('before the first config set the channel answers 503 to an authenticated client', async (t) => {
  const h = await harness(t);
  const ws = new WebSocket(h.url, { headers: { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'n0' } });
  ws.on('error', () => {});
  const [, res] = await once(ws, 'unexpected-response') as [unknown, IncomingMessage];
  t.is(res.statusCode, 503);
  res.resume();
  ws.terminate();
});

for (const [status, code] of [[401, 'AMBIT_XDS_UNAUTHENTICATED'], [403, 'AMBIT_XDS_FORBIDDEN']] as const) {
  test(`the XdsClient reports an upgrade refused with ${status} as ${code} and keeps retrying`, async (t) => {
    // 401: a token the server does not accept; 403: a valid token whose peer is not admitted
    const h = await harness(t, status === 403 ? { admit: (p) => { throw new MeshError('AMBIT_XDS_FORBIDDEN', `${p.subject} not admitted`); } } : {});
    // admission is only asked once the first config is set; before that every upgrade gets 503
    h.push.update(tables([]));
    h.push.flush();
    const c = new XdsClient({ url: h.url, token: status === 401 ? 'wrong-token-wrong-token-wrong' : TOKEN, node: 'n0', role: 'agent', backoff: { initialMs: 5, maxMs: 20 } });
    t.teardown(() => c.close());
    const errors: Error[] = [];
    let disconnects = 0;
    c.on('disconnected', () => { disconnects++; });
    c.on('error', (e) => errors.push(e));
    c.start();
    // a second attempt after the first refusal: the client backs off and retries
    await new Promise<void>((resolve) => { c.on('error', () => { if (errors.length >= 2) resolve(); }); });
    for (const e of errors.slice(0, 2)) {
      t.is((e as { code?: string }).code, code);
      t.regex(e.message, new RegExp(`HTTP ${status}`));
    }
    t.true(disconnects >= 1);
    t.false(c.connected);
    t.is(h.push.peerCount, 0);
    await c.close();
    await t.throwsAsync(c.ready, { message: /closed before it was ready/ });
  });
}

test('an agent may not subscribe to waypoint config; junk frames close the session', async (t) => {
  const h = await harness(t);
  h.push.update(tables([]));
  h.push.flush();
  const ws = new WebSocket(h.url, { headers: { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'n0' } });
  await once(ws, 'open');
  const closed = once(ws, 'close');
  ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: 'type.googleapis.com/ambit.v1.WaypointConfig', responseNonce: '', initialResourceVersions: {}, subscribe: ['*'], unsubscribe: [] } }));
  const [code, reason] = await closed as [number, Buffer];
  t.is(code, 1008);
  t.regex(reason.toString(), /type not allowed/);
  const ws2 = new WebSocket(h.url, { headers: { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'n0' } });
  await once(ws2, 'open');
  const closed2 = once(ws2, 'close');
  ws2.send(Buffer.from([0x0a, 0xff, 0x01]));
  const [code2] = await closed2 as [number];
  t.is(code2, 1002);
});

test('a waypoint receives L7 config alongside addresses and policies', async (t) => {
  const h = await harness(t);
  const l7 = new Map([['ns/s.ns.svc.cluster.local', { service: 'ns/s.ns.svc.cluster.local', http: [], grpc: [] }]]);
  h.push.update(buildResourceTables(Snapshot.build({ workloads: [wl(1)], services: [svc], authorizations: [pol] }), l7).tables);
  h.push.flush();
  const c = h.client({ role: 'waypoint' });
  const gotL7 = once(c, 'l7');
  c.start();
  await c.ready;
  const [m] = await gotL7 as [ReadonlyMap<string, unknown>];
  t.deepEqual(m.get('ns/s.ns.svc.cluster.local'), l7.get('ns/s.ns.svc.cluster.local'));
  t.is(c.snapshot.counts.workloads, 1);
  t.is(h.push.syncz()[0]!.types.length, 3);
});
