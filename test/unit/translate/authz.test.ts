/**
 * AuthorizationPolicy -> L4 Authorization, table-driven: YAML spec in, model (and warnings) out.
 * Covers the degenerate cases of l7 ref 3.2 and the HTTP-field handling of 3.4.
 */
import test from 'ava';
import type { Authorization, AuthzRule } from '../../../src/model/index.js';
import { evaluateL4 } from '../../../src/policy/index.js';
import { messages, objects, pod, ROOT, translate } from './_support.js';

function ap(spec: string, opts: { ns?: string; name?: string; annotations?: string } = {}): string {
  return `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${opts.name ?? 'p'}
  namespace: ${opts.ns ?? 'ns1'}
${opts.annotations ? `  annotations:\n${opts.annotations}` : ''}
spec:
${spec.split('\n').map((l) => `  ${l}`).join('\n')}
`;
}

function one(yaml: string): { a: Authorization | undefined; warnings: string[]; rejected: string[] } {
  const r = translate(yaml);
  const a = [...r.snapshot.authorizations].find((x) => x.name === 'p');
  return { a, warnings: messages(r.warnings), rejected: messages(r.rejected) };
}

const TD = 'cluster.local';
const cases: { name: string; spec: string; action?: 'allow' | 'deny'; rules: AuthzRule[]; warn?: RegExp }[] = [
  { name: 'ALLOW spec {} has no rules (deny all)', spec: '{}', action: 'allow', rules: [] },
  { name: 'ALLOW rules [{}] is one empty rule (allow all)', spec: 'rules: [{}]', action: 'allow', rules: [{ clauses: [] }] },
  { name: 'DENY rules [{}] is one empty rule (deny all)', spec: 'action: DENY\nrules: [{}]', action: 'deny', rules: [{ clauses: [] }] },
  { name: 'DENY without rules (no effect)', spec: 'action: DENY', action: 'deny', rules: [] },
  {
    name: 'from/to/when become ANDed clauses; sources and operations ORed',
    spec: `rules:
- from:
  - source: {principals: ["spiffe://cluster.local/ns/a/sa/x", "*/sa/y"], notNamespaces: [kube-system]}
  - source: {ipBlocks: ["10.0.0.0/8", "fd00::1"], notIpBlocks: ["10.9.0.0/16"]}
  to:
  - operation: {ports: ["8080", "9090"], notPorts: ["9091"]}
  when:
  - key: source.namespace
    values: ["a*"]
    notValues: ["ab"]
  - key: destination.ip
    values: ["10.1.0.0/16"]
  - key: destination.port
    notValues: ["1234"]
  - key: source.principal
    values: ["*"]
  - key: source.ip
    notValues: ["192.168.0.0/16"]`,
    action: 'allow',
    rules: [{
      clauses: [
        { matches: [
          { principals: [{ exact: `${TD}/ns/a/sa/x` }, { suffix: '/sa/y' }], notNamespaces: [{ exact: 'kube-system' }] },
          { sourceIps: [{ address: '10.0.0.0', prefixLen: 8 }, { address: 'fd00::1', prefixLen: 128 }], notSourceIps: [{ address: '10.9.0.0', prefixLen: 16 }] },
        ] },
        { matches: [{ destinationPorts: [8080, 9090], notDestinationPorts: [9091] }] },
        { matches: [{ namespaces: [{ prefix: 'a' }], notNamespaces: [{ exact: 'ab' }] }] },
        { matches: [{ destinationIps: [{ address: '10.1.0.0', prefixLen: 16 }] }] },
        { matches: [{ notDestinationPorts: [1234] }] },
        { matches: [{ principals: [{ presence: true }] }] },
        { matches: [{ notSourceIps: [{ address: '192.168.0.0', prefixLen: 16 }] }] },
      ],
    }],
  },
  {
    name: 'serviceAccounts become exact principals (a dot is literal)',
    spec: `rules:
- from:
  - source: {serviceAccounts: ["other/my.sa", "local"], notServiceAccounts: ["x/y"]}`,
    action: 'allow',
    rules: [{ clauses: [{ matches: [{
      principals: [{ exact: `${TD}/ns/other/sa/my.sa` }, { exact: `${TD}/ns/ns1/sa/local` }],
      notPrincipals: [{ exact: `${TD}/ns/x/sa/y` }],
    }] }] }],
  },
  {
    name: 'ALLOW: a rule with HTTP fields is dropped whole, other rules stay',
    spec: `rules:
- from: [{source: {principals: ["cluster.local/ns/a/sa/x"]}}]
  to: [{operation: {methods: ["GET"]}}]
- from: [{source: {namespaces: ["b"]}}]`,
    action: 'allow',
    rules: [{ clauses: [{ matches: [{ namespaces: [{ exact: 'b' }] }] }] }],
    warn: /AuthorizationPolicy ns1\/p: spec\.rules: .*dropped rule 0 \(methods\).*allows less/,
  },
  {
    name: 'ALLOW: every rule with HTTP fields -> allows nothing',
    spec: `rules:
- to: [{operation: {paths: ["/a"]}}]
- when: [{key: "request.headers[x-user]", values: ["alice"]}]`,
    action: 'allow',
    rules: [],
    warn: /now allows nothing/,
  },
  {
    name: 'ALLOW: requestPrincipals / remoteIpBlocks / trustDomains also drop the rule',
    spec: `rules:
- from: [{source: {requestPrincipals: ["iss/sub"], principals: ["cluster.local/ns/a/sa/x"]}}]
- from: [{source: {remoteIpBlocks: ["1.2.3.4"]}}]
- from: [{source: {trustDomains: ["other.td"]}}]`,
    action: 'allow',
    rules: [],
    warn: /requestPrincipals.*remoteIpBlocks.*trustDomains/,
  },
  {
    name: 'DENY: HTTP fields stripped from a mixed source (broader deny)',
    spec: `action: DENY
rules:
- from: [{source: {principals: ["cluster.local/ns/a/sa/x"], requestPrincipals: ["*"]}}]
  to: [{operation: {ports: ["80"], methods: ["GET"]}}]`,
    action: 'deny',
    rules: [{ clauses: [
      { matches: [{ principals: [{ exact: `${TD}/ns/a/sa/x` }] }] },
      { matches: [{ destinationPorts: [80] }] },
    ] }],
    warn: /enforced at the node agent without the HTTP rules/,
  },
  {
    name: 'DENY: L4 from + L7-only to -> empty match, never fires',
    spec: `action: DENY
rules:
- from: [{source: {principals: ["cluster.local/ns/a/sa/x"]}}]
  to: [{operation: {methods: ["GET"]}}]`,
    action: 'deny',
    rules: [{ clauses: [
      { matches: [{ principals: [{ exact: `${TD}/ns/a/sa/x` }] }] },
      { matches: [{}] },
    ] }],
    warn: /no enforceable rules at the node agent and will have no effect/,
  },
  {
    name: 'DENY: L7-only when condition -> empty match',
    spec: `action: DENY
rules:
- when: [{key: "request.auth.claims[groups]", values: ["admin"]}]`,
    action: 'deny',
    rules: [{ clauses: [{ matches: [{}] }] }],
    warn: /no effect/,
  },
  {
    name: 'DENY: one L7-only operation among several keeps the others',
    spec: `action: DENY
rules:
- to: [{operation: {hosts: ["a.com"]}}, {operation: {ports: ["22"]}}]`,
    action: 'deny',
    rules: [{ clauses: [{ matches: [{}, { destinationPorts: [22] }] }] }],
    warn: /without the HTTP rules/,
  },
];

