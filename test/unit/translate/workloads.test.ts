/** Pods, Services and Namespaces -> Workloads and Services. */
import test from 'ava';
import type { KubeObject } from '../../../src/control/config/types.js';
import { messages, objects, pod, translate } from './_support.js';

const ambientNs = objects(`
apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
`);

test('a running pod becomes a workload with every field derived', (t) => {
  const p = pod('web-5d8f9c7b6d-x2x4z', 'amb', { app: 'web', version: 'v2', 'pod-template-hash': '5d8f9c7b6d' }, '10.0.0.7');
  (p.metadata as Record<string, unknown>)['ownerReferences'] = [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-5d8f9c7b6d', controller: true }];
  (p.status as Record<string, unknown>)['podIPs'] = [{ ip: '10.0.0.7' }, { ip: 'FD00:0:0::7' }];
  const r = translate([...ambientNs, p]);
  t.deepEqual(messages(r.rejected), []);
  const w = r.snapshot.workload('c1//Pod/amb/web-5d8f9c7b6d-x2x4z');
  t.like(w, {
    name: 'web-5d8f9c7b6d-x2x4z', namespace: 'amb', serviceAccount: 'sa-web-5d8f9c7b6d-x2x4z', trustDomain: 'cluster.local',
    node: 'node-a', canonicalName: 'web', canonicalRevision: 'v2', workloadName: 'web', workloadType: 'deployment',
    tunnel: 'hbone', healthy: true,
  });
  t.deepEqual(w?.addresses, ['10.0.0.7', 'fd00::7']);
  t.is(r.snapshot.workloadByIp('fd00::7'), w);
});

const derive: [string, Partial<KubeObject['metadata']>, Record<string, string>, { workloadName: string; workloadType: string; canonicalName: string; canonicalRevision: string }][] = [
  ['plain pod', {}, {}, { workloadName: 'p', workloadType: 'pod', canonicalName: 'p', canonicalRevision: 'latest' }],
  ['generateName with RS hash', { generateName: 'api-7c9bd8f5b4-' }, {}, { workloadName: 'api', workloadType: 'deployment', canonicalName: 'api', canonicalRevision: 'latest' }],
  ['generateName without hash', { generateName: 'api-' }, {}, { workloadName: 'api', workloadType: 'pod', canonicalName: 'api', canonicalRevision: 'latest' }],
  ['Job owner', { ownerReferences: [{ kind: 'Job', name: 'migrate', controller: true }] }, {}, { workloadName: 'migrate', workloadType: 'job', canonicalName: 'migrate', canonicalRevision: 'latest' }],
  ['CronJob-made Job owner', { ownerReferences: [{ kind: 'Job', name: 'nightly-28456320', controller: true }] }, {}, { workloadName: 'nightly', workloadType: 'cronjob', canonicalName: 'nightly', canonicalRevision: 'latest' }],
  ['StatefulSet owner', { ownerReferences: [{ kind: 'StatefulSet', name: 'db', controller: true }] }, {}, { workloadName: 'db', workloadType: 'pod', canonicalName: 'db', canonicalRevision: 'latest' }],
  ['app.kubernetes.io labels win', {}, { 'app.kubernetes.io/name': 'n1', app: 'n2', 'app.kubernetes.io/version': '1.2', version: 'x' }, { workloadName: 'p', workloadType: 'pod', canonicalName: 'n1', canonicalRevision: '1.2' }],
  ['app/version labels', {}, { app: 'n2', version: 'v9' }, { workloadName: 'p', workloadType: 'pod', canonicalName: 'n2', canonicalRevision: 'v9' }],
];
for (const [name, meta, labels, want] of derive) {
  test(`workload identity: ${name}`, (t) => {
    const p = pod('p', 'ns', labels, '10.0.0.1');
    Object.assign(p.metadata, meta);
    const r = translate([p]);
    t.deepEqual(messages(r.rejected), []);
    t.like(r.snapshot.workloadByIp('10.0.0.1'), want);
  });
}

test('health, phase, tunnel and opt-outs', (t) => {
  const notReady = pod('nr', 'amb', {}, '10.0.0.1');
  (notReady.status as Record<string, unknown>)['conditions'] = [{ type: 'Ready', status: 'False' }];
  const noCond = pod('nc', 'amb', {}, '10.0.0.2');
  delete (noCond.status as Record<string, unknown>)['conditions'];
  const pending = pod('pending', 'amb', {}, '10.0.0.3');
  (pending.status as Record<string, unknown>)['phase'] = 'Pending';
  const noIp = pod('noip', 'amb', {}, '');
  const optOut = pod('out', 'amb', { 'istio.io/dataplane-mode': 'none' }, '10.0.0.4');
  const optIn = pod('in', 'plain', { 'istio.io/dataplane-mode': 'ambient' }, '10.0.0.5');
  const plainPod = pod('pl', 'plain', {}, '10.0.0.6');
  const hostNet = pod('hn', 'amb', {}, '10.0.0.8', { hostNetwork: true });
  const noSa = pod('nosa', 'amb', {}, '10.0.0.9');
  delete (noSa.spec as Record<string, unknown>)['serviceAccountName'];
  const r = translate([...ambientNs, notReady, noCond, pending, noIp, optOut, optIn, plainPod, hostNet, noSa]);
  t.deepEqual(messages(r.rejected), []);
  const w = (ip: string) => r.snapshot.workloadByIp(ip);
  t.false(w('10.0.0.1')?.healthy);
  t.true(w('10.0.0.2')?.healthy);
  t.is(w('10.0.0.3'), undefined);
  t.is(r.snapshot.counts.workloads, 7);
  t.is(w('10.0.0.4')?.tunnel, 'none');
  t.is(w('10.0.0.5')?.tunnel, 'hbone');
  t.is(w('10.0.0.6')?.tunnel, 'none');
  t.is(w('10.0.0.8')?.tunnel, 'none');
  t.is(w('10.0.0.9')?.serviceAccount, 'default');
});

test('services: hostname, vips, ports, protocols, named target ports, endpoints by selector', (t) => {
  const r = translate([
    ...objects(`
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::a"]
  selector: {app: web}
  ports:
  - {name: http-main, port: 80, targetPort: 8080}
  - {name: grpc, port: 81, targetPort: web}
  - {name: tcp-db, port: 82, targetPort: nosuch}
  - {name: weird, port: 83, appProtocol: HTTP2}
  - {name: dns, port: 53, protocol: UDP}
  - {name: grpc-web-x, port: 84, targetPort: "8084"}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: ns}
spec: {clusterIP: None, selector: {app: web, tier: front}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: other-ns, namespace: ns2}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: noselector, namespace: ns}
spec: {ports: [{port: 80}]}
`),
    pod('web-1', 'ns', { app: 'web', tier: 'front' }, '10.0.0.1'),
    pod('web-2', 'ns', { app: 'web' }, '10.0.0.2'),
    pod('db', 'ns', { app: 'db' }, '10.0.0.3'),
  ]);
  t.deepEqual(messages(r.rejected), []);
  const s = r.snapshot.service('ns/web.ns.svc.cluster.local');
  t.like(s, { name: 'web', namespace: 'ns', hostname: 'web.ns.svc.cluster.local' });
  t.deepEqual(s?.vips, ['10.96.0.10', 'fd00:96::a']);
  t.deepEqual(s?.ports, [
    { port: 80, targetPort: 8080, name: 'http-main', appProtocol: 'http' },
    { port: 81, targetPort: 8080, name: 'grpc', appProtocol: 'grpc' },
    { port: 82, targetPort: 82, name: 'tcp-db', appProtocol: 'tcp' },
    { port: 83, targetPort: 83, name: 'weird', appProtocol: 'http2' },
    { port: 84, targetPort: 8084, name: 'grpc-web-x', appProtocol: 'grpc-web' },
  ]);
  t.is(r.snapshot.serviceByVip('fd00:96::a'), s);
  t.deepEqual(r.snapshot.endpoints('ns/web.ns.svc.cluster.local').map((w) => w.name), ['web-1', 'web-2']);
  t.deepEqual(r.snapshot.endpoints('ns/headless.ns.svc.cluster.local').map((w) => w.name), ['web-1']);
  t.deepEqual(r.snapshot.service('ns/headless.ns.svc.cluster.local')?.vips, []);
  t.deepEqual(r.snapshot.endpoints('ns2/other-ns.ns2.svc.cluster.local'), []);
  t.deepEqual(r.snapshot.endpoints('ns/noselector.ns.svc.cluster.local'), []);
  t.deepEqual(r.snapshot.workloadByIp('10.0.0.3')?.services, []);
});

test('selector matching scales linearly: 20k pods x 2k services', (t) => {
  const objs: KubeObject[] = [];
  for (let i = 0; i < 2000; i++) {
    objs.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `s${i}`, namespace: `n${i % 10}` }, spec: { selector: { app: `a${i}` }, ports: [{ port: 80 }] } });
  }
  for (let i = 0; i < 20000; i++) {
    objs.push(pod(`p${i}`, `n${i % 10}`, { app: `a${i % 2000}`, other: 'x' }, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`));
  }
  const r = translate(objs);
  t.is(r.snapshot.counts.workloads, 20000);
  // pod i is in namespace i%10 and selected by service i%2000 (also in namespace (i%2000)%10 = i%10)
  t.deepEqual(r.snapshot.workloadByIp('10.0.1.44')?.services, ['n0/s300.n0.svc.cluster.local']);
  t.is(r.snapshot.endpoints('n0/s300.n0.svc.cluster.local').length, 10);
});
