import test from 'ava';
import type { ExecutionContext } from 'ava';
import { pemToDers, peerIdentity, uriSans, verifyPeerChain } from '../../../src/identity/index.js';
import { isMeshError } from '../../../src/core/index.js';
import { makeForeignPki, makeTestPki } from '../../helpers/pki.js';
import { craft, rsaKey } from './craft.js';

const TD = 'cluster.local';
const ID = 'spiffe://cluster.local/ns/ns/sa/web';
const rootSubject = [{ name: 'organizationName', value: TD }, { name: 'commonName', value: 'crafted root' }];
// A crafted root and an impostor with the very same subject but another key.
const root = craft({ key: rsaKey(0), subject: rootSubject, ca: true });
const impostor = craft({ key: rsaKey(1), subject: rootSubject, ca: true });

function rejects(t: ExecutionContext, fn: () => unknown, re: RegExp): void {
  const e = t.throws(fn);
  t.true(isMeshError(e, 'AMBIT_CERT_INVALID'), String(e));
  t.regex(e!.message, re);
}

test('uriSans reads 0, 1 and 2 URI SANs and skips DNS SANs', (t) => {
  const none = craft({ key: rsaKey(2), issuer: root });
  const dnsOnly = craft({ key: rsaKey(2), issuer: root, dns: ['web.ns.svc'] });
  const one = craft({ key: rsaKey(2), issuer: root, uris: [ID], dns: ['web.ns.svc'] });
  const two = craft({ key: rsaKey(2), issuer: root, uris: [ID, 'spiffe://cluster.local/ns/ns/sa/admin'] });
  t.deepEqual(uriSans(none.der), []);
  t.deepEqual(uriSans(dnsOnly.der), []);
  t.deepEqual(uriSans(one.der), [ID]);
  t.deepEqual(uriSans(two.der), [ID, 'spiffe://cluster.local/ns/ns/sa/admin']);
});

test('uriSans refuses malformed DER instead of guessing', (t) => {
  const one = craft({ key: rsaKey(2), issuer: root, uris: [ID] });
  rejects(t, () => uriSans(one.der.subarray(0, one.der.length - 10)), /malformed der/);
  rejects(t, () => uriSans(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff])), /malformed der/);
  rejects(t, () => uriSans(Buffer.concat([one.der, Buffer.from([0])])), /trailing bytes/);
  rejects(t, () => uriSans(Buffer.alloc(0)), /malformed der/);
});

test('a NUL inside a URI SAN refuses the certificate (no truncation tricks)', (t) => {
  const nul = craft({ key: rsaKey(2), issuer: root, uris: ['spiffe://cluster.local/ns/ns/sa/web\u0000evil'] });
  rejects(t, () => uriSans(nul.der), /non-printable/);
});

test('crafted good leaf verifies through an intermediate given in any order', (t) => {
  const inter = craft({ key: rsaKey(3), issuer: root, ca: true, subject: [{ name: 'commonName', value: 'crafted inter' }] });
  const leaf = craft({ key: rsaKey(2), issuer: inter, uris: [ID] });
  t.deepEqual(verifyPeerChain([leaf.der, inter.der], root.pem), { trustDomain: TD, namespace: 'ns', serviceAccount: 'web' });
  t.deepEqual(verifyPeerChain([leaf.der, root.der, inter.der], root.pem).serviceAccount, 'web');
});

test('verifyPeerChain rejects a chain from the wrong root', async (t) => {
  const pki = makeTestPki({ trustDomain: TD });
  const foreign = makeForeignPki();
  const other = makeTestPki({ trustDomain: TD }); // same trust domain, unrelated root
  const b = await pki.issue(pki.id('ns', 'web'));
  const ders = b.chainPem.flatMap((p) => pemToDers(p));
  t.is(verifyPeerChain(ders, b.rootsPem).serviceAccount, 'web');
  rejects(t, () => verifyPeerChain(ders, foreign.ca.rootsPem), /does not lead to a trusted root/);
  rejects(t, () => verifyPeerChain(ders, other.ca.rootsPem), /does not lead to a trusted root/);
  // a multi-root bundle (rotation) that includes the issuer is fine
  t.is(verifyPeerChain(ders, other.ca.rootsPem + b.rootsPem).serviceAccount, 'web');
});

test('verifyPeerChain rejects an expired or not-yet-valid leaf', async (t) => {
  const pki = makeTestPki({ trustDomain: TD });
  const b = await pki.issue(pki.id('ns', 'web'), { ttlSeconds: 600 });
  const ders = b.chainPem.flatMap((p) => pemToDers(p));
  t.notThrows(() => verifyPeerChain(ders, b.rootsPem, b.notAfter - 1));
  rejects(t, () => verifyPeerChain(ders, b.rootsPem, b.notAfter + 1000), /expired/);
  rejects(t, () => verifyPeerChain(ders, b.rootsPem, b.notBefore - 1000), /not yet valid/);
});

