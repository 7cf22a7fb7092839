/**
 * Route actions as plans, in the style of the Gateway API conformance tables: redirects (path, port, scheme,
 * host and status), rewrites, header modifiers, weights (within 5 % over many picks, weight 0 gets nothing),
 * mirrors, faults, and the seed's VirtualService as written. Configs go through the real translator.
 */
import test from 'ava';
import { applyHeaderModifiers, decideRequest, normalizePath, pickWeighted } from '../../../src/waypoint/l7/index.js';
import type { RequestFacts, RequestPlan, ForwardPlan, MutableHeaders } from '../../../src/waypoint/l7/index.js';
import type { ServiceL7 } from '../../../src/model/l7.js';
import { fixture } from '../l7/fixture.js';
import { ORDER, ORDER_HOST, REVIEWS, REVIEWS_HOST, facts, l7Of, seeded } from './_support.js';

const hr = (rules: string): string => `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
${rules}`;
const vs = (http: string, host = 'reviews'): string => `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: default}
spec:
  hosts: [${host}]
  http:
${http}`;

function plan(l7: ServiceL7, req: Partial<RequestFacts>, rand = seeded(1), svc = REVIEWS, host = REVIEWS_HOST): RequestPlan {
  return decideRequest(l7, facts(req), svc, host, rand);
}
function location(p: RequestPlan): string | number {
  if (p.kind !== 'respond') return 'forwarded';
  return p.headers.find(([k]) => k === 'location')?.[1] ?? p.status;
}

// ---- redirects (httproute-redirect-* / mesh redirect tables) ----
const REDIRECTS = l7Of(hr(`
  - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /status-code-301}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /host-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}}]
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /port-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-port}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-default-port}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443}}]
  - matches: [{path: {type: PathPrefix, value: /303}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 303}}]
`), REVIEWS);

const redirectCases: { path: string; authority?: string; port?: number; status: number; location: string }[] = [
  { path: '/hostname-redirect', status: 302, location: 'http://example.org:9080/hostname-redirect' },
  { path: '/hostname-redirect', port: 80, authority: 'reviews', status: 302, location: 'http://example.org/hostname-redirect' },
  { path: '/status-code-301', port: 80, authority: 'reviews', status: 301, location: 'http://reviews/status-code-301' },
  { path: '/host-and-status', port: 80, authority: 'reviews', status: 301, location: 'http://example.org/host-and-status' },
  { path: '/full/one/two?q=1', port: 80, authority: 'reviews', status: 302, location: 'http://reviews/full-path-replacement?q=1' },
  { path: '/prefix/one/two', port: 80, authority: 'reviews', status: 302, location: 'http://reviews/replacement-prefix/one/two' },
  { path: '/prefix', port: 80, authority: 'reviews', status: 302, location: 'http://reviews/replacement-prefix' },
  { path: '/strip/one', port: 80, authority: 'reviews', status: 302, location: 'http://reviews/one' },
  { path: '/strip', port: 80, authority: 'reviews', status: 302, location: 'http://reviews/' },
  { path: '/port', port: 80, authority: 'reviews', status: 302, location: 'http://reviews:8083/port' },
  { path: '/port-and-host', port: 80, authority: 'reviews:80', status: 302, location: 'http://example.org:8083/port-and-host' },
  { path: '/scheme', port: 80, authority: 'reviews', status: 302, location: 'https://reviews/scheme' },
  { path: '/scheme', port: 8080, authority: 'reviews:8080', status: 302, location: 'https://reviews/scheme' },
  { path: '/scheme-and-port', port: 80, authority: 'reviews', status: 302, location: 'https://reviews:8443/scheme-and-port' },
  { path: '/scheme-and-default-port', port: 80, authority: 'reviews', status: 302, location: 'https://reviews/scheme-and-default-port' },
  { path: '/303', port: 80, authority: 'reviews', status: 303, location: 'http://example.org/303' },
];
for (const c of redirectCases) {
  test(`redirect ${c.authority ?? 'reviews:9080'}${c.path} -> ${c.status} ${c.location}`, (t) => {
    const p = plan(REDIRECTS, { path: c.path, ...(c.port ? { port: c.port } : {}), ...(c.authority ? { authority: c.authority } : {}) });
    t.like(p, { kind: 'respond', status: c.status, flag: '-' });
    t.is(location(p), c.location);
  });
}

