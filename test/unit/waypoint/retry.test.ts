/** Retry decisions (Envoy retryOn tokens), backoff, per-try and gRPC deadlines; the seed's retry policy as written. */
import test from 'ava';
import { attemptTimeoutMs, grpcTimeoutMs, retryBackoffMs, shouldRetry, isRetriableStatus } from '../../../src/waypoint/l7/index.js';
import type { AttemptOutcome } from '../../../src/waypoint/l7/index.js';
import type { RetryPolicy } from '../../../src/model/l7.js';
import { fixture } from '../l7/fixture.js';
import { ORDER, l7Of } from './_support.js';

const policy = (retryOn: string[], codes: number[] = [], attempts = 2): RetryPolicy => ({ attempts, retryOn, retriableStatusCodes: codes, backoffBaseMs: 25 });
const R = (status: number, grpcStatus?: number): AttemptOutcome => ({ kind: 'response', status, ...(grpcStatus !== undefined ? { grpcStatus } : {}) });
const RESET: AttemptOutcome = { kind: 'reset' };
const CONNECT: AttemptOutcome = { kind: 'connect-failure' };
const REFUSED: AttemptOutcome = { kind: 'refused-stream' };
const TIMEOUT: AttemptOutcome = { kind: 'timeout' };

const table: [string, AttemptOutcome, boolean][] = [
  ['5xx', R(500), true], ['5xx', R(503), true], ['5xx', R(404), false], ['5xx', R(200), false], ['5xx', RESET, true], ['5xx', CONNECT, true], ['5xx', REFUSED, true], ['5xx', TIMEOUT, true],
  ['gateway-error', R(502), true], ['gateway-error', R(503), true], ['gateway-error', R(504), true], ['gateway-error', R(500), false], ['gateway-error', CONNECT, true],
  ['reset', RESET, true], ['reset', CONNECT, true], ['reset', TIMEOUT, true], ['reset', R(503), false],
  ['connect-failure', CONNECT, true], ['connect-failure', RESET, false], ['connect-failure', R(503), false],
  ['refused-stream', REFUSED, true], ['refused-stream', RESET, false],
  ['reset-before-request', CONNECT, true], ['reset-before-request', RESET, false],
  ['retriable-4xx', R(409), true], ['retriable-4xx', R(404), false], ['retriable-4xx', R(429), false],
  ['cancelled', R(200, 1), true], ['deadline-exceeded', R(200, 4), true], ['resource-exhausted', R(200, 8), true],
  ['internal', R(200, 13), true], ['unavailable', R(200, 14), true], ['unavailable', R(200, 13), false], ['unavailable', R(503), false],
  ['envoy-ratelimited', R(429), false],
];
for (const [token, outcome, want] of table) {
  test(`retryOn ${token}: ${JSON.stringify(outcome)} -> ${want}`, (t) => t.is(shouldRetry(policy([token]), 1, outcome), want));
}

test('retriable-status-codes: only the listed codes', (t) => {
  const p = policy(['retriable-status-codes'], [503, 429]);
  t.true(shouldRetry(p, 1, R(429)));
  t.true(shouldRetry(p, 1, R(503)));
  t.false(shouldRetry(p, 1, R(500)));
  t.false(shouldRetry(p, 1, RESET));
  t.true(isRetriableStatus(p, 429));
  t.false(isRetriableStatus(p, 200));
});

test('the seed policy as written: attempts 3 (4 requests in all), perTryTimeout 2s, 5xx,reset,connect-failure,retriable-4xx', (t) => {
  const l7 = l7Of(fixture('seed-order-vs.yaml') + '---\n' + fixture('seed-order-dr.yaml'), ORDER);
  const p = l7.http[1]!.action.retries!;
  t.true(shouldRetry(p, 1, R(503)));
  t.true(shouldRetry(p, 2, RESET));
  t.true(shouldRetry(p, 3, R(409)));
  t.false(shouldRetry(p, 4, R(503)), 'after the fourth request, no more');
  t.false(shouldRetry(p, 1, R(404)));
  t.false(shouldRetry(p, 1, R(200)));
  t.is(p.perTryTimeoutMs, 2000);
  // the route timeout (10 s) bounds everything: the per-try timeout until less than 2 s is left
  t.is(attemptTimeoutMs(10_000, p, 0, 0), 2000);
  t.is(attemptTimeoutMs(10_000, p, 0, 8_500), 1500);
  t.is(attemptTimeoutMs(10_000, p, 0, 10_000), 0);
  t.is(attemptTimeoutMs(undefined, p, 0, 99_999), 2000);
  t.is(attemptTimeoutMs(undefined, undefined, 0, 5), undefined);
});

test('no policy or attempts 0: never retry; the default policy retries connect failures, refused streams, 503 and gRPC unavailable/cancelled', (t) => {
  t.false(shouldRetry(undefined, 1, CONNECT));
  t.false(shouldRetry(policy(['5xx'], [], 0), 1, R(503)));
  const l7 = l7Of(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: default}
spec:
  hosts: [order-service]
  http: [{route: [{destination: {host: order-service}}]}]
`, ORDER);
  const d = l7.http[0]!.action.retries!;
  t.is(d.attempts, 2);
  for (const o of [CONNECT, REFUSED, R(503), R(200, 14), R(200, 1)]) t.true(shouldRetry(d, 1, o), JSON.stringify(o));
  for (const o of [R(500), R(502), RESET]) t.false(shouldRetry(d, 1, o), JSON.stringify(o));
  t.false(shouldRetry(d, 3, CONNECT));
});

test('backoff: fully jittered exponential from 25 ms, capped at 10x base', (t) => {
  const p = policy(['5xx']);
  t.is(retryBackoffMs(p, 1, 0), 0);
  t.is(retryBackoffMs(p, 1, 0.5), 12);
  t.is(retryBackoffMs(p, 1, 0.999), 24);
  t.is(retryBackoffMs(p, 2, 0.999), 49);
  t.is(retryBackoffMs(p, 3, 0.999), 99);
  t.is(retryBackoffMs(p, 4, 0.999), 199);
  t.is(retryBackoffMs(p, 5, 0.999), 249, 'capped at 250 ms');
  t.is(retryBackoffMs(p, 60, 0.999), 249);
  t.is(retryBackoffMs({ ...p, backoffBaseMs: 100 }, 2, 0.5), 100);
  t.is(retryBackoffMs(undefined, 1, 0.5), 12);
});

test('grpc-timeout header', (t) => {
  t.is(grpcTimeoutMs('1S'), 1000);
  t.is(grpcTimeoutMs('250m'), 250);
  t.is(grpcTimeoutMs('2M'), 120_000);
  t.is(grpcTimeoutMs('1H'), 3_600_000);
  t.is(grpcTimeoutMs('10u'), 1);
  t.is(grpcTimeoutMs('5000000n'), 5);
  for (const bad of [undefined, '', 'S', '1s', '123456789S', '-1S', '1.5S']) t.is(grpcTimeoutMs(bad), undefined, String(bad));
});
