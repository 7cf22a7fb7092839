/**
 * The node agent under control-plane faults (issue 8): a pod created while the control plane is
 * down is never started outside the mesh, agents converge quickly once it returns, and a refused
 * connection is counted as failed, never as opened. Real control plane, and the CNI plugin as the
 * agent installs it on a node (`ambit-cni` in a CNI bin dir: its own Node, the bundle, the addon).
 */
import test from 'ava';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleCniPlugin } from '../../scripts/bundle-cni.js';
import { addonFile } from '../../src/native/index.js';
import { cniAdd, sumMetric } from '../../src/cli/mesh.js';
import type { Pod } from '../../src/local/index.js';
import type { Snapshot } from '../../src/model/index.js';
import { hasCapture, installCniProgram, type Agent } from '../../src/node-agent/index.js';
import { XdsClient } from '../../src/xds/index.js';
import { createMesh, type Mesh } from '../helpers/mesh.js';
import { captureUnderlay } from '../helpers/pcap.js';
import { isRoot, rootSerial } from '../helpers/root.js';

const root = isRoot;
const serial = rootSerial;

let mesh: Mesh;
let web: Pod; // ambient, node-2, echo server
let late: Pod | undefined; // made while the control plane is down, node-1
let agent: Agent; // node-1's agent
let xds: XdsClient; // node-1's control channel, watched by the tests
let cniProgram: string; // the installed ambit-cni
const cniBin = mkdtempSync(join(tmpdir(), 'ambit-outage-cni-bin-'));

const DENY_LATE = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-late
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/late"]
`;

const hasPod = (name: string) => (s: Snapshot): boolean => [...s.workloads].some((w) => w.name === name);

test.before(async () => {
  if (!root) return;
  cniProgram = await installCniProgram(cniBin, { node: process.execPath, plugin: await bundleCniPlugin(join(cniBin, 'bundle.mjs')), addon: addonFile()! });
  mesh = await createMesh(undefined, { nodes: 2, control: 'real' });
  await mesh.setNamespaceLabels('shop', { 'istio.io/dataplane-mode': 'ambient' });
  web = await mesh.pod({ name: 'web', node: 'node-2', namespace: 'shop', serviceAccount: 'web' });
  await mesh.echo(web);
  // node-1's agent again, with a control channel the tests can watch
  await mesh.stopAgent('node-1');
  xds = new XdsClient({ url: mesh.real!.url, token: mesh.real!.token, node: 'node-1', role: 'agent' });
  agent = await mesh.startAgent('node-1', { control: xds });
  await agent.whenReady();
});
test.after.always(async () => { await mesh?.destroy(); rmSync(cniBin, { recursive: true, force: true }); });

serial('a new pod while the control plane is down: its CNI ADD is refused (no pod outside the mesh); retried once it is back, the pod enrols and talks mTLS only', async (t) => {
  const down = once(xds, 'disconnected');
  await mesh.stopControl();
  await down;
  t.false(xds.current);
  late = await mesh.cluster.addPod({ name: 'late', node: 'node-1', namespace: 'shop', serviceAccount: 'late', labels: { app: 'late' } });
  // the installed plugin's ADD, as the container runtime runs it: the agent's config does not know the pod
  // and cannot learn it, so it waits (3 s here) and refuses; the runtime does not start the pod
  const refused = await t.throwsAsync(cniAdd(late, agent.socketPath, cniProgram));
  t.regex(refused?.message ?? '', /pod not started \(it would run outside the mesh\): the control plane is unreachable/);
  t.false(agent.enrolledPods().some((p) => p.name === 'late'));

  const back = performance.now();
  await mesh.startControl();
  await agent.whenSnapshot(hasPod('late'));
  t.log(`after ${((performance.now() - back) / 1000).toFixed(2)} s the agent had reconnected and applied the config with the new pod`);
  // the runtime retries the ADD: it succeeds once the pod is captured, certified and listening
  let r: Awaited<ReturnType<Mesh['http']>> | undefined;
  const pcap = await captureUnderlay(mesh.cluster, 'node-1', async () => {
    await cniAdd(late!, agent.socketPath, cniProgram);
    r = await mesh.http(late!, web.ip, 8080);
  });
  t.true(r?.ok, r?.error);
  t.true(await hasCapture(late.netnsPath));
  t.deepEqual(agent.enrolledPods().filter((p) => p.name === 'late').map((p) => p.listening), [true]);
  t.false(pcap.includes(Buffer.from('GET / HTTP/1.0')), 'the request never crossed the underlay in clear');
  t.true(pcap.includes(Buffer.from([0x3a, 0xa0])), 'it went to port 15008'); // 0x3aa0 = 15008
  const m = await agent.telemetry.metrics();
  t.is(sumMetric(m, 'workload_manager_active_proxy_count', {}), agent.enrolledPods().length);
  t.is(sumMetric(m, 'workload_manager_active_proxy_count', {}), 1);
});

serial('control plane restarted with a changed config: every agent reconnects and ACKs it', async (t) => {
  const down = once(xds, 'disconnected');
  await mesh.stopControl();
  await down;
  mesh.real!.extraYaml = DENY_LATE; // what the control plane will serve when it is back
  const back = performance.now();
  const cp = await mesh.startControl();
  const acked = new Map<number, Set<string>>();
  const allAcked = new Promise<void>((resolve) => {
    cp.push.on('ack', (peer, type, _version, nack) => {
      if (nack) return;
      const types = acked.get(peer) ?? new Set<string>();
      acked.set(peer, types.add(type));
      if (acked.size === mesh.agents.size && [...acked.values()].every((s) => s.size >= 2)) resolve();
    });
  });
  await Promise.all([allAcked, mesh.converge((s) => [...s.authorizations].some((a) => a.name === 'deny-late'))]);
  t.log(`${mesh.agents.size} agents reconnected, applied and ACKed the new config ${((performance.now() - back) / 1000).toFixed(2)} s after the control plane came back`);
  t.true(xds.current);
  t.is(acked.size, 2);
});

serial('a connection refused by policy counts as failed on both agents, never as opened', async (t) => {
  const match = { source_workload: 'late', destination_workload: 'web' };
  const count = async (a: Agent) => {
    const m = await a.telemetry.metrics();
    return { opened: sumMetric(m, 'istio_tcp_connections_opened_total', match), failed: sumMetric(m, 'istio_tcp_connections_failed_total', match) };
  };
  const before = { src: await count(agent), dst: await count(mesh.agent('node-2')) };
  const r = await mesh.http(late!, web.ip, 8080);
  t.false(r.ok, 'denied by deny-late');
  const after = { src: await count(agent), dst: await count(mesh.agent('node-2')) };
  t.is(after.dst.failed, before.dst.failed + 1, 'the destination counted the refusal as a failure');
  t.is(after.dst.opened, before.dst.opened, 'and not as an opened connection');
  t.is(after.src.failed, before.src.failed + 1, 'so did the source');
  t.is(after.src.opened, before.src.opened);
  const m = await mesh.agent('node-2').telemetry.metrics();
  t.is(sumMetric(m, 'istio_tcp_connections_failed_total', { ...match, response_flags: 'DENY' }), after.dst.failed);
});
