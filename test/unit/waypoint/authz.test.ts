/**
 * L7 authorization: targetRefs AuthorizationPolicies translated (delivered with each Service's waypoint config)
 * and evaluated on the normalized request, with an authorization matrix that includes path-normalization
 * bypass attempts, mixed-case hosts, ports, repeated headers, templates and what a waypoint cannot evaluate.
 */
import test from 'ava';
import type { KubeObject } from '../../../src/control/config/types.js';
import type { L7Authorization } from '../../../src/model/l7.js';
import { decodeWaypointConfigs, encodeWaypointConfig } from '../../../src/xds/index.js';
import { authorizeL7, decideRequest, prepareRequest } from '../../../src/waypoint/l7/index.js';
import type { RequestFacts } from '../../../src/waypoint/l7/index.js';
import { evaluateL7, pathReadings } from '../../../src/policy/index.js';
import { messages, objects, translate, translator } from '../translate/_support.js';

const A = 'ns1/a.ns1.svc.cluster.local';
const B = 'ns1/b.ns1.svc.cluster.local';
const C = 'ns2/c.ns2.svc.cluster.local';

function mesh(extra: string): KubeObject[] {
  return objects(`
apiVersion: v1
kind: Namespace
metadata: {name: ns1, labels: {istio.io/use-waypoint: wp}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns2}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: ns1}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Service
metadata: {name: wp, namespace: ns1}
spec: {clusterIP: 10.96.9.1, ports: [{name: mesh, port: 15008}]}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns1}
spec: {clusterIP: 10.96.1.1, selector: {app: a}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: ns1}
spec: {clusterIP: 10.96.1.2, selector: {app: b}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: c, namespace: ns2}
spec: {clusterIP: 10.96.2.1, selector: {app: c}, ports: [{name: http, port: 80}]}
---
${extra}`);
}

const policy = (name: string, ns: string, body: string): string => `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ${name}, namespace: ${ns}}
spec:
${body.split('\n').map((l) => `  ${l}`).join('\n')}
---`;
const toGateway = 'targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]';
const toService = (n: string): string => `targetRefs: [{kind: Service, group: "", name: ${n}}]`;

test('targetRefs: a Gateway policy reaches every Service bound to the waypoint, a Service policy only that Service; selector policies never', (t) => {
  const r = translate(mesh(
    policy('gw', 'ns1', `${toGateway}\naction: DENY\nrules: [{to: [{operation: {paths: ["/admin"]}}]}]`)
    + policy('only-a', 'ns1', `${toService('a')}\nrules: [{from: [{source: {namespaces: ["ns1"]}}]}]`)
    + policy('sel', 'ns1', 'selector: {matchLabels: {app: a}}\nrules: [{}]')
    + policy('no-wp', 'ns2', `${toService('c')}\naction: DENY\nrules: [{}]`),
  ));
  t.deepEqual(messages(r.rejected), []);
  t.deepEqual(r.l7.get(A)?.authorization?.map((p) => p.name), ['gw', 'only-a']);
  t.deepEqual(r.l7.get(B)?.authorization?.map((p) => p.name), ['gw']);
  // the waypoint's own config carries the waypoint-wide policies (for workload-addressed traffic)
  t.deepEqual(r.l7.get('ns1/wp.ns1.svc.cluster.local')?.authorization?.map((p) => p.name), ['gw']);
  t.is(r.l7.get(C), undefined);
  t.deepEqual(r.l7.get(B)?.http, [], 'a Service with only policies still routes to itself');
  t.true(r.warnings.some((w) => w.name === 'no-wp' && w.field === 'spec.targetRefs[0]' && /has no waypoint/.test(w.message)));
  const gw = r.l7.get(A)!.authorization![0]!;
  t.deepEqual(gw, { name: 'gw', namespace: 'ns1', action: 'deny', dryRun: false, rules: [{ to: [{ paths: [{ exact: '/admin' }] }] }] });
  // selector policies stay L4 (node agent)
  t.truthy(r.snapshot.authorization('ns1/sel'));
  t.falsy(r.snapshot.authorization('ns1/gw'));

  // it travels with the waypoint config (JSON) and comes back equal
  const payload = encodeWaypointConfig(A, r.l7.get(A)!);
  const back = decodeWaypointConfigs([{ name: A, version: '1', payload }]);
  t.deepEqual(back.rejected, []);
  t.deepEqual(back.resources[0]?.value.authorization, r.l7.get(A)!.authorization);
});

