/**
 * Certificates over the control channel (node authorization), the wss listener with a
 * CA-issued serving certificate, and the Kubernetes TokenReview authenticator.
 */
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { Workload } from '../../src/model/index.js';
import { Snapshot } from '../../src/model/index.js';
import { generateKeyAndCsr, pemToDers, verifyPeerChain } from '../../src/identity/index.js';
import { XdsClient, buildResourceTables } from '../../src/xds/index.js';
import { BootstrapTokenAuthenticator, PushServer, TokenReviewAuthenticator } from '../../src/control/push/index.js';
import type { Authenticator } from '../../src/control/push/index.js';
import { CaService, issueControlCert } from '../../src/control/ca/index.js';
import { makeForeignPki, makeTestPki } from '../helpers/pki.js';
import { fakeTokenReviewServer } from '../helpers/fake-token-review.js';
import { servePush } from '../helpers/push-harness.js';

const TOKEN = 'test-bootstrap-token-0123456789';
const TD = 'cluster.local';

function wl(name: string, sa: string, node: string): Workload {
  return {
    uid: `c//Pod/shop/${name}`, name, namespace: 'shop', serviceAccount: sa, trustDomain: TD, node, addresses: ['10.1.0.1'],
    labels: {}, canonicalName: name, canonicalRevision: 'latest', workloadName: name, workloadType: 'pod', tunnel: 'hbone',
    healthy: true, services: [], authorizationPolicies: [],
  };
}

const pki = makeTestPki({ trustDomain: TD });
const snap = Snapshot.build({ workloads: [wl('web-1', 'web', 'node-a'), wl('db-1', 'db', 'node-b')], services: [], authorizations: [] });

async function controlPlane(t: import('ava').ExecutionContext, o: { tls?: boolean; authenticator?: Authenticator } = {}) {
  const ca = new CaService({ ca: pki.ca, trustDomain: TD, snapshot: () => snap });
  const push = new PushServer({
    authenticator: o.authenticator ?? new BootstrapTokenAuthenticator({ token: TOKEN, trustDomain: TD }),
    debounceMs: 1,
    signCertificate: (p, r) => ca.sign(p, r),
  });
  push.update(buildResourceTables(snap).tables);
  push.flush();
  let server: Server;
  if (o.tls) {
    const cert = await issueControlCert(pki.ca, TD);
    server = createHttpsServer({ key: cert.keyPem, cert: cert.chainPem.join(''), minVersion: 'TLSv1.3' });
  } else {
    server = createServer();
  }
  push.attach(server);
  const h = await servePush(t, server, () => push.close(), { tls: o.tls === true });
  return { push, url: h.url, track: (c: XdsClient) => h.track(c) };
}

test('an agent gets certificates only for service accounts with a pod on its node', async (t) => {
  const cp = await controlPlane(t);
  const c = cp.track(new XdsClient({ url: cp.url, token: TOKEN, node: 'node-a', role: 'agent' }));
  c.start();
  await c.ready;
  const web = pki.id('shop', 'web');
  const { csrPem } = await generateKeyAndCsr(web);
  const got = await c.requestCertificate(csrPem, web, 3600);
  // the chain verifies against the mesh root and names exactly the requested identity
  const id = verifyPeerChain(got.chainPem.flatMap((p) => pemToDers(p)), got.rootsPem);
  t.deepEqual(id, web);
  t.is(got.rootsPem, pki.ca.rootsPem);
  // db runs on node-b only
  const db = pki.id('shop', 'db');
  const err = await t.throwsAsync(c.requestCertificate((await generateKeyAndCsr(db)).csrPem, db));
  t.is((err as { code?: string }).code, 'AMBIT_CSR_FORBIDDEN');
  t.regex(err!.message, /no pod with this identity runs on node "node-a"/);
  // another trust domain is refused even if the names match
  const foreign = { trustDomain: 'evil.example', namespace: 'shop', serviceAccount: 'web' };
  const err2 = await t.throwsAsync(c.requestCertificate(csrPem, foreign));
  t.is((err2 as { code?: string }).code, 'AMBIT_TRUST_DOMAIN_MISMATCH');
  // a garbage CSR for an allowed identity is refused by the CA, not a crash
  const err3 = await t.throwsAsync(c.requestCertificate('not a csr', web));
  t.is((err3 as { code?: string }).code, 'AMBIT_CSR_INVALID');
});

test('a waypoint gets a certificate only for its own service account', async (t) => {
  const cp = await controlPlane(t);
  const own = pki.id('shop', 'shop-waypoint');
  const c = cp.track(new XdsClient({ url: cp.url, token: TOKEN, node: 'node-a', role: 'waypoint', identity: own }));
  c.start();
  await c.ready;
  const ok = await c.requestCertificate((await generateKeyAndCsr(own)).csrPem, own);
  t.deepEqual(verifyPeerChain(ok.chainPem.flatMap((p) => pemToDers(p)), ok.rootsPem), own);
  // web has a pod on node-a, but a waypoint is not an agent
  const web = pki.id('shop', 'web');
  const err = await t.throwsAsync(c.requestCertificate((await generateKeyAndCsr(web)).csrPem, web));
  t.is((err as { code?: string }).code, 'AMBIT_CSR_FORBIDDEN');
});

