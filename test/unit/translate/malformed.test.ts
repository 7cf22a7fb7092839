/**
 * Bad input of every category: the rejection names kind, namespace, name and field; everything
 * else still applies; a resource that was good before keeps its last good version.
 */
import test from 'ava';
import type { KubeObject, Rejection } from '../../../src/control/config/types.js';
import { Translator } from '../../../src/control/translate/index.js';
import { evaluateL4 } from '../../../src/policy/index.js';
import { messages, objects, pod, ROOT, TD, translate, translator } from './_support.js';

const GOOD = objects(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: good, namespace: ns1}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [evil]}}]}]
`);

const ap = (spec: string, meta = '{name: bad, namespace: ns1}'): string => `
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: ${meta}
spec:
${spec.split('\n').map((l) => `  ${l}`).join('\n')}
`;

const cases: { name: string; yaml: string; kind: string; ns: string; obj: string; field: string; message: RegExp }[] = [
  // unknown fields
  { name: 'unknown spec field', yaml: ap('action: DENY\nselectr: {matchLabels: {a: b}}'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.selectr', message: /unknown field "selectr"/ },
  { name: 'unknown source field (typo)', yaml: ap('rules: [{from: [{source: {principal: [x]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.principal', message: /unknown field "principal"/ },
  { name: 'unknown rule field', yaml: ap('rules: [{form: []}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].form', message: /unknown field/ },
  { name: 'unknown PeerAuthentication field', yaml: 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: pa, namespace: ns1}\nspec: {mtls: {mdoe: STRICT}}', kind: 'PeerAuthentication', ns: 'ns1', obj: 'pa', field: 'spec.mtls.mdoe', message: /unknown field "mdoe"/ },
  { name: 'unknown waypoint listener field', yaml: 'apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: ns1}\nspec: {gatewayClassName: ambit-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE, prot: 1}]}', kind: 'Gateway', ns: 'ns1', obj: 'wp', field: 'spec.listeners[0].prot', message: /unknown field "prot"/ },
  // wrong types
  { name: 'string instead of list', yaml: ap('rules: [{from: [{source: {principals: "cluster.local/ns/a/sa/b"}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.principals', message: /must be a list/ },
  { name: 'list instead of object', yaml: ap('selector: [a]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.selector', message: /must be an object/ },
  { name: 'number instead of string', yaml: ap('action: 7'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.action', message: /must be a string/ },
  { name: 'rules not a list', yaml: ap('rules: {from: []}'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules', message: /must be a list/ },
  { name: 'pod IP not an IP', yaml: 'apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns1}\nstatus: {phase: Running, podIP: 10.0.0.300}', kind: 'Pod', ns: 'ns1', obj: 'p', field: 'status.podIP', message: /not an IP address/ },
  { name: 'service clusterIP not an IP', yaml: 'apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns1}\nspec: {clusterIP: banana, ports: [{port: 80}]}', kind: 'Service', ns: 'ns1', obj: 's', field: 'spec.clusterIP', message: /not an IP address/ },
  // path templates (the only pattern syntax in an AuthorizationPolicy)
  { name: 'bad path template', yaml: ap('action: DENY\nrules: [{to: [{operation: {paths: ["/a/{*}x"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].to[0].operation.paths[0]', message: /whole segment/ },
  { name: '{**} not last', yaml: ap('action: DENY\nrules: [{to: [{operation: {paths: ["/{**}/x/{*}"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].to[0].operation.paths[0]', message: /must be the last/ },
  // conflicting fields
  { name: 'selector with targetRefs', yaml: ap('selector: {matchLabels: {a: b}}\ntargetRefs: [{kind: Service, group: "", name: x}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.selector', message: /mutually exclusive/ },
  { name: 'targetRef with targetRefs', yaml: ap('targetRef: {kind: Service, group: "", name: x}\ntargetRefs: [{kind: Service, group: "", name: y}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.targetRef', message: /mutually exclusive/ },
  { name: 'serviceAccounts with principals', yaml: ap('rules: [{from: [{source: {serviceAccounts: [a/b], principals: [x]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.serviceAccounts', message: /cannot be combined/ },
  { name: 'serviceAccounts with namespaces', yaml: ap('rules: [{from: [{source: {serviceAccounts: [b], namespaces: [x]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.serviceAccounts', message: /cannot be combined/ },
  { name: 'wildcard service account', yaml: ap('rules: [{from: [{source: {serviceAccounts: ["ns/*"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.serviceAccounts[0]', message: /no wildcards/ },
  { name: 'provider without CUSTOM', yaml: ap('action: DENY\nprovider: {name: x}'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.provider', message: /only valid with action CUSTOM/ },
  { name: 'too many targetRefs', yaml: ap(`targetRefs: [${Array.from({ length: 17 }, (_, i) => `{kind: Service, group: "", name: s${i}}`).join(', ')}]`), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.targetRefs', message: /at most 16/ },
  // bad CIDRs
  { name: 'ipBlocks host bits', yaml: ap('rules: [{from: [{source: {ipBlocks: ["10.0.0.1/8"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.ipBlocks[0]', message: /host bits/ },
  { name: 'notIpBlocks garbage', yaml: ap('rules: [{from: [{source: {notIpBlocks: ["1.2.3.4", "nope"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.notIpBlocks[1]', message: /not an IP address or CIDR/ },
  { name: 'when source.ip bad', yaml: ap('rules: [{when: [{key: source.ip, values: ["300.1.1.1"]}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].when[0].values[0]', message: /not an IP address/ },
  { name: 'IPv6 prefix too long', yaml: ap('rules: [{from: [{source: {ipBlocks: ["fd00::/129"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].from[0].source.ipBlocks[0]', message: /exceeds 128/ },
  // ports out of range
  { name: 'operation port too big', yaml: ap('rules: [{to: [{operation: {ports: ["70000"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].to[0].operation.ports[0]', message: /out of range/ },
  { name: 'operation port not a number', yaml: ap('rules: [{to: [{operation: {notPorts: ["http"]}}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].to[0].operation.notPorts[0]', message: /must be a port number/ },
  { name: 'when destination.port 0', yaml: ap('rules: [{when: [{key: destination.port, values: ["0"]}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].when[0].values[0]', message: /out of range/ },
  { name: 'service port 0', yaml: 'apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns1}\nspec: {ports: [{port: 0}]}', kind: 'Service', ns: 'ns1', obj: 's', field: 'spec.ports[0].port', message: /out of range/ },
  { name: 'portLevelMtls port', yaml: 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: pa, namespace: ns1}\nspec: {selector: {matchLabels: {a: b}}, portLevelMtls: {"99999": {mode: STRICT}}}', kind: 'PeerAuthentication', ns: 'ns1', obj: 'pa', field: 'spec.portLevelMtls["99999"]', message: /out of range/ },
  // unknown when keys, missing values
  { name: 'unknown when key', yaml: ap('rules: [{when: [{key: source.foo, values: [x]}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].when[0].key', message: /unknown key "source.foo"/ },
  { name: 'when without values', yaml: ap('rules: [{when: [{key: source.ip}]}]'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.rules[0].when[0]', message: /needs values or notValues/ },
  // actions and modes
  { name: 'unknown action', yaml: ap('action: MAYBE'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.action', message: /not one of ALLOW, DENY, AUDIT, CUSTOM/ },
  { name: 'CUSTOM at L4', yaml: ap('action: CUSTOM\nprovider: {name: ext}\nselector: {matchLabels: {a: b}}'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'spec.action', message: /CUSTOM is not supported by the node agent/ },
  { name: 'unknown mTLS mode', yaml: 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: pa, namespace: ns1}\nspec: {mtls: {mode: STRICTER}}', kind: 'PeerAuthentication', ns: 'ns1', obj: 'pa', field: 'spec.mtls.mode', message: /not one of UNSET, DISABLE, PERMISSIVE, STRICT/ },
  { name: 'dry-run annotation not a boolean', yaml: ap('action: DENY', '{name: bad, namespace: ns1, annotations: {istio.io/dry-run: "yes"}}'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'metadata.annotations["istio.io/dry-run"]', message: /not "true" or "false"/ },
  // waypoints
  { name: 'waypoint-for label value', yaml: 'apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: ns1, labels: {istio.io/waypoint-for: everything}}\nspec: {gatewayClassName: ambit-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}', kind: 'Gateway', ns: 'ns1', obj: 'wp', field: 'metadata.labels["istio.io/waypoint-for"]', message: /not one of service, workload, all, none/ },
  { name: 'waypoint without HBONE listener', yaml: 'apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: ns1}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15009, protocol: HBONE}]}', kind: 'Gateway', ns: 'ns1', obj: 'wp', field: 'spec.listeners', message: /needs a listener \{port: 15008, protocol: HBONE\}/ },
  // metadata and versions
  { name: 'invalid name', yaml: ap('{}', '{name: Bad_Name, namespace: ns1}'), kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'Bad_Name', field: 'metadata.name', message: /not a valid name/ },
  { name: 'unsupported version', yaml: 'apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: ns1}\nspec: {}', kind: 'AuthorizationPolicy', ns: 'ns1', obj: 'bad', field: 'apiVersion', message: /unsupported version/ },
];

function find(rs: readonly Rejection[], kind: string, ns: string, name: string, field: string): Rejection | undefined {
  return rs.find((r) => r.kind === kind && r.namespace === ns && r.name === name && r.field === field);
}

for (const c of cases) {
  test(`rejects ${c.name}, naming kind/namespace/name/field; the rest applies`, (t) => {
    const r = translate([...objects(c.yaml), ...GOOD, pod('p-ok', 'ns1', { a: 'b' }, '10.0.0.1')]);
    const rej = find(r.rejected, c.kind, c.ns, c.obj, c.field);
    t.truthy(rej, `no rejection for ${c.field} in:\n${messages(r.rejected).join('\n')}`);
    t.regex(rej?.message ?? '', c.message);
    t.true(rej?.message.startsWith(`${c.kind} ${c.ns}/${c.obj}: ${c.field}: `), rej?.message);
    // the good policy and the good pod are still there
    t.truthy(r.snapshot.authorization('ns1/good'));
    t.truthy(r.snapshot.workloadByIp('10.0.0.1'));
    // the rejected one did not sneak in: a policy fails closed (deny all in its scope), others are absent
    const a = r.snapshot.authorization(`${c.ns}/${c.obj}`);
    if (a) t.like(a, { action: 'deny', rules: [{ clauses: [] }] });
  });
}

test('garbage objects never throw', (t) => {
  const junk = [null, 42, 'x', [], {}, { kind: 'Pod' }, { apiVersion: 'v1', kind: 'Pod', metadata: 'x' },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: 'nope', status: [] },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 's', labels: { a: 1 } } },
    { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'a' }, spec: { rules: [null, 1, 'x', { from: [null, { source: null }] }] } },
    { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'a' }, spec: { portLevelMtls: { 80: null }, selector: { matchLabels: { a: 'b' } } } },
    { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'g' }, spec: { gatewayClassName: 'ambit-waypoint', listeners: 'x' } },
  ] as unknown as KubeObject[];
  const r = translator().update(junk);
  t.true(r.rejected.length >= 6);
  for (const x of r.rejected) t.true(typeof x.message === 'string' && x.message.length > 0);
  t.is(r.snapshot.counts.workloads, 0);
});

test('duplicate definitions: the first applies, the second is rejected', (t) => {
  const dup = objects(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: good, namespace: ns1}
spec: {action: ALLOW, rules: [{}]}
`);
  const r = translate([...GOOD, ...dup]);
  t.is(r.snapshot.authorization('ns1/good')?.action, 'deny');
  t.truthy(find(r.rejected, 'AuthorizationPolicy', 'ns1', 'good', 'metadata.name'));
});

