/**
 * boundedRequest (src/core): the answer read whole whatever its status; a longer answer than
 * maxBytes, an answer that stalls, and a refused connection each fail with their own MeshError
 * code (the Kubernetes callers, `ambit install` and the control plane's kube source, rely on them).
 */
import test from 'ava';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { boundedRequest, isMeshError } from '../../src/core/index.js';

async function serve(t: { teardown(fn: () => void): void }, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<URL> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => { server.closeAllConnections(); server.close(); });
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/apis/x`);
}

test('answers with status and body, whatever the status; sends method, headers and body', async (t) => {
  let seen = '';
  const url = await serve(t, (req, res) => {
    let b = '';
    req.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => {
      seen = `${req.method} ${req.url} ${req.headers['content-type']} ${b}`;
      res.writeHead(409, { 'content-type': 'application/json' }).end('{"message":"conflict"}');
    });
  });
  const a = await boundedRequest(url, { request: { method: 'PATCH', headers: { 'content-type': 'application/apply-patch+yaml' } }, body: '{"a":1}', maxBytes: 1024, timeoutMs: 5_000 });
  t.deepEqual(a, { status: 409, body: '{"message":"conflict"}' });
  t.is(seen, 'PATCH /apis/x application/apply-patch+yaml {"a":1}');
});

test('an answer longer than maxBytes is refused with AMBIT_LIMIT', async (t) => {
  const url = await serve(t, (_req, res) => { res.writeHead(200); res.write(Buffer.alloc(600)); res.end(Buffer.alloc(600)); });
  const e = await t.throwsAsync(boundedRequest(url, { request: { method: 'GET' }, maxBytes: 1000, timeoutMs: 5_000, what: 'list /apis/x' }));
  t.true(isMeshError(e) && e.code === 'AMBIT_LIMIT', String(e));
  t.is(e?.message, 'list /apis/x: response exceeds 1000 bytes');
});

test('an answer that stalls fails with AMBIT_CONNECT_TIMEOUT', async (t) => {
  // headers, then nothing: the timeout is on socket inactivity
  const url = await serve(t, (_req, res) => { res.writeHead(200); res.write('{'); });
  const e = await t.throwsAsync(boundedRequest(url, { request: { method: 'GET' }, maxBytes: 1000, timeoutMs: 200 }));
  t.true(isMeshError(e) && e.code === 'AMBIT_CONNECT_TIMEOUT', String(e));
  t.regex(e?.message ?? '', /^GET http:\/\/127\.0\.0\.1:\d+\/apis\/x: no answer within 200 ms$/);
});

test('a refused connection fails with AMBIT_CONNECT_REFUSED, the cause kept', async (t) => {
  const url = await serve(t, () => {});
  const closed = new URL(url);
  // a port just released by a server of ours: nothing listens there
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  closed.port = String((s.address() as AddressInfo).port);
  s.close();
  await once(s, 'close');
  const e = await t.throwsAsync(boundedRequest(closed, { request: { method: 'GET' }, maxBytes: 1000, timeoutMs: 5_000 }));
  t.true(isMeshError(e) && e.code === 'AMBIT_CONNECT_REFUSED', String(e));
  t.regex(e?.message ?? '', /ECONNREFUSED/);
});