test('VirtualService redirects: default 301, authority and uri, derivePort', (t) => {
  const l7 = l7Of(vs(`
  - match: [{uri: {prefix: /a}}]
    redirect: {uri: /new, authority: other.example}
  - match: [{uri: {prefix: /b}}]
    redirect: {scheme: https, derivePort: FROM_REQUEST_PORT, redirectCode: 308}
  - match: [{uri: {prefix: /c}}]
    redirect: {authority: c.example, derivePort: FROM_PROTOCOL_DEFAULT}
`), REVIEWS);
  t.like(plan(l7, { path: '/a/x?k=v' }), { status: 301 });
  t.is(location(plan(l7, { path: '/a/x?k=v' })), 'http://other.example:9080/new?k=v');
  t.like(plan(l7, { path: '/b' }), { status: 308 });
  t.is(location(plan(l7, { path: '/b' })), 'https://reviews:9080/b');
  t.is(location(plan(l7, { path: '/c' })), 'http://c.example/c');
});

// ---- rewrites (httproute-rewrite-path / -host) ----
test('URLRewrite: prefix and full path, hostname; the query is kept', (t) => {
  const l7 = l7Of(hr(`
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: one.example.org}}]
    backendRefs: [{name: reviews, port: 9080}]
`), REVIEWS);
  const fw = (path: string): [string, string] => {
    const p = plan(l7, { path });
    if (p.kind !== 'forward') throw new Error(`not forwarded: ${p.status}`);
    return [p.path, p.authority];
  };
  t.deepEqual(fw('/prefix/one/two'), ['/one/two', 'reviews:9080']);
  t.deepEqual(fw('/prefix/one'), ['/one', 'reviews:9080']);
  t.deepEqual(fw('/strip-prefix/three'), ['/three', 'reviews:9080']);
  t.deepEqual(fw('/strip-prefix'), ['/', 'reviews:9080']);
  t.deepEqual(fw('/full/one/two?x=1'), ['/one?x=1', 'reviews:9080']);
  t.deepEqual(fw('/host/x'), ['/host/x', 'one.example.org']);
});

test('VirtualService rewrites: uri after a prefix match replaces the prefix (plain string prefix), regex rewrite uses groups', (t) => {
  const l7 = l7Of(vs(`
  - match: [{uri: {prefix: /api/v1}}]
    rewrite: {uri: /v2}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {exact: /exact}}]
    rewrite: {uri: /whole, authority: ratings}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /svc}}]
    rewrite: {uriRegexRewrite: {match: '^/svc/([^/]+)/(.*)$', rewrite: '/\\2/\\1'}}
    route: [{destination: {host: reviews}}]
`), REVIEWS);
  const fw = (path: string): string => { const p = plan(l7, { path }); return p.kind === 'forward' ? `${p.authority}${p.path}` : String(p.status); };
  t.is(fw('/api/v1/users'), 'reviews:9080/v2/users');
  t.is(fw('/api/v1x'), 'reviews:9080/v2x');
  t.is(fw('/exact?a=b'), 'ratings/whole?a=b');
  t.is(fw('/svc/users/42/x'), 'reviews:9080/42/x/users');
});