test('CUSTOM and broken targetRefs policies are refused by name and field, and what they target denies everything (fail closed)', (t) => {
  const r = translate(mesh(
    policy('custom', 'ns1', `${toGateway}\naction: CUSTOM\nprovider: {name: ext-authz}\nrules: [{}]`)
    + policy('bad-path', 'ns1', `${toService('b')}\nrules: [{to: [{operation: {paths: ["/a/{*}x"]}}]}]`)
    + policy('bad-key', 'ns1', `${toService('b')}\nrules: [{when: [{key: "request.header[x]", values: ["1"]}]}]`)
    + policy('other-ns', 'ns1', 'targetRefs: [{kind: Service, group: "", name: c, namespace: ns2}]\nrules: [{}]'),
  ));
  const rej = (name: string): string | undefined => r.rejected.find((x) => x.name === name)?.field;
  t.is(rej('custom'), 'spec.action');
  t.is(rej('bad-path'), 'spec.rules[0].to[0].operation.paths[0]');
  t.is(rej('bad-key'), 'spec.rules[0].when[0].key');
  t.is(rej('other-ns'), 'spec.targetRefs[0].namespace');
  const deniesAll = (svc: string): boolean => evaluateL7(r.l7.get(svc)?.authorization, { method: 'GET', path: '/', authority: 'a', port: 80, headers: {}, sourceIp: '10.0.0.1', sourcePrincipal: 'spiffe://cluster.local/ns/ns1/sa/x' }).allowed === false;
  t.true(deniesAll(A), 'the CUSTOM policy targets the waypoint: A denies');
  t.true(deniesAll(B));
  t.true(r.warnings.some((w) => w.name === 'custom' && /the waypoint denies every request to what it targets/.test(w.message)));
});

test('a targetRefs policy edited into something invalid keeps its last good version at the waypoint', (t) => {
  const tr = translator();
  const good = policy('p', 'ns1', `${toService('a')}\naction: DENY\nrules: [{to: [{operation: {paths: ["/admin"]}}]}]`);
  const bad = policy('p', 'ns1', `${toService('a')}\naction: DENY\nrules: [{to: [{operation: {pathz: ["/admin"]}}]}]`);
  t.deepEqual(tr.update(mesh(good)).l7.get(A)?.authorization?.map((p) => p.rules), [[{ to: [{ paths: [{ exact: '/admin' }] }] }]]);
  const r = tr.update(mesh(bad));
  t.is(r.rejected.find((x) => x.name === 'p')?.field, 'spec.rules[0].to[0].operation.pathz');
  t.deepEqual(r.l7.get(A)?.authorization?.map((p) => p.rules), [[{ to: [{ paths: [{ exact: '/admin' }] }] }]]);
});

// ---- the authorization matrix ----