test('last good: an invalid edit keeps the previous version; deletion forgets it', (t) => {
  const tr = new Translator({ trustDomain: TD, rootNamespace: ROOT });
  const v1 = objects(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: ns1}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns1}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
`);
  const v2 = objects(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: ns1}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil], ipBlocks: ["not-an-ip"]}}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns1}
spec: {clusterIP: 10.96.0.1, ports: [{port: 99999}]}
`);
  const r1 = tr.update(v1);
  t.deepEqual(r1.rejected, []);
  const before = r1.snapshot.authorization('ns1/p');

  const r2 = tr.update(v2);
  t.truthy(find(r2.rejected, 'AuthorizationPolicy', 'ns1', 'p', 'spec.rules[0].from[0].source.ipBlocks[0]'));
  t.truthy(find(r2.rejected, 'Service', 'ns1', 's', 'spec.ports[0].port'));
  t.deepEqual(r2.snapshot.authorization('ns1/p'), before);
  t.deepEqual(r2.snapshot.service('ns1/s.ns1.svc.cluster.local')?.ports, [{ port: 80, targetPort: 80 }]);
  t.true(messages(r2.warnings).some((m) => /AuthorizationPolicy ns1\/p: .*last good version stays in effect/.test(m)));
  t.true(r2.snapshot.version > r1.snapshot.version);

  // still rejected on the next round: the last good version is still the v1 one
  const r3 = tr.update(v2);
  t.deepEqual(r3.snapshot.authorization('ns1/p'), before);

  // deleted, then re-added broken: nothing to fall back on
  const r4 = tr.update([]);
  t.is(r4.snapshot.authorization('ns1/p'), undefined);
  const r5 = tr.update(v2);
  t.like(r5.snapshot.authorization('ns1/p'), { action: 'deny', scope: 'namespace', rules: [{ clauses: [] }] });
  t.is(r5.snapshot.service('ns1/s.ns1.svc.cluster.local'), undefined);
});

