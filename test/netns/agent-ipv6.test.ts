/**
 * Node agent over IPv6, network-namespace tier: a dual-stack cluster (src/local `ipv6: true`),
 * the engine's data path on the pods' `::` listeners. Pod to pod across nodes at the server's v6
 * address goes over HBONE to that v6 address (the underlay sees TLS to port 15008 at the pod's v6
 * address, never the app's bytes); the app sees the client's v6 address (v6 return path); an
 * unenrolled client reaching an ambient pod over v6 plaintext is let in (PERMISSIVE) with its
 * real v6 address, and L4 policy applies to v6 sources.
 */
import test from 'ava';
import type { Pod } from '../../src/local/index.js';
import type { Authorization } from '../../src/model/index.js';
import { captureUnderlay } from '../helpers/pcap.js';
import { createMesh, type Mesh } from '../helpers/mesh.js';
import { isRoot, rootSerial } from '../helpers/root.js';

const root = isRoot;
const serial = rootSerial;

let mesh: Mesh;
let client: Pod; // ambient, node-1, sa client
let legacy: Pod; // not in the mesh, node-1
let server: Pod; // ambient, node-2, sa echo

/** The pod's IPv6 address (the cluster gives every pod one besides its IPv4 address). */
function v6(p: Pod): string {
  const a = p.ips.find((ip) => ip.includes(':'));
  if (!a) throw new Error(`pod ${p.name} has no IPv6 address: ${p.ips.join(', ')}`);
  return a;
}

/** The 16 bytes of an IPv6 address, as they appear in a packet header. */
function v6Bytes(ip: string): Buffer {
  const [head, tail] = ip.includes('::') ? ip.split('::') as [string, string] : [ip, undefined];
  const h = head === '' ? [] : head.split(':');
  const tl = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - tl.length).fill('0'), ...tl];
  if (groups.length !== 8) throw new Error(`not an IPv6 address: ${ip}`);
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

test.before(async () => {
  if (!root) return;
  // the engine's data path (the default), named so a change of default does not move this test to the Node path
  mesh = await createMesh(undefined, { nodes: 2, ipv6: true });
  client = await mesh.pod({ name: 'client', node: 'node-1', ambient: true });
  legacy = await mesh.pod({ name: 'legacy', node: 'node-1' });
  server = await mesh.pod({ name: 'echo', node: 'node-2', ambient: true, labels: { app: 'echo' }, serviceAccount: 'echo' });
  await mesh.echo(server);
});
test.after.always(async () => { await mesh?.destroy(); });

/**
 * istio_tcp_connections_opened_total of the one series on `node`'s agent whose labels match
 * `labels` (0 when there is none yet): tests compare it before and after.
 */
async function opened(node: string, labels: RegExp): Promise<number> {
  const m = await mesh.agent(node).telemetry.metrics();
  const lines = m.split('\n').filter((l) => l.startsWith('istio_tcp_connections_opened_total{') && labels.test(l));
  if (lines.length > 1) throw new Error(`${lines.length} series match ${labels}: ${lines.join('\n')}`);
  return lines.length === 0 ? 0 : Number(lines[0]!.slice(lines[0]!.lastIndexOf(' ') + 1));
}

const capture = (node: string, fn: () => Promise<void>): Promise<Buffer> => captureUnderlay(mesh.cluster, node, fn);

serial('the dual-stack cluster: every pod has an IPv6 address and the agents enrolled the ambient ones with it', (t) => {
  for (const p of [client, legacy, server]) t.regex(v6(p), /^fd00:/);
  const enrolled = (node: string, name: string) => mesh.agent(node).enrolledPods().find((p) => p.name === name);
  t.deepEqual(enrolled('node-1', 'client')?.ips, client.ips);
  t.deepEqual(enrolled('node-2', 'echo')?.ips, server.ips);
  t.true(enrolled('node-2', 'echo')?.returnPath, 'the return-path routes are installed in the server pod');
  t.is(enrolled('node-1', 'legacy'), undefined, 'the unlabelled pod is not enrolled');
});

