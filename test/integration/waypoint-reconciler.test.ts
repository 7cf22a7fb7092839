/**
 * The waypoint reconciler against the in-test API server: a waypoint Gateway gets its
 * ServiceAccount, root ConfigMap, Deployment and Service (server-side applied, owned by the
 * Gateway) and its status through the status subresource; a change of the Gateway updates them;
 * nothing is written when nothing changed; a Gateway that goes (or stops being a waypoint) takes
 * them along; API failures are retried, refusals reported in the status.
 */
import test from 'ava';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeApi, WaypointReconciler } from '../../src/control/kube/index.js';
import type { KubeObject, Rejection } from '../../src/control/config/types.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';
import type { Obj } from '../helpers/fake-kube-api.js';

const GATEWAYS = '/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways';
const GW = `${GATEWAYS}/waypoint`;
const DEP = '/apis/apps/v1/namespaces/shop/deployments/waypoint';
const SVC = '/api/v1/namespaces/shop/services/waypoint';
const SA = '/api/v1/namespaces/shop/serviceaccounts/waypoint';
const CM = '/api/v1/namespaces/shop/configmaps/waypoint-ambit-ca-root';
const NOW = '2026-12-03T10:00:00Z';

function gateway(name = 'waypoint', cls = 'ambit-waypoint', spec: Record<string, unknown> = {}): Obj {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name, namespace: 'shop' },
    spec: { gatewayClassName: cls, listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }], ...spec },
  };
}

async function setup(t: import('ava').ExecutionContext, fake = new FakeKubeApi(), pageSize?: number) {
  const server = fake.server.listening ? `http://127.0.0.1:${(fake.server.address() as { port: number }).port}` : await fake.listen();
  t.teardown(() => fake.close());
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server, skipTLSVerify: true }], users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }], currentContext: 'c',
  });
  const rec = new WaypointReconciler({
    api: new KubeApi(kc), rootsPem: 'ROOT-PEM', now: () => NOW, backoff: { initialMs: 5, maxMs: 20 }, ...(pageSize ? { pageSize } : {}),
    settings: { image: 'reg.example/ambit:1', controlUrl: 'wss://ambit-control.ambit-system.svc:15012', trustDomain: 'cluster.local', tokenAudience: 'ambit' },
  });
  t.teardown(() => rec.stop());
  /** hands the reconciler the API server's current Gateways (as the config source would) and waits for it */
  const sync = async (rejected: Rejection[] = []): Promise<void> => {
    rec.update(fake.list('/apis/gateway.networking.k8s.io/v1/gateways') as KubeObject[], rejected);
    await rec.settled();
  };
  return { fake, rec, sync };
}

/** A JSON tree read in assertions (test-only looseness). */
type Tree = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const conditions = (o: Obj | undefined) => ((o?.status as { conditions?: Array<Record<string, unknown>> } | undefined)?.conditions ?? []);

test('a waypoint Gateway gets its four objects, owned by it, and Accepted/Programmed status with the Service address', async (t) => {
  const { fake, sync } = await setup(t);
  const gw = fake.put(GATEWAYS, gateway());
  await sync();
  const uid = gw.metadata!.uid;
  for (const p of [SA, CM, DEP, SVC]) {
    const o = fake.get(p);
    t.truthy(o, p);
    t.deepEqual(o!.metadata!.ownerReferences, [{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'waypoint', uid, controller: true }], p);
  }
  for (const w of fake.writes().filter((s) => !s.path.endsWith('/status'))) {
    t.is(w.method, 'PATCH');
    t.is(w.contentType, 'application/apply-patch+yaml');
    t.is(w.query.get('fieldManager'), 'ambit-control');
    t.is(w.status, 201);
  }
  const ip = (fake.get(SVC)!.spec as { clusterIP: string }).clusterIP;
  t.regex(ip, /^10\.96\.0\.\d+$/);
  const status = fake.get(GW)!.status as Record<string, unknown>;
  t.deepEqual(status.addresses, [{ type: 'IPAddress', value: ip }]);
  t.deepEqual(conditions(fake.get(GW)).map((c) => [c.type, c.status, c.reason, c.observedGeneration]), [['Accepted', 'True', 'Accepted', 1], ['Programmed', 'True', 'Programmed', 1]]);
  const statusWrite = fake.writes().find((s) => s.path === `${GW}/status`)!;
  t.is(statusWrite.method, 'PATCH');
  t.is(statusWrite.contentType, 'application/merge-patch+json');
  t.is(fake.get(GW)!.metadata!.generation, 1, 'the status subresource does not touch spec');
  // the container the waypoint runs
  const c = ((fake.get(DEP)!.spec as Tree).template.spec.containers[0]) as { image: string; args: string[] };
  t.is(c.image, 'reg.example/ambit:1');
  t.deepEqual(c.args, ['waypoint', '--name', 'waypoint', '--namespace', 'shop']);

  // the same set again (now with the status it wrote): not one write
  const mark = fake.seen.length;
  await sync();
  t.deepEqual(fake.seen.slice(mark).filter((s) => s.method !== 'GET'), []);
});