test('last good for L7 kinds: a rejected route falls back to its previous version', (t) => {
  const seen: string[][] = [];
  const tr = new Translator({
    trustDomain: TD, rootNamespace: ROOT,
    translateL7: (objs) => {
      seen.push(objs.map((o) => `${o.metadata.namespace}/${o.metadata.name}:${String((o.spec as { v?: unknown }).v)}`));
      const rejected = objs.filter((o) => (o.spec as { v?: unknown }).v === 'bad').map((o) => ({
        kind: o.kind, namespace: o.metadata.namespace ?? '', name: o.metadata.name, field: 'spec.v', message: `${o.kind} ${o.metadata.namespace}/${o.metadata.name}: spec.v: bad`,
      }));
      return { l7: new Map(), rejected, warnings: [] };
    },
  });
  const route = (v: string): KubeObject => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r' }, spec: { v } });
  tr.update([route('good')]);
  t.deepEqual(seen.pop(), ['default/r:good']);
  const r = tr.update([route('bad')]);
  // first pass with the bad version, second with the last good one
  t.deepEqual(seen.slice(-2), [['default/r:bad'], ['default/r:good']]);
  t.truthy(find(r.rejected, 'HTTPRoute', 'default', 'r', 'spec.v'));
  // an L7 translator that throws does not take the rest down
  const boom = new Translator({ trustDomain: TD, rootNamespace: ROOT, translateL7: () => { throw new Error('kaput'); } });
  const rb = boom.update([route('x'), ...GOOD]);
  t.truthy(rb.snapshot.authorization('ns1/good'));
  t.true(messages(rb.rejected).some((m) => /internal error translating L7 config: kaput/.test(m)));
});

