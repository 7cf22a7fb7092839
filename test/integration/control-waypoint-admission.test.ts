/**
 * Only identities that run a waypoint may hold a waypoint session (it carries the whole mesh
 * config). The real control plane (translator, push server, CA) with a TokenReview fake API
 * server, and with the local bootstrap token.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ControlPlane } from '../../src/control/app.js';
import type { ConfigSource, KubeObject } from '../../src/control/config/types.js';
import { BootstrapTokenAuthenticator, TokenReviewAuthenticator, admitPeer } from '../../src/control/push/index.js';
import type { Authenticator } from '../../src/control/push/index.js';
import { generateKeyAndCsr } from '../../src/identity/index.js';
import type { Identity } from '../../src/identity/index.js';
import { Snapshot } from '../../src/model/index.js';
import type { Waypoint, Workload } from '../../src/model/index.js';
import { XdsClient } from '../../src/xds/index.js';
import { makeTestPki } from '../helpers/pki.js';
import { fakeTokenReviewServer } from '../helpers/fake-token-review.js';
import { startControlPlane } from '../helpers/push-harness.js';

const TD = 'cluster.local';
const pki = makeTestPki({ trustDomain: TD });

class ManualSource implements ConfigSource {
  #fn: ((o: readonly KubeObject[], origin: string) => void) | undefined;
  constructor(readonly initial: KubeObject[]) {}
  async start(fn: (o: readonly KubeObject[], origin: string) => void): Promise<void> { this.#fn = fn; fn(this.initial, 'test'); }
  async stop(): Promise<void> { this.#fn = undefined; }
  emit(objects: KubeObject[]): void { this.#fn?.(objects, 'test'); }
}

const ns: KubeObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } };
const gateway: KubeObject = {
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'shop' },
  spec: { gatewayClassName: 'ambit-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
};
const gatewaySvc: KubeObject = {
  apiVersion: 'v1', kind: 'Service', metadata: { name: 'waypoint', namespace: 'shop' },
  spec: { clusterIP: '10.96.0.99', selector: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' }, ports: [{ name: 'mesh', port: 15008 }] },
};
function pod(name: string, ip: string, sa: string, labels: Record<string, string>): KubeObject {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels },
    spec: { nodeName: 'node-a', serviceAccountName: sa, containers: [{ name: 'app' }] },
    // not Ready: a waypoint pod becomes ready only once it has its config, so health is not asked
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'False' }] },
  };
}
const wpPod = pod('waypoint-1', '10.1.0.9', 'shop-waypoint', { 'gateway.networking.k8s.io/gateway-name': 'waypoint' });
const webPod = pod('web-1', '10.1.0.1', 'web', { app: 'web' });
// a label naming a Gateway that does not exist makes nobody a waypoint
const sneakyPod = pod('sneaky-1', '10.1.0.2', 'sneaky', { 'gateway.networking.k8s.io/gateway-name': 'no-such-gateway' });
const config = [ns, gateway, gatewaySvc, wpPod, webPod, sneakyPod];


async function plane(t: ExecutionContext, authenticator: Authenticator, source: ConfigSource) {
  const h = await startControlPlane(t, 'wp-admission', (dir) => ({
    source, ca: pki.ca, trustDomain: TD, stateDir: dir, authenticator, debounceMs: 1,
    listen: { host: '127.0.0.1', plainPort: 0, tlsPort: null, statusPort: 0 },
  }));
  const { cp } = h;
  const url = `ws://127.0.0.1:${cp.addresses.plain!.port}`;
  return {
    cp,
    client(o: { token: string; role: 'agent' | 'waypoint'; identity?: Identity; backoffMs?: number }): XdsClient {
      return h.track(new XdsClient({ url, token: o.token, node: 'node-a', role: o.role, backoff: { initialMs: o.backoffMs ?? 5000, maxMs: o.backoffMs ?? 5000 }, ...(o.identity ? { identity: o.identity } : {}) }));
    },
    metrics: h.metrics,
  };
}

/** The first error a client reports on its first attempt. */
async function firstError(c: XdsClient): Promise<Error> {
  const e = new Promise<Error>((resolve) => c.once('error', resolve));
  c.start();
  return e;
}

function peers(cp: ControlPlane): string[] { return cp.syncz().map((p) => `${p.role}:${p.subject}`).sort(); }

