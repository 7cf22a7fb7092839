/**
 * Node agent, network-namespace tier: CNI hand-off, in-pod capture rules, passthrough and
 * inbound plaintext through the real kernel redirection. One cluster for the whole file.
 */
import test from 'ava';
import { hasCapture } from '../../src/node-agent/index.js';
import { createMesh, type Mesh } from '../helpers/mesh.js';
import type { Pod } from '../../src/local/index.js';

const root = process.getuid?.() === 0;
const serial = root ? test.serial : test.serial.skip;
if (!root) test('netns tests need root', (t) => { t.log('skipped: not root'); t.pass(); });

let mesh: Mesh;
let client: Pod; // ambient, node-1
let legacy: Pod; // not in the mesh, node-2
let server: Pod; // ambient, node-2

test.before(async () => {
  if (!root) return;
  mesh = await createMesh(undefined, { nodes: 2 });
  client = await mesh.pod({ name: 'client', node: 'node-1', ambient: true });
  legacy = await mesh.pod({ name: 'legacy', node: 'node-2' });
  server = await mesh.pod({ name: 'server', node: 'node-2', ambient: true });
  await mesh.echo(legacy);
  await mesh.echo(server);
});
test.after.always(async () => { await mesh?.destroy(); });

serial('CNI hand-off enrols ambient pods: rules in the pod netns, listeners up', async (t) => {
  t.deepEqual(mesh.agent('node-1').enrolledPods().map((p) => p.name), ['client']);
  t.deepEqual(mesh.agent('node-2').enrolledPods().map((p) => p.name), ['server']);
  t.true(await hasCapture(client.netnsPath));
  t.false(await hasCapture(legacy.netnsPath));
  t.true(mesh.agent('node-1').isReady());
});

serial('an enrolled pod reaches an unenrolled pod by plain passthrough (from its own IP)', async (t) => {
  const r = await mesh.http(client, legacy.ip, 8080);
  t.true(r.ok, r.error);
  t.is(r.body?.remoteAddress, client.ip);
  t.is(r.body?.name, 'legacy');
  const m = await mesh.agent('node-1').telemetry.metrics();
  t.regex(m, /istio_tcp_connections_opened_total\{reporter="source",source_workload="client".*destination_workload="legacy"/);
});

serial('plaintext from an unenrolled pod reaches an ambient pod (PERMISSIVE) with its real source IP', async (t) => {
  const r = await mesh.http(legacy, server.ip, 8080);
  t.true(r.ok, r.error);
  t.is(r.body?.remoteAddress, legacy.ip);
  // it went through the agent's inbound plaintext listener (not around it)
  const m = await mesh.agent('node-2').telemetry.metrics();
  t.regex(m, /istio_tcp_connections_closed_total\{reporter="destination",source_workload="legacy".*connection_security_policy="unknown"\} 1/);
});
