/**
 * HBONE client pool and server over real TLS 1.3 + HTTP/2 on loopback, certificates from the
 * real CA. Tunnel behaviour and pooling.
 */
import test from 'ava';
import { isMeshError } from '../../src/core/index.js';
import { HboneStatusError } from '../../src/hbone/index.js';
import { closed, nextData, readAll, rig, until } from '../unit/hbone/harness.js';

test('CONNECT round trip: data both ways, half-close in each direction, bytes counted', async (t) => {
  const r = await rig(t);
  const s = await r.pool.open({
    source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}`,
    headers: { baggage: 'k8s.namespace.name=ns-a', forwarded: 'for="10.0.0.1:1234"' },
  });
  t.deepEqual(s.peer, r.serverId);
  s.write('hello');
  t.is(await nextData(s), 'echo:hello');
  const rest = readAll(s);
  // Client FIN: the upstream sees it and can still answer ("bye"), then ends its side.
  s.end();
  t.is(await rest, 'bye');
  await closed(s);
  t.is(r.echo.fins, 1);
  t.is(r.requests.length, 1);
  const req = r.requests[0]!;
  t.deepEqual(req.peer, r.client.identity);
  t.deepEqual(req.target, { address: '127.0.0.1', port: r.echo.port });
  t.is(req.headers.baggage, 'k8s.namespace.name=ns-a');
  t.is(req.localAddress, '127.0.0.1');
  // The tunnel record closes after both directions finished.
  await until(() => r.closes.length > 0);
  t.like(r.closes[0], { bytesIn: 5, bytesOut: 'echo:hello'.length + 3 });
  t.is(r.closes[0]!.error, undefined);
});

test('upstream FIN first: client sees end of stream and can keep sending', async (t) => {
  const { createServer } = await import('node:net');
  const { connectUpstream } = await import('../unit/hbone/harness.js');
  // An upstream that says "hi", closes its sending side at once, and reports what it received.
  let received!: (s: string) => void;
  const upstreamGot = new Promise<string>((res) => { received = res; });
  const app = createServer({ allowHalfOpen: true }, (c) => {
    let got = '';
    c.end('hi');
    c.on('data', (d: Buffer) => { got += d.toString(); });
    c.on('end', () => received(got));
  });
  await new Promise<void>((res) => app.listen(0, '127.0.0.1', res));
  t.teardown(() => { app.close(); });
  const appPort = (app.address() as { port: number }).port;
  const r = await rig(t, { onConnect: async () => ({ status: 200, upstream: await connectUpstream(appPort) }) });
  const s = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${appPort}` });
  t.is(await readAll(s), 'hi');
  s.end('after-fin');
  t.is(await upstreamGot, 'after-fin');
});

