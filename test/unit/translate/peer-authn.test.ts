/** PeerAuthentication -> the static STRICT policy and port-level converted DENY policies (l7 ref 4). */
import test from 'ava';
import type { KubeObject } from '../../../src/control/config/types.js';
import { evaluateL4 } from '../../../src/policy/index.js';
import type { TranslateResult } from '../../../src/control/translate/index.js';
import { messages, objects, pod, ROOT, translate } from './_support.js';

const STRICT_KEY = `${ROOT}/istio_converted_static_strict`;

function pa(ns: string, name: string, spec: string, created?: string): KubeObject[] {
  return objects(`
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: ${name}
  namespace: ${ns}
${created ? `  creationTimestamp: "${created}"` : ''}
spec:
${spec.split('\n').map((l) => `  ${l}`).join('\n')}
`);
}

const pods = [
  pod('web-1', 'ns1', { app: 'web' }, '10.0.0.1'),
  pod('db-1', 'ns1', { app: 'db' }, '10.0.0.2'),
  pod('web-2', 'ns2', { app: 'web' }, '10.0.0.3'),
];

function policyKeys(r: TranslateResult, ip: string): readonly string[] {
  return r.snapshot.workloadByIp(ip)?.authorizationPolicies ?? [];
}

/** Does a plaintext (no identity) connection to ip:port get through? */
function plaintext(r: TranslateResult, ip: string, port: number): boolean {
  const w = r.snapshot.workloadByIp(ip)!;
  return evaluateL4(r.snapshot.policiesFor(w), { srcIp: '10.9.9.9', dstIp: ip, dstPort: port }).allowed;
}
function withMtls(r: TranslateResult, ip: string, port: number): boolean {
  const w = r.snapshot.workloadByIp(ip)!;
  return evaluateL4(r.snapshot.policiesFor(w), {
    srcIdentity: { trustDomain: 'cluster.local', namespace: 'x', serviceAccount: 'y' }, srcIp: '10.9.9.9', dstIp: ip, dstPort: port,
  }).allowed;
}

const table: { name: string; objs: KubeObject[]; strict: Record<string, boolean>; warn?: RegExp }[] = [
  { name: 'no PeerAuthentication: everything permissive', objs: [], strict: { '10.0.0.1': false, '10.0.0.2': false, '10.0.0.3': false } },
  { name: 'mesh STRICT', objs: pa(ROOT, 'default', 'mtls: {mode: STRICT}'), strict: { '10.0.0.1': true, '10.0.0.2': true, '10.0.0.3': true } },
  {
    name: 'namespace PERMISSIVE overrides mesh STRICT',
    objs: [...pa(ROOT, 'default', 'mtls: {mode: STRICT}'), ...pa('ns1', 'default', 'mtls: {mode: PERMISSIVE}')],
    strict: { '10.0.0.1': false, '10.0.0.2': false, '10.0.0.3': true },
  },
  {
    name: 'workload STRICT overrides namespace PERMISSIVE',
    objs: [...pa('ns1', 'default', 'mtls: {mode: PERMISSIVE}'), ...pa('ns1', 'web', 'selector: {matchLabels: {app: web}}\nmtls: {mode: STRICT}')],
    strict: { '10.0.0.1': true, '10.0.0.2': false, '10.0.0.3': false },
  },
  {
    name: 'UNSET inherits',
    objs: [...pa('ns1', 'default', 'mtls: {mode: STRICT}'), ...pa('ns1', 'web', 'selector: {matchLabels: {app: web}}\nmtls: {}')],
    strict: { '10.0.0.1': true, '10.0.0.2': true, '10.0.0.3': false },
  },
  {
    name: 'oldest namespace policy wins',
    objs: [...pa('ns1', 'b-newer', 'mtls: {mode: PERMISSIVE}', '2024-02-01T00:00:00Z'), ...pa('ns1', 'a-older', 'mtls: {mode: STRICT}', '2024-01-01T00:00:00Z')],
    strict: { '10.0.0.1': true, '10.0.0.2': true, '10.0.0.3': false },
  },
  {
    name: 'oldest wins even when it sorts later by name',
    objs: [...pa('ns1', 'a-newer', 'mtls: {mode: STRICT}', '2024-02-01T00:00:00Z'), ...pa('ns1', 'z-older', 'mtls: {mode: PERMISSIVE}', '2024-01-01T00:00:00Z')],
    strict: { '10.0.0.1': false, '10.0.0.2': false, '10.0.0.3': false },
  },
  {
    name: 'DISABLE is ignored (inherits) with a warning',
    objs: [...pa('ns1', 'default', 'mtls: {mode: STRICT}'), ...pa('ns1', 'web', 'selector: {matchLabels: {app: web}}\nmtls: {mode: DISABLE}')],
    strict: { '10.0.0.1': true, '10.0.0.2': true, '10.0.0.3': false },
    warn: /PeerAuthentication ns1\/web: spec\.mtls\.mode: DISABLE is not supported in ambient mode and is ignored/,
  },
  {
    name: 'selector policy in the root namespace is ignored',
    objs: pa(ROOT, 'sel', 'selector: {matchLabels: {app: web}}\nmtls: {mode: STRICT}'),
    strict: { '10.0.0.1': false, '10.0.0.2': false, '10.0.0.3': false },
    warn: /selector policies in the root namespace are ignored/,
  },
];

