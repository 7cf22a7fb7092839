/** The seed document's VirtualService and DestinationRule examples, verbatim, must translate without rejection. */
import test from 'ava';
import { parse } from 'yaml';
import type { KubeObject } from '../../../src/control/config/types.js';
import { ORDER, fixture, parseYaml, translate } from './fixture.js';

const RECO = 'default/recommendations.default.svc.cluster.local';

test('seed order-service VirtualService + DestinationRule', (t) => {
  const res = translate(fixture('seed-order-vs.yaml') + '---\n' + fixture('seed-order-dr.yaml'));
  t.deepEqual(res.rejected, []);
  const l7 = res.l7.get(ORDER)!;
  t.is(l7.http.length, 2);
  const [debug, split] = l7.http;
  t.deepEqual(debug!.match?.headers, [{ name: 'x-debug', match: { exact: 'true' }, invert: false }]);
  t.is(debug!.action.timeoutMs, 30_000);
  t.like(debug!.action.backends[0], { service: ORDER, subset: 'v2', weight: 100 });
  t.is(split!.match, undefined);
  t.deepEqual(split!.action.backends.map((b) => [b.subset, b.weight]), [['v1', 90], ['v2', 10]]);
  t.is(split!.action.timeoutMs, 10_000);
  t.deepEqual(split!.action.retries, { attempts: 3, perTryTimeoutMs: 2000, retryOn: ['5xx', 'reset', 'connect-failure', 'retriable-4xx'], retriableStatusCodes: [], backoffBaseMs: 25 });

  const d = l7.destination!;
  t.deepEqual(d.subsets.map((s) => [s.name, s.labels]), [['v1', { version: 'v1' }], ['v2', { version: 'v2' }]]);
  t.deepEqual(d.trafficPolicy, {
    loadBalancer: 'LEAST_REQUEST',
    connectionPool: { maxConnections: 100, connectTimeoutMs: 5000, http1MaxPendingRequests: 100, http2MaxRequests: 1000, maxRequestsPerConnection: 100, maxRetries: 3 },
    outlierDetection: { consecutive5xxErrors: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 50, minHealthPercent: 30 },
  });
  // subsets inherit the rule-level policy
  t.deepEqual(d.subsets[0]!.trafficPolicy, d.trafficPolicy);
  t.true(res.warnings.some((w) => w.field === 'spec.trafficPolicy.connectionPool.http.h2UpgradePolicy'));
});

test('seed Pinterest canary: header route first, then 95/5 split', (t) => {
  const res = translate(fixture('seed-canary-pinterest.yaml'));
  t.deepEqual(res.rejected, []);
  const http = res.l7.get(RECO)!.http;
  t.deepEqual(http.map((r) => r.action.backends.map((b) => `${b.subset}:${b.weight}`)), [['v2:100'], ['v1:95', 'v2:5']]);
  // no DestinationRule defines the subsets in this example: reported, not rejected
  t.true(res.warnings.some((w) => /subset "v1"/.test(w.message)));
});

test('seed canary steps: subsets DR and 95/5 VirtualService; the complete/rollback fragments as http rules', (t) => {
  const res = translate(fixture('seed-canary-subsets-dr.yaml') + '---\n' + fixture('seed-canary-split-vs.yaml'));
  t.deepEqual(res.rejected, []);
  t.deepEqual(res.warnings, []);
  const l7 = res.l7.get(ORDER)!;
  t.deepEqual(l7.http[0]!.action.backends.map((b) => [b.subset, b.weight]), [['v1', 95], ['v2', 5]]);
  t.deepEqual(l7.destination!.trafficPolicy, {});

  const vs = parseYaml(fixture('seed-canary-split-vs.yaml'))[0]!;
  (vs.spec as { http: unknown }).http = parse(fixture('seed-fragment-complete-rollback.yaml'));
  const res2 = translate([vs, ...parseYaml(fixture('seed-canary-subsets-dr.yaml'))]);
  t.deepEqual(res2.rejected, []);
  // first match wins: the "complete" rule (no match) shadows the rollback rule, as in Istio
  t.deepEqual(res2.l7.get(ORDER)!.http.map((r) => r.action.backends.map((b) => b.subset)), [['v2'], ['v1']]);
});

test('seed gateway routes: a VirtualService bound to an ingress gateway only does nothing for the mesh', (t) => {
  const res = translate(fixture('seed-shop-gateway-routes.yaml'));
  t.deepEqual(res.rejected, []);
  t.is(res.l7.size, 0);
  t.true(res.warnings.some((w) => w.name === 'shop-routes' && w.field === 'spec.gateways'));
});

test('seed locality DestinationRule: locality settings ignored with a warning, the rest applies', (t) => {
  const res = translate(fixture('seed-locality-dr.yaml'));
  t.deepEqual(res.rejected, []);
  t.deepEqual(res.l7.get(ORDER)!.destination!.trafficPolicy, {
    loadBalancer: 'ROUND_ROBIN',
    connectionPool: {},
    outlierDetection: { consecutive5xxErrors: 5, intervalMs: 30_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10, minHealthPercent: 0 },
  });
  t.true(res.warnings.some((w) => w.field === 'spec.trafficPolicy.loadBalancer.localityLbSetting'));
});

test('seed global VirtualService: unknown remote hosts are warnings, the local default route works', (t) => {
  const res = translate(fixture('seed-global-vs.yaml'));
  t.deepEqual(res.rejected, []);
  const http = res.l7.get(ORDER)!.http;
  t.is(http.length, 3);
  t.deepEqual(http[0]!.action.backends, [{ host: 'order-service.eu-west.global', weight: 100 }]);
  t.like(http[2]!.action.backends[0], { host: 'order-service.default.svc.cluster.local', service: ORDER, weight: 100 });
  t.is(res.warnings.filter((w) => w.field.endsWith('destination.host')).length, 2);
});

test('seed trafficPolicy fragments apply inside a DestinationRule', (t) => {
  for (const [file, key] of [['seed-fragment-disaster-recovery.yaml', 'trafficPolicy'], ['seed-fragment-pool-exhaustion.yaml', 'trafficPolicy'], ['seed-fragment-relax-outlier.yaml', 'outlierDetection']] as const) {
    const frag = parse(fixture(file)) as Record<string, unknown>;
    const trafficPolicy = key === 'trafficPolicy' ? frag.trafficPolicy : { outlierDetection: frag.outlierDetection };
    const dr: KubeObject = { apiVersion: 'networking.istio.io/v1beta1', kind: 'DestinationRule', metadata: { name: 'x', namespace: 'default' }, spec: { host: 'order-service', trafficPolicy } };
    const res = translate([dr]);
    t.deepEqual(res.rejected, [], file);
    t.truthy(res.l7.get(ORDER)?.destination, file);
  }
  // the performance-tuning example has no metadata.name; with one it translates
  const perf = parseYaml(fixture('seed-fragment-perf-tuning-dr.yaml'))[0]!;
  t.false(typeof perf.metadata.name === 'string');
  const named = { ...perf, metadata: { ...perf.metadata, name: 'perf' }, spec: { host: 'order-service', ...(perf.spec as object) } };
  const res = translate([named]);
  t.deepEqual(res.rejected, []);
  t.like(res.l7.get(ORDER)!.destination!.trafficPolicy, { loadBalancer: 'LEAST_REQUEST', connectionPool: { maxConnections: 1000, connectTimeoutMs: 10_000, http2MaxRequests: 1000, maxRequestsPerConnection: 0 } });
});
