/**
 * Unchanged model objects keep their identity across updates (the wire encoder caches by
 * identity), and everything a change reaches gets a new object.
 */
import test from 'ava';
import type { KubeObject } from '../../../src/control/config/types.js';
import type { Snapshot } from '../../../src/model/index.js';
import { samePlainData } from '../../../src/control/translate/reuse.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, buildResourceTables } from '../../../src/xds/index.js';
import { objects, pod, translator } from './_support.js';

const base = objects(`
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec: {selector: {app: web}, clusterIP: 10.96.0.1, ports: [{name: http, port: 80, targetPort: web}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: b}
spec: {selector: {app: db}, clusterIP: 10.96.0.2, ports: [{port: 5432}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-in, namespace: a}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {namespaces: [a]}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: b}
spec: {mtls: {mode: STRICT}}
`);

const pods = [
  pod('web-1', 'a', { app: 'web' }, '10.0.0.1'),
  pod('web-2', 'a', { app: 'web' }, '10.0.0.2'),
  pod('other', 'a', { app: 'other' }, '10.0.0.3'),
  pod('db-1', 'b', { app: 'db' }, '10.0.1.1'),
];

const uid = (ns: string, name: string): string => `c1//Pod/${ns}/${name}`;

/** uids whose Workload object is not the same object in both snapshots */
function renewed(before: Snapshot, after: Snapshot): string[] {
  const out: string[] = [];
  for (const w of after.workloads) if (before.workload(w.uid) !== w) out.push(w.uid);
  return out.sort();
}

function replace(objs: readonly KubeObject[], kind: string, name: string, next: KubeObject): KubeObject[] {
  return objs.map((o) => (o.kind === kind && o.metadata.name === name ? next : o));
}

test('a change to one pod keeps every other model object, and its encoding, identical', (t) => {
  const tr = translator();
  const r1 = tr.update([...base, ...pods]);
  const tables1 = buildResourceTables(r1.snapshot, r1.l7).tables;
  const changed = pod('other', 'a', { app: 'other', version: 'v2' }, '10.0.0.3');
  const r2 = tr.update(replace([...base, ...pods], 'Pod', 'other', changed));
  t.deepEqual(renewed(r1.snapshot, r2.snapshot), [uid('a', 'other')]);
  t.is(r2.snapshot.workload(uid('a', 'other'))?.canonicalRevision, 'v2');
  for (const s of r2.snapshot.services) t.is(r1.snapshot.service(`${s.namespace}/${s.hostname}`), s);
  for (const a of r2.snapshot.authorizations) t.is(r1.snapshot.authorization(`${a.namespace}/${a.name}`), a);

  // the point of it all: the encoder's identity cache hits for everything untouched
  const tables2 = buildResourceTables(r2.snapshot, r2.l7).tables;
  const addr1 = tables1.get(ADDRESS_TYPE)!;
  const addr2 = tables2.get(ADDRESS_TYPE)!;
  t.is(addr2.get(uid('a', 'web-1')), addr1.get(uid('a', 'web-1')));
  t.not(addr2.get(uid('a', 'other'))?.version, addr1.get(uid('a', 'other'))?.version);
  t.is(tables2.get(AUTHORIZATION_TYPE)!.get('a/web-in'), tables1.get(AUTHORIZATION_TYPE)!.get('a/web-in'));
});

test('an equal copy of every object (a full re-list) keeps every model object identical', (t) => {
  const tr = translator();
  const all = [...base, ...pods];
  const r1 = tr.update(all);
  const r2 = tr.update(all.map((o) => structuredClone(o)));
  t.deepEqual(renewed(r1.snapshot, r2.snapshot), []);
  t.is(r2.snapshot.counts.workloads, 4);
  for (const s of r2.snapshot.services) t.is(r1.snapshot.service(`${s.namespace}/${s.hostname}`), s);
  for (const a of r2.snapshot.authorizations) t.is(r1.snapshot.authorization(`${a.namespace}/${a.name}`), a);
});

test('a Service selector change renews exactly the workloads whose Service list changed', (t) => {
  const tr = translator();
  const all = [...base, ...pods];
  const r1 = tr.update(all);
  const web = all.find((o) => o.kind === 'Service' && o.metadata.name === 'web')!;
  const spec = web.spec as Record<string, unknown>;
  const r2 = tr.update(replace(all, 'Service', 'web', { ...web, spec: { ...spec, selector: { app: 'other' } } }));
  t.deepEqual(renewed(r1.snapshot, r2.snapshot), [uid('a', 'other'), uid('a', 'web-1'), uid('a', 'web-2')]);
  t.deepEqual(r2.snapshot.workload(uid('a', 'web-1'))?.services, []);
  t.deepEqual(r2.snapshot.workload(uid('a', 'other'))?.services, ['a/web.a.svc.cluster.local']);
  t.is(r2.snapshot.workload(uid('b', 'db-1')), r1.snapshot.workload(uid('b', 'db-1')));
  // the model Service carries no selector, and the named port resolves alike on the new pod
  t.is(r2.snapshot.service('a/web.a.svc.cluster.local'), r1.snapshot.service('a/web.a.svc.cluster.local'));
  t.is(r2.snapshot.service('b/db.b.svc.cluster.local'), r1.snapshot.service('b/db.b.svc.cluster.local'));
});