const MATRIX = mesh(
  policy('deny-admin', 'ns1', `${toGateway}\naction: DENY\nrules: [{to: [{operation: {paths: ["/admin", "/admin/*"]}}]}]`)
  + policy('deny-host', 'ns1', `${toGateway}\naction: DENY\nrules: [{to: [{operation: {hosts: ["secret.example.com", "secret.example.com:*"]}}]}]`)
  + policy('deny-user', 'ns1', `${toGateway}\naction: DENY\nrules: [{when: [{key: "request.headers[x-user]", values: ["admin"]}]}]`)
  + policy('deny-nojwt', 'ns1', `${toGateway}\naction: DENY\nrules: [{from: [{source: {notRequestPrincipals: ["*"]}}], to: [{operation: {paths: ["/jwt/*"]}}]}]`)
  + policy('allow', 'ns1', `${toGateway}
action: ALLOW
rules:
- from: [{source: {principals: ["cluster.local/ns/ns1/sa/client"]}}]
  to: [{operation: {methods: ["GET", "POST"], hosts: ["a.ns1.svc.cluster.local", "a:80"]}}]
- from: [{source: {namespaces: ["monitoring"]}}]
  to: [{operation: {methods: ["GET"], paths: ["/health", "/metrics"]}}]
- to: [{operation: {paths: ["/store/{*}/items/{**}"], notMethods: ["DELETE"]}}]
- when: [{key: "request.headers[x-token]", values: ["secret"]}]
- from: [{source: {requestPrincipals: ["*"]}}]
- from: [{source: {ipBlocks: ["192.168.0.0/16"]}}]
  to: [{operation: {ports: ["80"], paths: ["/internal*"]}}]
- from: [{source: {notPrincipals: ["*"]}}]
  to: [{operation: {paths: ["*.public"]}}]`),
);
const translated = translate(MATRIX);
const POLICIES: readonly L7Authorization[] = translated.l7.get(A)!.authorization!;

const CLIENT = 'spiffe://cluster.local/ns/ns1/sa/client';
const MONITOR = 'spiffe://cluster.local/ns/monitoring/sa/prom';
const OTHER = 'spiffe://cluster.local/ns/ns2/sa/other';