test('TokenReview: only the service account of a waypoint pod gets a waypoint session', async (t) => {
  const { kc } = await fakeTokenReviewServer(t, {
    'agent-tok': { username: 'system:serviceaccount:ambit-system:ambit-node-agent', node: 'node-a' },
    'wp-tok': { username: 'system:serviceaccount:shop:shop-waypoint' },
    'web-tok': { username: 'system:serviceaccount:shop:web' },
    'sneaky-tok': { username: 'system:serviceaccount:shop:sneaky' },
    'late-tok': { username: 'system:serviceaccount:shop:late-waypoint' },
  });
  const source = new ManualSource(config);
  const p = await plane(t, new TokenReviewAuthenticator({ kubeConfig: kc, trustDomain: TD }), source);

  // the waypoint's own service account: admitted, gets the mesh and its own certificate
  const wp = p.client({ token: 'wp-tok', role: 'waypoint' });
  wp.start();
  await wp.ready;
  t.is(wp.snapshot.counts.workloads, 3);
  const own = pki.id('shop', 'shop-waypoint');
  t.true((await wp.requestCertificate((await generateKeyAndCsr(own)).csrPem, own)).chainPem.length >= 1);
  // agents are not affected
  const agent = p.client({ token: 'agent-tok', role: 'agent' });
  agent.start();
  await agent.ready;

  // any other service account: 403 on the upgrade, no session
  for (const token of ['web-tok', 'sneaky-tok', 'late-tok']) {
    const err = await firstError(p.client({ token, role: 'waypoint' }));
    t.regex(err.message, /HTTP 403/, token);
  }
  t.deepEqual(peers(p.cp), ['agent:system:serviceaccount:ambit-system:ambit-node-agent', 'waypoint:system:serviceaccount:shop:shop-waypoint']);
  t.regex(await p.metrics(), /ambit_control_refused_connections_total\{reason="forbidden"\} 3/);

  // a waypoint whose pod shows up only after it first connected gets in on a retry
  const late = p.client({ token: 'late-tok', role: 'waypoint', backoffMs: 20 });
  const refused = new Promise<Error>((resolve) => late.once('error', resolve));
  late.start();
  t.regex((await refused).message, /HTTP 403/);
  source.emit([...config, pod('waypoint-2', '10.1.0.10', 'late-waypoint', { 'gateway.networking.k8s.io/gateway-name': 'waypoint' })]);
  await late.ready;
  t.true(peers(p.cp).includes('waypoint:system:serviceaccount:shop:late-waypoint'));
});

test('bootstrap token: the same check, on the identity the waypoint names', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-wp-token-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { authenticator, token } = await BootstrapTokenAuthenticator.loadOrCreate(dir, TD);
  const p = await plane(t, authenticator, new ManualSource(config));
  const wp = p.client({ token, role: 'waypoint', identity: pki.id('shop', 'shop-waypoint') });
  wp.start();
  await wp.ready;
  const agent = p.client({ token, role: 'agent' });
  agent.start();
  await agent.ready;
  // another identity, or none at all, is refused even with the token
  t.regex((await firstError(p.client({ token, role: 'waypoint', identity: pki.id('shop', 'web') }))).message, /HTTP 403/);
  t.regex((await firstError(p.client({ token, role: 'waypoint' }))).message, /HTTP 403/);
  t.is(p.cp.push.peerCount, 2);
});

test('admitPeer: waypoint pods by Service endpoint or by the gateway-name label of an existing waypoint', (t) => {
  const wl = (name: string, sa: string, o: { services?: string[]; labels?: Record<string, string>; ns?: string } = {}): Workload => ({
    uid: `c//Pod/${o.ns ?? 'shop'}/${name}`, name, namespace: o.ns ?? 'shop', serviceAccount: sa, trustDomain: TD, node: 'n', addresses: [],
    labels: o.labels ?? {}, canonicalName: name, canonicalRevision: 'latest', workloadName: name, workloadType: 'pod', tunnel: 'none',
    healthy: false, services: o.services ?? [], authorizationPolicies: [],
  });
  const waypoint: Waypoint = { name: 'wp', namespace: 'shop', service: 'shop/wp.shop.svc.cluster.local', for: 'service', gatewayClass: 'ambit-waypoint' };
  const snap = Snapshot.build({
    workloads: [
      wl('by-endpoint', 'ep-sa', { services: ['shop/wp.shop.svc.cluster.local'] }),
      wl('by-label', 'label-sa', { labels: { 'gateway.networking.k8s.io/gateway-name': 'wp' } }),
      // the label names a Gateway of another namespace: not a waypoint pod
      wl('other-ns', 'other-sa', { ns: 'other', labels: { 'gateway.networking.k8s.io/gateway-name': 'wp' } }),
      wl('plain', 'plain-sa'),
    ],
    services: [], authorizations: [], waypoints: [waypoint],
  });
  const as = (ns: string, sa: string, td = TD) => ({ role: 'waypoint' as const, node: '', subject: sa, identity: { trustDomain: td, namespace: ns, serviceAccount: sa } });
  t.notThrows(() => admitPeer(as('shop', 'ep-sa'), snap));
  t.notThrows(() => admitPeer(as('shop', 'label-sa'), snap));
  for (const [ns, sa, td] of [['other', 'other-sa', TD], ['shop', 'plain-sa', TD], ['shop', 'ep-sa', 'evil.example'], ['other', 'ep-sa', TD]] as const) {
    t.throws(() => admitPeer(as(ns, sa, td), snap), { code: 'AMBIT_XDS_FORBIDDEN' }, `${td}/${ns}/${sa}`);
  }
  t.throws(() => admitPeer({ role: 'waypoint', node: '', subject: 'x' }, snap), { code: 'AMBIT_XDS_FORBIDDEN', message: /must name its identity/ });
  // no waypoints at all (ambit up today): agents still get in
  t.notThrows(() => admitPeer({ role: 'agent', node: 'n', subject: 'a' }, Snapshot.empty()));
  t.throws(() => admitPeer(as('shop', 'ep-sa'), Snapshot.empty()), { code: 'AMBIT_XDS_FORBIDDEN' });
});
