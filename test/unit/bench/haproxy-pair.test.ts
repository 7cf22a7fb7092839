/** bench/l4/haproxy-pair.ts: the configuration of each side of the haproxy mTLS pair. */
import test from 'ava';
import { haproxyPairConfig } from '../../../bench/l4/haproxy-pair.js';

const files = { combined: '/d/side-combined.pem', ca: '/d/roots.pem' };
const services = [{ name: 'echo', accept: '127.0.0.1:47000', connect: '10.0.0.2:57000' }, { name: 'http', accept: '127.0.0.1:48080', connect: '10.0.0.2:58080' }];

test('client side: plaintext bind, TLS 1.3 with a required, verified server certificate on the server line', (t) => {
  const lines = haproxyPairConfig({ client: true, files, services }).split('\n').map((l) => l.trim());
  t.true(lines.includes('mode tcp'));
  t.true(lines.includes('ssl-default-server-options ssl-min-ver TLSv1.3'));
  t.true(lines.includes('bind 127.0.0.1:47000'));
  t.true(lines.includes('server echo 10.0.0.2:57000 ssl crt /d/side-combined.pem ca-file /d/roots.pem verify required'));
  t.true(lines.includes('server http 10.0.0.2:58080 ssl crt /d/side-combined.pem ca-file /d/roots.pem verify required'));
  t.false(lines.some((l) => l.startsWith('bind ') && l.includes('ssl')));
});

test('server side: TLS 1.3 on the bind line demanding a verified client certificate, plaintext to the app', (t) => {
  const lines = haproxyPairConfig({ client: false, files, services: [{ name: 'echo', accept: '10.0.0.2:57000', connect: '127.0.0.1:7000' }] })
    .split('\n').map((l) => l.trim());
  t.true(lines.includes('ssl-default-bind-options ssl-min-ver TLSv1.3'));
  t.true(lines.includes('bind 10.0.0.2:57000 ssl crt /d/side-combined.pem ca-file /d/roots.pem verify required'));
  t.true(lines.includes('server echo 127.0.0.1:7000'));
  t.true(lines.includes('maxconn 4096'));
});

test('no services is refused', (t) => {
  t.throws(() => haproxyPairConfig({ client: true, files, services: [] }), { instanceOf: RangeError });
});