test('a Service port change renews that Service and no workload', (t) => {
  const tr = translator();
  const all = [...base, ...pods];
  const r1 = tr.update(all);
  const db = all.find((o) => o.kind === 'Service' && o.metadata.name === 'db')!;
  const r2 = tr.update(replace(all, 'Service', 'db', { ...db, spec: { ...(db.spec as object), ports: [{ port: 5433 }] } }));
  t.deepEqual(renewed(r1.snapshot, r2.snapshot), []);
  t.not(r2.snapshot.service('b/db.b.svc.cluster.local'), r1.snapshot.service('b/db.b.svc.cluster.local'));
  t.is(r2.snapshot.service('b/db.b.svc.cluster.local')?.ports[0]?.port, 5433);
  t.is(r2.snapshot.service('a/web.a.svc.cluster.local'), r1.snapshot.service('a/web.a.svc.cluster.local'));
});

test('a policy selector change renews exactly the workloads whose policy list changed', (t) => {
  const tr = translator();
  const all = [...base, ...pods];
  const r1 = tr.update(all);
  const pol = all.find((o) => o.kind === 'AuthorizationPolicy')!;
  const spec = pol.spec as Record<string, unknown>;
  const r2 = tr.update(replace(all, 'AuthorizationPolicy', 'web-in', { ...pol, spec: { ...spec, selector: { matchLabels: { app: 'other' } } } }));
  t.deepEqual(renewed(r1.snapshot, r2.snapshot), [uid('a', 'other'), uid('a', 'web-1'), uid('a', 'web-2')]);
  t.deepEqual(r2.snapshot.workload(uid('a', 'other'))?.authorizationPolicies, ['a/web-in']);
  t.deepEqual(r2.snapshot.workload(uid('a', 'web-1'))?.authorizationPolicies, []);
  // the rules did not change, so the Authorization itself is still the same object
  t.is(r2.snapshot.authorization('a/web-in'), r1.snapshot.authorization('a/web-in'));
});

test('namespace-level changes (dataplane mode, PeerAuthentication) renew that namespace only', (t) => {
  const tr = translator();
  const all = [...base, ...pods];
  const r1 = tr.update(all);
  t.deepEqual(r1.snapshot.workload(uid('b', 'db-1'))?.authorizationPolicies, ['istio-system/istio_converted_static_strict']);
  const noPa = all.filter((o) => o.kind !== 'PeerAuthentication');
  const r2 = tr.update(noPa);
  t.deepEqual(renewed(r1.snapshot, r2.snapshot), [uid('b', 'db-1')]);
  t.deepEqual(r2.snapshot.workload(uid('b', 'db-1'))?.authorizationPolicies, []);
  const optOut: KubeObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a' } };
  const r3 = tr.update(replace(noPa, 'Namespace', 'a', optOut));
  t.deepEqual(renewed(r2.snapshot, r3.snapshot), [uid('a', 'other'), uid('a', 'web-1'), uid('a', 'web-2')]);
  t.is(r3.snapshot.workload(uid('a', 'web-1'))?.tunnel, 'none');
  t.is(r3.snapshot.workload(uid('b', 'db-1')), r2.snapshot.workload(uid('b', 'db-1')));
});

test('samePlainData: structure, key sets and non-plain objects', (t) => {
  t.true(samePlainData({ a: [1, { b: 'x' }], c: undefined }, { a: [1, { b: 'x' }], c: undefined }));
  // an optional field present-but-undefined is a different shape from an absent one
  t.false(samePlainData({ a: 1, c: undefined }, { a: 1 }));
  t.false(samePlainData({ a: 1 }, { a: 1, b: 2 }));
  t.false(samePlainData([1, 2], [1, 2, 3]));
  t.false(samePlainData([1], { 0: 1 }));
  t.false(samePlainData({ a: 0 }, { a: '0' }));
  t.true(samePlainData(NaN, NaN));
  // Maps and class instances are equal only to themselves: a cost, never a hidden change
  const m = new Map([[1, 2]]);
  t.true(samePlainData({ m }, { m }));
  t.false(samePlainData({ m }, { m: new Map([[1, 2]]) }));
  let deep: unknown = 1;
  let deep2: unknown = 1;
  for (let i = 0; i < 100; i++) { deep = [deep]; deep2 = [deep2]; }
  t.false(samePlainData(deep, deep2));
});
