/** The seed document's YAML (test/fixtures/config/seed-*.yaml, verbatim) translates without rejection. */
import test from 'ava';
import { evaluateL4 } from '../../../src/policy/index.js';
import { fixture, messages, pod, ROOT, translate } from './_support.js';

const orderPod = pod('order-service-7d9f8c6b5d-abcde', 'default', { app: 'order-service', version: 'v1', 'pod-template-hash': '7d9f8c6b5d' }, '10.0.0.5');

test('seed Deployment + Service: the Service applies (port name "http" -> http), the Deployment is not ours', (t) => {
  const r = translate([...fixture('seed-deployment-service.yaml'), orderPod]);
  t.deepEqual(messages(r.rejected), []);
  t.deepEqual(messages(r.warnings), []);
  const s = r.snapshot.service('default/order-service.default.svc.cluster.local');
  t.deepEqual(s?.ports, [{ port: 80, targetPort: 8080, name: 'http', appProtocol: 'http' }]);
  t.deepEqual(r.snapshot.endpoints('default/order-service.default.svc.cluster.local').map((w) => w.workloadName), ['order-service']);
});

test('seed PeerAuthentication STRICT: default namespace refuses plaintext, accepts mTLS', (t) => {
  const r = translate([...fixture('seed-peer-authentication.yaml'), orderPod]);
  t.deepEqual(messages(r.rejected), []);
  const w = r.snapshot.workloadByIp('10.0.0.5')!;
  t.deepEqual(w.authorizationPolicies, [`${ROOT}/istio_converted_static_strict`]);
  const policies = r.snapshot.policiesFor(w);
  t.false(evaluateL4(policies, { srcIp: '10.0.0.9', dstIp: '10.0.0.5', dstPort: 8080 }).allowed);
  t.true(evaluateL4(policies, { srcIdentity: { trustDomain: 'cluster.local', namespace: 'x', serviceAccount: 'y' }, srcIp: '10.0.0.9', dstIp: '10.0.0.5', dstPort: 8080 }).allowed);
});

test('seed PeerAuthentication PERMISSIVE (the recommended start): plaintext accepted', (t) => {
  const r = translate([...fixture('seed-peer-authentication-permissive.yaml'), orderPod]);
  t.deepEqual(messages(r.rejected), []);
  const w = r.snapshot.workloadByIp('10.0.0.5')!;
  t.deepEqual(w.authorizationPolicies, []);
  t.true(evaluateL4(r.snapshot.policiesFor(w), { srcIp: '10.0.0.9', dstIp: '10.0.0.5', dstPort: 8080 }).allowed);
});

test('seed AuthorizationPolicy: accepted; without a waypoint its HTTP rules fail closed at L4, with a warning', (t) => {
  const r = translate([...fixture('seed-deployment-service.yaml'), ...fixture('seed-authorization-policy.yaml'), orderPod]);
  t.deepEqual(messages(r.rejected), []);
  const a = r.snapshot.authorization('default/order-service-policy');
  t.like(a, { scope: 'workload', action: 'allow', dryRun: false });
  t.deepEqual(a?.rules, []);
  t.true(messages(r.warnings).some((m) => /AuthorizationPolicy default\/order-service-policy: spec\.rules: .*dropped rule 0 \(methods, paths\); rule 1 \(methods, paths\).*allows less/.test(m)));
  const w = r.snapshot.workloadByIp('10.0.0.5')!;
  t.deepEqual(w.authorizationPolicies, ['default/order-service-policy']);
  // even the api-gateway identity the policy names is refused at L4: the HTTP part cannot be checked here
  t.false(evaluateL4(r.snapshot.policiesFor(w), { srcIdentity: { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'api-gateway' }, srcIp: '10.0.0.9', dstIp: '10.0.0.5', dstPort: 8080 }).allowed);
});

test('all seed fixtures together', (t) => {
  const r = translate([
    ...fixture('seed-deployment-service.yaml'), ...fixture('seed-peer-authentication.yaml'), ...fixture('seed-authorization-policy.yaml'), orderPod,
  ]);
  t.deepEqual(messages(r.rejected), []);
  t.deepEqual(r.snapshot.workloadByIp('10.0.0.5')?.authorizationPolicies, ['default/order-service-policy', `${ROOT}/istio_converted_static_strict`]);
});
