/**
 * The mesh CA kept in a Secret (Kubernetes mode), against the in-test API server: created on the
 * first start, loaded on later ones, one CA when two replicas race to create it, Istio's
 * `cacerts` plug-in CA used instead when present, and a broken Secret never overwritten.
 */
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeApi, loadOrCreateKubeCa } from '../../src/control/kube/index.js';
import { CertificateAuthority, generateKeyAndCsr } from '../../src/identity/index.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';

const TD = 'cluster.local';
const NS = 'ambit-system';
const SECRETS = `/api/v1/namespaces/${NS}/secrets`;
const CM = `/api/v1/namespaces/${NS}/configmaps/ambit-ca-root`;
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const unb64 = (v: unknown): string => Buffer.from(String(v), 'base64').toString('utf8');

async function setup(t: import('ava').ExecutionContext) {
  const fake = new FakeKubeApi();
  fake.token = 'control-token';
  const server = await fake.listen();
  t.teardown(() => fake.close());
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'control-token' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
    currentContext: 'c',
  });
  const api = new KubeApi(kc);
  return { fake, api, load: () => loadOrCreateKubeCa({ api, namespace: NS, trustDomain: TD }) };
}

async function signs(ca: CertificateAuthority): Promise<X509Certificate> {
  const id = { trustDomain: TD, namespace: 'shop', serviceAccount: 'web' };
  const { csrPem } = await generateKeyAndCsr(id);
  return new X509Certificate(ca.sign(csrPem, id, 600)[0]!);
}

test('first start creates the CA into Secret ambit-ca and publishes its root; a restart loads the same CA', async (t) => {
  const { fake, load } = await setup(t);
  const first = await load();
  t.is(first.origin, 'created');
  const secret = fake.get(`${SECRETS}/ambit-ca`)!;
  t.truthy(secret);
  t.is(secret.type, 'Opaque');
  t.is(secret.metadata?.labels?.['app.kubernetes.io/part-of'], 'ambit');
  const data = secret.data as Record<string, string>;
  t.deepEqual(Object.keys(data).sort(), ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']);
  t.is(unb64(data['root-cert.pem']), first.ca.rootsPem);
  t.regex(unb64(data['ca-key.pem']), /^-----BEGIN PRIVATE KEY-----/);
  // the root for agents: server-side applied (created) as the control plane
  const cm = fake.get(CM)!;
  t.is((cm.data as Record<string, string>)['root-cert.pem'], first.ca.rootsPem);
  const applied = fake.seen.find((s) => s.path === CM && s.method === 'PATCH')!;
  t.is(applied.contentType, 'application/apply-patch+yaml');
  t.is(applied.query.get('fieldManager'), 'ambit-control');
  t.is(applied.status, 201);

  const mark = fake.seen.length;
  const again = await load();
  t.is(again.origin, 'loaded');
  t.is(again.ca.rootsPem, first.ca.rootsPem);
  t.false(fake.seen.slice(mark).some((s) => s.method === 'POST'), 'nothing created the second time');
  // a certificate the restarted one signs verifies against the first one's root
  const leaf = await signs(again.ca);
  t.true(leaf.verify(new X509Certificate(first.ca.rootsPem).publicKey));
});

test('two replicas creating at once: one wins (201), the other gets 409, reads the winner\'s and uses it', async (t) => {
  const { fake, load } = await setup(t);
  fake.gateCreates(SECRETS, 2);
  const [a, b] = await Promise.all([load(), load()]);
  t.deepEqual([a.origin, b.origin].sort(), ['created', 'lost-race']);
  t.is(a.ca.rootsPem, b.ca.rootsPem);
  const posts = fake.seen.filter((s) => s.method === 'POST' && s.path === SECRETS);
  t.deepEqual(posts.map((p) => p.status), [201, 409]);
  t.is(unb64((fake.get(`${SECRETS}/ambit-ca`)!.data as Record<string, string>)['root-cert.pem']), a.ca.rootsPem);
  t.is((fake.get(CM)!.data as Record<string, string>)['root-cert.pem'], a.ca.rootsPem);
});

test('a user-provided cacerts Secret (Istio\'s plug-in CA, an intermediate) is used instead, and nothing is created', async (t) => {
  const { fake, load } = await setup(t);
  const root = CertificateAuthority.generate({ trustDomain: TD });
  const inter = root.issueIntermediate();
  fake.put(SECRETS, {
    apiVersion: 'v1', kind: 'Secret', metadata: { name: 'cacerts' },
    data: { 'ca-cert.pem': b64(inter.certPem), 'ca-key.pem': b64(inter.keyPem), 'root-cert.pem': b64(inter.rootsPem), 'cert-chain.pem': b64(inter.chainPem) },
  });
  const got = await load();
  t.is(got.origin, 'plugin');
  t.is(got.secret, 'cacerts');
  t.is(got.ca.rootsPem, root.rootsPem);
  t.is(fake.get(`${SECRETS}/ambit-ca`), undefined);
  t.false(fake.seen.some((s) => s.method === 'POST'));
  const leaf = await signs(got.ca);
  t.true(leaf.checkIssued(new X509Certificate(inter.certPem)), 'signed by the intermediate');
  t.is((fake.get(CM)!.data as Record<string, string>)['root-cert.pem'], root.rootsPem);
});

test('an ambit-ca Secret that cannot be used stops the start and is never overwritten', async (t) => {
  const { fake, load } = await setup(t);
  fake.put(SECRETS, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'ambit-ca' }, data: { 'ca-cert.pem': b64('x') } });
  await t.throwsAsync(load(), { code: 'AMBIT_CONFIG_INVALID', message: /ca Secret ambit-system\/ambit-ca: missing ca-key\.pem, root-cert\.pem \(refusing to overwrite it\)/ });
  t.deepEqual(fake.writes(), []);
});

test('a refused create names the Secret and the API server\'s message', async (t) => {
  const { fake, load } = await setup(t);
  fake.fail('POST', /\/secrets$/, 403);
  await t.throwsAsync(load(), { code: 'AMBIT_KUBE_API', message: 'creating Secret ambit-system/ambit-ca: HTTP 403: injected failure 403' });
  t.is(fake.get(`${SECRETS}/ambit-ca`), undefined);
});