for (const c of table) {
  test(`PeerAuthentication: ${c.name}`, (t) => {
    const r = translate([...c.objs, ...pods]);
    t.deepEqual(messages(r.rejected), []);
    for (const [ip, strict] of Object.entries(c.strict)) {
      t.is(policyKeys(r, ip).includes(STRICT_KEY), strict, `${ip} strict reference`);
      t.is(plaintext(r, ip, 8080), !strict, `${ip} plaintext`);
      t.true(withMtls(r, ip, 8080), `${ip} mTLS`);
    }
    if (c.warn) t.true(messages(r.warnings).some((w) => c.warn!.test(w)), messages(r.warnings).join('\n'));
    // the static policy exists once any (applied) PeerAuthentication does
    const applied = c.objs.length > 0 && !c.name.includes('root namespace is ignored');
    t.is(r.snapshot.authorization(STRICT_KEY) !== undefined, applied);
  });
}

test('port-level: STRICT workload with a PERMISSIVE port carves the port out', (t) => {
  const r = translate([
    ...pa('ns1', 'web', 'selector: {matchLabels: {app: web}}\nmtls: {mode: STRICT}\nportLevelMtls:\n  9090: {mode: PERMISSIVE}\n  9091: {mode: DISABLE}\n  8443: {mode: STRICT}'),
    ...pods,
  ]);
  t.deepEqual(messages(r.rejected), []);
  const key = 'ns1/converted_peer_authentication_web';
  t.deepEqual(policyKeys(r, '10.0.0.1'), [key]);
  const p = r.snapshot.authorization(key)!;
  t.deepEqual(p.rules, [{ clauses: [{ matches: [{ notPrincipals: [{ presence: true }] }] }, { matches: [{ notDestinationPorts: [9090, 9091] }] }] }]);
  t.false(plaintext(r, '10.0.0.1', 8080));
  t.true(plaintext(r, '10.0.0.1', 9090));
  t.true(plaintext(r, '10.0.0.1', 9091));
  t.false(plaintext(r, '10.0.0.1', 8443));
  t.true(withMtls(r, '10.0.0.1', 8080));
  // the unselected pod is unaffected
  t.true(plaintext(r, '10.0.0.2', 8080));
  t.true(messages(r.warnings).some((w) => /portLevelMtls\["9091"\]\.mode: DISABLE is not supported/.test(w)));
});

test('port-level: PERMISSIVE namespace with a STRICT port on the workload', (t) => {
  const r = translate([
    ...pa('ns1', 'default', 'mtls: {mode: PERMISSIVE}'),
    ...pa('ns1', 'web', 'selector: {matchLabels: {app: web}}\nportLevelMtls:\n  8443: {mode: STRICT}\n  8444: {mode: STRICT}'),
    ...pods,
  ]);
  t.deepEqual(messages(r.rejected), []);
  t.deepEqual(policyKeys(r, '10.0.0.1'), ['ns1/converted_peer_authentication_web']);
  t.true(plaintext(r, '10.0.0.1', 8080));
  t.false(plaintext(r, '10.0.0.1', 8443));
  t.false(plaintext(r, '10.0.0.1', 8444));
  t.true(withMtls(r, '10.0.0.1', 8443));
});

test('port-level that changes nothing falls back to the static STRICT policy', (t) => {
  const r = translate([...pa('ns1', 'web', 'selector: {matchLabels: {app: web}}\nmtls: {mode: STRICT}\nportLevelMtls:\n  8443: {mode: STRICT}'), ...pods]);
  t.deepEqual(policyKeys(r, '10.0.0.1'), [STRICT_KEY]);
  t.is(r.snapshot.authorization('ns1/converted_peer_authentication_web'), undefined);
});

test('portLevelMtls without a selector is rejected (and fails closed)', (t) => {
  const r = translate([...pa('ns1', 'default', 'mtls: {mode: STRICT}\nportLevelMtls:\n  80: {mode: PERMISSIVE}'), ...pods]);
  t.true(messages(r.rejected).some((m) => /PeerAuthentication ns1\/default: spec\.portLevelMtls: requires a selector/.test(m)));
  // rejected with nothing to fall back on: the namespace requires mTLS until it is fixed
  t.true(policyKeys(r, '10.0.0.1').includes(STRICT_KEY));
  t.false(plaintext(r, '10.0.0.1', 80));
});