test('a change of the Gateway updates its objects and the status\'s observedGeneration; a resync puts back a deleted Deployment', async (t) => {
  const { fake, rec, sync } = await setup(t);
  fake.put(GATEWAYS, gateway());
  await sync();
  const ip = (fake.get(SVC)!.spec as { clusterIP: string }).clusterIP;
  const mark = fake.seen.length;
  fake.put(GATEWAYS, { ...fake.get(GW)!, spec: { ...(fake.get(GW)!.spec as object), infrastructure: { labels: { team: 'payments' }, annotations: { 'example.com/owner': 'pay' } } } });
  t.is(fake.get(GW)!.metadata!.generation, 2);
  await sync();
  const dep = fake.get(DEP)!;
  t.is(dep.metadata!.labels!.team, 'payments');
  t.is((dep.spec as Tree).template.metadata.labels.team, 'payments');
  t.is((dep.spec as Tree).template.metadata.annotations['example.com/owner'], 'pay');
  t.is(fake.get(SVC)!.metadata!.labels!.team, 'payments');
  t.is((fake.get(SVC)!.spec as { clusterIP: string }).clusterIP, ip, 'an update keeps the ClusterIP');
  t.deepEqual(fake.seen.slice(mark).filter((s) => s.method === 'PATCH' && !s.path.endsWith('/status')).map((s) => [s.path, s.status]),
    [[SA, 200], [CM, 200], [DEP, 200], [SVC, 200]]);
  t.deepEqual(conditions(fake.get(GW)).map((c) => c.observedGeneration), [2, 2]);
  t.is(conditions(fake.get(GW))[1]!.lastTransitionTime, NOW);

  fake.remove(DEP);
  await sync();
  t.is(fake.get(DEP), undefined, 'without a resync, what it applied is taken as still there');
  rec.resync();
  await rec.settled();
  t.truthy(fake.get(DEP), 'the resync applied it again');
});

test('a deleted Gateway\'s objects go with it (ownerReferences); a Gateway that stops being a waypoint has them deleted', async (t) => {
  const { fake, sync } = await setup(t);
  fake.put(GATEWAYS, gateway());
  fake.put(GATEWAYS, gateway('other'));
  await sync();
  // deleted: the garbage collector removes the dependents; the reconciler's deletes find nothing left
  fake.remove(GW);
  for (const p of [SA, CM, DEP, SVC]) t.is(fake.get(p), undefined, p);
  await sync();
  t.truthy(fake.get('/apis/apps/v1/namespaces/shop/deployments/other'), 'the other waypoint stays');
  // class changed to an ingress class: no longer ambit's to run
  const other = '/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/other';
  const mark = fake.seen.length;
  fake.put(GATEWAYS, { ...fake.get(other)!, spec: { ...(fake.get(other)!.spec as object), gatewayClassName: 'nginx' } });
  await sync();
  t.deepEqual(fake.seen.slice(mark).filter((s) => s.method === 'DELETE').map((s) => [s.path, s.status]), [
    ['/api/v1/namespaces/shop/services/other', 200],
    ['/apis/apps/v1/namespaces/shop/deployments/other', 200],
    ['/api/v1/namespaces/shop/configmaps/other-ambit-ca-root', 200],
    ['/api/v1/namespaces/shop/serviceaccounts/other', 200],
  ]);
  t.truthy(fake.get(other), 'the Gateway itself is not ours to delete');
});