serial('ambient to ambient at the server pod\'s IPv6 address goes over HBONE to [v6]:15008; the underlay never sees the app bytes', async (t) => {
  const marker = 'PLAINTEXT-MARKER-v6-51c2e8';
  const serverSide = /reporter="destination",source_workload="client",.*source_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/client".*destination_workload="echo".*connection_security_policy="mutual_tls"/;
  const clientSide = /reporter="source",source_workload="client",.*destination_workload="echo".*connection_security_policy="mutual_tls"/;
  const before = { server: await opened('node-2', serverSide), client: await opened('node-1', clientSide) };
  let r = { ok: false } as { ok: boolean; data?: string; error?: string };
  const pcap = await capture('node-1', async () => { r = await mesh.tcp(client, v6(server), 9090, marker); });
  t.deepEqual(r, { ok: true, data: marker });
  t.true(pcap.length > 200, 'packets were captured');
  t.false(pcap.includes(Buffer.from(marker)), 'the marker never crossed the underlay in clear');
  t.true(pcap.includes(v6Bytes(v6(server))), 'the underlay carried packets to the server pod\'s IPv6 address');
  t.false(pcap.includes(Buffer.from(server.ip.split('.').map(Number))), 'and none to its IPv4 address');
  t.true(pcap.includes(Buffer.from([0x3a, 0xa0])), 'traffic went to port 15008'); // 0x3aa0 = 15008
  t.is(await opened('node-2', serverSide), before.server + 1, 'the server agent counted one mTLS connection from the client\'s principal');
  t.is(await opened('node-1', clientSide), before.client + 1, 'the client agent counted one mTLS connection to echo');
  // control: the same capture does see plaintext when the client is not in the mesh
  const plain = await capture('node-1', async () => { await mesh.tcp(legacy, v6(server), 9090, marker); });
  t.true(plain.includes(Buffer.from(marker)), 'an unenrolled client\'s bytes cross in clear (the capture works)');
});

serial('over HBONE at the IPv6 address the app sees the client pod\'s IPv6 address', async (t) => {
  const r = await mesh.http(client, v6(server), 8080);
  t.true(r.ok, r.error);
  t.is(r.body?.name, 'echo');
  t.is(r.body?.remoteAddress, v6(client));
});

serial('IPv4 still works on the same dual-stack listeners (v4-mapped on [::]): the app sees the client\'s IPv4 address', async (t) => {
  const r = await mesh.http(client, server.ip, 8080);
  t.true(r.ok, r.error);
  t.is(r.body?.remoteAddress, client.ip);
});

serial('an unenrolled pod reaching the ambient pod over IPv6 plaintext: allowed with no policy, the app sees its IPv6 address', async (t) => {
  // counted by the server agent's inbound plaintext listener (15006): the connection went through it, not around it
  const plainIn = /reporter="destination",source_workload="legacy",.*source_principal="unknown".*destination_workload="echo".*response_flags="-",connection_security_policy="unknown"/;
  const before = await opened('node-2', plainIn);
  const r = await mesh.http(legacy, v6(server), 8080);
  t.true(r.ok, r.error);
  t.is(r.body?.remoteAddress, v6(legacy));
  const e = await mesh.tcp(legacy, v6(server), 9090, 'hello-v6');
  t.deepEqual(e, { ok: true, data: 'hello-v6' });
  t.is(await opened('node-2', plainIn), before + 2);
});

const policy = (name: string, action: 'allow' | 'deny', match: Authorization['rules'][number]['clauses'][number]['matches'][number]): Authorization => ({
  name, namespace: 'default', scope: 'namespace', action, dryRun: false, rules: [{ clauses: [{ matches: [match] }] }],
});

serial('L4 policy applies to IPv6 sources: an IPv6 ipBlock DENY and a principal ALLOW', async (t) => {
  try {
    await mesh.setPolicies([policy('no-legacy-v6', 'deny', { sourceIps: [{ address: v6(legacy), prefixLen: 128 }] })]);
    t.false((await mesh.http(legacy, v6(server), 8080)).ok, 'the denied IPv6 source is refused');
    t.true((await mesh.http(legacy, server.ip, 8080)).ok, 'the same pod over IPv4 is not that source');
    t.true((await mesh.http(client, v6(server), 8080)).ok, 'another IPv6 source gets in');
    await mesh.setPolicies([policy('only-client', 'allow', { principals: [{ exact: 'cluster.local/ns/default/sa/client' }] })]);
    t.true((await mesh.http(client, v6(server), 8080)).ok, 'the named identity gets in over IPv6');
    t.false((await mesh.http(legacy, v6(server), 8080)).ok, 'IPv6 plaintext has no principal');
    const m = await mesh.agent('node-2').telemetry.metrics();
    t.regex(m, /reporter="destination",source_workload="legacy",.*response_flags="DENY"/);
  } finally {
    await mesh.setPolicies([]);
  }
});
