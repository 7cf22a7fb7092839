/**
 * Route selection, table-driven in the style of the Gateway API conformance suite: a request goes in, the
 * test names the rule (or 404) that must come out. Configs are YAML run through the real translator.
 */
import test from 'ava';
import { selectRoute, decideRequest } from '../../../src/waypoint/l7/index.js';
import type { RequestFacts } from '../../../src/waypoint/l7/index.js';
import { REVIEWS, REVIEWS_HOST, facts, l7Of, prepared, seeded } from './_support.js';

const hr = (name: string, rules: string, created = '2024-01-01T00:00:00Z'): string => `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ${name}, namespace: default, creationTimestamp: "${created}"}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
${rules}
---`;
const backend = (tag: string): string => `    backendRefs: [{name: reviews, port: 9080}]\n    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-rule, value: ${tag}}]}}]`;

// Precedence across rules and routes (httproute-path-match-order / -matching-across-routes style).
const PRECEDENCE = hr('a', `
  - matches: [{path: {type: PathPrefix, value: /}}]
${backend('root')}
  - matches: [{path: {type: PathPrefix, value: /v1}}]
${backend('prefix-v1')}
  - matches: [{path: {type: PathPrefix, value: /v1/users}}]
${backend('prefix-v1-users')}
  - matches: [{path: {type: Exact, value: /v1/users}}]
${backend('exact-v1-users')}
  - matches: [{path: {type: PathPrefix, value: /v1}, method: POST}]
${backend('prefix-v1-post')}
  - matches: [{path: {type: PathPrefix, value: /v1}, headers: [{name: version, value: two}]}]
${backend('prefix-v1-header')}
  - matches: [{path: {type: PathPrefix, value: /v1}, headers: [{name: version, value: two}, {name: color, value: orange}]}]
${backend('prefix-v1-2headers')}
  - matches: [{path: {type: PathPrefix, value: /v1}, queryParams: [{name: animal, value: whale}]}]
${backend('prefix-v1-query')}
  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]
${backend('regex')}
`) + hr('b', `
  - matches: [{path: {type: PathPrefix, value: /v2}}]
${backend('b-v2')}
`, '2024-02-01T00:00:00Z') + hr('c', `
  - matches: [{path: {type: PathPrefix, value: /v2}}]
${backend('c-v2-older')}
`, '2023-01-01T00:00:00Z');

const precedenceCases: { req: Partial<RequestFacts>; rule: string | 404 }[] = [
  { req: { path: '/' }, rule: 'root' },
  { req: { path: '/v1' }, rule: 'prefix-v1' },
  { req: { path: '/v1/' }, rule: 'prefix-v1' },
  { req: { path: '/v1x' }, rule: 'root' },
  { req: { path: '/v1/users' }, rule: 'exact-v1-users' },
  { req: { path: '/v1/users/' }, rule: 'prefix-v1-users' },
  { req: { path: '/v1/users/42' }, rule: 'prefix-v1-users' },
  { req: { path: '/V1/users' }, rule: 'root' },
  { req: { path: '/v1/x', method: 'POST' }, rule: 'prefix-v1-post' },
  { req: { path: '/v1/x', method: 'POST', headers: { version: ['two'], color: ['orange'] } }, rule: 'prefix-v1-post' },
  { req: { path: '/v1/x', headers: { version: ['two'] } }, rule: 'prefix-v1-header' },
  { req: { path: '/v1/x', headers: { version: ['two'], color: ['orange'] } }, rule: 'prefix-v1-2headers' },
  { req: { path: '/v1/x', headers: { version: ['one', 'two'] } }, rule: 'prefix-v1-header' },
  { req: { path: '/v1/x', headers: { version: ['one, two'] } }, rule: 'prefix-v1' },
  { req: { path: '/v1/x?animal=whale' }, rule: 'prefix-v1-query' },
  { req: { path: '/v1/x?animal=dolphin' }, rule: 'prefix-v1' },
  { req: { path: '/v1/x?animal=whale&animal=dolphin' }, rule: 'prefix-v1-query' },
  { req: { path: '/v1/x?animal=dolphin&animal=whale' }, rule: 'prefix-v1' },
  { req: { path: '/v1/x', headers: { version: ['two'] }, method: 'PUT' }, rule: 'prefix-v1-header' },
  // Istio ranks Exact > Prefix > Regex: the catch-all prefix `/` wins over any regex rule
  { req: { path: '/re/123' }, rule: 'root' },
  { req: { path: '/v2/a' }, rule: 'c-v2-older' },
  // normalization happens before matching
  { req: { path: '/v1/../v1/users' }, rule: 'exact-v1-users' },
  { req: { path: '//v1//users' }, rule: 'exact-v1-users' },
  { req: { path: '/v1/%75sers' }, rule: 'exact-v1-users' },
  { req: { path: '/v1%2Fusers' }, rule: 'exact-v1-users' },
];

const precedence = l7Of(PRECEDENCE, REVIEWS);
for (const c of precedenceCases) {
  test(`precedence: ${c.req.method ?? 'GET'} ${c.req.path} ${JSON.stringify(c.req.headers ?? {})} -> ${c.rule}`, (t) => {
    const choice = selectRoute(precedence, prepared(c.req), REVIEWS, REVIEWS_HOST);
    if (c.rule === 404) { t.like(choice, { kind: 'respond', status: 404, flag: 'NR' }); return; }
    if (choice.kind !== 'route') return t.fail(`got ${choice.status}`);
    t.is(choice.action.requestHeaders?.set[0]?.[1], c.rule);
  });
}

test('a Service without routes routes to itself on the request port; no match at all is 404 NR', (t) => {
  const plan = decideRequest(undefined, facts({ path: '/anything' }), REVIEWS, REVIEWS_HOST, seeded(1));
  t.like(plan, { kind: 'forward', backend: { service: REVIEWS, host: REVIEWS_HOST, port: 9080 }, path: '/anything', authority: 'reviews:9080' });
  const only = l7Of(hr('only', `
  - matches: [{path: {type: Exact, value: /only}}]
    backendRefs: [{name: reviews, port: 9080}]
`), REVIEWS);
  t.like(decideRequest(only, facts({ path: '/other' }), REVIEWS, REVIEWS_HOST, seeded(1)), { kind: 'respond', status: 404, flag: 'NR' });
  t.like(decideRequest(only, facts({ path: '/only' }), REVIEWS, REVIEWS_HOST, seeded(1)), { kind: 'forward' });
});

test('RegularExpression paths: RE2, whole path, query not part of it; ranked after exact and prefix', (t) => {
  const l7 = l7Of(hr('re', `
  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]
${backend('regex')}
  - matches: [{path: {type: PathPrefix, value: /re/123}}]
${backend('prefix')}
`), REVIEWS);
  const rule = (path: string): string | number => {
    const c = selectRoute(l7, prepared({ path }), REVIEWS, REVIEWS_HOST);
    return c.kind === 'route' ? c.action.requestHeaders!.set[0]![1] : c.status;
  };
  t.is(rule('/re/123'), 'prefix');
  t.is(rule('/re/234'), 'regex');
  t.is(rule('/re/234?x=1'), 'regex');
  t.is(rule('/re/234/x'), 404);
  t.is(rule('/re/1234'), 'regex');
  t.is(rule('/re/'), 404);
});