test('after a restart, objects left for a Gateway that is gone are found by their label and deleted', async (t) => {
  const first = await setup(t);
  first.fake.put(GATEWAYS, gateway('old'));
  first.fake.put(GATEWAYS, gateway());
  await first.sync();
  first.rec.stop();
  // while no control plane ran, Gateway old changed class (a deletion would have been the GC's)
  const old = '/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/old';
  first.fake.put(GATEWAYS, { ...first.fake.get(old)!, spec: { ...(first.fake.get(old)!.spec as object), gatewayClassName: 'nginx' } });
  const second = await setup(t, first.fake, 1); // one item per page: the listing follows continue
  const mark = first.fake.seen.length;
  await second.sync();
  const seen = first.fake.seen.slice(mark);
  const lists = seen.filter((s) => s.method === 'GET' && s.path === '/apis/apps/v1/deployments');
  t.true(lists.every((s) => s.query.get('labelSelector') === 'app.kubernetes.io/managed-by=ambit-control'));
  t.deepEqual(lists.map((s) => s.query.get('continue')), [null, '1'], 'two Deployments, one per page');
  t.is(first.fake.get('/apis/apps/v1/namespaces/shop/deployments/old'), undefined);
  t.is(first.fake.get('/api/v1/namespaces/shop/services/old'), undefined);
  t.truthy(first.fake.get(DEP), 'the live waypoint stays');
});

test('a Gateway the translator rejected is not Accepted and gets no objects', async (t) => {
  const { fake, sync } = await setup(t);
  fake.put(GATEWAYS, gateway('waypoint', 'istio-waypoint', { listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] }));
  await sync([{ kind: 'Gateway', namespace: 'shop', name: 'waypoint', field: 'spec.listeners', message: 'Gateway shop/waypoint: spec.listeners: a waypoint needs a listener {port: 15008, protocol: HBONE}' }]);
  t.is(fake.get(DEP), undefined);
  const [a, p] = conditions(fake.get(GW));
  t.like(a, { type: 'Accepted', status: 'False', reason: 'Invalid', message: 'Gateway shop/waypoint: spec.listeners: a waypoint needs a listener {port: 15008, protocol: HBONE}' });
  t.like(p, { type: 'Programmed', status: 'False' });
});

test('a failing API server is retried until the run succeeds; a refusal is written into Programmed and not retried', async (t) => {
  const { fake, rec, sync } = await setup(t);
  fake.put(GATEWAYS, gateway());
  fake.fail('PATCH', /\/deployments\/waypoint$/, 503, 2);
  await sync();
  t.truthy(fake.get(DEP));
  t.deepEqual(fake.seen.filter((s) => s.path === DEP && s.method === 'PATCH').map((s) => s.status), [503, 503, 201]);
  t.like(conditions(fake.get(GW))[1], { type: 'Programmed', status: 'True' });

  fake.put(GATEWAYS, { ...fake.get(GW)!, spec: { ...(fake.get(GW)!.spec as object), infrastructure: { labels: { v: '2' } } } });
  fake.fail('PATCH', /\/deployments\/waypoint$/, 422);
  const runs = rec.runs;
  await sync();
  t.is(rec.runs, runs + 1, 'one run, no retry loop');
  t.like(conditions(fake.get(GW))[1], { type: 'Programmed', status: 'False', reason: 'Pending', message: 'Deployment shop/waypoint: HTTP 422: injected failure 422' });
});

test('ambit\'s GatewayClass is marked Accepted once (again after a resync only if it changed); another controller\'s is left alone', async (t) => {
  const { fake, rec, sync } = await setup(t);
  const CLASSES = '/apis/gateway.networking.k8s.io/v1/gatewayclasses';
  fake.put(CLASSES, { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GatewayClass', metadata: { name: 'ambit-waypoint' }, spec: { controllerName: 'ambit.dev/waypoint-controller' } });
  await sync();
  t.deepEqual(conditions(fake.get(`${CLASSES}/ambit-waypoint`)), [
    { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'handled by the ambit control plane', observedGeneration: 1, lastTransitionTime: NOW },
  ]);
  const mark = fake.seen.length;
  await sync();
  rec.resync();
  await rec.settled();
  t.false(fake.seen.slice(mark).some((s) => s.path.startsWith(CLASSES) && s.method !== 'GET'), 'already Accepted: not written again');

  // a class of that name owned by another controller is not ours to judge
  fake.put(CLASSES, { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GatewayClass', metadata: { name: 'ambit-waypoint' }, spec: { controllerName: 'example.com/other' } });
  const before = fake.get(`${CLASSES}/ambit-waypoint`)!.status;
  rec.resync();
  await rec.settled();
  t.deepEqual(fake.get(`${CLASSES}/ambit-waypoint`)!.status, before);
});
