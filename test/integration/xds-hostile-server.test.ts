/**
 * The XdsClient facing a hostile or broken control plane: whatever arrives, the client closes or
 * NACKs, reports an error event and reconnects; it never throws out of a socket callback.
 */
import test from 'ava';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import type WebSocket from 'ws';
import { ADDRESS_TYPE, XdsClient } from '../../src/xds/index.js';
import { decodeControlMessage, encodeControlMessage } from '../../src/xds/codec.js';

interface Fake { url: string; conns: AsyncIterableIterator<[WebSocket]> }

async function fakeServer(t: import('ava').ExecutionContext): Promise<Fake> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const conns = (async function* () {
    for (;;) yield await once(wss, 'connection') as [WebSocket];
  })();
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });
  return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, conns };
}

function client(t: import('ava').ExecutionContext, url: string, o: { maxMessageBytes?: number } = {}): { c: XdsClient; errors: Error[] } {
  const c = new XdsClient({ url, token: 'hostile-test-token-0123456789', node: 'n0', role: 'agent', backoff: { initialMs: 5, maxMs: 20 }, ...o });
  const errors: Error[] = [];
  c.on('error', (e) => errors.push(e));
  t.teardown(() => c.close());
  return { c, errors };
}

/** Frames from the client, in order; a queue so that two frames in one TCP read are not missed. */
const inboxes = new WeakMap<WebSocket, { frames: Buffer[]; wake?: () => void }>();
async function next(ws: WebSocket): Promise<Buffer> {
  let box = inboxes.get(ws);
  if (!box) {
    const b: { frames: Buffer[]; wake?: () => void } = { frames: [] };
    ws.on('message', (data: Buffer) => { b.frames.push(data); b.wake?.(); });
    inboxes.set(ws, (box = b));
  }
  const b = box;
  while (b.frames.length === 0) await new Promise<void>((resolve) => { b.wake = resolve; });
  return b.frames.shift()!;
}

test('a response for a type URL of multi-byte characters closes the channel; the client reconnects', async (t) => {
  const s = await fakeServer(t);
  const { c } = client(t, s.url);
  c.start();
  const [ws] = (await s.conns.next()).value!;
  await next(ws);
  const closed = once(ws, 'close');
  ws.send(encodeControlMessage({ kind: 'deltaResponse', deltaResponse: { typeUrl: 'é'.repeat(200), systemVersionInfo: '1', nonce: 'x', resources: [], removedResources: [] } }));
  const [code, reason] = await closed as [number, Buffer];
  t.is(code, 1002);
  t.true(reason.length <= 123);
  const [again] = (await s.conns.next()).value!;
  t.truthy(again);
});

for (const [title, frame, code] of [
  ['garbage bytes', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), 1002],
  ['an empty envelope', Buffer.alloc(0), 1002],
  ['a text frame', 'hello', 1003],
  ['a certificate request (a client message)', Buffer.from(encodeControlMessage({ kind: 'certificateRequest', certificateRequest: { requestId: 1, csrPem: 'x', identity: 'y', ttlSeconds: 1 } })), 1002],
] as const) {
  test(`${title} from the server closes the channel with ${code} and the client reconnects`, async (t) => {
    const s = await fakeServer(t);
    const { c } = client(t, s.url);
    c.start();
    const [ws] = (await s.conns.next()).value!;
    await next(ws);
    const closed = once(ws, 'close');
    ws.send(frame);
    const [got] = await closed as [number];
    t.is(got, code);
    const [again] = (await s.conns.next()).value!;
    t.truthy(again);
  });
}

test('a frame over maxMessageBytes closes the channel (1009) instead of being buffered', async (t) => {
  const s = await fakeServer(t);
  const { c } = client(t, s.url, { maxMessageBytes: 1024 });
  c.start();
  const [ws] = (await s.conns.next()).value!;
  await next(ws);
  const closed = once(ws, 'close');
  ws.send(Buffer.alloc(4096));
  const [code] = await closed as [number];
  t.is(code, 1009);
});

test('bad resources are NACKed by name, the good ones applied, and no payload shape throws', async (t) => {
  const s = await fakeServer(t);
  const { c } = client(t, s.url);
  c.start();
  const [ws] = (await s.conns.next()).value!;
  const sub = decodeControlMessage(await next(ws));
  t.is(sub.kind, 'deltaRequest');
  await next(ws); // the Authorization subscription
  const junk = [
    Buffer.from([0xff, 0xff, 0xff]), Buffer.alloc(0), Buffer.from([0x0a, 0x02, 0x0a, 0x00]),
    // a workload with a 3-byte address and an out-of-range enum
    Buffer.from([0x0a, 0x0b, 0x0a, 0x01, 0x75, 0x32, 0x03, 1, 2, 3, 0x60, 0x7f]),
  ];
  const resources = junk.map((payload, i) => ({ name: `junk${i}`, version: '1', payload }));
  ws.send(encodeControlMessage({ kind: 'deltaResponse', deltaResponse: { typeUrl: ADDRESS_TYPE, systemVersionInfo: '1', nonce: 'n1', resources, removedResources: ['never-held'] } }));
  const ack = decodeControlMessage(await next(ws));
  if (ack.kind !== 'deltaRequest') { t.fail(ack.kind); return; }
  t.is(ack.deltaRequest.responseNonce, 'n1');
  t.deepEqual(ack.deltaRequest.errorDetail?.resources.map((r) => r.name), ['junk0', 'junk1', 'junk2', 'junk3']);
  t.is(c.snapshot.counts.workloads, 0);
  t.true(c.connected);
});