test('many concurrent streams share one TLS connection (one dial for concurrent opens)', async (t) => {
  const r = await rig(t);
  const streams = await Promise.all(Array.from({ length: 10 }, () => r.pool.open({
    source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}`,
  })));
  t.is(r.dialled.length, 1);
  t.is(r.server.stats().handshakes, 1);
  t.like(r.pool.stats(), { connections: 1, streams: 10, keys: 1 });
  const answers = await Promise.all(streams.map(async (s, i) => { s.write(`m${i}`); return nextData(s); }));
  t.deepEqual(answers, streams.map((_, i) => `echo:m${i}`));
  for (const s of streams) s.destroy();
  await Promise.all(streams.map(closed));
});

test('a connection that served maxStreamsPerConnection streams is replaced', async (t) => {
  const r = await rig(t, { pool: { maxStreamsPerConnection: 3 } });
  const open = () => r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  const first = await Promise.all([open(), open(), open()]);
  t.is(r.dialled.length, 1);
  const fourth = await open();
  t.is(r.dialled.length, 2);
  t.is(r.server.stats().handshakes, 2);
  // The exhausted connection closes once its streams are done.
  for (const s of first) s.end();
  await Promise.all(first.map((s) => readAll(s)));
  await closed(r.dialled[0]!);
  await until(() => r.pool.stats().connections === 1);
  t.like(r.pool.stats(), { connections: 1, streams: 1 });
  fourth.write('x');
  t.is(await nextData(fourth), 'echo:x');
  fourth.destroy();
});

test('sequential streams over the limit: stream 4 of limit 3 opens a second connection', async (t) => {
  const r = await rig(t, { pool: { maxStreamsPerConnection: 3 } });
  for (let i = 0; i < 4; i++) {
    const s = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
    s.end();
    await readAll(s);
  }
  t.is(r.dialled.length, 2);
  t.is(r.server.stats().handshakes, 2);
});

test('idle connections are released', async (t) => {
  const r = await rig(t, { pool: { idleTimeoutMs: 50 } });
  const s = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  s.end();
  await readAll(s);
  await closed(r.dialled[0]!);
  await until(() => r.pool.stats().keys === 0);
  t.like(r.pool.stats(), { connections: 0, keys: 0 });
  const again = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  t.is(r.dialled.length, 2);
  again.destroy();
});

test('a stream keeps the connection from idling out', async (t) => {
  const r = await rig(t, { pool: { idleTimeoutMs: 20 } });
  const a = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  const b = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  b.end();
  await readAll(b);
  // Several idle periods later, `a` still works because the connection is in use.
  for (let i = 0; i < 3; i++) {
    a.write(`p${i}`);
    t.is(await nextData(a), `echo:p${i}`);
    await new Promise<void>((res) => setTimeout(res, 25));
  }
  t.is(r.pool.stats().connections, 1);
  a.destroy();
});

test('GOAWAY from the server: old stream completes, next open uses a new connection', async (t) => {
  const r = await rig(t);
  const old = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  r.server.drainSessions();
  const fresh = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  t.is(r.dialled.length, 2);
  t.is(r.server.stats().handshakes, 2);
  old.write('still-here');
  t.is(await nextData(old), 'echo:still-here');
  const rest = readAll(old);
  old.end();
  t.is(await rest, 'bye');
  // The drained connection goes away once its last stream is done.
  await closed(r.dialled[0]!);
  fresh.write('new');
  t.is(await nextData(fresh), 'echo:new');
  fresh.destroy();
});

test('onConnect refusals reach the client as HboneStatusError with the status', async (t) => {
  const r = await rig(t, {
    onConnect: async (req) => {
      if (req.target.port === 1) return { status: 401, reason: 'policy denied' };
      if (req.target.port === 2) return { status: 403, reason: 'forbidden' };
      if (req.target.port === 3) throw new Error('bug in the caller');
      return { status: 200, upstream: undefined as unknown as import('node:stream').Duplex };
    },
  });
  const open = (authority: string) => r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority });
  const e401 = await t.throwsAsync(open('127.0.0.1:1'));
  t.true(isMeshError(e401, 'AMBIT_HBONE_STATUS'));
  t.is((e401 as HboneStatusError).status, 401);
  t.is(((await t.throwsAsync(open('127.0.0.1:2'))) as HboneStatusError).status, 403);
  // A throwing or malformed decision fails closed.
  t.is(((await t.throwsAsync(open('127.0.0.1:3'))) as HboneStatusError).status, 503);
  t.is(((await t.throwsAsync(open('127.0.0.1:4'))) as HboneStatusError).status, 503);
  // The connection survives refusals.
  t.is(r.dialled.length, 1);
});

test('upstream refused: 503', async (t) => {
  const { connectUpstream } = await import('../unit/hbone/harness.js');
  // Port 1 (tcpmux) is privileged and served by nothing here; a just-freed ephemeral port could be
  // taken by a parallel test between close and connect.
  const deadPort = 1;
  const r = await rig(t, {
    onConnect: async (req) => {
      try {
        return { status: 200, upstream: await connectUpstream(req.target.port) };
      } catch (e) {
        return { status: 503, reason: String(e) };
      }
    },
  });
  const e = await t.throwsAsync(r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${deadPort}` }));
  t.is((e as HboneStatusError).status, 503);
});

test('malformed authority is refused by the pool before anything is sent', async (t) => {
  const r = await rig(t);
  for (const authority of ['no-port', '127.0.0.1:0', '127.0.0.1:65536', '::1:80', '[fe80::1%eth0]:80', '127.0.0.1:+80', '-bad.example:80', 'a b:80', `${'a'.repeat(300)}:80`]) {
    const e = await t.throwsAsync(r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority }));
    t.true(isMeshError(e, 'AMBIT_HBONE_BAD_REQUEST'), authority);
  }
  t.is(r.dialled.length, 0);
});

test('server connections(): a tunnel closed by the server ends the client stream and reports the reason', async (t) => {
  const r = await rig(t);
  const s = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  s.write('x');
  await nextData(s);
  const live = [...r.server.connections()];
  t.is(live.length, 1);
  t.deepEqual(live[0]!.peer, r.client.identity);
  t.is(live[0]!.bytesIn, 1);
  live[0]!.close('policy changed');
  await closed(s);
  t.true(s.rstCode !== undefined && s.rstCode !== 0);
  await until(() => r.closes.length > 0);
  t.is(r.closes[0]!.error, 'policy changed');
  t.is([...r.server.connections()].length, 0);
});

