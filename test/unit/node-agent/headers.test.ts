import test from 'ava';
import { baggageFor, forwardedFor, forwardedHost, traceparent } from '../../../src/node-agent/proxy/headers.js';
import { wl } from './fixtures.js';

test('baggage names namespace, workload, service name and version', (t) => {
  const w = wl('client-7d9', '10.0.0.2', { workloadName: 'client', canonicalName: 'client', canonicalRevision: 'v2' });
  t.is(baggageFor(w), 'k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=client,k8s.pod.name=client-7d9,service.name=client,service.version=v2');
});

test('baggage values cannot inject members', (t) => {
  const w = wl('x', '10.0.0.2', { canonicalName: 'a,b=c' });
  t.false(baggageFor(w).includes('b=c,'));
  t.true(baggageFor(w).includes('service.name=a%2Cb%3Dc'));
});

test('forwarded carries the client and the service host', (t) => {
  t.is(forwardedFor('10.0.0.2', 4000), 'for="10.0.0.2:4000"');
  t.is(forwardedFor('fd00::1', 4000, { hostname: 'echo.default.svc.cluster.local' }), 'for="[fd00::1]:4000";host=echo.default.svc.cluster.local');
  t.is(forwardedHost('for="10.0.0.2:4000";host=echo.default.svc.cluster.local'), 'echo.default.svc.cluster.local');
  t.is(forwardedHost('for="10.0.0.2:4000"'), undefined);
  t.is(forwardedHost('x'.repeat(5000)), undefined);
});

test('traceparent is W3C and random per call', (t) => {
  const a = traceparent();
  t.regex(a, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  t.not(a, traceparent());
  t.is(traceparent((n) => Buffer.alloc(n)), `00-${'0'.repeat(31)}1-${'0'.repeat(15)}1-00`);
});