test('requestCertificate rejects at once when the channel is not connected', async (t) => {
  const c = new XdsClient({ url: 'ws://127.0.0.1:1', token: TOKEN, node: 'n', role: 'agent' });
  await t.throwsAsync(c.requestCertificate('x', pki.id('a', 'b')), { message: /not connected/ });
  await c.close();
});

test('wss: the client verifies the control plane certificate against the mesh root', async (t) => {
  const cp = await controlPlane(t, { tls: true });
  const good = cp.track(new XdsClient({ url: cp.url, token: TOKEN, node: 'node-a', role: 'agent', caPem: pki.ca.rootsPem }));
  good.start();
  await good.ready;
  t.is(good.snapshot.counts.workloads, 2);
  // a client trusting another root refuses the server, never gets ready
  const foreign = makeForeignPki();
  const bad = cp.track(new XdsClient({ url: cp.url, token: TOKEN, node: 'node-a', role: 'agent', caPem: foreign.ca.rootsPem, backoff: { initialMs: 1000 } }));
  const err = new Promise<Error>((resolve) => bad.once('error', resolve));
  bad.start();
  t.regex((await err).message, /certificate|self.signed|unable to verify/i);
  // a client expecting another server identity refuses it too
  const wrongId = cp.track(new XdsClient({ url: cp.url, token: TOKEN, node: 'node-a', role: 'agent', caPem: pki.ca.rootsPem, serverIdentity: `spiffe://${TD}/ns/x/sa/y`, backoff: { initialMs: 1000 } }));
  const err2 = new Promise<Error>((resolve) => wrongId.once('error', resolve));
  wrongId.start();
  t.regex((await err2).message, /control plane certificate is for spiffe:\/\/cluster\.local\/ns\/ambit-system\/sa\/ambit-control/);
  t.is(cp.push.peerCount, 1);
});

test('TokenReview: node name from the bound token, agents by service account, others as waypoints', async (t) => {
  const { kc, seen } = await fakeTokenReviewServer(t, {
    'agent-tok': { username: 'system:serviceaccount:ambit-system:ambit-node-agent', node: 'node-a' },
    'agent-no-node': { username: 'system:serviceaccount:ambit-system:ambit-node-agent' },
    'wp-tok': { username: 'system:serviceaccount:shop:shop-waypoint' },
    'user-tok': { username: 'alice' },
  });
  const cp = await controlPlane(t, { authenticator: new TokenReviewAuthenticator({ kubeConfig: kc, trustDomain: TD }) });
  // the agent's node comes from the token, not from the header it sends
  const agent = cp.track(new XdsClient({ url: cp.url, token: 'agent-tok', node: 'node-b', role: 'agent' }));
  agent.start();
  await agent.ready;
  t.is(cp.push.syncz()[0]!.node, 'node-a');
  const web = pki.id('shop', 'web');
  const cert = await agent.requestCertificate((await generateKeyAndCsr(web)).csrPem, web);
  t.true(cert.chainPem.length >= 1);
  t.is((seen[0] as { spec: { token: string } }).spec.token, 'agent-tok');
  // syncz names what was issued to the peer, with the leaf's expiry (ambit status shows it)
  const issued = cp.push.syncz()[0]!.certificates;
  t.deepEqual(issued.map((c) => c.identity), [`spiffe://${TD}/ns/shop/sa/web`]);
  t.is(issued[0]!.notAfter, new Date(new X509Certificate(cert.chainPem[0]!).validTo).toISOString());
  const wpId = pki.id('shop', 'shop-waypoint');
  const wp = cp.track(new XdsClient({ url: cp.url, token: 'wp-tok', node: 'node-a', role: 'waypoint' }));
  wp.start();
  await wp.ready;
  t.true((await wp.requestCertificate((await generateKeyAndCsr(wpId)).csrPem, wpId)).chainPem.length >= 1);
  await t.throwsAsync(wp.requestCertificate((await generateKeyAndCsr(web)).csrPem, web), { code: 'AMBIT_CSR_FORBIDDEN' });

  const refused = async (token: string, role: 'agent' | 'waypoint') => {
    const c = cp.track(new XdsClient({ url: cp.url, token, node: 'node-a', role, backoff: { initialMs: 5000 } }));
    const e = new Promise<Error>((resolve) => c.once('error', resolve));
    c.start();
    const err = await e;
    await c.close();
    return err;
  };
  for (const [token, role] of [['bad-tok', 'agent'], ['agent-no-node', 'agent'], ['user-tok', 'agent'], ['wp-tok', 'agent']] as const) {
    const err = await refused(token, role);
    t.is((err as { code?: string }).code, 'AMBIT_XDS_UNAUTHENTICATED', token);
  }
  t.is(cp.push.peerCount, 2);
});
