import test from 'ava';
import type { KubeObject } from '../../../src/control/config/types.js';
import { GREETER, RATINGS, REVIEWS, translate } from './fixture.js';

function vs(spec: unknown, name = 'vs', extra: Record<string, unknown> = {}): KubeObject {
  return { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name, namespace: 'default', ...extra }, spec };
}
function dr(spec: unknown, name = 'dr'): KubeObject {
  return { apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name, namespace: 'default' }, spec };
}
function hr(rules: unknown[], name = 'hr', extra: Record<string, unknown> = {}, parentRefs: unknown[] = [{ group: '', kind: 'Service', name: 'reviews' }]): KubeObject {
  return { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: 'default', ...extra }, spec: { parentRefs, rules } };
}
const to = (name: string, weight?: number, port = 9080): Record<string, unknown> => ({ name, port, ...(weight !== undefined ? { weight } : {}) });
const route = (host: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ route: [{ destination: { host } }], ...extra });

// ---- rejections: table-driven; each names kind, namespace, name and the offending field ----
const rejections: { title: string; obj: KubeObject; field: string; message: RegExp }[] = [
  { title: 'VS invalid regex', obj: vs({ hosts: ['reviews'], http: [{ match: [{ uri: { regex: '/a(b' } }], ...route('reviews') }] }), field: 'spec.http[0].match[0].uri.regex', message: /not a valid RE2 regex/ },
  { title: 'VS regex with a backreference', obj: vs({ hosts: ['reviews'], http: [{ match: [{ uri: { regex: '/(a)\\1' } }], ...route('reviews') }] }), field: 'spec.http[0].match[0].uri.regex', message: /not a valid RE2 regex.*escape/ },
  { title: 'VS regex with lookahead', obj: vs({ hosts: ['reviews'], http: [{ match: [{ uri: { regex: '/(?!admin).*' } }], ...route('reviews') }] }), field: 'spec.http[0].match[0].uri.regex', message: /not a valid RE2 regex.*Perl syntax/ },
  { title: 'VS regex too long', obj: vs({ hosts: ['reviews'], http: [{ match: [{ headers: { x: { regex: 'a'.repeat(1025) } } }], ...route('reviews') }] }), field: 'spec.http[0].match[0].headers.x.regex', message: /longer than 1024/ },
  { title: 'VS negative weight', obj: vs({ hosts: ['reviews'], http: [{ route: [{ destination: { host: 'reviews' }, weight: -1 }, { destination: { host: 'ratings' }, weight: 101 }] }] }), field: 'spec.http[0].route[0].weight', message: /0\.\./ },
  { title: 'VS all-zero weights', obj: vs({ hosts: ['reviews'], http: [{ route: [{ destination: { host: 'reviews' } }, { destination: { host: 'ratings' } }] }] }), field: 'spec.http[0].route', message: /all are 0/ },
  { title: 'VS bad timeout', obj: vs({ hosts: ['reviews'], http: [route('reviews', { timeout: '10 seconds' })] }), field: 'spec.http[0].timeout', message: /invalid duration/ },
  { title: 'VS bad perTryTimeout', obj: vs({ hosts: ['reviews'], http: [route('reviews', { retries: { attempts: 2, perTryTimeout: 5 } })] }), field: 'spec.http[0].retries.perTryTimeout', message: /string/ },
  { title: 'VS unknown field (typo)', obj: vs({ hosts: ['reviews'], http: [route('reviews', { retires: { attempts: 3 } })] }), field: 'spec.http[0].retires', message: /unknown field/ },
  { title: 'VS unknown retryOn token', obj: vs({ hosts: ['reviews'], http: [route('reviews', { retries: { attempts: 1, retryOn: '5xx,sometimes' } })] }), field: 'spec.http[0].retries.retryOn', message: /sometimes/ },
  { title: 'VS without hosts', obj: vs({ http: [route('reviews')] }), field: 'spec.hosts', message: /at least one/ },
  { title: 'VS route and redirect', obj: vs({ hosts: ['reviews'], http: [route('reviews', { redirect: { uri: '/x' } })] }), field: 'spec.http[0]', message: /exactly one of route, redirect/ },
  { title: 'VS fault percentage over 100', obj: vs({ hosts: ['reviews'], http: [route('reviews', { fault: { abort: { httpStatus: 503, percentage: { value: 150 } } } })] }), field: 'spec.http[0].fault.abort.percentage.value', message: /0\.\.100/ },
  { title: 'VS header name upper case', obj: vs({ hosts: ['reviews'], http: [{ match: [{ headers: { 'X-User': { exact: 'a' } } }], ...route('reviews') }] }), field: 'spec.http[0].match[0].headers.X-User', message: /lowercase/ },
  { title: 'VS delegate', obj: vs({ hosts: ['reviews'], http: [{ delegate: { name: 'x' } }] }), field: 'spec.http[0].delegate', message: /not supported/ },
  { title: 'VS spec not a mapping', obj: vs(['x']), field: 'spec', message: /mapping/ },
  { title: 'DR bad load balancer', obj: dr({ host: 'reviews', trafficPolicy: { loadBalancer: { simple: 'FASTEST' } } }), field: 'spec.trafficPolicy.loadBalancer.simple', message: /FASTEST/ },
  { title: 'DR bad interval', obj: dr({ host: 'reviews', trafficPolicy: { outlierDetection: { interval: '10x' } } }), field: 'spec.trafficPolicy.outlierDetection.interval', message: /invalid duration/ },
  { title: 'DR maxEjectionPercent over 100', obj: dr({ host: 'reviews', trafficPolicy: { outlierDetection: { maxEjectionPercent: 101 } } }), field: 'spec.trafficPolicy.outlierDetection.maxEjectionPercent', message: /0\.\.100/ },
  { title: 'DR duplicate subset', obj: dr({ host: 'reviews', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v1' }] }), field: 'spec.subsets[1].name', message: /duplicate/ },
  { title: 'DR simple and consistentHash together', obj: dr({ host: 'reviews', trafficPolicy: { loadBalancer: { simple: 'RANDOM', consistentHash: { httpHeaderName: 'x' } } } }), field: 'spec.trafficPolicy.loadBalancer', message: /mutually exclusive/ },
  { title: 'DR consistentHash without a key', obj: dr({ host: 'reviews', trafficPolicy: { loadBalancer: { consistentHash: { minimumRingSize: 10 } } } }), field: 'spec.trafficPolicy.loadBalancer.consistentHash', message: /exactly one of httpHeaderName/ },
  { title: 'DR consistentHash with two keys', obj: dr({ host: 'reviews', subsets: [{ name: 'v1', trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x', useSourceIp: true } } } }] }), field: 'spec.subsets[0].trafficPolicy.loadBalancer.consistentHash', message: /got httpHeaderName, useSourceIp/ },
  { title: 'DR consistentHash bad cookie name', obj: dr({ host: 'reviews', trafficPolicy: { loadBalancer: { consistentHash: { httpCookie: { name: 'a b' } } } } }), field: 'spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name', message: /invalid cookie name/ },
  { title: 'DR consistentHash ring and maglev', obj: dr({ host: 'reviews', trafficPolicy: { loadBalancer: { consistentHash: { useSourceIp: true, ringHash: {}, maglev: {} } } } }), field: 'spec.trafficPolicy.loadBalancer.consistentHash', message: /mutually exclusive/ },
  { title: 'HTTPRoute header regex RE2 refuses', obj: hr([{ matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: '(?<!a)b' }] }], backendRefs: [to('reviews')] }]), field: 'spec.rules[0].matches[0].headers[0].value', message: /not a valid RE2 regex/ },
  { title: 'VS query param regex RE2 refuses', obj: vs({ hosts: ['reviews'], http: [{ match: [{ queryParams: { q: { regex: '(a)\\1' } } }], ...route('reviews') }] }), field: 'spec.http[0].match[0].queryParams.q.regex', message: /not a valid RE2 regex/ },
  { title: 'VS authority regex RE2 refuses', obj: vs({ hosts: ['reviews'], http: [{ match: [{ authority: { regex: '[z-a]' } }], ...route('reviews') }] }), field: 'spec.http[0].match[0].authority.regex', message: /not a valid RE2 regex/ },
  { title: 'VS regex rewrite RE2 refuses', obj: vs({ hosts: ['reviews'], http: [route('reviews', { rewrite: { uriRegexRewrite: { match: '(?=x)', rewrite: '/' } } })] }), field: 'spec.http[0].rewrite.uriRegexRewrite.match', message: /not a valid RE2 regex/ },
  { title: 'DR unknown pool field', obj: dr({ host: 'reviews', trafficPolicy: { connectionPool: { tcp: { maxConnection: 5 } } } }), field: 'spec.trafficPolicy.connectionPool.tcp.maxConnection', message: /unknown field/ },
  { title: 'DR maxConnections not a number', obj: dr({ host: 'reviews', trafficPolicy: { connectionPool: { tcp: { maxConnections: 'lots' } } } }), field: 'spec.trafficPolicy.connectionPool.tcp.maxConnections', message: /integer/ },
  { title: 'HTTPRoute bad path regex', obj: hr([{ matches: [{ path: { type: 'RegularExpression', value: '[' } }], backendRefs: [to('reviews')] }]), field: 'spec.rules[0].matches[0].path.value', message: /not a valid RE2 regex/ },
  { title: 'HTTPRoute path without slash', obj: hr([{ matches: [{ path: { type: 'PathPrefix', value: 'api' } }], backendRefs: [to('reviews')] }]), field: 'spec.rules[0].matches[0].path.value', message: /start with/ },
  { title: 'HTTPRoute path with //', obj: hr([{ matches: [{ path: { type: 'Exact', value: '/a//b' } }], backendRefs: [to('reviews')] }]), field: 'spec.rules[0].matches[0].path.value', message: /\/\// },
  { title: 'HTTPRoute weight too large', obj: hr([{ backendRefs: [to('reviews', 1_000_001)] }]), field: 'spec.rules[0].backendRefs[0].weight', message: /0\.\.1000000/ },
  { title: 'HTTPRoute backendRequest over request', obj: hr([{ backendRefs: [to('reviews')], timeouts: { request: '1s', backendRequest: '2s' } }]), field: 'spec.rules[0].timeouts.backendRequest', message: /request/ },
  { title: 'HTTPRoute redirect with rewrite', obj: hr([{ filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https' } }, { type: 'URLRewrite', urlRewrite: { hostname: 'x' } }] }]), field: 'spec.rules[0].filters', message: /cannot be combined/ },
  { title: 'HTTPRoute ReplacePrefixMatch with Exact match', obj: hr([{ matches: [{ path: { type: 'Exact', value: '/a' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/b' } } }], backendRefs: [to('reviews')] }]), field: 'spec.rules[0].filters[0].urlRewrite.path.type', message: /PathPrefix/ },
  { title: 'HTTPRoute header value with CRLF', obj: hr([{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x', value: 'a\r\nb: c' }] } }], backendRefs: [to('reviews')] }]), field: 'spec.rules[0].filters[0].requestHeaderModifier.set[0].value', message: /CR, LF/ },
  { title: 'HTTPRoute unknown rule field', obj: hr([{ backendRef: [to('reviews')] }]), field: 'spec.rules[0].backendRef', message: /unknown field/ },
  { title: 'HTTPRoute bad method', obj: hr([{ matches: [{ method: 'FETCH' }], backendRefs: [to('reviews')] }]), field: 'spec.rules[0].matches[0].method', message: /FETCH/ },
];
for (const c of rejections) {
  test(`rejects: ${c.title}`, (t) => {
    const res = translate([c.obj, vs({ hosts: ['ratings'], http: [route('ratings')] }, 'innocent')]);
    t.is(res.rejected.length, 1, JSON.stringify(res.rejected));
    t.like(res.rejected[0], { kind: c.obj.kind, namespace: 'default', name: c.obj.metadata.name, field: c.field });
    t.regex(res.rejected[0]!.message, c.message);
    // one bad resource never takes others down
    t.is(res.l7.get(RATINGS)?.http.length, 1);
  });
}

// ---- warnings, not rejections ----
const warns: { title: string; obj: KubeObject; field: string; message: RegExp }[] = [
  { title: 'VS host that is no Service', obj: vs({ hosts: ['nowhere'], http: [route('reviews')] }), field: 'spec.hosts[0]', message: /nowhere\.default\.svc\.cluster\.local/ },
  { title: 'VS destination that is no Service', obj: vs({ hosts: ['reviews'], http: [route('nowhere')] }), field: 'spec.http[0].route[0].destination.host', message: /500/ },
  { title: 'VS weights not summing to 100', obj: vs({ hosts: ['reviews'], http: [{ route: [{ destination: { host: 'reviews' }, weight: 1 }, { destination: { host: 'ratings' }, weight: 3 }] }] }), field: 'spec.http[0].route', message: /sum to 4/ },
  { title: 'VS corsPolicy', obj: vs({ hosts: ['reviews'], http: [route('reviews', { corsPolicy: { allowOrigins: [{ exact: 'x' }] } })] }), field: 'spec.http[0].corsPolicy', message: /not supported/ },
  { title: 'DR tls mode', obj: dr({ host: 'reviews', trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } } }), field: 'spec.trafficPolicy.tls', message: /ignored/ },
  { title: 'DR unknown host', obj: dr({ host: 'nowhere.example.com' }), field: 'spec.host', message: /not a known Service/ },
  { title: 'HTTPRoute parent is a Gateway', obj: hr([{ backendRefs: [to('reviews')] }], 'hr', {}, [{ name: 'ingress' }]), field: 'spec.parentRefs[0]', message: /not a Service/ },
  { title: 'HTTPRoute consumer route', obj: hr([{ backendRefs: [to('reviews')] }], 'hr', {}, [{ group: '', kind: 'Service', name: 'reviews', namespace: 'prod' }]), field: 'spec.parentRefs[0].namespace', message: /consumer/ },
  { title: 'HTTPRoute backend without port', obj: hr([{ backendRefs: [{ name: 'reviews' }] }]), field: 'spec.rules[0].backendRefs[0].port', message: /required/ },
  { title: 'HTTPRoute cross-namespace backend', obj: hr([{ backendRefs: [{ name: 'reviews', namespace: 'prod', port: 9080 }] }]), field: 'spec.rules[0].backendRefs[0].namespace', message: /ReferenceGrant/ },
];
for (const c of warns) {
  test(`warns: ${c.title}`, (t) => {
    const res = translate([c.obj]);
    t.deepEqual(res.rejected, []);
    const w = res.warnings.find((x) => x.field === c.field);
    t.truthy(w, JSON.stringify(res.warnings));
    t.like(w, { kind: c.obj.kind, namespace: 'default', name: c.obj.metadata.name });
    t.regex(w!.message, c.message);
  });
}

// ---- semantics ----
test('host resolution: short names in the resource namespace, name.namespace, FQDN', (t) => {
  const res = translate([
    vs({ hosts: ['reviews'], http: [route('ratings')] }, 'short'),
    { ...vs({ hosts: ['reviews'], http: [route('reviews.default')] }, 'other-ns'), metadata: { name: 'other-ns', namespace: 'prod' } },
  ]);
  t.deepEqual(res.rejected, []);
  t.is(res.l7.get(REVIEWS)!.http[0]!.action.backends[0]!.service, RATINGS);
  // `reviews` written in prod means prod's reviews; `reviews.default` completes to the default one
  const prod = res.l7.get('prod/reviews.prod.svc.cluster.local')!;
  t.like(prod.http[0]!.action.backends[0], { host: 'reviews.default.svc.cluster.local', service: REVIEWS });
});

test('VirtualService: first match wins in written order; several matches of a rule become several routes', (t) => {
  const res = translate([vs({ hosts: ['reviews'], http: [
    { match: [{ uri: { prefix: '/api' } }, { headers: { 'x-v': { exact: '2' } } }], ...route('ratings') },
    { match: [{ uri: { exact: '/api/exact' } }], ...route('reviews') },
    route('reviews'),
  ] })]);
  const http = res.l7.get(REVIEWS)!.http;
  t.deepEqual(http.map((r) => [r.origin.rule, r.match?.path?.type ?? (r.match ? 'headers' : 'any')]), [[0, 'prefix'], [0, 'headers'], [1, 'exact'], [2, 'any']]);
  // VS prefixes are plain string prefixes
  t.false(http[0]!.match!.path!.segmented);
  // default retry policy of the reference when none is written
  t.deepEqual(http[0]!.action.retries, { attempts: 2, retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'], retriableStatusCodes: [503], backoffBaseMs: 25 });
});

test('VirtualService: fault, mirror, rewrite after prefix, redirect default code, headers, withoutHeaders, presence', (t) => {
  const res = translate([vs({ hosts: ['reviews'], http: [
    { match: [{ uri: { prefix: '/old' }, withoutHeaders: { 'x-skip': {} } }], rewrite: { uri: '/new' }, route: [{ destination: { host: 'reviews', port: { number: 9080 } } }],
      fault: { delay: { fixedDelay: '5s', percentage: { value: 10 } }, abort: { httpStatus: 503 } },
      mirror: { host: 'ratings' }, mirrorPercentage: { value: 25.5 }, headers: { request: { set: { 'X-A': '1' }, remove: ['X-B'] } } },
    { match: [{ uri: { exact: '/moved' } }], redirect: { uri: '/there', authority: 'example.com' } },
  ] })]);
  t.deepEqual(res.rejected, []);
  const [a, b] = res.l7.get(REVIEWS)!.http;
  t.deepEqual(a!.match!.headers, [{ name: 'x-skip', match: { present: true }, invert: true }]);
  t.deepEqual(a!.action.rewrite, { path: { type: 'prefix', value: '/new' } });
  t.deepEqual(a!.action.fault, { delay: { percent: 10, ms: 5000 }, abort: { percent: 0, httpStatus: 503 } });
  t.deepEqual(a!.action.mirrors, [{ host: 'ratings.default.svc.cluster.local', service: RATINGS, percent: 25.5 }]);
  t.deepEqual(a!.action.requestHeaders, { set: [['x-a', '1']], add: [], remove: ['x-b'] });
  t.like(a!.action.backends[0], { port: 9080, weight: 100 });
  t.deepEqual(b!.action.redirect, { hostname: 'example.com', path: { type: 'full', value: '/there' }, statusCode: 301 });
  t.deepEqual(b!.action.backends, []);
});

test('HTTPRoute precedence across routes: exact, longest prefix, method, headers, query, age, name, rule order', (t) => {
  const res = translate([
    hr([
      { matches: [{ path: { type: 'PathPrefix', value: '/' } }], backendRefs: [to('reviews')] },
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'X-A', value: '1' }] }], backendRefs: [to('reviews')] },
    ], 'b-newer', { creationTimestamp: '2024-02-01T00:00:00Z' }),
    hr([
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, method: 'GET' }], backendRefs: [to('ratings')] },
      { matches: [{ path: { type: 'Exact', value: '/x' } }, { path: { type: 'PathPrefix', value: '/api/v1' } }], backendRefs: [to('ratings')] },
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, queryParams: [{ name: 'q', value: '1' }] }], backendRefs: [to('ratings')] },
      { matches: [{ path: { type: 'RegularExpression', value: '/re.*' } }], backendRefs: [to('ratings')] },
      { backendRefs: [to('ratings')] },
    ], 'a-older', { creationTimestamp: '2024-01-01T00:00:00Z' }),
  ]);
  t.deepEqual(res.rejected, []);
  const order = res.l7.get(REVIEWS)!.http.map((r) => `${r.origin.name}#${r.origin.rule}:${r.match!.path!.type} ${r.match!.path!.value}`);
  t.deepEqual(order, [
    'a-older#1:exact /x',
    'a-older#1:prefix /api/v1',
    'a-older#0:prefix /api', // method
    'b-newer#1:prefix /api', // one header
    'a-older#2:prefix /api', // one query param
    'a-older#4:prefix /', // older route first on a tie
    'b-newer#0:prefix /',
    'a-older#3:regex /re.*',
  ]);
  t.true(res.l7.get(REVIEWS)!.http[1]!.match!.path!.segmented);
});

test('HTTPRoute filters, weights, timeouts and retry map onto the action', (t) => {
  const res = translate([hr([{
    matches: [{ path: { type: 'PathPrefix', value: '/v1' }, headers: [{ name: 'X-Env', value: 'canary' }, { name: 'x-env', value: 'other' }] }],
    filters: [
      { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Set', value: 'a' }], add: [{ name: 'x-add', value: 'b' }], remove: ['x-gone'] } },
      { type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } },
      { type: 'RequestMirror', requestMirror: { backendRef: { name: 'ratings', port: 9080 }, fraction: { numerator: 1, denominator: 4 } } },
    ],
    backendRefs: [to('reviews', 3), to('ratings', 0), to('reviews')],
    timeouts: { request: '10s', backendRequest: '2s' },
    retry: { attempts: 3, codes: [502, 503], backoff: '100ms' },
  }, { filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https' } }] },
  { backendRefs: [to('reviews', 0)] },
  { filters: [{ type: 'ExtensionRef', extensionRef: { group: 'x', kind: 'Y', name: 'z' } }], backendRefs: [to('reviews')] }])]);
  t.deepEqual(res.rejected, []);
  const [main, redirect, zero, ext] = [...res.l7.get(REVIEWS)!.http].sort((x, y) => x.origin.rule - y.origin.rule);
  const a = main!.action;
  t.deepEqual(main!.match!.headers, [{ name: 'x-env', match: { exact: 'canary' }, invert: false }], 'a repeated header name counts once');
  t.deepEqual(a.backends.map((b) => [b.service, b.weight]), [[REVIEWS, 3], [RATINGS, 0], [REVIEWS, 1]]);
  t.deepEqual(a.requestHeaders, { set: [['x-set', 'a']], add: [['x-add', 'b']], remove: ['x-gone'] });
  t.deepEqual(a.rewrite, { path: { type: 'prefix', value: '/v2' } });
  t.deepEqual(a.mirrors, [{ host: 'ratings.default.svc.cluster.local', service: RATINGS, port: 9080, percent: 25 }]);
  t.is(a.timeoutMs, 10_000);
  t.like(a.retries, { attempts: 3, perTryTimeoutMs: 2000, retriableStatusCodes: [502, 503], backoffBaseMs: 100 });
  t.deepEqual(redirect!.action.redirect, { scheme: 'https', statusCode: 302 });
  t.deepEqual(zero!.action.directResponse, { status: 500 }, 'weights summing to 0 answer 500');
  t.deepEqual(ext!.action.directResponse, { status: 500 }, 'an unresolved filter is not skipped');
});

test('HTTPRoute parentRef port narrows every match to that port; a missing parent Service is a warning', (t) => {
  const res = translate([hr([{ backendRefs: [to('reviews')] }], 'hr', {}, [{ group: '', kind: 'Service', name: 'reviews', port: 9080 }, { group: '', kind: 'Service', name: 'ghost' }])]);
  t.deepEqual(res.rejected, []);
  t.like(res.l7.get(REVIEWS)!.http[0]!.match, { port: 9080, path: { type: 'prefix', value: '/' } });
  t.true(res.warnings.some((w) => w.field === 'spec.parentRefs[1]' && /ghost/.test(w.message)));
});

test('Gateway API routes win over a VirtualService for the same Service; the oldest of two VirtualServices wins', (t) => {
  const res = translate([
    hr([{ backendRefs: [to('ratings')] }]),
    vs({ hosts: ['reviews'], http: [route('reviews')] }, 'loser'),
    vs({ hosts: ['ratings'], http: [route('reviews')] }, 'young', { creationTimestamp: '2024-05-01T00:00:00Z' }),
    vs({ hosts: ['ratings'], http: [route('ratings')] }, 'old', { creationTimestamp: '2023-05-01T00:00:00Z' }),
  ]);
  t.is(res.l7.get(REVIEWS)!.http[0]!.origin.kind, 'HTTPRoute');
  t.is(res.l7.get(REVIEWS)!.http.length, 1);
  t.true(res.warnings.some((w) => w.name === 'loser' && /Gateway API/.test(w.message)));
  t.is(res.l7.get(RATINGS)!.http[0]!.origin.name, 'old');
  t.true(res.warnings.some((w) => w.name === 'young' && /default\/old/.test(w.message)));
});

test('DestinationRule: subset policy replaces the rule policy field by field; LEAST_CONN maps to LEAST_REQUEST', (t) => {
  const res = translate([dr({ host: 'reviews.default.svc.cluster.local', trafficPolicy: {
    loadBalancer: { simple: 'LEAST_CONN' }, connectionPool: { tcp: { maxConnections: 10 } },
    outlierDetection: { consecutiveGatewayErrors: 3, consecutive5xxErrors: 7 },
  }, subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } }, { name: 'v2', labels: { version: 'v2' }, trafficPolicy: { connectionPool: { http: { http2MaxRequests: 5 } } } }] })]);
  t.deepEqual(res.rejected, []);
  const d = res.l7.get(REVIEWS)!.destination!;
  t.is(d.trafficPolicy.loadBalancer, 'LEAST_REQUEST');
  t.deepEqual(d.trafficPolicy.outlierDetection, { consecutive5xxErrors: 7, consecutiveGatewayErrors: 3, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10, minHealthPercent: 0 });
  t.deepEqual(d.subsets[0]!.trafficPolicy, { ...d.trafficPolicy, loadBalancer: 'RANDOM' });
  t.deepEqual(d.subsets[1]!.trafficPolicy.connectionPool, { http2MaxRequests: 5 });
  t.is(d.subsets[1]!.trafficPolicy.loadBalancer, 'LEAST_REQUEST');
});

test('GRPCRoute: method matches ranked by service then method length, headers; validation of names', (t) => {
  const g = (rules: unknown[]): KubeObject => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'g', namespace: 'default' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'greeter' }], rules } });
  const backend = [{ name: 'greeter', port: 50051 }];
  const res = translate([g([
    { matches: [{ method: { method: 'SayHello' } }], backendRefs: backend },
    { matches: [{ method: { service: 'helloworld.Greeter', method: 'SayHello' } }], backendRefs: backend },
    { matches: [{ method: { service: 'helloworld.Greeter' } }], backendRefs: backend },
    { matches: [{ method: { type: 'RegularExpression', service: 'hello.*' } }], backendRefs: backend },
  ])]);
  t.deepEqual(res.rejected, []);
  t.deepEqual(res.l7.get(GREETER)!.grpc.map((r) => r.origin.rule), [1, 2, 3, 0]);
  t.deepEqual(res.l7.get(GREETER)!.grpc[0]!.match!.method, { type: 'exact', service: 'helloworld.Greeter', method: 'SayHello' });

  const bad = translate([g([{ matches: [{ method: { service: 'hello world' } }], backendRefs: backend }])]);
  t.like(bad.rejected[0], { kind: 'GRPCRoute', field: 'spec.rules[0].matches[0].method.service' });
  const none = translate([g([{ matches: [{ method: {} }], backendRefs: backend }])]);
  t.like(none.rejected[0], { field: 'spec.rules[0].matches[0].method' });
});

test('objects of other kinds and groups are ignored', (t) => {
  const res = translate([
    { apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name: 'g', namespace: 'default' }, spec: { servers: [] } },
    { apiVersion: 'example.com/v1', kind: 'VirtualService', metadata: { name: 'x', namespace: 'default' }, spec: 42 },
  ]);
  t.deepEqual(res, { l7: new Map(), rejected: [], warnings: [] });
});
