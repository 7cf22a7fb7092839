/**
 * A hostile or buggy peer on the control channel: whatever it sends, the control plane answers with
 * a refusal or a close and keeps serving everyone else.
 */
import test from 'ava';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import { Snapshot } from '../../src/model/index.js';
import { ADDRESS_TYPE, buildResourceTables } from '../../src/xds/index.js';
import { encodeControlMessage } from '../../src/xds/codec.js';
import { BootstrapTokenAuthenticator, PushServer } from '../../src/control/push/index.js';
import type { PushServerOptions } from '../../src/control/push/index.js';

const TOKEN = 'test-bootstrap-token-0123456789';
const HEADERS = { authorization: `Bearer ${TOKEN}`, 'x-ambit-node': 'n0' };

async function harness(t: import('ava').ExecutionContext, o: Partial<PushServerOptions> = {}): Promise<{ url: string; push: PushServer; server: Server }> {
  const auth = new BootstrapTokenAuthenticator({ token: TOKEN, trustDomain: 'cluster.local' });
  const push = new PushServer({ authenticator: auth, debounceMs: 1, ...o });
  const server = createServer((_req, res) => { res.statusCode = 404; res.end(); });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => push.handleUpgrade(req, socket, head));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    await push.close();
    server.closeAllConnections();
    server.close();
  });
  push.update(buildResourceTables(Snapshot.build({ workloads: [], services: [], authorizations: [] })).tables);
  push.flush();
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`, push, server };
}

async function open(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers: HEADERS });
  await once(ws, 'open');
  return ws;
}

/** The server still accepts and answers a well-behaved subscription. */
async function stillServes(t: import('ava').ExecutionContext, url: string): Promise<void> {
  const ws = await open(url);
  const got = once(ws, 'message');
  ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: ADDRESS_TYPE, responseNonce: '', initialResourceVersions: {}, subscribe: ['*'], unsubscribe: [] } }));
  await got;
  ws.close();
  t.pass();
}

test('a type URL of multi-byte characters gets a close frame whose reason fits, not a crash', async (t) => {
  const h = await harness(t);
  const ws = await open(h.url);
  const closed = once(ws, 'close');
  ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: 'é'.repeat(200), responseNonce: '', initialResourceVersions: {}, subscribe: ['*'], unsubscribe: [] } }));
  const [code, reason] = await closed as [number, Buffer];
  t.is(code, 1008);
  t.true(reason.length <= 123);
  t.regex(reason.toString(), /type not allowed/);
  await stillServes(t, h.url);
});

for (const [title, frame, code] of [
  ['garbage bytes', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), 1002],
  ['a text frame', 'hello', 1003],
  ['a delta response (a server message)', Buffer.from(encodeControlMessage({ kind: 'deltaResponse', deltaResponse: { typeUrl: ADDRESS_TYPE, systemVersionInfo: '1', nonce: 'n', resources: [], removedResources: [] } })), 1002],
  ['an ACK before any subscription', Buffer.from(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: ADDRESS_TYPE, responseNonce: 'n1', initialResourceVersions: {}, subscribe: [], unsubscribe: [] } })), 1002],
] as const) {
  test(`${title} from a peer closes its session with ${code}; others are still served`, async (t) => {
    const h = await harness(t);
    const ws = await open(h.url);
    const closed = once(ws, 'close');
    ws.send(frame);
    const [got] = await closed as [number];
    t.is(got, code);
    await stillServes(t, h.url);
  });
}

test('a frame over maxPayload is refused with 1009 before it is buffered', async (t) => {
  const h = await harness(t, { maxPayload: 4096 });
  const ws = await open(h.url);
  const closed = once(ws, 'close');
  ws.send(Buffer.alloc(64 * 1024));
  const [code] = await closed as [number];
  t.is(code, 1009);
  await stillServes(t, h.url);
});

test('a flood of ACKs with unknown nonces is ignored without closing or growing anything', async (t) => {
  const h = await harness(t);
  const ws = await open(h.url);
  const first = once(ws, 'message');
  ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: ADDRESS_TYPE, responseNonce: '', initialResourceVersions: {}, subscribe: ['*'], unsubscribe: [] } }));
  await first;
  for (let i = 0; i < 2000; i++) {
    ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: ADDRESS_TYPE, responseNonce: `bogus-${i}`, initialResourceVersions: {}, subscribe: [], unsubscribe: [] } }));
  }
  // a round trip through the same socket: the server has handled every frame before this answer
  const answered = once(ws, 'message');
  ws.send(encodeControlMessage({ kind: 'certificateRequest', certificateRequest: { requestId: 1, csrPem: 'x', identity: 'y', ttlSeconds: 0 } }));
  await answered;
  t.is(ws.readyState, ws.OPEN);
  const [peer] = h.push.syncz();
  t.is(peer!.types[0]!.pendingResponses, 1);
  t.deepEqual(peer!.types[0]!.rejected, []);
  ws.close();
});

test('a reconnect storm beyond maxConnections gets 503s, and the slots come back when peers leave', async (t) => {
  const h = await harness(t, { maxConnections: 5 });
  const peers = await Promise.all(Array.from({ length: 5 }, () => open(h.url)));
  const extra = new WebSocket(h.url, { headers: HEADERS });
  extra.on('error', () => {});
  const [, res] = await once(extra, 'unexpected-response') as [unknown, IncomingMessage];
  t.is(res.statusCode, 503);
  res.resume();
  extra.terminate();
  await Promise.all(peers.map(async (p) => { const c = once(p, 'close'); p.close(); await c; }));
  while (h.push.peerCount > 0) await once(h.push, 'disconnected');
  await stillServes(t, h.url);
});

test('an authenticator that never answers (a stalled TokenReview) times out with 503 and frees its slot', async (t) => {
  const good = new BootstrapTokenAuthenticator({ token: TOKEN, trustDomain: 'cluster.local' });
  let stall = true;
  const h = await harness(t, {
    authTimeoutMs: 50,
    authenticator: { authenticate: (req) => (stall ? new Promise(() => {}) : good.authenticate(req)) },
  });
  const ws = new WebSocket(h.url, { headers: HEADERS });
  ws.on('error', () => {});
  const [, res] = await once(ws, 'unexpected-response') as [unknown, IncomingMessage];
  t.is(res.statusCode, 503);
  t.regex(await new Promise<string>((resolve) => { let b = ''; res.on('data', (c: Buffer) => { b += c.toString(); }); res.on('end', () => resolve(b)); }), /timed out/);
  ws.terminate();
  stall = false;
  await stillServes(t, h.url);
});