for (const c of cases) {
  test(`AuthorizationPolicy: ${c.name}`, (t) => {
    const { a, warnings, rejected } = one(ap(c.spec));
    t.deepEqual(rejected, []);
    t.truthy(a);
    t.is(a?.action, c.action);
    t.is(a?.scope, 'namespace');
    t.deepEqual(a?.rules, c.rules);
    if (c.warn) t.true(warnings.some((w) => c.warn!.test(w)), warnings.join('\n'));
    else t.deepEqual(warnings, []);
  });
}

test('scope: selector -> workload (listed on matching pods), root namespace -> global, targetRefs -> not sent', (t) => {
  const r = translate([
    ...objects(ap('selector: {matchLabels: {app: web}}\nrules: [{}]', { name: 'sel' })),
    ...objects(ap('rules: [{}]', { name: 'mesh', ns: ROOT })),
    ...objects(ap('selector: {matchLabels: {app: web}}\naction: DENY\nrules: [{}]', { name: 'rootsel', ns: ROOT })),
    ...objects(ap('targetRefs: [{kind: Service, group: "", name: web}]\nrules: [{to: [{operation: {methods: [GET]}}]}]', { name: 'wp' })),
    pod('web-1', 'ns1', { app: 'web' }, '10.0.0.1'),
    pod('web-2', 'ns2', { app: 'web' }, '10.0.0.2'),
    pod('db-1', 'ns1', { app: 'db' }, '10.0.0.3'),
  ]);
  t.deepEqual(messages(r.rejected), []);
  const byName = new Map([...r.snapshot.authorizations].map((a) => [a.name, a]));
  t.is(byName.get('sel')?.scope, 'workload');
  t.is(byName.get('mesh')?.scope, 'global');
  t.is(byName.get('rootsel')?.scope, 'workload');
  t.false(byName.has('wp'));
  const w = (ip: string) => r.snapshot.workloadByIp(ip)!;
  t.deepEqual(w('10.0.0.1').authorizationPolicies, ['ns1/sel', `${ROOT}/rootsel`]);
  t.deepEqual(w('10.0.0.2').authorizationPolicies, [`${ROOT}/rootsel`]);
  t.deepEqual(w('10.0.0.3').authorizationPolicies, []);
  // and the evaluator sees them through the snapshot
  t.false(evaluateL4(r.snapshot.policiesFor(w('10.0.0.1')), { srcIp: '10.0.0.3', dstIp: '10.0.0.1', dstPort: 80 }).allowed);
});

test('dry-run annotation sets dryRun', (t) => {
  const { a } = one(ap('action: DENY\nrules: [{}]', { annotations: '    istio.io/dry-run: "true"' }));
  t.true(a?.dryRun);
});

test('AUDIT is ignored at L4 with a warning; CUSTOM without targetRefs is rejected and fails closed', (t) => {
  const audit = one(ap('action: AUDIT\nrules: [{}]'));
  t.is(audit.a, undefined);
  t.true(audit.warnings.some((w) => /spec\.action: AUDIT is not supported by the node agent/.test(w)));
  const custom = one(ap('action: CUSTOM\nprovider: {name: ext}\nrules: [{}]'));
  // it cannot be enforced here, so it fails closed rather than vanishing
  t.like(custom.a, { action: 'deny', rules: [{ clauses: [] }] });
  t.true(custom.rejected.some((m) => /AuthorizationPolicy ns1\/p: spec\.action: CUSTOM is not supported/.test(m)));
  // with targetRefs too: no external authorizer exists, so it is refused (the waypoint side fails closed, see waypoint-authz tests)
  const customWp = one(ap('action: CUSTOM\nprovider: {name: ext}\ntargetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]\nrules: [{}]'));
  t.true(customWp.rejected.some((m) => /spec\.action: CUSTOM is not supported: ambit has no external authorizer/.test(m)));
});
