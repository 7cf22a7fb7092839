/** Waypoint Gateways and istio.io/use-waypoint binding (l7 ref 1.2). */
import test from 'ava';
import type { KubeObject } from '../../../src/control/config/types.js';
import { messages, objects, pod, translate } from './_support.js';

function gateway(name: string, ns: string, opts: { for?: string; cls?: string; allowed?: string } = {}): KubeObject[] {
  return objects(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ${name}
  namespace: ${ns}
${opts.for ? `  labels: {istio.io/waypoint-for: ${opts.for}}` : ''}
spec:
  gatewayClassName: ${opts.cls ?? 'ambit-waypoint'}
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
${opts.allowed ? `    allowedRoutes: ${opts.allowed}` : ''}
---
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${ns}}
spec: {clusterIP: 10.96.9.${ns.length}${name.length}, selector: {gateway.networking.k8s.io/gateway-name: ${name}}, ports: [{name: mesh, port: 15008}]}
`);
}

function ns(name: string, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}
function svc(name: string, namespace: string, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace, labels }, spec: { selector: { app: name }, ports: [{ port: 80 }] } };
}

const WP = 'ns1/wp.ns1.svc.cluster.local';

test('a waypoint-class Gateway becomes a waypoint; other classes are ignored; istio-waypoint accepted', (t) => {
  const r = translate([
    ...gateway('wp', 'ns1', { for: 'all' }),
    ...gateway('wp2', 'ns1', { cls: 'istio-waypoint' }),
    ...objects(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: ns1}
spec: {gatewayClassName: nginx, listeners: [{name: http, port: 80, protocol: HTTP, whatever: 1}]}
`),
  ]);
  t.deepEqual(messages(r.rejected), []);
  t.deepEqual(r.waypoints, [
    { name: 'wp', namespace: 'ns1', service: WP, for: 'all', gatewayClass: 'ambit-waypoint' },
    { name: 'wp2', namespace: 'ns1', service: 'ns1/wp2.ns1.svc.cluster.local', for: 'service', gatewayClass: 'istio-waypoint' },
  ]);
  t.is(r.snapshot.waypoint('ns1/wp')?.for, 'all');
});

interface Case {
  name: string;
  wpFor?: string;
  nsLabels?: Record<string, string>;
  svcLabels?: Record<string, string>;
  podLabels?: Record<string, string>;
  svcBound: boolean;
  podBound: boolean;
  warn?: RegExp;
  noWarn?: boolean;
}
const cases: Case[] = [
  { name: 'no labels: nothing bound', svcBound: false, podBound: false, noWarn: true },
  { name: 'namespace label binds services (for=service default)', nsLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: true, podBound: false, noWarn: true },
  { name: 'namespace label, for=workload binds pods only', wpFor: 'workload', nsLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: false, podBound: true },
  { name: 'namespace label, for=all binds both', wpFor: 'all', nsLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: true, podBound: true, noWarn: true },
  { name: 'for=none binds nothing', wpFor: 'none', nsLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: false, podBound: false },
  { name: 'service label overrides namespace none', nsLabels: { 'istio.io/use-waypoint': 'none' }, svcLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: true, podBound: false },
  { name: 'service label none opts out of namespace waypoint', wpFor: 'all', nsLabels: { 'istio.io/use-waypoint': 'wp' }, svcLabels: { 'istio.io/use-waypoint': 'none' }, svcBound: false, podBound: true },
  { name: 'pod label none opts out', wpFor: 'all', nsLabels: { 'istio.io/use-waypoint': 'wp' }, podLabels: { 'istio.io/use-waypoint': 'none' }, svcBound: true, podBound: false },
  { name: 'pod label binds with for=workload', wpFor: 'workload', podLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: false, podBound: true },
  {
    name: 'explicit pod label on a service-only waypoint: not bound, warned', podLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: false, podBound: false,
    warn: /Pod ns1\/app-1: metadata\.labels\["istio\.io\/use-waypoint"\]: waypoint ns1\/wp is for "service" traffic, not workload traffic/,
  },
  {
    name: 'explicit service label on a workload-only waypoint: not bound, warned', wpFor: 'workload', svcLabels: { 'istio.io/use-waypoint': 'wp' }, svcBound: false, podBound: false,
    warn: /Service ns1\/app: .*is for "workload" traffic, not service traffic/,
  },
  {
    name: 'missing waypoint: not redirected, warned', svcLabels: { 'istio.io/use-waypoint': 'nosuch' }, svcBound: false, podBound: false,
    warn: /Service ns1\/app: metadata\.labels\["istio\.io\/use-waypoint"\]: waypoint ns1\/nosuch does not exist; traffic is not redirected/,
  },
  {
    name: 'missing waypoint from the namespace label is reported on the Namespace', nsLabels: { 'istio.io/use-waypoint': 'gone' }, svcBound: false, podBound: false,
    warn: /^Namespace ns1: .*waypoint ns1\/gone does not exist/,
  },
];

