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