interface Row { name: string; req: Partial<RequestFacts>; want: 'allow' | 'deny' | 400 }
const rows: Row[] = [
  { name: 'client GET / on its host', req: { sourcePrincipal: CLIENT }, want: 'allow' },
  { name: 'client DELETE', req: { sourcePrincipal: CLIENT, method: 'DELETE' }, want: 'deny' },
  { name: 'other identity', req: { sourcePrincipal: OTHER }, want: 'deny' },
  { name: 'no identity (plaintext)', req: { sourcePrincipal: undefined }, want: 'deny' },
  // DENY /admin and every way of spelling it
  { name: '/admin', req: { sourcePrincipal: CLIENT, path: '/admin' }, want: 'deny' },
  { name: '/admin/', req: { sourcePrincipal: CLIENT, path: '/admin/' }, want: 'deny' },
  { name: '/admin/x', req: { sourcePrincipal: CLIENT, path: '/admin/x' }, want: 'deny' },
  { name: '//admin', req: { sourcePrincipal: CLIENT, path: '//admin' }, want: 'deny' },
  { name: '/./admin', req: { sourcePrincipal: CLIENT, path: '/./admin' }, want: 'deny' },
  { name: '/a/../admin', req: { sourcePrincipal: CLIENT, path: '/a/../admin' }, want: 'deny' },
  { name: '/../../admin', req: { sourcePrincipal: CLIENT, path: '/../../admin' }, want: 'deny' },
  { name: '/%2Fadmin', req: { sourcePrincipal: CLIENT, path: '/%2Fadmin' }, want: 'deny' },
  { name: '/%2fadmin', req: { sourcePrincipal: CLIENT, path: '/%2fadmin' }, want: 'deny' },
  { name: '/\\admin', req: { sourcePrincipal: CLIENT, path: '/\\admin' }, want: 'deny' },
  { name: '/%5Cadmin', req: { sourcePrincipal: CLIENT, path: '/%5Cadmin' }, want: 'deny' },
  { name: '/admin;x', req: { sourcePrincipal: CLIENT, path: '/admin;x' }, want: 'deny' },
  { name: '/x/..;/admin', req: { sourcePrincipal: CLIENT, path: '/x/..;/admin' }, want: 'deny' },
  { name: '/%61dmin (unreserved escape)', req: { sourcePrincipal: CLIENT, path: '/%61dmin' }, want: 'deny' },
  { name: '/public/%2E%2E/admin', req: { sourcePrincipal: CLIENT, path: '/public/%2E%2E/admin' }, want: 'deny' },
  { name: '/admin?x=1', req: { sourcePrincipal: CLIENT, path: '/admin?x=1' }, want: 'deny' },
  { name: '/admin#frag', req: { sourcePrincipal: CLIENT, path: '/admin#frag' }, want: 'deny' },
  { name: '/adminx is another path', req: { sourcePrincipal: CLIENT, path: '/adminx' }, want: 'allow' },
  { name: '/Admin is another path (case-sensitive, as in Istio)', req: { sourcePrincipal: CLIENT, path: '/Admin' }, want: 'allow' },
  { name: '/%252e%252e/admin stays double-encoded', req: { sourcePrincipal: CLIENT, path: '/%252e%252e/admin' }, want: 'allow' },
  { name: '%00 is refused', req: { sourcePrincipal: CLIENT, path: '/admin%00' }, want: 400 },
  { name: 'an invalid escape is refused', req: { sourcePrincipal: CLIENT, path: '/adm%G1n' }, want: 400 },
  { name: 'a target without leading / is refused', req: { sourcePrincipal: CLIENT, path: '\\admin' }, want: 400 },
  { name: 'a lower-case method is refused', req: { sourcePrincipal: CLIENT, method: 'get' }, want: 400 },
  // hosts: case-insensitive, port-aware
  { name: 'mixed-case allowed host', req: { sourcePrincipal: CLIENT, authority: 'A.NS1.svc.Cluster.Local' }, want: 'allow' },
  { name: 'allowed host with a port not listed', req: { sourcePrincipal: CLIENT, authority: 'a.ns1.svc.cluster.local:80' }, want: 'deny' },
  { name: 'short host with the listed port', req: { sourcePrincipal: CLIENT, authority: 'a:80' }, want: 'allow' },
  { name: 'short host without port (not listed)', req: { sourcePrincipal: CLIENT, authority: 'a' }, want: 'deny' },
  { name: 'denied host, mixed case', req: { sourcePrincipal: CLIENT, authority: 'Secret.Example.COM', headers: { 'x-token': ['secret'] } }, want: 'deny' },
  { name: 'denied host with a port', req: { sourcePrincipal: CLIENT, authority: 'secret.example.com:8080', headers: { 'x-token': ['secret'] } }, want: 'deny' },
  // repeated headers: each value on its own
  { name: 'x-user admin among several values', req: { sourcePrincipal: CLIENT, headers: { 'x-user': ['guest', 'admin'] } }, want: 'deny' },
  { name: 'x-user "guest,admin" in one line is another value', req: { sourcePrincipal: CLIENT, headers: { 'x-user': ['guest,admin'] } }, want: 'allow' },
  { name: 'x-token secret as the second value allows', req: { sourcePrincipal: OTHER, headers: { 'x-token': ['nope', 'secret'] } }, want: 'allow' },
  { name: 'x-token as a plain string', req: { sourcePrincipal: OTHER, headers: { 'x-token': 'secret' } }, want: 'allow' },
  // namespaces, paths
  { name: 'monitoring GET /metrics', req: { sourcePrincipal: MONITOR, path: '/metrics' }, want: 'allow' },
  { name: 'monitoring GET /metrics?x', req: { sourcePrincipal: MONITOR, path: '/metrics?format=json' }, want: 'allow' },
  { name: 'monitoring GET /metrics/x', req: { sourcePrincipal: MONITOR, path: '/metrics/x' }, want: 'deny' },
  { name: 'monitoring POST /metrics', req: { sourcePrincipal: MONITOR, path: '/metrics', method: 'POST' }, want: 'deny' },
  // templates
  { name: '/store/1/items/', req: { sourcePrincipal: OTHER, path: '/store/1/items/' }, want: 'allow' },
  { name: '/store/1/items/a/b', req: { sourcePrincipal: OTHER, path: '/store/1/items/a/b' }, want: 'allow' },
  { name: '/store/1/2/items/a ({*} is one segment)', req: { sourcePrincipal: OTHER, path: '/store/1/2/items/a' }, want: 'deny' },
  { name: '/store/1/items/a DELETE (notMethods)', req: { sourcePrincipal: OTHER, path: '/store/1/items/a', method: 'DELETE' }, want: 'deny' },
  // JWT cannot be evaluated: ALLOW on requestPrincipals never matches, DENY on notRequestPrincipals always does
  { name: 'requestPrincipals ["*"] never allows', req: { sourcePrincipal: OTHER, path: '/x' }, want: 'deny' },
  { name: 'notRequestPrincipals DENY applies to /jwt/*', req: { sourcePrincipal: CLIENT, path: '/jwt/x' }, want: 'deny' },
  // ip blocks and ports
  { name: 'internal from 192.168/16 on port 80', req: { sourcePrincipal: OTHER, sourceIp: '192.168.3.4', path: '/internal/x' }, want: 'allow' },
  { name: 'internal from elsewhere', req: { sourcePrincipal: OTHER, sourceIp: '10.1.1.1', path: '/internal/x' }, want: 'deny' },
  { name: 'internal on another port', req: { sourcePrincipal: OTHER, sourceIp: '192.168.3.4', path: '/internal/x', port: 8080 }, want: 'deny' },
  // notPrincipals ["*"]: requests without a peer identity; suffix path
  { name: 'plaintext *.public', req: { sourcePrincipal: undefined, path: '/docs/readme.public' }, want: 'allow' },
  { name: 'mTLS *.public is not this rule', req: { sourcePrincipal: OTHER, path: '/docs/readme.public' }, want: 'deny' },
];