// ---- header modifiers (httproute-request-header-modifier / response) ----
test('header modifiers: set overwrites every value, add appends with a comma, remove is case-insensitive; route then backend', (t) => {
  const l7 = l7Of(hr(`
  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, value: add-appends-values}], remove: [X-Header-Remove]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-resp, value: route}]}}
    backendRefs:
    - name: reviews
      port: 9080
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-backend, value: b1}, {name: x-header-set, value: backend-wins}]}}, {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-resp, value: backend}]}}]
`), REVIEWS);
  const p = plan(l7, {}) as ForwardPlan;
  t.is(p.kind, 'forward');
  const h: MutableHeaders = { 'x-header-set': ['some-other-value', 'more'], 'x-header-add': 'add-value', 'x-header-remove': 'val', 'x-keep': 'k' };
  applyHeaderModifiers(h, p.requestHeaders);
  t.deepEqual(h, { 'x-header-set': 'backend-wins', 'x-header-add': 'add-value,add-appends-values', 'x-keep': 'k', 'x-backend': 'b1' });
  const none: MutableHeaders = {};
  applyHeaderModifiers(none, p.requestHeaders);
  t.is(none['x-header-add'], 'add-appends-values');
  const resp: MutableHeaders = {};
  applyHeaderModifiers(resp, p.responseHeaders);
  t.is(resp['x-resp'], 'route', 'backend-level first, then the route-level set');
  const rep: MutableHeaders = { 'x-header-add': ['a', 'b'] };
  applyHeaderModifiers(rep, [{ set: [], add: [['x-header-add', 'c']], remove: [] }]);
  t.deepEqual(rep['x-header-add'], ['a', 'b,c']);
});

