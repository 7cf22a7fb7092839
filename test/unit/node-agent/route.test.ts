import test from 'ava';
import { Snapshot } from '../../../src/model/index.js';
import { buildOutboundRequest } from '../../../src/node-agent/proxy/route.js';
import { svc, wl } from './fixtures.js';

const KEY = 'default/echo.default.svc.cluster.local';
const client = wl('client', '10.0.0.2');
const e1 = wl('echo-v1', '10.0.1.1', { services: [KEY], serviceAccount: 'echo' });
const e2 = wl('echo-v2', '10.0.1.2', { services: [KEY], serviceAccount: 'echo' });
const plain = wl('legacy', '10.0.2.1', { tunnel: 'none', services: ['default/legacy.default.svc.cluster.local'] });
const sick = wl('sick', '10.0.3.1', { healthy: false, services: ['default/sick.default.svc.cluster.local'] });
const wpKey = 'default/wp.default.svc.cluster.local';
const waypoint = wl('wp', '10.0.9.9', { services: [wpKey], serviceAccount: 'wp' });
const behindWp = wl('guarded', '10.0.4.1', { waypoint: { service: wpKey, port: 15008 }, services: ['default/g.default.svc.cluster.local'] });

const snap = Snapshot.build({
  workloads: [client, e1, e2, plain, sick, waypoint, behindWp],
  services: [
    svc('echo', '10.96.0.10', [[80, 8080]]),
    svc('legacy', '10.96.0.11', [[80, 8080]]),
    svc('sick', '10.96.0.12', [[80, 8080]]),
    svc('wp', '10.96.0.99', [[15008, 15008]]),
    svc('g', '10.96.0.13', [[80, 8080]], { waypoint: { service: wpKey, port: 15008 } }),
  ],
  authorizations: [],
});

test('pod IP of a mesh workload: HBONE to podIP:15008 with authority podIP:port', (t) => {
  const r = buildOutboundRequest(snap, client, { ip: '10.0.1.1', port: 8080 });
  t.is(r.kind, 'hbone');
  t.deepEqual(r.address, { ip: '10.0.1.1', port: 15008 });
  t.is(r.authority, '10.0.1.1:8080');
  t.deepEqual(r.expectedIdentities, ['spiffe://cluster.local/ns/default/sa/echo']);
  t.is(r.destWorkload?.name, 'echo-v1');
});

test('service VIP: picks an endpoint by the random source and maps the target port', (t) => {
  const a = buildOutboundRequest(snap, client, { ip: '10.96.0.10', port: 80 }, { random: () => 0 });
  const b = buildOutboundRequest(snap, client, { ip: '10.96.0.10', port: 80 }, { random: () => 0.99 });
  t.is(a.authority, '10.0.1.1:8080');
  t.is(b.authority, '10.0.1.2:8080');
  t.is(a.service?.name, 'echo');
  t.deepEqual(b.address, { ip: '10.0.1.2', port: 15008 });
});

test('service VIP with only unhealthy endpoints is denied as no healthy upstream', (t) => {
  const r = buildOutboundRequest(snap, client, { ip: '10.96.0.12', port: 80 });
  t.is(r.kind, 'deny');
  t.is(r.denial, 'no-healthy-upstream');
  t.regex(r.reason, /no healthy upstream/);
});

test('non-mesh endpoint behind a VIP: plain passthrough to the endpoint target port', (t) => {
  const r = buildOutboundRequest(snap, client, { ip: '10.96.0.11', port: 80 });
  t.is(r.kind, 'passthrough');
  t.deepEqual(r.address, { ip: '10.0.2.1', port: 8080 });
  t.is(r.authority, '');
});

test('unknown destination: passthrough to the original destination', (t) => {
  const r = buildOutboundRequest(snap, client, { ip: '192.0.2.7', port: 443 });
  t.is(r.kind, 'passthrough');
  t.deepEqual(r.address, { ip: '192.0.2.7', port: 443 });
});

test('service with a waypoint: HBONE to the waypoint, authority stays VIP:port', (t) => {
  const r = buildOutboundRequest(snap, client, { ip: '10.96.0.13', port: 80 });
  t.is(r.kind, 'hbone');
  t.deepEqual(r.address, { ip: '10.0.9.9', port: 15008 });
  t.is(r.authority, '10.96.0.13:80');
  t.deepEqual(r.expectedIdentities, ['spiffe://cluster.local/ns/default/sa/wp']);
});

test('workload with a waypoint: HBONE to the waypoint with authority podIP:port', (t) => {
  const r = buildOutboundRequest(snap, client, { ip: '10.0.4.1', port: 8080 });
  t.is(r.kind, 'hbone');
  t.is(r.address.ip, '10.0.9.9');
  t.is(r.authority, '10.0.4.1:8080');
  t.is(r.destWorkload?.name, 'guarded');
});

test('the waypoint itself goes straight to the workload', (t) => {
  const r = buildOutboundRequest(snap, waypoint, { ip: '10.0.4.1', port: 8080 });
  t.deepEqual(r.address, { ip: '10.0.4.1', port: 15008 });
});

test('self call to an agent port is denied; loopback too', (t) => {
  t.like(buildOutboundRequest(snap, client, { ip: '10.0.0.2', port: 15008 }), { kind: 'deny', denial: 'self-call' });
  t.like(buildOutboundRequest(snap, client, { ip: '127.0.0.1', port: 15001 }), { kind: 'deny', denial: 'self-call' });
  t.is(buildOutboundRequest(snap, client, { ip: '10.0.0.2', port: 8080 }).kind, 'hbone');
});

test('IPv6 authority is bracketed', (t) => {
  const v6 = wl('six', 'fd00::5');
  const s = Snapshot.build({ workloads: [client, v6], services: [], authorizations: [] });
  t.is(buildOutboundRequest(s, client, { ip: 'fd00::5', port: 80 }).authority, '[fd00::5]:80');
});