for (const row of rows) {
  test(`matrix: ${row.name} -> ${row.want}`, (t) => {
    const f: RequestFacts = {
      method: 'GET', path: '/', authority: 'a.ns1.svc.cluster.local', scheme: 'http', headers: {}, port: 80,
      sourceIp: '10.0.0.5', isGrpc: false, ...row.req,
    };
    const p = prepareRequest(f);
    if ('kind' in p) { t.is(row.want, 400, p.body); t.is(p.status, 400); return; }
    const { decision, deny } = authorizeL7(POLICIES, p);
    t.is<string | number, string | number>(decision.allowed ? 'allow' : 'deny', row.want, decision.reason);
    if (deny) t.like(deny, { status: 403, body: 'RBAC: access denied' });
  });
}

test('decideRequest enforces the Service config\'s policies before routing (403, RBAC: access denied)', (t) => {
  const l7 = translated.l7.get(A)!;
  const base: RequestFacts = { method: 'GET', path: '/admin', authority: 'a.ns1.svc.cluster.local', scheme: 'http', headers: {}, port: 80, sourceIp: '10.0.0.5', sourcePrincipal: CLIENT, isGrpc: false };
  t.like(decideRequest(l7, base, A, 'a.ns1.svc.cluster.local', () => 0), { kind: 'respond', status: 403, body: 'RBAC: access denied', details: 'rbac_access_denied_matched_policy[ns1/deny-admin]' });
  t.like(decideRequest(l7, { ...base, path: '/ok' }, A, 'a.ns1.svc.cluster.local', () => 0), { kind: 'forward', backend: { service: A } });
  t.like(decideRequest(l7, { ...base, path: '/admin', isGrpc: true }, A, 'a.ns1.svc.cluster.local', () => 0), { kind: 'respond', status: 200, grpcStatus: 7 });
  t.like(decideRequest(l7, { ...base, path: '/admin%00' }, A, 'a.ns1.svc.cluster.local', () => 0), { kind: 'respond', status: 400 });
});

test('the matrix policies translate without rejection', (t) => {
  t.deepEqual(messages(translated.rejected), []);
  t.deepEqual(POLICIES.map((p) => p.name), ['allow', 'deny-admin', 'deny-host', 'deny-nojwt', 'deny-user']);
});

