import test from 'ava';
import { Snapshot } from '../../../src/model/index.js';
import { decideInbound, type InboundDecision, type InboundPod, type InboundRequest } from '../../../src/node-agent/proxy/inbound.js';
import { authz, svc, wl } from './fixtures.js';

const AGENT_PORTS = [15001, 15006, 15008];
const client = wl('client', '10.0.0.2');
const stranger = wl('stranger', '10.0.0.3');
const open = wl('echo', '10.0.1.1', { services: ['default/echo.default.svc.cluster.local'] });
const guarded = wl('vault', '10.0.2.1', { namespace: 'secure' });
const six = wl('six', 'fd00::1');
/** `secure`: only the client's identity may connect, and never to port 9090 */
const onlyClient = authz('only-client', {
  namespace: 'secure', rules: [{ clauses: [{ matches: [{ principals: [{ exact: 'cluster.local/ns/default/sa/client' }] }] }] }],
});
const no9090 = authz('no-9090', { namespace: 'secure', action: 'deny', rules: [{ clauses: [{ matches: [{ destinationPorts: [9090] }] }] }] });

const snap = Snapshot.build({
  workloads: [client, stranger, open, guarded, six],
  services: [svc('echo', '10.96.0.10', [[80, 8080]])],
  authorizations: [onlyClient, no9090],
});

const pod = (w: { uid: string; addresses: readonly string[] }, spoof = true): InboundPod => ({ uid: w.uid, ips: w.addresses, spoof });
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const STRANGER_ID = 'spiffe://cluster.local/ns/default/sa/stranger';

const plain = (src: string, dst: string, port: number): InboundRequest => ({ via: 'plain', src: { ip: src, port: 40000 }, dst: { ip: dst, port } });
const hbone = (peer: string, authority: string, local: string, o: { src?: string; draining?: boolean; forwarded?: string } = {}): InboundRequest => ({
  via: 'hbone', peer, authority, forwarded: o.forwarded, src: { ip: o.src ?? '10.0.0.2', port: 40000 }, local: { ip: local, port: 15008 },
  draining: o.draining ?? false,
});

type Want =
  | { kind: 'allow'; target: string; spoof?: string }
  | { kind: 'refuse'; reason: string; status: number; flag: string };

const cases: Array<[string, InboundPod, InboundRequest, Want]> = [
  // 15006: captured plaintext
  ['plain: to the pod, no policy', pod(open), plain('10.0.0.2', '10.0.1.1', 8080), { kind: 'allow', target: '10.0.1.1:8080', spoof: '10.0.0.2' }],
  ['plain: without the return path the app is dialed from the pod', pod(open, false), plain('10.0.0.2', '10.0.1.1', 8080), { kind: 'allow', target: '10.0.1.1:8080' }],
  ['plain: another address than the pod\'s', pod(open), plain('10.0.0.2', '10.0.1.9', 8080), { kind: 'refuse', reason: 'not-pod-address', status: 400, flag: 'DENY' }],
  ['plain: an agent port', pod(open), plain('10.0.0.2', '10.0.1.1', 15008), { kind: 'refuse', reason: 'agent-port', status: 400, flag: 'DENY' }],
  ['plain: the pod unknown to the mesh', { uid: 'Kubernetes//Pod/default/gone', ips: ['10.0.5.5'], spoof: true }, plain('10.0.0.2', '10.0.5.5', 8080),
    { kind: 'refuse', reason: 'pod-unknown', status: 503, flag: 'DENY' }],
  ['plain: policy needs an identity', pod(guarded), plain('10.0.0.2', '10.0.2.1', 8080), { kind: 'refuse', reason: 'policy-denied', status: 401, flag: 'DENY' }],
  // 15008: HBONE CONNECT
  ['hbone: allowed by policy', pod(guarded), hbone(CLIENT_ID, '10.0.2.1:8080', '10.0.2.1'), { kind: 'allow', target: '10.0.2.1:8080', spoof: '10.0.0.2' }],
  ['hbone: denied by a DENY policy on the port', pod(guarded), hbone(CLIENT_ID, '10.0.2.1:9090', '10.0.2.1'), { kind: 'refuse', reason: 'policy-denied', status: 401, flag: 'DENY' }],
  ['hbone: another identity', pod(guarded), hbone(STRANGER_ID, '10.0.2.1:8080', '10.0.2.1', { src: '10.0.0.3' }), { kind: 'refuse', reason: 'policy-denied', status: 401, flag: 'DENY' }],
  ['hbone: draining', pod(open), hbone(CLIENT_ID, '10.0.1.1:8080', '10.0.1.1', { draining: true }), { kind: 'refuse', reason: 'draining', status: 503, flag: 'CONNECT' }],
  ['hbone: authority without a port', pod(open), hbone(CLIENT_ID, '10.0.1.1', '10.0.1.1'), { kind: 'refuse', reason: 'bad-authority', status: 400, flag: 'CONNECT' }],
  ['hbone: authority is a hostname', pod(open), hbone(CLIENT_ID, 'echo.default:8080', '10.0.1.1'), { kind: 'refuse', reason: 'bad-authority', status: 400, flag: 'CONNECT' }],
  ['hbone: authority port out of range', pod(open), hbone(CLIENT_ID, '10.0.1.1:65536', '10.0.1.1'), { kind: 'refuse', reason: 'bad-authority', status: 400, flag: 'CONNECT' }],
  ['hbone: authority names another address than the stream arrived on', pod(open), hbone(CLIENT_ID, '10.0.2.1:8080', '10.0.1.1'),
    { kind: 'refuse', reason: 'authority-mismatch', status: 400, flag: 'CONNECT' }],
  ['hbone: arrived on an address that is not the pod\'s', pod(open), hbone(CLIENT_ID, '10.0.1.9:8080', '10.0.1.9'),
    { kind: 'refuse', reason: 'not-pod-address', status: 400, flag: 'CONNECT' }],
  ['hbone: an agent port', pod(open), hbone(CLIENT_ID, '10.0.1.1:15006', '10.0.1.1'), { kind: 'refuse', reason: 'agent-port', status: 400, flag: 'CONNECT' }],
  ['hbone: the pod unknown to the mesh', { uid: 'Kubernetes//Pod/default/gone', ips: ['10.0.5.5'], spoof: true }, hbone(CLIENT_ID, '10.0.5.5:8080', '10.0.5.5'),
    { kind: 'refuse', reason: 'pod-unknown', status: 503, flag: 'CONNECT' }],
  ['hbone: a peer id that is no SPIFFE id', pod(open), hbone('spiffe://cluster.local/not-a-path', '10.0.1.1:8080', '10.0.1.1'),
    { kind: 'refuse', reason: 'bad-peer-identity', status: 400, flag: 'CONNECT' }],
  ['hbone: IPv6 authority, any spelling of the address', pod(six), hbone(CLIENT_ID, '[FD00:0::1]:8080', 'fd00::1', { src: 'fd00::2' }),
    { kind: 'allow', target: 'fd00::1:8080', spoof: 'fd00::2' }],
  ['hbone: the model spells the pod\'s IPv6 address differently', { uid: six.uid, ips: ['FD00:0:0::1'], spoof: false }, hbone(CLIENT_ID, '[fd00::1]:8080', 'fd00::1'),
    { kind: 'allow', target: 'fd00::1:8080' }],
];