// ---- weights ----
function shares(l7: ServiceL7, n: number, key: (p: ForwardPlan) => string, req: Partial<RequestFacts> = {}, svc = REVIEWS, host = REVIEWS_HOST): Map<string, number> {
  const rand = seeded(42);
  const out = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const p = decideRequest(l7, facts(req), svc, host, rand);
    const k = p.kind === 'forward' ? key(p) : `status ${p.status}`;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

test('weights: 70/30/0 within 5 % over 5,000 picks, weight 0 gets nothing (httproute-weight / MeshTrafficSplit)', (t) => {
  const l7 = l7Of(hr(`
  - backendRefs: [{name: reviews, port: 9080, weight: 70}, {name: ratings, port: 9080, weight: 30}, {name: reviews, port: 9081, weight: 0}]
`), REVIEWS);
  const s = shares(l7, 5000, (p) => `${p.backend.host}:${p.backend.port}`);
  t.is(s.get('reviews.default.svc.cluster.local:9081'), undefined);
  t.true(Math.abs(s.get('reviews.default.svc.cluster.local:9080')! / 5000 - 0.7) < 0.05, JSON.stringify([...s]));
  t.true(Math.abs(s.get('ratings.default.svc.cluster.local:9080')! / 5000 - 0.3) < 0.05, JSON.stringify([...s]));
});

test('all weights 0 (or no backends) is 500; a backend that names no Service gets 500 for its share', (t) => {
  const zero = l7Of(hr('  - backendRefs: [{name: reviews, port: 9080, weight: 0}, {name: ratings, port: 9080, weight: 0}]'), REVIEWS);
  t.like(plan(zero, {}), { kind: 'respond', status: 500 });
  const missing = l7Of(hr('  - backendRefs: [{name: reviews, port: 9080, weight: 1}, {name: nowhere, port: 9080, weight: 1}]'), REVIEWS);
  const s = shares(missing, 2000, () => 'ok');
  t.true(Math.abs(s.get('status 500')! / 2000 - 0.5) < 0.05, JSON.stringify([...s]));
  t.is(pickWeighted([], seeded(1)), undefined);
  t.is(pickWeighted([{ weight: 0 }, { weight: 3 }], () => 0.999999), 1);
  t.is(pickWeighted([{ weight: 2 }, { weight: 0 }], () => 0.999999), 0);
});

// ---- the seed's VirtualService and the canary by header ----
test('seed order-service VirtualService: x-debug goes to v2 with 30s; the rest splits 90/10 with retries and a 10s timeout', (t) => {
  const l7 = l7Of(fixture('seed-order-vs.yaml') + '---\n' + fixture('seed-order-dr.yaml'), ORDER);
  const debug = decideRequest(l7, facts({ authority: 'order-service', port: 80, headers: { 'x-debug': ['true'] } }), ORDER, ORDER_HOST, seeded(1));
  t.like(debug, { kind: 'forward', backend: { service: ORDER, subset: 'v2', port: 80 }, timeoutMs: 30_000 });
  const s = shares(l7, 5000, (p) => p.backend.subset ?? '-', { authority: 'order-service', port: 80 }, ORDER, ORDER_HOST);
  t.true(Math.abs(s.get('v1')! / 5000 - 0.9) < 0.05 && Math.abs(s.get('v2')! / 5000 - 0.1) < 0.05, JSON.stringify([...s]));
  const split = decideRequest(l7, facts({ authority: 'order-service', port: 80 }), ORDER, ORDER_HOST, seeded(3)) as ForwardPlan;
  t.like(split, { timeoutMs: 10_000, retry: { attempts: 3, perTryTimeoutMs: 2000, retryOn: ['5xx', 'reset', 'connect-failure', 'retriable-4xx'] } });
});

test('header canary (end-user: jason) to v2, everyone else to v1; a repeated header counts value by value', (t) => {
  const l7 = l7Of(vs(`
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
`), REVIEWS);
  const subset = (headers: RequestFacts['headers']): string | undefined => (plan(l7, { headers }) as ForwardPlan).backend.subset;
  t.is(subset({ 'end-user': ['jason'] }), 'v2');
  t.is(subset({ 'end-user': 'jason' }), 'v2');
  t.is(subset({ 'end-user': ['alice', 'jason'] }), 'v2');
  t.is(subset({ 'end-user': ['Jason'] }), 'v1');
  t.is(subset({ 'end-user': ['jason, alice'] }), 'v1');
  t.is(subset({}), 'v1');
});

test('VirtualService matches: ordered first match, withoutHeaders, method, authority, scheme, port, queryParams, ignoreUriCase', (t) => {
  const l7 = l7Of(vs(`
  - name: no-debug
    match: [{withoutHeaders: {x-debug: {}}, uri: {prefix: /wh}}]
    route: [{destination: {host: reviews, subset: a}}]
  - match: [{method: {exact: PUT}}]
    route: [{destination: {host: reviews, subset: b}}]
  - match: [{authority: {prefix: reviews.default}}]
    route: [{destination: {host: reviews, subset: c}}]
  - match: [{port: 9443}]
    route: [{destination: {host: reviews, subset: d}}]
  - match: [{queryParams: {animal: {regex: 'wh.*'}}}]
    route: [{destination: {host: reviews, subset: e}}]
  - match: [{uri: {exact: /CASE}, ignoreUriCase: true}]
    route: [{destination: {host: reviews, subset: f}}]
  - match: [{method: {regex: 'P(OST|ATCH)'}}]
    route: [{destination: {host: reviews, subset: g}}]
  - route: [{destination: {host: reviews, subset: z}}]
`), REVIEWS);
  const sub = (req: Partial<RequestFacts>): string => { const p = plan(l7, req); return p.kind === 'forward' ? p.backend.subset! : String(p.status); };
  t.is(sub({ path: '/wh' }), 'a');
  t.is(sub({ path: '/wh', headers: { 'x-debug': ['1'] } }), 'z');
  t.is(sub({ method: 'PUT', path: '/wh' }), 'a', 'first match wins');
  t.is(sub({ method: 'PUT' }), 'b');
  t.is(sub({ authority: 'Reviews.Default.svc:9080' }), 'c');
  t.is(sub({ port: 9443 }), 'd');
  t.is(sub({ path: '/?animal=whale' }), 'e');
  t.is(sub({ path: '/case' }), 'f');
  t.is(sub({ method: 'PATCH' }), 'g');
  t.is(sub({}), 'z');
});

// ---- faults, mirrors, gRPC ----
test('fault injection: no percentage injects nothing; 100 % abort answers with the status (FI); delay by percentage', (t) => {
  const l7 = l7Of(vs(`
  - match: [{uri: {prefix: /none}}]
    fault: {abort: {httpStatus: 503}, delay: {fixedDelay: 5s}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /grpc-abort}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - fault: {delay: {fixedDelay: 2s, percentage: {value: 25}}}
    route: [{destination: {host: reviews}}]
`), REVIEWS);
  const none = plan(l7, { path: '/none' });
  t.like(none, { kind: 'forward' });
  t.is((none as ForwardPlan).delayMs, undefined);
  t.like(plan(l7, { path: '/abort' }), { kind: 'respond', status: 418, flag: 'FI' });
  t.like(plan(l7, { path: '/grpc-abort', isGrpc: true }), { kind: 'respond', status: 200, grpcStatus: 14, flag: 'FI' });
  const rand = seeded(5);
  let delayed = 0;
  for (let i = 0; i < 4000; i++) { const p = plan(l7, { path: '/d' }, rand); if (p.kind === 'forward' && p.delayMs === 2000) delayed++; }
  t.true(Math.abs(delayed / 4000 - 0.25) < 0.05, `${delayed}`);
});

test('mirrors: percentage of requests copied, with a -shadow authority; responses ignored', (t) => {
  const l7 = l7Of(hr(`
  - filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: ratings, port: 9080}, percent: 50}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: reviews, port: 9090}}}
    backendRefs: [{name: reviews, port: 9080}]
`), REVIEWS);
  const rand = seeded(8);
  let ratings = 0;
  for (let i = 0; i < 2000; i++) {
    const p = plan(l7, { authority: 'reviews:9080' }, rand) as ForwardPlan;
    t.true(p.mirrors.some((m) => m.host === REVIEWS_HOST && m.port === 9090 && m.authority === 'reviews-shadow:9080'));
    if (p.mirrors.some((m) => m.host === 'ratings.default.svc.cluster.local')) ratings++;
  }
  t.true(Math.abs(ratings / 2000 - 0.5) < 0.05, `${ratings}`);
});

test('gRPC requests try GRPCRoutes first (service / method matches), other requests only HTTP routes', (t) => {
  const l7 = l7Of(`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
    backendRefs: [{name: reviews, port: 9080, weight: 1}]
  - matches: [{method: {type: RegularExpression, service: 'helloworld\\..*'}}]
    backendRefs: [{name: ratings, port: 9080}]
`, REVIEWS);
  const host = (req: Partial<RequestFacts>): string => { const p = plan(l7, req); return p.kind === 'forward' ? p.backend.host.split('.')[0]! : String(p.status); };
  t.is(host({ isGrpc: true, method: 'POST', path: '/helloworld.Greeter/SayHello' }), 'reviews');
  t.is(host({ isGrpc: true, method: 'POST', path: '/helloworld.Greeter/SayBye' }), 'ratings');
  t.is(host({ isGrpc: true, method: 'POST', path: '/other.Svc/SayHello' }), '404');
  t.is(host({ path: '/helloworld.Greeter/SayHello' }), '404');
});

// ---- normalization table ----
const normal: [string, string | null, string?][] = [
  ['/', '/'], ['/a/b', '/a/b'], ['/a//b///c', '/a/b/c'], ['/a/./b', '/a/b'], ['/a/b/..', '/a/'], ['/a/b/.', '/a/b/'],
  ['/../a', '/a'], ['/a/%2E%2E/b', '/b'], ['/app/%2E./admin', '/admin'], ['/%2Fapp%5cadmin%5Cabc', '/app/admin/abc'],
  ['/a\\b', '/a/b'], ['/%41%7e%2d', '/A~-'], ['/a%3Fb', '/a%3Fb'], ['/a%3fb', '/a%3Fb'], ['/a?b=c/../d', '/a', 'b=c/../d'],
  ['/a#x?y', '/a', ''], ['/%252e%252e/admin', '/%252e%252e/admin'], ['/..;/admin', '/..;/admin'], ['/Admin', '/Admin'],
  ['/a%00', null], ['/a%0', null], ['/a%zz', null], ['a', null], ['*', null], ['/a b', null], ['/é', null],
];
for (const [raw, path, query] of normal) {
  test(`normalizePath(${JSON.stringify(raw)}) = ${path === null ? '400' : path}`, (t) => {
    const n = normalizePath(raw);
    if (path === null) { t.true('error' in n); return; }
    if ('error' in n) return t.fail(n.error);
    t.is(n.path, path);
    if (query !== undefined) t.is(n.query, query);
  });
}