test('evaluation order and degenerate policies: DENY before ALLOW, no ALLOW allows, ALLOW without rules denies, dry-run never decides', (t) => {
  const req = { method: 'GET', path: '/', authority: 'a', port: 80, headers: {}, sourceIp: '10.0.0.1' };
  const p = (name: string, action: 'allow' | 'deny', rules: L7Authorization['rules'], dryRun = false): L7Authorization => ({ name, namespace: 'ns1', action, dryRun, rules });
  t.true(evaluateL7([], req).allowed);
  t.true(evaluateL7([p('d', 'deny', [])], req).allowed, 'DENY without rules has no effect');
  t.false(evaluateL7([p('a', 'allow', [])], req).allowed, 'ALLOW without rules allows nothing');
  t.true(evaluateL7([p('a', 'allow', [{}])], req).allowed, 'ALLOW rules [{}] allows all');
  const both = evaluateL7([p('a', 'allow', [{}]), p('d', 'deny', [{}])], req);
  t.like(both, { allowed: false, policy: 'ns1/d' });
  const dry = evaluateL7([p('d', 'deny', [{}], true)], req);
  t.true(dry.allowed);
  t.deepEqual(dry.dryRun, [{ policy: 'ns1/d', action: 'deny', matched: true }]);
  // a condition on something the waypoint cannot see: ALLOW never, DENY always
  const sni = [{ when: [{ key: 'connection.sni', values: ['x'] }] }];
  t.false(evaluateL7([p('a', 'allow', sni)], req).allowed);
  t.false(evaluateL7([p('d', 'deny', sni)], req).allowed);
  const claims = [{ when: [{ key: 'request.auth.claims[groups]', notValues: ['admins'] }] }];
  t.false(evaluateL7([p('a', 'allow', claims)], req).allowed);
  // destination.ip without the destination address: cannot be evaluated
  const dst = [{ when: [{ key: 'destination.ip', values: ['10.96.0.0/16'] }] }];
  t.false(evaluateL7([p('a', 'allow', dst)], req).allowed);
  t.true(evaluateL7([p('a', 'allow', dst)], { ...req, destinationIp: '10.96.1.1' }).allowed);
  // source.* keys and destination.port
  const keys = [{ when: [
    { key: 'source.namespace', values: ['ns1'] }, { key: 'source.serviceAccount', values: ['ns1/client'] },
    { key: 'source.trustDomain', values: ['cluster.local'] }, { key: 'source.principal', values: ['spiffe://cluster.local/ns/ns1/sa/client'] },
    { key: 'destination.port', values: ['80'] }, { key: 'source.ip', notValues: ['10.0.0.0/8'] },
  ] }];
  t.true(evaluateL7([p('a', 'allow', keys)], { ...req, sourcePrincipal: CLIENT, sourceIp: '172.16.0.1' }).allowed);
  t.false(evaluateL7([p('a', 'allow', keys)], { ...req, sourcePrincipal: CLIENT, sourceIp: '10.0.0.1' }).allowed);
});

test('a policy not of the model shape (broken control plane) denies instead of throwing', (t) => {
  const req = { method: 'GET', path: '/', authority: 'a', port: 80, headers: {}, sourceIp: '10.0.0.1' };
  const broken = [{ name: 'x', namespace: 'ns1', action: 'allow', dryRun: false, rules: [{ to: [{ ports: '80' }] }] }] as unknown as L7Authorization[];
  t.like(evaluateL7(broken, req), { allowed: false });
  const broken2 = [{ name: 'y', namespace: 'ns1', action: 'deny', dryRun: false, rules: [null] }] as unknown as L7Authorization[];
  t.like(evaluateL7(broken2, req), { allowed: false });
});

test('path readings: ; parameters removed per segment, then dot segments', (t) => {
  t.deepEqual(pathReadings('/admin'), ['/admin']);
  t.deepEqual(pathReadings('/admin;x'), ['/admin;x', '/admin']);
  t.deepEqual(pathReadings('/a;b/c;d=1'), ['/a;b/c;d=1', '/a/c']);
  t.deepEqual(pathReadings('/x/..;/admin'), ['/x/..;/admin', '/admin']);
});