for (const [name, p, req, want] of cases) {
  test(`decideInbound: ${name}`, (t) => {
    const d = decideInbound(snap, p, req, { agentPorts: AGENT_PORTS });
    if (want.kind === 'allow') {
      if (d.kind !== 'allow') return t.fail(`refused: ${d.reason} (${d.detail})`);
      t.is(`${d.target.ip}:${d.target.port}`, want.target);
      t.is(d.spoof, want.spoof);
      t.is(d.workload.uid, p.uid);
    } else {
      if (d.kind !== 'refuse') return t.fail(`allowed to ${d.target.ip}:${d.target.port}`);
      t.like(d, { reason: want.reason, status: want.status, responseFlag: want.flag });
      t.true(d.detail.length > 0);
    }
  });
}

test('decideInbound: over HBONE the source workload is named only when its identity matches the peer', (t) => {
  const allowed = (d: InboundDecision) => (d.kind === 'allow' ? d : t.fail('refused') as never);
  const honest = allowed(decideInbound(snap, pod(open), hbone(CLIENT_ID, '10.0.1.1:8080', '10.0.1.1'), { agentPorts: AGENT_PORTS }));
  t.is(honest.source?.name, 'client');
  t.deepEqual(honest.peer, { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'client' });
  // the stranger's certificate from the client's address: not the client
  const spoofed = allowed(decideInbound(snap, pod(open), hbone(STRANGER_ID, '10.0.1.1:8080', '10.0.1.1'), { agentPorts: AGENT_PORTS }));
  t.is(spoofed.source, undefined);
  // plaintext has no identity: the workload at the address
  const p = allowed(decideInbound(snap, pod(open), plain('10.0.0.3', '10.0.1.1', 8080), { agentPorts: AGENT_PORTS }));
  t.is(p.source?.name, 'stranger');
  t.is(p.peer, undefined);
});

test('decideInbound: Forwarded host= becomes a label only for a Service the model knows', (t) => {
  const known = decideInbound(snap, pod(open), hbone(CLIENT_ID, '10.0.1.1:8080', '10.0.1.1', { forwarded: 'for="10.0.0.2:1";host=echo.default.svc.cluster.local' }), { agentPorts: AGENT_PORTS });
  t.is(known.serviceHost, 'echo.default.svc.cluster.local');
  const minted = decideInbound(snap, pod(open), hbone(CLIENT_ID, '10.0.1.1:8080', '10.0.1.1', { forwarded: 'for="10.0.0.2:1";host=x1.default.svc.cluster.local' }), { agentPorts: AGENT_PORTS });
  t.is(minted.serviceHost, undefined);
  // refusals carry it too (their telemetry is labelled alike)
  const refused = decideInbound(snap, pod(open), hbone(CLIENT_ID, '10.0.1.1:15008', '10.0.1.1', { forwarded: 'host=echo.default.svc.cluster.local' }), { agentPorts: AGENT_PORTS });
  t.like(refused, { kind: 'refuse', serviceHost: 'echo.default.svc.cluster.local' });
});

test('decideInbound: a refusal keeps the target it could read, for telemetry', (t) => {
  const d = decideInbound(snap, pod(open), hbone(CLIENT_ID, '10.0.1.1:15006', '10.0.1.1'), { agentPorts: AGENT_PORTS });
  t.like(d, { kind: 'refuse', target: { ip: '10.0.1.1', port: 15006 } });
  const bad = decideInbound(snap, pod(open), hbone(CLIENT_ID, 'junk', '10.0.1.1'), { agentPorts: AGENT_PORTS });
  t.like(bad, { kind: 'refuse', reason: 'bad-authority' });
  t.false('target' in bad);
});

test('decideInbound: the ports refused are the ones given (a proxy on other ports)', (t) => {
  const d = decideInbound(snap, pod(open), plain('10.0.0.2', '10.0.1.1', 15008), { agentPorts: [25001, 25006, 25008] });
  t.is(d.kind, 'allow');
  t.like(decideInbound(snap, pod(open), plain('10.0.0.2', '10.0.1.1', 25006), { agentPorts: [25001, 25006, 25008] }), { kind: 'refuse', reason: 'agent-port' });
});