test('fail closed: a rejected policy with nothing to fall back on denies in its scope', (t) => {
  const r = translate([
    ...objects(ap('selector: {matchLabels: {app: web}}\naction: DENY\nrules: [{from: [{source: {ipBlocks: [bogus]}}]}]', '{name: sel, namespace: ns1}')),
    ...objects(ap('rules: [{when: [{key: nope, values: [x]}]}]', '{name: nsw, namespace: ns2}')),
    ...objects(ap('targetRefs: [{kind: Service, group: "", name: web}]\nrules: [{when: [{key: nope, values: [x]}]}]', '{name: wp, namespace: ns1}')),
    ...objects(ap('action: DENY\nrules: [{to: [{operation: {ports: [0]}}]}]', '{name: dry, namespace: ns3, annotations: {istio.io/dry-run: "true"}}')),
    ...objects('apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: pa, namespace: ns4}\nspec: {mtls: {mode: STRCT}}'),
    pod('web', 'ns1', { app: 'web' }, '10.0.0.1'),
    pod('db', 'ns1', { app: 'db' }, '10.0.0.2'),
    pod('x', 'ns2', {}, '10.0.0.3'),
    pod('y', 'ns3', {}, '10.0.0.4'),
    pod('z', 'ns4', {}, '10.0.0.5'),
  ]);
  const allowed = (ip: string, mtls: boolean): boolean => {
    const w = r.snapshot.workloadByIp(ip)!;
    return evaluateL4(r.snapshot.policiesFor(w), {
      ...(mtls ? { srcIdentity: { trustDomain: TD, namespace: 'a', serviceAccount: 'b' } } : {}), srcIp: '10.9.9.9', dstIp: ip, dstPort: 80,
    }).allowed;
  };
  t.false(allowed('10.0.0.1', true));
  t.true(allowed('10.0.0.2', true));
  t.false(allowed('10.0.0.3', true));
  t.is(r.snapshot.authorization('ns1/wp'), undefined);
  t.true(allowed('10.0.0.4', true));
  t.true(r.snapshot.authorization('ns3/dry')?.dryRun);
  t.false(allowed('10.0.0.5', false));
  t.true(allowed('10.0.0.5', true));
  t.true(messages(r.warnings).some((m) => /AuthorizationPolicy ns1\/sel: spec: .*the workloads it selects deny all connections \(fail closed\)/.test(m)));
  t.true(messages(r.warnings).some((m) => /PeerAuthentication ns4\/pa: spec: .*require mTLS/.test(m)));
});

test('a policy with a broken apiVersion or name still falls back (last good, else fail closed)', (t) => {
  const tr = translator();
  const good = objects(ap('action: DENY\nrules: [{from: [{source: {namespaces: [evil]}}]}]', '{name: p, namespace: ns1}'));
  const badVersion = good.map((o) => ({ ...o, apiVersion: 'security.istio.io/v9' }));
  const before = tr.update(good).snapshot.authorization('ns1/p');
  const r = tr.update(badVersion);
  t.truthy(find(r.rejected, 'AuthorizationPolicy', 'ns1', 'p', 'apiVersion'));
  t.deepEqual(r.snapshot.authorization('ns1/p'), before);
  const fresh = translate(objects(ap('action: DENY', '{name: Bad_Name, namespace: ns1}')));
  t.like(fresh.snapshot.authorization('ns1/Bad_Name'), { action: 'deny', scope: 'namespace', rules: [{ clauses: [] }] });
});