for (const c of cases) {
  test(`use-waypoint: ${c.name}`, (t) => {
    const r = translate([
      ns('ns1', c.nsLabels),
      ...gateway('wp', 'ns1', c.wpFor ? { for: c.wpFor } : {}),
      svc('app', 'ns1', c.svcLabels),
      pod('app-1', 'ns1', { app: 'app', ...c.podLabels }, '10.0.0.1'),
      pod('wp-1', 'ns1', { 'gateway.networking.k8s.io/gateway-name': 'wp' }, '10.0.0.2'),
    ]);
    t.deepEqual(messages(r.rejected), []);
    const s = r.snapshot.service('ns1/app.ns1.svc.cluster.local');
    const w = r.snapshot.workloadByIp('10.0.0.1');
    t.deepEqual(s?.waypoint, c.svcBound ? { service: WP, port: 15008 } : undefined);
    t.deepEqual(w?.waypoint, c.podBound ? { service: WP, port: 15008 } : undefined);
    // waypoints never get a waypoint, whatever the namespace says
    t.is(r.snapshot.workloadByIp('10.0.0.2')?.waypoint, undefined);
    t.is(r.snapshot.service(WP)?.waypoint, undefined);
    t.deepEqual(r.snapshot.waypointEndpoints({ service: WP, port: 15008 }).map((x) => x.name), ['wp-1']);
    if (c.warn) t.true(messages(r.warnings).some((m) => c.warn!.test(m)), messages(r.warnings).join('\n'));
    if (c.noWarn) t.deepEqual(messages(r.warnings), []);
  });
}

test('pod inheriting a service-only waypoint from its namespace is silently not bound', (t) => {
  const r = translate([ns('ns1', { 'istio.io/use-waypoint': 'wp' }), ...gateway('wp', 'ns1'), pod('p', 'ns1', {}, '10.0.0.1')]);
  t.is(r.snapshot.workloadByIp('10.0.0.1')?.waypoint, undefined);
  t.deepEqual(messages(r.warnings), []);
});

test('cross-namespace waypoint: needs use-waypoint-namespace and allowedRoutes that admit the namespace', (t) => {
  const labels = { 'istio.io/use-waypoint': 'shared', 'istio.io/use-waypoint-namespace': 'infra' };
  const denied = translate([ns('app'), ...gateway('shared', 'infra'), svc('a', 'app', labels)]);
  t.is(denied.snapshot.service('app/a.app.svc.cluster.local')?.waypoint, undefined);
  t.true(messages(denied.warnings).some((m) => /does not admit namespace app/.test(m)));

  const all = translate([ns('app'), ...gateway('shared', 'infra', { allowed: '{namespaces: {from: All}}' }), svc('a', 'app', labels)]);
  t.deepEqual(all.snapshot.service('app/a.app.svc.cluster.local')?.waypoint, { service: 'infra/shared.infra.svc.cluster.local', port: 15008 });

  const sel = '{namespaces: {from: Selector, selector: {matchLabels: {team: x}}}}';
  const selNo = translate([ns('app'), ...gateway('shared', 'infra', { allowed: sel }), svc('a', 'app', labels)]);
  t.is(selNo.snapshot.service('app/a.app.svc.cluster.local')?.waypoint, undefined);
  const selYes = translate([ns('app', { team: 'x' }), ...gateway('shared', 'infra', { allowed: sel }), svc('a', 'app', labels)]);
  t.truthy(selYes.snapshot.service('app/a.app.svc.cluster.local')?.waypoint);

  const viaNs = translate([ns('app', labels), ...gateway('shared', 'infra', { allowed: '{namespaces: {from: All}}' }), svc('a', 'app')]);
  t.truthy(viaNs.snapshot.service('app/a.app.svc.cluster.local')?.waypoint);
});
