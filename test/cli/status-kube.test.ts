/**
 * `ambit status` and `ambit config-dump` against a cluster: the in-test API server
 * (test/helpers/fake-kube-api.ts, set up by kube-cluster.ts) with a bearer token, pods listed by label selector, and the
 * pods' port-forward WebSocket (the kubelet streaming server's protocol). The forwarded
 * connections end on 127.0.0.1, as they would in the pod: the control plane's debug endpoints
 * (loopback only) answer them.
 */
import test from 'ava';
import http from 'node:http';
import type net from 'node:net';
import { Registry } from 'prom-client';
import { createStatusServer } from '../../src/control/status/index.js';
import { chooseMesh, parseDumpTarget, runConfigDump, runStatus } from '../../src/cli/inspect.js';
import type { StatusRow } from '../../src/cli/status-view.js';
import { fakeCluster } from '../helpers/kube-cluster.js';

const TOKEN = 'test-token-status';
const A = 'type.googleapis.com/ambit.v1.Address';
const Z = 'type.googleapis.com/ambit.v1.Authorization';

const listen = (s: http.Server): Promise<number> => new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)));

async function setup(t: import('ava').ExecutionContext) {
  const peers = (node: string) => [{
    id: 1, node, role: 'agent', subject: 'system:serviceaccount:ambit-system:ambit-node-agent', remote: '10.0.0.1:1', connectedSince: '2026-12-03T11:00:00.000Z',
    types: [{ typeUrl: A, versionSent: '4', versionAcked: '4', pendingResponses: 0, rejected: [] },
      { typeUrl: Z, versionSent: '2', versionAcked: '2', pendingResponses: 0, rejected: [], lastNack: { nonce: 'n', version: '2', message: 'policy p: unknown action', at: '2026-12-03T11:01:00.000Z' } }],
    certificates: [{ identity: 'spiffe://cluster.local/ns/default/sa/echo', notAfter: '2026-12-04T11:00:00.000Z', issuedAt: '2026-12-03T11:00:01.000Z' }],
  }];
  // two control plane replicas, each with its own agent; the real status server (debug: loopback only)
  const controls = await Promise.all(['node-1', 'node-2'].map(async (node) => {
    const s = createStatusServer({ ready: () => true, registry: new Registry(), syncz: () => peers(node), configDump: () => ({ version: '4', workloads: [{ name: 'echo' }] }) });
    t.teardown(() => new Promise<void>((resolve) => { s.close(() => resolve()); s.closeAllConnections(); }));
    return listen(s);
  }));
  const admin = http.createServer((req, res) => {
    if (req.url !== '/config_dump') { res.statusCode = 404; res.end(); return; }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ ready: true, node: 'node-1', enrolled: [{ name: 'client', namespace: 'default', listening: true }] }));
  });
  t.teardown(() => new Promise<void>((resolve) => { admin.close(() => resolve()); admin.closeAllConnections(); }));
  const adminPort = await listen(admin);

  const { api, env } = await fakeCluster(t, { token: TOKEN });
  const pod = (name: string, app: string, node: string, phase: string, forward?: [number, number]) => {
    api.put('/api/v1/namespaces/ambit-system/pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name, labels: { app } }, spec: { nodeName: node }, status: { phase } });
    if (forward) api.forwardPort('ambit-system', name, forward[0], forward[1]);
  };
  pod('ambit-control-a', 'ambit-control', 'node-1', 'Running', [15014, controls[0]!]);
  pod('ambit-control-b', 'ambit-control', 'node-2', 'Running', [15014, controls[1]!]);
  pod('ambit-control-c', 'ambit-control', 'node-2', 'Pending');
  pod('ambit-agent-x1', 'ambit-agent', 'node-1', 'Running', [15000, adminPort]);
  pod('ambit-agent-x2', 'ambit-agent', 'node-2', 'Running');
  const forwards = () => api.seen.filter((x) => x.path.endsWith('/portforward')).map((x) => `${x.path.split('/')[6]}:${x.query.get('ports')}`);
  const mesh = chooseMesh({ kube: true, env });
  return { forwards, mesh };
}

test('status on a cluster: every running control plane replica is asked through the port-forward; one row per agent, with the replica', async (t) => {
  const { forwards, mesh } = await setup(t);
  t.is(mesh.kind, 'kube');
  const out: string[] = [];
  await runStatus(mesh, { output: 'json', print: (s) => { out.push(s); } });
  const rows = JSON.parse(out.join('')) as StatusRow[];
  t.deepEqual(rows.map((r) => [r.name, r.controlPlane]), [['node-1', 'ambit-control-a'], ['node-2', 'ambit-control-b']]);
  t.is(rows[0]!.types.Address!.state, 'SYNCED');
  t.is(rows[0]!.types.Authorization!.state, 'NACK');
  t.is(rows[0]!.certExpiry, '2026-12-04T11:00:00.000Z');
  t.deepEqual(forwards(), ['ambit-control-a:15014', 'ambit-control-b:15014'], 'the Pending replica is not asked');

  out.length = 0;
  await runStatus(mesh, { output: 'table', print: (s) => { out.push(s); }, now: () => Date.parse('2026-12-03T12:00:00.000Z') });
  const lines = out.join('').trimEnd().split('\n');
  t.regex(lines[0]!, /CONTROL PLANE$/);
  t.regex(lines[1]!, /^node-1\s+agent\s+node-1\s+1h0m ago\s+SYNCED \(4\)\s+NACK \(v2: policy p: unknown action\)\s+-\s+in 23h0m\s+ambit-control-a$/);
});

test('config-dump on a cluster: the agent of a node, the control plane; a pod that refuses the port is one clear error', async (t) => {
  const { mesh } = await setup(t);
  const out: string[] = [];
  await runConfigDump(mesh, parseDumpTarget('agent', 'node-1'), { output: 'json', print: (s) => { out.push(s); } });
  t.deepEqual((JSON.parse(out.join('')) as { enrolled: unknown[] }).enrolled, [{ name: 'client', namespace: 'default', listening: true }]);
  out.length = 0;
  await runConfigDump(mesh, parseDumpTarget('control', undefined), { output: 'yaml', print: (s) => { out.push(s); } });
  t.regex(out.join(''), /^version: "4"\nworkloads:\n {2}- name: echo\n$/);
  out.length = 0;
  await runConfigDump(mesh, parseDumpTarget('agent', 'node-1'), { output: 'table', print: (s) => { out.push(s); } });
  t.regex(out.join(''), /^enrolled\s+1 item$/m);

  await t.throwsAsync(runConfigDump(mesh, parseDumpTarget('agent', 'node-2'), { output: 'json', print: () => {} }),
    { message: /port-forward to ambit-system\/ambit-agent-x2:15000: error forwarding port 15000 to pod ambit-agent-x2: dial tcp4 127\.0\.0\.1:15000: connect: connection refused/ });
  await t.throwsAsync(runConfigDump(mesh, parseDumpTarget('agent', 'node-9'), { output: 'json', print: () => {} }),
    { message: 'agent node-9: no running agent pod on that node in ambit-system; nodes with agents: node-1, node-2' });
  await t.throwsAsync(runConfigDump(mesh, parseDumpTarget('waypoint', 'shop/wp'), { output: 'json', print: () => {} }),
    { message: /waypoint shop\/wp: no running pod/ });
});
