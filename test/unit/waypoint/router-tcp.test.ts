/**
 * planTcp (src/waypoint/router.ts): which policies a TCP connection at the waypoint is authorized under. Service
 * traffic: the Service's targetRefs policies; workload-addressed traffic: the waypoint-wide ones too, and only
 * those when the pod's port belongs to no Service.
 */
import test from 'ava';
import { Snapshot, type Service } from '../../../src/model/index.js';
import type { L7Authorization, ServiceL7 } from '../../../src/model/l7.js';
import { resolveBinding, type Binding } from '../../../src/waypoint/index.js';
import { planTcp } from '../../../src/waypoint/router.js';
import { CLIENT_ID, WAYPOINT, workload } from '../../helpers/waypoint-harness.js';

const KEY = 'default/db.default.svc.cluster.local';
const db: Service = {
  name: 'db', namespace: 'default', hostname: 'db.default.svc.cluster.local', vips: ['10.96.0.20'],
  ports: [{ port: 5432, targetPort: 5432, name: 'tcp-pg', appProtocol: 'tcp' }], waypoint: { service: WAYPOINT.service, port: 15008 },
};
const me = { ...WAYPOINT, for: 'all' as const };
const pod = workload('db-0', '10.244.3.3', { services: [KEY], waypoint: { service: WAYPOINT.service, port: 15008 } });
const snap = Snapshot.build({ workloads: [pod], services: [db], authorizations: [], waypoints: [me] }, 1);
const denyAll = (name: string): L7Authorization => ({ name, namespace: 'default', action: 'deny', dryRun: false, rules: [{}] });

function binding(authority: string): Binding {
  const v = resolveBinding(snap, me, authority);
  if (!v.ok) throw new Error(v.reason);
  return v.binding;
}

function plan(b: Binding, configs: Record<string, ServiceL7>): { status?: number; details?: string; kind: string } {
  return planTcp(snap, b, (k) => configs[k], { sourcePrincipal: CLIENT_ID, sourceIp: '10.244.1.9' }, me.service) as { status?: number; details?: string; kind: string };
}

test('service traffic: the Service\'s policies decide, the waypoint-wide ones are not its', (t) => {
  const svc = binding('10.96.0.20:5432');
  t.is(plan(svc, {}).kind, 'forward');
  t.is(plan(svc, { [KEY]: { service: KEY, http: [], grpc: [], authorization: [denyAll('svc')] } }).details, 'rbac_access_denied_matched_policy[default/svc]');
  t.is(plan(svc, { [me.service]: { service: me.service, http: [], grpc: [], authorization: [denyAll('wide')] } }).kind, 'forward');
});

test('workload traffic: the waypoint-wide policies apply, with the Service\'s when the port has one', (t) => {
  const viaService = binding('10.244.3.3:5432');
  t.is(plan(viaService, { [me.service]: { service: me.service, http: [], grpc: [], authorization: [denyAll('wide')] } }).details, 'rbac_access_denied_matched_policy[default/wide]');
  t.is(plan(viaService, { [KEY]: { service: KEY, http: [], grpc: [], authorization: [denyAll('svc')] } }).details, 'rbac_access_denied_matched_policy[default/svc]');
  // a port no Service has: only the waypoint-wide policies
  const bare = binding('10.244.3.3:7000');
  t.is(plan(bare, {}).kind, 'forward');
  t.is(plan(bare, { [me.service]: { service: me.service, http: [], grpc: [], authorization: [denyAll('wide')] } }).status, 403);
});
