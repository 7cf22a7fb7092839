/**
 * The agent's CNI socket under load: every connection is closed once its request is answered (a
 * finished ADD's connection once stayed open for good and the 65th pod of a node could not be
 * handed over), and a connection past the limit gets a refusal that names it instead of a silent
 * close. Real unix sockets and the addon's fd passing.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../../src/native/index.js';
import { sendCniRequest } from '../../src/node-agent/index.js';
import { CniServer, type CniHandlers } from '../../src/node-agent/enrol/cni-server.js';

async function serve(t: import('ava').ExecutionContext, handlers: CniHandlers, maxConnections?: number): Promise<{ server: CniServer; path: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-cni-'));
  const path = join(dir, 'agent.sock');
  const server = new CniServer({ native, path, handlers, ...(maxConnections !== undefined ? { maxConnections } : {}) });
  await server.listen();
  t.teardown(async () => { await server.close(); rmSync(dir, { recursive: true, force: true }); });
  return { server, path };
}

test('every answered request\'s connection is closed: 300 requests in a row all answered, none left open', async (t) => {
  let dels = 0;
  const { server, path } = await serve(t, { add: () => Promise.resolve(), del: () => { dels++; return Promise.resolve(); } });
  for (let i = 0; i < 300; i++) await sendCniRequest({ native, path }, { op: 'DEL', name: `pod-${i}`, namespace: 'default' });
  t.is(dels, 300);
  // the server closes a connection as soon as its answer is flushed; the client saw the answer
  // first, so wait for the server's side of the last one to go
  while (server.activeConnections > 0) await new Promise((r) => setImmediate(r));
  t.is(server.activeConnections, 0);
});

test('a connection past the limit is refused with a reason, and the ones in progress finish', async (t) => {
  const release: Array<() => void> = [];
  let entered!: () => void;
  const bothIn = new Promise<void>((r) => { entered = r; });
  const { path } = await serve(t, {
    add: () => Promise.resolve(),
    del: () => new Promise<void>((resolve) => { release.push(resolve); if (release.length === 2) entered(); }),
  }, 2);
  const first = sendCniRequest({ native, path }, { op: 'DEL', name: 'a', namespace: 'default' });
  const second = sendCniRequest({ native, path }, { op: 'DEL', name: 'b', namespace: 'default' });
  await bothIn;
  await t.throwsAsync(sendCniRequest({ native, path }, { op: 'DEL', name: 'c', namespace: 'default' }), { message: /agent busy: 2 CNI requests in progress/ });
  for (const r of release) r();
  await t.notThrowsAsync(Promise.all([first, second]));
  // and once they are done there is room again
  release.length = 0;
  const again = sendCniRequest({ native, path }, { op: 'DEL', name: 'd', namespace: 'default' });
  while (release.length === 0) await new Promise((r) => setImmediate(r));
  release[0]!();
  await t.notThrowsAsync(again);
});
