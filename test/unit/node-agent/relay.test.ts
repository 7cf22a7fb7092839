import test from 'ava';
import { once } from 'node:events';
import { createServer, connect, type Socket, type AddressInfo } from 'node:net';
import { coalesceWrites, relay } from '../../../src/node-agent/proxy/relay.js';

/** A loopback TCP pair: [client end, server end]. */
async function pair(t: import('ava').ExecutionContext): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const [s] = (await once(server, 'connection')) as [Socket];
  t.teardown(() => { c.destroy(); s.destroy(); server.close(); });
  return [c, s];
}

test('copies both ways, passes half-close, counts bytes on the app side', async (t) => {
  const [app, appProxySide] = await pair(t);
  const [upProxySide, upstream] = await pair(t);
  const r = relay(appProxySide, upProxySide);
  // upstream echoes, then ends after the client half-closed
  let got = '';
  upstream.on('data', (d: Buffer) => { got += d.toString(); });
  upstream.on('end', () => { upstream.end(`echo:${got}`); });
  app.end('hello');
  let reply = '';
  app.on('data', (d: Buffer) => { reply += d.toString(); });
  await once(app, 'end');
  t.is(reply, 'echo:hello');
  const res = await r.done;
  t.is(res.fromApp, 5);
  t.is(res.toApp, 10);
  t.is(res.error, undefined);
});

test('destroy tears both sides down and reports the reason', async (t) => {
  const [app, appProxySide] = await pair(t);
  const [, upProxySide] = await pair(t);
  app.on('error', () => undefined);
  const r = relay(appProxySide, upProxySide);
  r.destroy('connection closed due to policy change');
  const res = await r.done;
  t.is(res.error, 'connection closed due to policy change');
  t.true(upProxySide.destroyed);
});

test('bulk writes made in one loop turn leave as one writev; small writes go out at once', async (t) => {
  const [, sink] = await pair(t);
  const batches: number[] = [];
  const origWritev = sink._writev?.bind(sink);
  const origWrite = sink._write.bind(sink);
  sink._writev = (chunks, cb) => { batches.push(chunks.length); origWritev!(chunks, cb); };
  sink._write = (chunk: Buffer, enc, cb) => { batches.push(1); origWrite(chunk, enc, cb); };
  coalesceWrites(sink);
  sink.write(Buffer.alloc(10));
  t.deepEqual(batches, [1], 'a small write is not held back');
  batches.length = 0;
  for (let i = 0; i < 4; i++) sink.write(Buffer.alloc(8192));
  t.deepEqual(batches, [], 'bulk writes wait for the end of the turn');
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(batches, [4]);
});
