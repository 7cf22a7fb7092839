/**
 * PodFlows without sockets: the answers it gives the engine for 15001 and 15008, and what it
 * accounts for them (telemetry, the live-policy registry, the count a drain waits on).
 */
import test from 'ava';
import { Snapshot } from '../../../src/model/index.js';
import { AGENT_PORT } from '../../../src/hbone/index.js';
import type { CertBundle } from '../../../src/identity/index.js';
import { sumMetric } from '../../../src/cli/mesh.js';
import { AgentTelemetry } from '../../../src/node-agent/admin/telemetry.js';
import { ConnectionRegistry } from '../../../src/node-agent/proxy/connections.js';
import type { AgentEngine, FlowRecord } from '../../../src/node-agent/proxy/engine-adapter.js';
import type { PodInfo, ProxyContext } from '../../../src/node-agent/proxy/context.js';
import { PodFlows } from '../../../src/node-agent/proxy/pod-flows.js';
import { svc, wl } from './fixtures.js';

const client = wl('client', '10.0.0.2');
const echo = wl('echo', '10.0.1.1');
const sick = wl('sick', '10.0.3.1', { healthy: false, services: ['default/sick.default.svc.cluster.local'] });
const snap = Snapshot.build({ workloads: [client, echo, sick], services: [svc('sick', '10.96.0.12', [[80, 8080]])], authorizations: [] });
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';

function rig(o: { pod?: typeof echo; cert?: boolean } = {}) {
  const w = o.pod ?? echo;
  const tracked = new Map<number, FlowRecord>();
  const ctxObj = { ctx: true };
  const engine = {
    track: (id: number, r: FlowRecord) => { tracked.set(id, r); },
    tls: () => ctxObj,
    closeFlow: () => {},
  } as unknown as AgentEngine;
  const telemetry = new AgentTelemetry();
  const connections = new ConnectionRegistry();
  const bundle = {} as CertBundle;
  const ctx: ProxyContext = {
    native: {} as ProxyContext['native'],
    snapshot: () => snap,
    cert: () => (o.cert === false ? undefined : bundle),
    engine, telemetry, connections, trustDomain: 'cluster.local', ports: AGENT_PORT,
    random: () => 0,
  };
  const pod: PodInfo = {
    uid: w.uid, name: w.name, namespace: w.namespace, serviceAccount: w.serviceAccount, ips: w.addresses, netns: '/proc/self/ns/net', spoof: true,
  };
  const life = { stopping: false, refusing(): boolean { return this.stopping; }, track: () => {} };
  const flows = new PodFlows(ctx, pod, life);
  const failed = async (flag: string) => sumMetric(await telemetry.metrics(), 'istio_tcp_connections_failed_total', { response_flags: flag });
  return { flows, tracked, telemetry, connections, life, failed, ctxObj };
}

test('15008 allowed: the target (dialed from the client\'s address), one tracked flow, registered for policy re-checks', async (t) => {
  const r = rig();
  const answer = r.flows.inbound(7, CLIENT_ID, '10.0.1.1:8080', undefined, '10.0.0.2', 40000, '10.0.1.1', 15008);
  t.deepEqual(answer, { ip: '10.0.1.1', port: 8080, spoof: '10.0.0.2' });
  t.is(r.flows.open, 1);
  t.is(r.connections.size, 1);
  t.like(r.connections.all()[0], { podUid: echo.uid, srcIp: '10.0.0.2', dstPort: 8080, srcIdentity: { namespace: 'default', serviceAccount: 'client' } });
  t.true(r.tracked.has(7));
  // the drain waits for the engine's flows: idle once the last one ended
  const idle = r.flows.engineIdle();
  t.truthy(idle);
  r.flows.flowEnded();
  await idle;
  t.is(r.flows.open, 0);
  t.is(r.flows.engineIdle(), undefined);
});

test('15008 refused: the decision\'s status, counted failed with its response flag, nothing tracked', async (t) => {
  const r = rig();
  t.is(r.flows.inbound(1, CLIENT_ID, '10.0.1.1:15006', undefined, '10.0.0.2', 40000, '10.0.1.1', 15008), 400);
  t.is(await r.failed('CONNECT'), 1);
  r.life.stopping = true;
  t.is(r.flows.inbound(2, CLIENT_ID, '10.0.1.1:8080', undefined, '10.0.0.2', 40000, '10.0.1.1', 15008), 503);
  t.is(await r.failed('CONNECT'), 2);
  t.is(r.flows.open, 0);
  t.is(r.connections.size, 0);
  t.is(r.tracked.size, 0);
});

test('15001: plans for mesh and plain destinations; refusals are null, counted with their flags', async (t) => {
  const r = rig({ pod: client });
  const plan = r.flows.outbound(1, '10.0.1.1', 8080, '10.0.0.2', 50000);
  t.like(plan, { t: 2, ip: '10.0.1.1', port: 15008, authority: '10.0.1.1:8080', ctx: r.ctxObj });
  t.like(r.flows.outbound(2, '192.0.2.7', 443, '10.0.0.2', 50001), { t: 1, ip: '192.0.2.7', port: 443 });
  t.is(r.flows.open, 2);
  t.is(r.flows.outbound(3, '10.96.0.12', 80, '10.0.0.2', 50002), null);
  t.is(await r.failed('NO_HEALTHY_UPSTREAM'), 1);
  t.is(r.flows.outbound(4, '10.0.0.2', 15008, '10.0.0.2', 50003), null);
  t.is(await r.failed('DENY'), 1);
  t.is(r.flows.open, 2, 'refusals are not tracked');
  r.life.stopping = true;
  t.is(r.flows.outbound(5, '10.0.1.1', 8080, '10.0.0.2', 50004), null);
});

test('15001 without a certificate: mesh traffic refused (TLS_FAILURE), plain traffic still carried', async (t) => {
  const r = rig({ pod: client, cert: false });
  t.is(r.flows.outbound(1, '10.0.1.1', 8080, '10.0.0.2', 50000), null);
  t.is(await r.failed('TLS_FAILURE'), 1);
  t.like(r.flows.outbound(2, '192.0.2.7', 443, '10.0.0.2', 50001), { t: 1 });
  t.is(r.flows.context(), null, 'and the HBONE listener refuses handshakes');
});

test('a pod unknown to the mesh: outbound refused (DENY), inbound 503', async (t) => {
  const ghost = wl('ghost', '10.0.7.7');
  const r = rig({ pod: ghost });
  t.is(r.flows.outbound(1, '10.0.1.1', 8080, '10.0.7.7', 50000), null);
  t.is(await r.failed('DENY'), 1);
  t.is(r.flows.inbound(2, CLIENT_ID, '10.0.7.7:8080', undefined, '10.0.0.2', 40000, '10.0.7.7', 15008), 503);
});
