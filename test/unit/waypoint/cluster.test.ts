/**
 * Per-cluster state: load balancers, subsets, connection-pool limits (503 UO), retry budget, outlier detection
 * with ejection and return (the seed's DestinationRule as written), no healthy endpoint (503 UH).
 * Time is a number the test moves; randomness is seeded.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { Cluster, ClusterTable, hashKeyOf } from '../../../src/waypoint/l7/index.js';
import type { EndpointLike, LocalResponse, Admission } from '../../../src/waypoint/l7/index.js';
import type { DestinationPolicy, TrafficPolicy } from '../../../src/model/l7.js';
import { fixture } from '../l7/fixture.js';
import { ORDER, ORDER_HOST, l7Of, prepared, seeded } from './_support.js';

const ep = (uid: string, version = 'v1', healthy = true): EndpointLike => ({ uid, labels: { app: 'order-service', version }, healthy });
const FIVE_XX = { kind: 'response', status: 503 } as const;
const OK = { kind: 'response', status: 200 } as const;

function seedDestination(): DestinationPolicy {
  return l7Of(fixture('seed-order-dr.yaml'), ORDER).destination!;
}
function picked(t: ExecutionContext, r: EndpointLike | LocalResponse): EndpointLike {
  if ('kind' in r) { t.fail(`expected an endpoint, got ${r.status} ${r.flag}`); throw new Error('no endpoint'); }
  return r;
}
function isUid(r: EndpointLike | LocalResponse): string { return 'kind' in r ? `${r.status} ${r.flag}` : r.uid; }

test('seed DestinationRule: 5 consecutive 5xx eject an endpoint for 30s, it returns after, a second ejection lasts 60s', (t) => {
  const d = seedDestination();
  const eps = [ep('a'), ep('b'), ep('c'), ep('d')];
  const c = new Cluster(d.trafficPolicy, eps);
  const a = eps[0]!;
  let now = 1_000;
  for (let i = 0; i < 4; i++) c.finished(a, FIVE_XX, now);
  t.false(c.status(now)[0]!.ejected, 'four errors are not enough');
  c.finished(a, OK, now);
  for (let i = 0; i < 4; i++) c.finished(a, FIVE_XX, now);
  t.false(c.status(now)[0]!.ejected, 'a success in between resets the count');
  c.finished(a, FIVE_XX, now);
  t.true(c.status(now)[0]!.ejected);
  const rand = seeded(7);
  for (let i = 0; i < 200; i++) t.not(picked(t, c.pick(now + 29_999, rand)).uid, 'a');
  now += 30_000;
  t.false(c.status(now)[0]!.ejected, 'back after baseEjectionTime');
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) seen.add(picked(t, c.pick(now, rand)).uid);
  t.true(seen.has('a'));
  // ejected again soon after: base x 2
  for (let i = 0; i < 5; i++) c.finished(a, { kind: 'reset' }, now + 1);
  t.is(c.status(now + 1)[0]!.ejectedUntil, now + 1 + 60_000);
  t.true(c.status(now + 60_000)[0]!.ejected);
  t.false(c.status(now + 60_001)[0]!.ejected);
});

test('times ejected decays by one per interval back in service', (t) => {
  const c = new Cluster(seedDestination().trafficPolicy, [ep('a'), ep('b'), ep('c'), ep('d')]);
  const a = { uid: 'a', labels: {} };
  for (let i = 0; i < 5; i++) c.finished(a, FIVE_XX, 0);
  t.is(c.status(0)[0]!.ejectedUntil, 30_000);
  // back at 30s; 25 s (two intervals of 10 s) later the count has decayed from 1 to 0: the next ejection is 30 s again
  for (let i = 0; i < 5; i++) c.finished(a, FIVE_XX, 55_000);
  t.is(c.status(55_000)[0]!.ejectedUntil, 85_000);
});

test('maxEjectionPercent 50: of two endpoints only one is ever ejected; minHealthPercent keeps traffic flowing', (t) => {
  const c = new Cluster(seedDestination().trafficPolicy, [ep('a'), ep('b')]);
  for (let i = 0; i < 5; i++) { c.finished({ uid: 'a', labels: {} }, FIVE_XX, 0); c.finished({ uid: 'b', labels: {} }, FIVE_XX, 0); }
  t.deepEqual(c.status(0).map((s) => s.ejected), [true, false]);
  const rand = seeded(3);
  for (let i = 0; i < 50; i++) t.is(isUid(c.pick(1, rand)), 'b');

  // minHealthPercent 60 with one of two ejected (50 % healthy): ejections are ignored
  const p: TrafficPolicy = { outlierDetection: { consecutive5xxErrors: 1, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 100, minHealthPercent: 60 } };
  const c2 = new Cluster(p, [ep('a'), ep('b')]);
  c2.finished({ uid: 'a', labels: {} }, FIVE_XX, 0);
  t.true(c2.status(0)[0]!.ejected);
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) seen.add(isUid(c2.pick(1, rand)));
  t.deepEqual([...seen].sort(), ['a', 'b']);
});

test('consecutiveGatewayErrors counts 502/503/504 and failures without response; a 500 breaks the run', (t) => {
  const p: TrafficPolicy = { outlierDetection: { consecutive5xxErrors: 0, consecutiveGatewayErrors: 3, intervalMs: 10_000, baseEjectionTimeMs: 1_000, maxEjectionPercent: 100, minHealthPercent: 0 } };
  const c = new Cluster(p, [ep('a'), ep('b')]);
  const a = { uid: 'a', labels: {} };
  c.finished(a, { kind: 'response', status: 502 }, 0);
  c.finished(a, { kind: 'connect-failure' }, 0);
  c.finished(a, { kind: 'response', status: 500 }, 0);
  c.finished(a, { kind: 'response', status: 504 }, 0);
  t.false(c.status(0)[0]!.ejected);
  c.finished(a, { kind: 'timeout' }, 0);
  c.finished(a, { kind: 'response', status: 503 }, 0);
  t.true(c.status(0)[0]!.ejected);
});

test('no healthy endpoint: 503 UH; an unhealthy endpoint is never picked; no outlier detection without a policy', (t) => {
  const rand = seeded(1);
  t.like(new Cluster(undefined, []).pick(0, rand), { status: 503, flag: 'UH' });
  t.like(new Cluster(undefined, [ep('a', 'v1', false)]).pick(0, rand), { status: 503, flag: 'UH' });
  const c = new Cluster(undefined, [ep('a', 'v1', false), ep('b')]);
  for (let i = 0; i < 20; i++) c.finished({ uid: 'b', labels: {} }, FIVE_XX, 0);
  for (let i = 0; i < 20; i++) t.is(isUid(c.pick(0, rand)), 'b');
});

test('seed connection pool: 100 connections + 100 pending for HTTP/1.1, then 503 UO; http2MaxRequests 1000 for all', (t) => {
  const c = new Cluster(seedDestination().trafficPolicy, [ep('a')]);
  const held: Admission[] = [];
  for (let i = 0; i < 200; i++) {
    const a = c.admit('http1');
    if ('kind' in a) return t.fail(`refused at ${i}`);
    t.is(a.pending, i >= 100);
    held.push(a);
  }
  t.like(c.admit('http1'), { kind: 'respond', status: 503, flag: 'UO' });
  held.pop()!.release();
  t.false('kind' in c.admit('http1'));
  // HTTP/2 multiplexes: only http2MaxRequests (1000) applies, and it counts every admitted request
  for (let i = 0; i < 800; i++) t.false('kind' in c.admit('http2'), `h2 ${i}`);
  t.is(c.activeRequests, 1000);
  t.like(c.admit('http2'), { status: 503, flag: 'UO', details: 'upstream_overflow_max_requests' });
  const a = held[0]!;
  a.release(); a.release();
  t.is(c.activeRequests, 999, 'release is idempotent');
  t.is(c.maxRequestsPerConnection, 100);
});

test('retry budget: maxRetries concurrent retries, then no retry until one ends', (t) => {
  const c = new Cluster(seedDestination().trafficPolicy, [ep('a')]);
  t.true(c.tryRetry()); t.true(c.tryRetry()); t.true(c.tryRetry());
  t.false(c.tryRetry());
  c.retryDone();
  t.true(c.tryRetry());
  t.true(new Cluster(undefined, [ep('a')]).tryRetry());
  // 0 is unset in Istio (no circuit breaker threshold): unlimited
  const zero = new Cluster({ connectionPool: { maxRetries: 0 } }, [ep('a')]);
  for (let i = 0; i < 10; i++) t.true(zero.tryRetry());
});

test('ROUND_ROBIN cycles through endpoints in a stable order; RANDOM spreads', (t) => {
  const eps = [ep('c'), ep('a'), ep('b')];
  const rr = new Cluster({ loadBalancer: 'ROUND_ROBIN' }, eps);
  const rand = seeded(5);
  t.deepEqual(Array.from({ length: 6 }, () => isUid(rr.pick(0, rand))), ['a', 'b', 'c', 'a', 'b', 'c']);
  const rnd = new Cluster({ loadBalancer: 'RANDOM' }, eps);
  const counts = new Map<string, number>();
  for (let i = 0; i < 3000; i++) { const u = isUid(rnd.pick(0, rand)); counts.set(u, (counts.get(u) ?? 0) + 1); }
  for (const u of ['a', 'b', 'c']) t.true(Math.abs(counts.get(u)! - 1000) < 150, `${u}: ${counts.get(u)}`);
});

test('LEAST_REQUEST (the default): power of two choices avoids the busy endpoint', (t) => {
  const eps = [ep('a'), ep('b')];
  const c = new Cluster(undefined, eps);
  t.is(c.loadBalancer, 'LEAST_REQUEST');
  for (let i = 0; i < 10; i++) c.started(eps[0]!);
  const rand = seeded(11);
  for (let i = 0; i < 50; i++) t.is(isUid(c.pick(0, rand)), 'b');
  for (let i = 0; i < 10; i++) c.finished(eps[0]!, OK, 0);
  const seen = new Set<string>();
  for (let i = 0; i < 50; i++) seen.add(isUid(c.pick(0, rand)));
  t.is(seen.size, 2);
});

test('a retry avoids endpoints already tried while others are left', (t) => {
  const c = new Cluster({ loadBalancer: 'RANDOM' }, [ep('a'), ep('b')]);
  const rand = seeded(2);
  for (let i = 0; i < 30; i++) t.is(isUid(c.pick(0, rand, { exclude: new Set(['a']) })), 'b');
  t.is(isUid(new Cluster(undefined, [ep('a')]).pick(0, rand, { exclude: new Set(['a']) })), 'a');
});

for (const algorithm of ['ring', 'maglev'] as const) {
  test(`consistent hash (${algorithm}): same key same endpoint; adding an endpoint moves few keys`, (t) => {
    const policy: TrafficPolicy = { consistentHash: { key: { header: 'x-user' }, algorithm } };
    const eps = Array.from({ length: 5 }, (_, i) => ep(`pod-${i}`));
    const c = new Cluster(policy, eps);
    const rand = seeded(9);
    const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
    const before = keys.map((k) => isUid(c.pick(0, rand, { hashKey: k })));
    t.deepEqual(keys.map((k) => isUid(c.pick(0, rand, { hashKey: k }))), before, 'stable');
    const counts = new Map<string, number>();
    for (const u of before) counts.set(u, (counts.get(u) ?? 0) + 1);
    t.is(counts.size, 5);
    for (const n of counts.values()) t.true(n > 200 && n < 700, `spread ${[...counts.values()].join(',')}`);
    c.update(policy, [...eps, ep('pod-5')]);
    const after = keys.map((k) => isUid(c.pick(0, rand, { hashKey: k })));
    const moved = after.filter((u, i) => u !== before[i]);
    // ideal: 1/6 of the keys move, all of them to the new endpoint (ring hash: exactly; Maglev: nearly)
    t.true(moved.length < keys.length * 0.3, `moved ${moved.length}`);
    const toNew = moved.filter((u) => u === 'pod-5').length;
    if (algorithm === 'ring') t.is(toNew, moved.length);
    else t.true(toNew >= moved.length * 0.8, `${toNew} of ${moved.length} to the new endpoint`);
  });
}

test('consistent hash keys from the request: header, cookie, source IP, query parameter (translated from a DestinationRule)', (t) => {
  const dr = (lb: string): TrafficPolicy => l7Of(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: default}
spec:
  host: order-service
  trafficPolicy:
    loadBalancer:
      consistentHash: ${lb}
`, ORDER).destination!.trafficPolicy;
  const header = dr('{httpHeaderName: X-User}');
  t.deepEqual(header.consistentHash, { key: { header: 'x-user' }, algorithm: 'ring' });
  t.is(hashKeyOf(header.consistentHash, prepared({ headers: { 'x-user': ['jason', 'other'] } })), 'jason');
  const cookie = dr('{httpCookie: {name: session, ttl: 0s}, maglev: {}}');
  t.like(cookie.consistentHash, { key: { cookie: 'session' }, algorithm: 'maglev' });
  t.is(hashKeyOf(cookie.consistentHash, prepared({ headers: { cookie: ['a=1; session=xyz ; b=2'] } })), 'xyz');
  t.is(hashKeyOf(cookie.consistentHash, prepared({ headers: {} })), undefined);
  const src = dr('{useSourceIp: true, ringHash: {minimumRingSize: 2048}}');
  t.deepEqual(src.consistentHash, { key: { sourceIp: true }, algorithm: 'ring', minimumRingSize: 2048 });
  t.is(hashKeyOf(src.consistentHash, prepared({ sourceIp: '10.1.2.3' })), '10.1.2.3');
  const q = dr('{httpQueryParameterName: user}');
  t.is(hashKeyOf(q.consistentHash, prepared({ path: '/x?user=a%20b&user=c' })), 'a b');
});

test('ClusterTable: subsets by labels with the subset policy; an undefined subset has no endpoints; state survives updates', (t) => {
  const d = seedDestination();
  const eps = [ep('a', 'v1'), ep('b', 'v2'), ep('c', 'v1')];
  const table = new ClusterTable();
  const v1 = table.cluster({ service: ORDER, host: ORDER_HOST, port: 80, subset: 'v1' }, d, eps);
  t.deepEqual(v1.status(0).map((s) => s.uid), ['a', 'c']);
  const v2 = table.cluster({ service: ORDER, host: ORDER_HOST, port: 80, subset: 'v2' }, d, eps);
  t.deepEqual(v2.status(0).map((s) => s.uid), ['b']);
  t.like(table.cluster({ service: ORDER, host: ORDER_HOST, port: 80, subset: 'v3' }, d, eps).pick(0, seeded(1)), { status: 503, flag: 'UH' });
  for (let i = 0; i < 5; i++) v1.finished(eps[0]!, FIVE_XX, 0);
  const again = table.cluster({ service: ORDER, host: ORDER_HOST, port: 80, subset: 'v1' }, d, [...eps, ep('d', 'v1')]);
  t.is(again, v1);
  t.deepEqual(again.status(1).map((s) => [s.uid, s.ejected]), [['a', true], ['c', false], ['d', false]]);
  table.prune((s) => s !== ORDER);
  t.is(table.size, 0);
});
