/**
 * Leader election over a Lease against the in-test API server, with a clock the test moves (no
 * waiting): one leader at a time, renewals, take-over only after the holder's record stayed
 * unchanged for the lease duration by the taker's own clock, a release that lets the next one in
 * at once, and the waypoint reconciler writing only while its replica leads.
 */
import test from 'ava';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeApi, LeaderElector, WaypointReconciler } from '../../src/control/kube/index.js';
import type { KubeObject } from '../../src/control/config/types.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';

const LEASES = '/apis/coordination.k8s.io/v1/namespaces/ambit-system/leases';
const LEASE = `${LEASES}/ambit-control`;

async function setup(t: import('ava').ExecutionContext) {
  const fake = new FakeKubeApi();
  const server = await fake.listen();
  t.teardown(() => fake.close());
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server, skipTLSVerify: true }], users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }], currentContext: 'c',
  });
  const api = new KubeApi(kc);
  const clock = { now: Date.parse('2026-12-03T10:00:00Z') };
  const changes: string[] = [];
  const elector = (identity: string, onChange?: (l: boolean) => void) => new LeaderElector({
    api, namespace: 'ambit-system', identity, leaseDurationSeconds: 15, renewDeadlineMs: 10_000, now: () => clock.now,
    onChange: (l) => { changes.push(`${identity}:${l}`); onChange?.(l); },
  });
  return { fake, api, clock, changes, elector };
}

const spec = (fake: FakeKubeApi) => fake.get(LEASE)!.spec as { holderIdentity: string; renewTime: string; acquireTime: string; leaseTransitions: number; leaseDurationSeconds: number };

test('one leader; it renews; another takes over only after the record stood still for the lease duration', async (t) => {
  const { fake, clock, changes, elector } = await setup(t);
  const a = elector('control-a');
  const b = elector('control-b');
  t.true(await a.attempt());
  t.false(await b.attempt());
  t.like(spec(fake), { holderIdentity: 'control-a', leaseDurationSeconds: 15, leaseTransitions: 0 });
  t.regex(spec(fake).renewTime, /^2026-12-03T10:00:00\.000000Z$/, 'MicroTime: six fractional digits');

  clock.now += 5_000;
  t.true(await a.attempt(), 'renewed');
  const renew = fake.seen.filter((s) => s.method === 'PUT' && s.path === LEASE).at(-1)!;
  t.truthy(renew.body?.metadata?.resourceVersion, 'a write carries the resourceVersion it read');
  t.is(spec(fake).renewTime, '2026-12-03T10:00:05.000000Z');
  t.false(await b.attempt(), 'b has just seen a new record');

  // a stops renewing (hung, partitioned): b takes over 15 s after it last saw the record change
  clock.now += 14_000;
  t.false(await b.attempt());
  clock.now += 2_000;
  t.true(await b.attempt());
  t.like(spec(fake), { holderIdentity: 'control-b', leaseTransitions: 1 });
  // a comes back: it reads b's Lease and steps down at once
  t.false(await a.attempt());
  t.false(a.isLeader);
  t.deepEqual(changes, ['control-a:true', 'control-b:true', 'control-a:false']);
});

test('two replicas creating the Lease at once: exactly one leads', async (t) => {
  const { fake, elector } = await setup(t);
  fake.gateCreates(LEASES, 2);
  const results = await Promise.all([elector('a').attempt(), elector('b').attempt()]);
  t.deepEqual(results.slice().sort(), [false, true]);
  t.deepEqual(fake.seen.filter((s) => s.method === 'POST').map((s) => s.status), [201, 409]);
});

test('a leader that stops releases the Lease, and the next one leads at once', async (t) => {
  const { fake, elector } = await setup(t);
  const a = elector('a');
  const b = elector('b');
  t.true(await a.attempt());
  t.false(await b.attempt());
  await a.stop();
  t.false(a.isLeader);
  t.is(spec(fake).holderIdentity, '');
  t.true(await b.attempt(), 'no lease duration to wait out');
});

test('the waypoint reconciler writes only while its replica leads; leadership applies what it holds', async (t) => {
  const { fake, api, elector } = await setup(t);
  const a = elector('a');
  const b = elector('b', (l) => { if (l) rec.resync(); });
  t.true(await a.attempt());
  const rec = new WaypointReconciler({
    api, rootsPem: 'ROOT', isLeader: () => b.isLeader,
    settings: { image: 'img', controlUrl: 'wss://c:15012', trustDomain: 'cluster.local' },
  });
  t.teardown(() => rec.stop());
  const gw = fake.put('/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways', {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'wp', namespace: 'shop' },
    spec: { gatewayClassName: 'ambit-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  });
  const writes = fake.writes().length;
  rec.update([gw as KubeObject], []);
  await rec.settled();
  t.is(fake.writes().length, writes, 'a follower writes nothing');
  await a.stop();
  t.true(await b.attempt());
  await rec.settled();
  t.truthy(fake.get('/apis/apps/v1/namespaces/shop/deployments/wp'), 'the new leader applied the set it held');
});
