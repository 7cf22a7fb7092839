import test from 'ava';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import {
  CertificateAuthority, CA_FILES, generateKeyAndCsr, pemToDers, uriSans, verifyPeerChain,
} from '../../../src/identity/index.js';
import type { Identity } from '../../../src/identity/index.js';
import { OID, certExtensions, parseKeyUsage, parseBasicConstraints } from '../../../src/identity/der.js';
import { forgePublicKey, signCsr } from '../../../src/identity/x509-build.js';
import { isMeshError } from '../../../src/core/index.js';

const TD = 'cluster.local';
const alice: Identity = { trustDomain: TD, namespace: 'shop', serviceAccount: 'alice' };
const bob: Identity = { trustDomain: TD, namespace: 'shop', serviceAccount: 'bob' };
// Whole seconds: X.509 times have second precision, so exact window checks need a whole-second clock.
const NOW = Math.floor(Date.now() / 1000) * 1000;
const ca = CertificateAuthority.generate({ trustDomain: TD, clock: () => NOW });
const csrAlice = generateKeyAndCsr(alice);

async function tmp(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `ambit-${process.pid.toString(36)}-ca-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('a good leaf has the X.509-SVID shape (checked with node:crypto)', async (t) => {
  const { csrPem } = await csrAlice;
  const chain = ca.sign(csrPem, alice, 3600);
  t.is(chain.length, 1, 'a root CA adds no intermediates and never the root');
  const leaf = new X509Certificate(chain[0]!);
  const root = new X509Certificate(ca.rootsPem);
  t.true(leaf.checkIssued(root));
  t.true(leaf.verify(root.publicKey));
  t.false(leaf.ca);
  t.is(leaf.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/alice');
  t.deepEqual(leaf.keyUsage?.slice().sort(), [OID.serverAuth, OID.clientAuth].sort()); // Node's keyUsage is the EKU list
  t.is(Date.parse(leaf.validFrom), NOW - 60_000, 'backdated 60 s for clock skew');
  t.is(Date.parse(leaf.validTo), NOW + 3600_000);
  t.is(leaf.issuer, root.subject);
  t.deepEqual(uriSans(leaf.raw), ['spiffe://cluster.local/ns/shop/sa/alice']);
  const serial = Buffer.from(leaf.serialNumber, 'hex');
  t.is(serial.length, 16);
  t.is(serial[0]! & 0x80, 0, 'serial is positive');
  const exts = certExtensions(leaf.raw);
  const ku = parseKeyUsage(exts.find((e) => e.oid === OID.keyUsage)!);
  t.like(ku, { critical: true, digitalSignature: true, keyEncipherment: true, keyCertSign: false, cRLSign: false });
  t.like(parseBasicConstraints(exts.find((e) => e.oid === OID.basicConstraints)!), { critical: true, ca: false });
  t.true(exts.find((e) => e.oid === OID.subjectAltName)!.critical, 'empty subject => critical SAN');
  t.truthy(exts.find((e) => e.oid === OID.subjectKeyIdentifier));
  t.truthy(exts.find((e) => e.oid === OID.authorityKeyIdentifier));
  // and the root is a proper signing certificate
  t.true(root.ca);
  const rku = parseKeyUsage(certExtensions(root.raw).find((e) => e.oid === OID.keyUsage)!);
  t.like(rku, { critical: true, keyCertSign: true, cRLSign: true });
  t.deepEqual(uriSans(root.raw), ['spiffe://cluster.local']);
});

test('default ttl is 24 h', async (t) => {
  const leaf = new X509Certificate(ca.sign((await csrAlice).csrPem, alice)[0]!);
  t.is(Date.parse(leaf.validTo), NOW + 86_400_000);
});

test('SANs in the CSR are ignored: the leaf carries the authorised identity only', async (t) => {
  const { csrPem } = await csrAlice; // asks for alice
  const leaf = new X509Certificate(ca.sign(csrPem, bob)[0]!);
  t.deepEqual(uriSans(leaf.raw), ['spiffe://cluster.local/ns/shop/sa/bob']);
  t.is(leaf.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/bob');
});

test('a CSR made by openssl is accepted (interop)', async (t) => {
  const dir = await tmp(t);
  execFileSync('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k'), '-out', join(dir, 'r'),
    '-subj', '/O=whatever', '-addext', 'subjectAltName=URI:spiffe://evil.example/ns/x/sa/y'], { stdio: 'ignore' });
  const leaf = ca.sign(await readFile(join(dir, 'r'), 'utf8'), alice)[0]!;
  t.deepEqual(uriSans(new X509Certificate(leaf).raw), ['spiffe://cluster.local/ns/shop/sa/alice']);
});

function rejectsCsr(t: import('ava').ExecutionContext, fn: () => unknown, re: RegExp): void {
  const e = t.throws(fn);
  t.true(isMeshError(e, 'AMBIT_CSR_INVALID'), String(e));
  t.regex(e!.message, re);
}

test('CSR with a tampered signed body is rejected', async (t) => {
  const { csrPem } = await csrAlice;
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  // Change one letter of the subject's O=cluster.local inside CertificationRequestInfo.
  const at = der.indexOf(Buffer.from('cluster.local'));
  t.true(at > 0);
  der[at] = 'k'.charCodeAt(0);
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  rejectsCsr(t, () => ca.sign(tampered, alice), /signature does not verify/);
});

test('garbage PEM is rejected', (t) => {
  rejectsCsr(t, () => ca.sign('hello', alice), /exactly one PEM/);
  rejectsCsr(t, () => ca.sign('-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n', alice), /cannot parse/);
  rejectsCsr(t, () => ca.sign('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', alice), /cannot parse/);
  rejectsCsr(t, () => ca.sign(ca.rootsPem, alice), /exactly one PEM "CERTIFICATE REQUEST"/);
  rejectsCsr(t, () => ca.sign(undefined as unknown as string, alice), /not a string/);
});

test('two CSR blocks are rejected', async (t) => {
  const { csrPem } = await csrAlice;
  rejectsCsr(t, () => ca.sign(csrPem + csrPem, alice), /exactly one PEM/);
});

test('oversized CSR is rejected before parsing', async (t) => {
  const { csrPem } = await csrAlice;
  rejectsCsr(t, () => ca.sign(csrPem + ' '.repeat(16 * 1024), alice), /larger than 16384 bytes/);
  const small = CertificateAuthority.generate({ trustDomain: TD, maxCsrBytes: 100 });
  rejectsCsr(t, () => small.sign(csrPem, alice), /larger than 100 bytes/);
});

test('TTL above the maximum is rejected, not clamped; TTL <= 0 is rejected', async (t) => {
  const { csrPem } = await csrAlice;
  rejectsCsr(t, () => ca.sign(csrPem, alice, 90 * 86400 + 1), /longer than the maximum 7776000s/);
  t.notThrows(() => ca.sign(csrPem, alice, 90 * 86400));
  rejectsCsr(t, () => ca.sign(csrPem, alice, 0), /positive/);
  rejectsCsr(t, () => ca.sign(csrPem, alice, -5), /positive/);
  rejectsCsr(t, () => ca.sign(csrPem, alice, Number.NaN), /positive/);
  const short = CertificateAuthority.generate({ trustDomain: TD, maxTtlSeconds: 3600, defaultTtlSeconds: 600 });
  rejectsCsr(t, () => short.sign(csrPem, alice, 3601), /longer than the maximum 3600s/);
});

test('small RSA keys and non-RSA keys are rejected', async (t) => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forgePublicKey(privateKey);
  csr.setSubject([{ name: 'organizationName', value: TD }]);
  rejectsCsr(t, () => ca.sign(signCsr(csr, privateKey), alice), /1024 bits/);
  const dir = await tmp(t);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', join(dir, 'k'), '-out', join(dir, 'r'), '-subj', '/O=x'], { stdio: 'ignore' });
  rejectsCsr(t, () => ca.sign(execFileSync('cat', [join(dir, 'r')]).toString(), alice), /cannot parse/);
});

test('identities outside the trust domain or malformed are refused', async (t) => {
  const { csrPem } = await csrAlice;
  t.true(isMeshError(t.throws(() => ca.sign(csrPem, { ...alice, trustDomain: 'other.td' })), 'AMBIT_TRUST_DOMAIN_MISMATCH'));
  rejectsCsr(t, () => ca.sign(csrPem, { ...alice, serviceAccount: 'a/b' }), /identity/);
});

test('bad CA options are a config error', (t) => {
  t.true(isMeshError(t.throws(() => CertificateAuthority.generate({ trustDomain: 'Bad TD' })), 'AMBIT_CONFIG_INVALID'));
  t.true(isMeshError(t.throws(() => CertificateAuthority.generate({ trustDomain: TD, maxTtlSeconds: 0 })), 'AMBIT_CONFIG_INVALID'));
});

test('fromDirectory with an intermediate: root -> intermediate -> leaf verifies', async (t) => {
  const dir = await tmp(t);
  const root = CertificateAuthority.generate({ trustDomain: TD });
  const inter = root.issueIntermediate();
  await writeFile(join(dir, CA_FILES.cert), inter.certPem);
  await writeFile(join(dir, CA_FILES.key), inter.keyPem, { mode: 0o600 });
  await writeFile(join(dir, CA_FILES.root), inter.rootsPem);
  await writeFile(join(dir, CA_FILES.chain), inter.chainPem);
  const ica = await CertificateAuthority.fromDirectory(dir, { trustDomain: TD });
  t.is(ica.rootsPem, root.rootsPem);
  const { csrPem } = await csrAlice;
  const chain = ica.sign(csrPem, alice);
  t.is(chain.length, 2, 'leaf + intermediate, no root');
  t.is(chain[1], inter.certPem, 'intermediate served');
  const ders = chain.flatMap((p) => pemToDers(p));
  t.deepEqual(verifyPeerChain(ders, ica.rootsPem), alice);
  // Without the intermediate the leaf does not reach the root.
  t.true(isMeshError(t.throws(() => verifyPeerChain([ders[0]!], ica.rootsPem)), 'AMBIT_CERT_INVALID'));
  const leaf = new X509Certificate(chain[0]!);
  t.true(leaf.checkIssued(new X509Certificate(inter.certPem)));
});

test('fromDirectory refuses a mismatched key, a non-CA cert, and a cert that does not chain', async (t) => {
  const dir = await tmp(t);
  const root = CertificateAuthority.generate({ trustDomain: TD });
  const other = CertificateAuthority.generate({ trustDomain: TD });
  const inter = root.issueIntermediate();
  const inter2 = root.issueIntermediate();
  const write = async (cert: string, key: string, roots: string): Promise<void> => {
    await writeFile(join(dir, CA_FILES.cert), cert);
    await writeFile(join(dir, CA_FILES.key), key);
    await writeFile(join(dir, CA_FILES.root), roots);
    await writeFile(join(dir, CA_FILES.chain), cert);
  };
  await write(inter.certPem, inter2.keyPem, root.rootsPem);
  let e = await t.throwsAsync(CertificateAuthority.fromDirectory(dir, { trustDomain: TD }));
  t.true(isMeshError(e, 'AMBIT_CONFIG_INVALID'));
  t.regex(e!.message, /does not match/);
  await write(inter.certPem, inter.keyPem, other.rootsPem);
  e = await t.throwsAsync(CertificateAuthority.fromDirectory(dir, { trustDomain: TD }));
  t.regex(e!.message, /does not chain/);
  const { csrPem, keyPem } = await csrAlice;
  await write(root.sign(csrPem, alice)[0]!, keyPem, root.rootsPem);
  e = await t.throwsAsync(CertificateAuthority.fromDirectory(dir, { trustDomain: TD }));
  t.regex(e!.message, /not a CA certificate/);
  await rm(join(dir, CA_FILES.key));
  e = await t.throwsAsync(CertificateAuthority.fromDirectory(dir, { trustDomain: TD }));
  t.regex(e!.message, /cannot read ca-key\.pem/);
});

test('loadOrCreate persists a root (key 0600) and reloads the same root', async (t) => {
  const dir = join(await tmp(t), 'ca');
  const first = await CertificateAuthority.loadOrCreate(dir, { trustDomain: TD });
  t.is((await stat(join(dir, CA_FILES.key))).mode & 0o777, 0o600);
  t.is(await readFile(join(dir, CA_FILES.root), 'utf8'), first.rootsPem);
  const second = await CertificateAuthority.loadOrCreate(dir, { trustDomain: TD });
  t.is(second.rootsPem, first.rootsPem);
  // and the reloaded CA signs leaves that chain to the persisted root
  const leaf = second.sign((await csrAlice).csrPem, alice);
  t.deepEqual(verifyPeerChain(leaf.flatMap((p) => pemToDers(p)), first.rootsPem), alice);
  // a half-written directory is refused rather than overwritten
  await rm(join(dir, CA_FILES.cert));
  const e = await t.throwsAsync(CertificateAuthority.loadOrCreate(dir, { trustDomain: TD }));
  t.regex(e!.message, /refusing to overwrite/);
});

test('a leaf never outlives its signing certificate', async (t) => {
  const root = CertificateAuthority.generate({ trustDomain: TD, clock: () => NOW });
  const inter = root.issueIntermediate({ ttlSeconds: 1800 });
  const dir = await tmp(t);
  await writeFile(join(dir, CA_FILES.cert), inter.certPem);
  await writeFile(join(dir, CA_FILES.key), inter.keyPem);
  await writeFile(join(dir, CA_FILES.root), inter.rootsPem);
  await writeFile(join(dir, CA_FILES.chain), inter.chainPem);
  const ica = await CertificateAuthority.fromDirectory(dir, { trustDomain: TD, clock: () => NOW });
  const leaf = new X509Certificate(ica.sign((await csrAlice).csrPem, alice, 3600)[0]!);
  t.is(Date.parse(leaf.validTo), Date.parse(new X509Certificate(inter.certPem).validTo));
});

test('fromDirectory refuses a CA of another trust domain', async (t) => {
  const dir = await tmp(t);
  const other = CertificateAuthority.generate({ trustDomain: 'other.td' }).issueIntermediate();
  await writeFile(join(dir, CA_FILES.cert), other.certPem);
  await writeFile(join(dir, CA_FILES.key), other.keyPem);
  await writeFile(join(dir, CA_FILES.root), other.rootsPem);
  const e = await t.throwsAsync(CertificateAuthority.fromDirectory(dir, { trustDomain: TD }));
  t.regex(e!.message, /names spiffe:\/\/other\.td, not trust domain cluster\.local/);
});
