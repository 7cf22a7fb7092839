import test from 'ava';
import { encodeReply, encodeRequest, MAX_MESSAGE, parseReply, parseRequest } from '../../../src/node-agent/enrol/cni-protocol.js';

test('ADD and DEL round-trip', (t) => {
  t.deepEqual(parseRequest(encodeRequest({ op: 'ADD', name: 'web-1', namespace: 'shop', uid: 'abc-123', ip: '10.244.1.5' })),
    { op: 'ADD', name: 'web-1', namespace: 'shop', uid: 'abc-123', ip: '10.244.1.5' });
  t.deepEqual(parseRequest(encodeRequest({ op: 'DEL', name: 'web-1', namespace: 'shop' })), { op: 'DEL', name: 'web-1', namespace: 'shop' });
});

test('bad requests name the field', (t) => {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o) + '\n');
  t.throws(() => parseRequest(enc({ v: 1, op: 'ADD', namespace: 'x' })), { message: /name: must be a string/ });
  t.throws(() => parseRequest(enc({ v: 1, op: 'ADD', name: 'Bad_Name', namespace: 'x' })), { message: /name: invalid value/ });
  t.throws(() => parseRequest(enc({ v: 1, op: 'RUN', name: 'a', namespace: 'x' })), { message: /op: must be ADD or DEL/ });
  t.throws(() => parseRequest(enc({ v: 2, op: 'ADD', name: 'a', namespace: 'x' })), { message: /v: unsupported protocol version/ });
  t.throws(() => parseRequest(enc({ v: 1, op: 'ADD', name: 'a', namespace: 'x', ip: '1.2.3.4; rm' })), { message: /ip: invalid value/ });
  t.throws(() => parseRequest(Buffer.from('{"v":1')), { message: /incomplete/ });
  t.throws(() => parseRequest(Buffer.from('nope\n')), { message: /not JSON/ });
  t.throws(() => parseRequest(Buffer.alloc(MAX_MESSAGE + 1, 0x20)), { message: /too large/ });
});

test('replies carry the error text, bounded', (t) => {
  t.deepEqual(parseReply(encodeReply({ ok: true })), { ok: true });
  const r = parseReply(encodeReply({ ok: false, error: 'x'.repeat(5000) }));
  t.false(r.ok);
  t.is(r.error?.length, 1024);
});