test('server close: waits for open tunnels, refuses new ones, forces after the deadline', async (t) => {
  const r = await rig(t);
  const s = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  let finished = false;
  const closing = r.server.close(60_000).then(() => { finished = true; });
  s.write('during-drain');
  t.is(await nextData(s), 'echo:during-drain');
  t.false(finished);
  const rest = readAll(s);
  s.end();
  t.is(await rest, 'bye');
  await closing;
  const e = await t.throwsAsync(r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` }));
  t.true(isMeshError(e));

  const r2 = await rig(t);
  const hung = await r2.pool.open({ source: r2.client, expectedIdentities: [r2.serverId], address: r2.address, authority: `127.0.0.1:${r2.echo.port}` });
  await r2.server.close(20);
  await closed(hung);
  t.is(r2.server.stats().sessions, 0);
});

test('connect timeout names the likely cause', async (t) => {
  const r = await rig(t, { pool: { connectTimeoutMs: 50 } });
  const e = await t.throwsAsync(r.pool.open({
    source: r.client, expectedIdentities: [r.serverId], address: { address: '10.255.255.1', port: 15008 }, authority: '10.255.255.1:80',
    connect: () => new Promise(() => {}),
  }));
  t.true(isMeshError(e, 'AMBIT_CONNECT_TIMEOUT'));
  t.regex(e!.message, /NetworkPolicy.*15008/);
  t.like(r.pool.stats(), { connections: 0, keys: 0 });
});

test('connection refused is AMBIT_CONNECT_REFUSED and concurrent opens share the failure', async (t) => {
  const r = await rig(t);
  let calls = 0;
  const connect = () => { calls++; return Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })); };
  const results = await Promise.allSettled([1, 2, 3].map(() => r.pool.open({
    source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: '127.0.0.1:80', connect,
  })));
  t.is(calls, 1);
  for (const x of results) t.true(x.status === 'rejected' && isMeshError(x.reason, 'AMBIT_CONNECT_REFUSED'));
});

test('pool keys: different source identity or connector key means a different connection', async (t) => {
  const r = await rig(t);
  const other = await r.pki.issue(r.pki.id('ns-c', 'other'));
  const base = { expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` };
  const a = await r.pool.open({ ...base, source: r.client });
  const b = await r.pool.open({ ...base, source: () => other });
  const c = await r.pool.open({ ...base, source: r.client, sourceKey: '10.0.0.9' });
  const d = await r.pool.open({ ...base, source: r.client, sourceKey: '10.0.0.9' });
  t.is(r.dialled.length, 3);
  t.is(r.pool.stats().keys, 3);
  t.deepEqual(r.requests.map((q) => q.peer.serviceAccount), ['client', 'other', 'client', 'client']);
  for (const s of [a, b, c, d]) s.destroy();
});

test('pool close: GOAWAY, later opens fail with AMBIT_DRAINING', async (t) => {
  const r = await rig(t);
  const s = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  s.end();
  await readAll(s);
  await r.pool.close();
  await closed(r.dialled[0]!);
  const e = await t.throwsAsync(r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` }));
  t.true(isMeshError(e, 'AMBIT_DRAINING'));
});

test("the peer's SETTINGS_MAX_CONCURRENT_STREAMS caps streams per connection", async (t) => {
  const r = await rig(t, { server: { maxConcurrentStreams: 2 } });
  const open = () => r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: r.address, authority: `127.0.0.1:${r.echo.port}` });
  const streams = await Promise.all([open(), open(), open(), open(), open()]);
  t.is(r.dialled.length, 3);
  t.like(r.pool.stats(), { connections: 3, streams: 5 });
  const answers = await Promise.all(streams.map(async (s, i) => { s.write(`c${i}`); return nextData(s); }));
  t.deepEqual(answers, streams.map((_, i) => `echo:c${i}`));
  for (const s of streams) s.destroy();
});

test('a peer that stops answering PINGs is dropped', async (t) => {
  const { createServer: tlsServer } = await import('node:tls');
  const { pkiOnce } = await import('../unit/hbone/harness.js');
  const { client, server } = await pkiOnce();
  // Completes TLS and sends its HTTP/2 SETTINGS, then goes silent: no SETTINGS ack, no PING ack.
  const silent = tlsServer({
    key: server.keyPem, cert: server.chainPem.join('\n'), ca: server.rootsPem, requestCert: true, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3',
  }, (s) => {
    s.on('error', () => {});
    s.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]));
    s.resume();
  });
  await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
  t.teardown(() => { silent.close(); });
  const r = await rig(t, { pool: { pingIntervalMs: 20, pingTimeoutMs: 50, connectTimeoutMs: 30_000 } });
  const e = await t.throwsAsync(r.pool.open({
    source: client, expectedIdentities: [server.identity], address: { address: '127.0.0.1', port: (silent.address() as { port: number }).port }, authority: '127.0.0.1:80',
  }));
  t.true(isMeshError(e, 'AMBIT_CONNECT_REFUSED'), String(e));
  await closed(r.dialled[0]!);
  await until(() => r.pool.stats().connections === 0);
});

test('handle(): sockets accepted elsewhere are served like listened ones', async (t) => {
  const { createServer } = await import('node:net');
  const r = await rig(t);
  const outer = createServer((sock) => r.server.handle(sock));
  await new Promise<void>((res) => outer.listen(0, '127.0.0.1', res));
  t.teardown(() => { outer.close(); });
  const port = (outer.address() as { port: number }).port;
  const s = await r.pool.open({ source: r.client, expectedIdentities: [r.serverId], address: { address: '127.0.0.1', port }, authority: `127.0.0.1:${r.echo.port}` });
  s.write('via-handle');
  t.is(await nextData(s), 'echo:via-handle');
  t.is(r.requests[0]!.localPort, port);
  s.destroy();
});
