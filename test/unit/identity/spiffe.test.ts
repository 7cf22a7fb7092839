import test from 'ava';
import { identityKey, parseSpiffeUri, spiffeUri } from '../../../src/identity/index.js';
import { isMeshError } from '../../../src/core/index.js';

test('round trip of a well-formed id', (t) => {
  const id = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'bookinfo-productpage' };
  const uri = spiffeUri(id);
  t.is(uri, 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage');
  t.deepEqual(parseSpiffeUri(uri), id);
  t.is(identityKey(id), uri);
});

test('accepted edge cases', (t) => {
  // IPv4-looking trust domains are plain names; path segments are case-sensitive and may hold . _ -
  t.deepEqual(parseSpiffeUri('spiffe://10.0.0.1/ns/a.b_c-d/sa/Web'), { trustDomain: '10.0.0.1', namespace: 'a.b_c-d', serviceAccount: 'Web' });
  t.notThrows(() => parseSpiffeUri(`spiffe://${'a'.repeat(255)}/ns/x/sa/y`));
});

const bad: Array<[string, string]> = [
  ['other scheme', 'https://cluster.local/ns/default/sa/x'],
  ['uppercase scheme', 'SPIFFE://cluster.local/ns/default/sa/x'],
  ['uppercase trust domain', 'spiffe://Cluster.local/ns/default/sa/x'],
  ['empty trust domain', 'spiffe:///ns/default/sa/x'],
  ['trust domain only', 'spiffe://cluster.local'],
  ['trust domain with slash only', 'spiffe://cluster.local/'],
  ['missing sa', 'spiffe://cluster.local/ns/default'],
  ['missing sa value', 'spiffe://cluster.local/ns/default/sa/'],
  ['wrong keywords', 'spiffe://cluster.local/namespace/default/sa/x'],
  ['swapped keywords', 'spiffe://cluster.local/sa/x/ns/default'],
  ['extra path segments', 'spiffe://cluster.local/ns/default/sa/x/extra'],
  ['trailing slash', 'spiffe://cluster.local/ns/default/sa/x/'],
  ['empty segment', 'spiffe://cluster.local//ns/default/sa/x'],
  ['dot segment', 'spiffe://cluster.local/ns/./sa/x'],
  ['dot-dot segment', 'spiffe://cluster.local/ns/../sa/x'],
  ['percent-encoding in path', 'spiffe://cluster.local/ns/def%41ult/sa/x'],
  ['percent-encoding in trust domain', 'spiffe://cluster%2Elocal/ns/default/sa/x'],
  ['query', 'spiffe://cluster.local/ns/default/sa/x?a=b'],
  ['fragment', 'spiffe://cluster.local/ns/default/sa/x#frag'],
  ['port', 'spiffe://cluster.local:8443/ns/default/sa/x'],
  ['userinfo', 'spiffe://user@cluster.local/ns/default/sa/x'],
  ['NUL byte', 'spiffe://cluster.local/ns/default/sa/x\0evil'],
  ['space', 'spiffe://cluster.local/ns/default/sa/x y'],
  ['non-ascii', 'spiffe://cluster.local/ns/défault/sa/x'],
  ['trust domain too long', `spiffe://${'a'.repeat(256)}/ns/x/sa/y`],
  ['segment too long', `spiffe://td/ns/x/sa/${'y'.repeat(254)}`],
  ['empty string', ''],
];

for (const [name, uri] of bad) {
  test(`parseSpiffeUri rejects: ${name}`, (t) => {
    const e = t.throws(() => parseSpiffeUri(uri));
    t.true(isMeshError(e, 'AMBIT_CERT_INVALID'), String(e));
  });
}

test('spiffeUri refuses to build an id that would not parse', (t) => {
  for (const id of [
    { trustDomain: 'Cluster.local', namespace: 'a', serviceAccount: 'b' },
    { trustDomain: 'td', namespace: '', serviceAccount: 'b' },
    { trustDomain: 'td', namespace: 'a/b', serviceAccount: 'c' },
    { trustDomain: 'td', namespace: 'a', serviceAccount: '..' },
  ]) {
    t.true(isMeshError(t.throws(() => spiffeUri(id)), 'AMBIT_CERT_INVALID'), JSON.stringify(id));
  }
});

test('errors name the offending part', (t) => {
  t.regex(t.throws(() => parseSpiffeUri('spiffe://td/ns/a/sa/b/c'))!.message, /exactly \/ns\/<namespace>\/sa\/<service account>/);
  t.regex(t.throws(() => parseSpiffeUri('spiffe://TD/ns/a/sa/b'))!.message, /trust domain/);
});
