import test from 'ava';
import type { Authorization, Service, Waypoint, Workload } from '../../../src/model/index.js';
import { Snapshot } from '../../../src/model/index.js';

const wl = (name: string, node: string, services: string[], policies: string[] = []): Workload => ({
  uid: `c//Pod/ns/${name}`, name, namespace: 'ns', serviceAccount: 'default', trustDomain: 'td', node,
  addresses: [`10.0.0.${name.length}`], labels: {}, canonicalName: name, canonicalRevision: 'latest', workloadName: name,
  workloadType: 'pod', tunnel: 'hbone', healthy: true, services, authorizationPolicies: policies,
});
const svc = (name: string, vip: string, waypoint?: string): Service => ({
  name, namespace: 'ns', hostname: `${name}.ns.svc.cluster.local`, vips: [vip], ports: [{ port: 80, targetPort: 8080 }],
  ...(waypoint ? { waypoint: { service: waypoint, port: 15008 } } : {}),
});
const az = (name: string, scope: Authorization['scope'], namespace = 'ns'): Authorization =>
  ({ name, namespace, scope, action: 'deny', dryRun: false, rules: [] });

const WP_SVC = 'ns/wp.ns.svc.cluster.local';
const wp: Waypoint = { name: 'wp', namespace: 'ns', service: WP_SVC, for: 'service', gatewayClass: 'ambit-waypoint' };

test('waypoint lookups: by key, by service, endpoints and waypoint-of a waypoint pod', (t) => {
  const snap = Snapshot.build({
    workloads: [wl('a', 'n1', ['ns/app.ns.svc.cluster.local']), wl('wpod', 'n2', [WP_SVC])],
    services: [svc('app', '10.96.0.1', WP_SVC), svc('wp', '10.96.0.2')],
    authorizations: [],
    waypoints: [wp],
  }, 7);
  t.is(snap.version, 7);
  t.is(snap.waypoint('ns/wp'), wp);
  t.is(snap.waypointByService(WP_SVC), wp);
  const app = snap.serviceByVip('10.96.0.1');
  t.truthy(app?.waypoint);
  t.deepEqual(snap.waypointEndpoints(app!.waypoint!).map((w) => w.name), ['wpod']);
  t.is(snap.waypointOf(snap.workload('c//Pod/ns/wpod')!), wp);
  t.is(snap.waypointOf(snap.workload('c//Pod/ns/a')!), undefined);
  t.is(snap.counts.waypoints, 1);
});

test('workloadsOnNode and policiesFor (global, namespace, selector)', (t) => {
  const snap = Snapshot.build({
    workloads: [wl('a', 'n1', [], ['ns/sel']), wl('bb', 'n1', []), wl('ccc', 'n2', [])],
    services: [],
    authorizations: [az('g', 'global', 'istio-system'), az('n', 'namespace'), az('other', 'namespace', 'other'), az('sel', 'workload')],
  });
  t.deepEqual(snap.workloadsOnNode('n1').map((w) => w.name), ['a', 'bb']);
  t.deepEqual(snap.workloadsOnNode('nope'), []);
  t.deepEqual(snap.policiesFor(snap.workload('c//Pod/ns/a')!).map((p) => p.name), ['g', 'n', 'sel']);
  t.deepEqual(snap.policiesFor(snap.workload('c//Pod/ns/bb')!).map((p) => p.name), ['g', 'n']);
  t.is(Snapshot.empty().counts.waypoints, 0);
});