test('verifyPeerChain rejects a leaf signed by a different CA with the same subject', (t) => {
  // With key identifiers omitted, names alone match; only the signature check can tell them apart.
  const forged = craft({ key: rsaKey(2), issuer: impostor, uris: [ID], keyIds: false });
  t.is(forged.x.issuer, root.x.subject);
  t.true(forged.x.checkIssued(root.x), 'names chain');
  rejects(t, () => verifyPeerChain([forged.der], root.pem), /does not lead to a trusted root/);
  const forgedWithIds = craft({ key: rsaKey(2), issuer: impostor, uris: [ID] });
  rejects(t, () => verifyPeerChain([forgedWithIds.der], root.pem), /does not lead to a trusted root/);
});

test('verifyPeerChain rejects two URI SANs and no URI SAN', (t) => {
  const two = craft({ key: rsaKey(2), issuer: root, uris: [ID, 'spiffe://cluster.local/ns/ns/sa/admin'] });
  const none = craft({ key: rsaKey(2), issuer: root, dns: ['web.ns.svc.cluster.local'] });
  rejects(t, () => verifyPeerChain([two.der], root.pem), /exactly one URI SAN, found 2/);
  rejects(t, () => verifyPeerChain([none.der], root.pem), /exactly one URI SAN, found 0/);
});

test('leaf shape: CA certs, wrong key usage and missing EKU purposes cannot authenticate', (t) => {
  const caLeaf = craft({ key: rsaKey(2), issuer: root, uris: [ID], ca: true });
  rejects(t, () => verifyPeerChain([caLeaf.der], root.pem), /cA=true/);
  const signer = craft({ key: rsaKey(2), issuer: root, uris: [ID], keyUsage: { digitalSignature: true, keyCertSign: true, critical: true } });
  rejects(t, () => peerIdentity(signer.der), /certificate or crl signing/);
  const noDs = craft({ key: rsaKey(2), issuer: root, uris: [ID], keyUsage: { keyEncipherment: true, critical: true } });
  rejects(t, () => peerIdentity(noDs.der), /digitalSignature/);
  const email = craft({ key: rsaKey(2), issuer: root, uris: [ID], eku: ['emailProtection'] });
  rejects(t, () => verifyPeerChain([email.der], root.pem), /serverAuth and clientAuth/);
  const serverOnly = craft({ key: rsaKey(2), issuer: root, uris: [ID], eku: ['serverAuth'] });
  rejects(t, () => peerIdentity(serverOnly.der), /serverAuth and clientAuth/);
  const noEku = craft({ key: rsaKey(2), issuer: root, uris: [ID], eku: null });
  t.is(peerIdentity(noEku.der).serviceAccount, 'web', 'EKU is optional (SHOULD), but if present must have both');
  const badId = craft({ key: rsaKey(2), issuer: root, uris: ['spiffe://cluster.local/ns/ns/sa/web/extra'] });
  rejects(t, () => peerIdentity(badId.der), /exactly \/ns/);
  const tdOnly = craft({ key: rsaKey(2), issuer: root, uris: ['spiffe://cluster.local'] });
  rejects(t, () => peerIdentity(tdOnly.der), /no path/);
});

test('an intermediate that is not a CA cannot extend the chain', (t) => {
  const notCa = craft({ key: rsaKey(3), issuer: root, uris: ['spiffe://cluster.local/ns/ns/sa/other'], subject: [{ name: 'commonName', value: 'leafy' }] });
  const leaf = craft({ key: rsaKey(2), issuer: notCa, uris: [ID] });
  const e = t.throws(() => verifyPeerChain([leaf.der, notCa.der], root.pem));
  t.true(isMeshError(e, 'AMBIT_CERT_INVALID'));
});

test('verifyPeerChain input limits', (t) => {
  rejects(t, () => verifyPeerChain([], root.pem), /empty/);
  const leaf = craft({ key: rsaKey(2), issuer: root, uris: [ID] });
  rejects(t, () => verifyPeerChain(Array.from({ length: 9 }, () => leaf.der), root.pem), /more than 8/);
  rejects(t, () => verifyPeerChain([leaf.der], 'not a pem'), /no PEM certificate/);
  rejects(t, () => verifyPeerChain([Buffer.from('garbage')], root.pem), /not a certificate/);
});

test('mutated certificates never escape as anything but AMBIT_CERT_INVALID', (t) => {
  const leaf = craft({ key: rsaKey(2), issuer: root, uris: [ID], dns: ['web.ns.svc'] });
  // Deterministic xorshift so a failure reproduces.
  let s = 0x2545f491;
  const rnd = (n: number): number => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) % n; };
  let rejected = 0;
  for (let i = 0; i < 3000; i++) {
    const d = Buffer.from(leaf.der);
    for (let k = 0, m = 1 + rnd(3); k < m; k++) d[rnd(d.length)] = rnd(256);
    const cut = rnd(10) === 0 ? d.subarray(0, rnd(d.length)) : d;
    for (const fn of [() => uriSans(cut), () => peerIdentity(cut), () => verifyPeerChain([cut], root.pem)]) {
      try {
        fn();
      } catch (e) {
        rejected++;
        if (!isMeshError(e, 'AMBIT_CERT_INVALID')) t.fail(`iteration ${i}: ${String(e)}`);
      }
    }
  }
  t.true(rejected > 0);
});
