/**
 * Node agent over HBONE, network-namespace tier: pod to pod across nodes (and proof the underlay
 * carries TLS, not the app's bytes), service VIPs, L4 policy by principal/namespace/port, live
 * policy, and the HBONE server's refusals (wrong target, foreign trust domain, wrong identity).
 */
import test from 'ava';
import { Socket } from 'node:net';
import type { Pod } from '../../src/local/index.js';
import * as native from '../../src/native/index.js';
import type { Authorization } from '../../src/model/index.js';
import { sendCniRequest } from '../../src/node-agent/index.js';
import { hboneConnect } from '../helpers/hbone-peer.js';
import { captureUnderlay } from '../helpers/pcap.js';
import { createMesh, type Mesh } from '../helpers/mesh.js';
import { makeForeignPki } from '../helpers/pki.js';
import { isRoot, rootSerial } from '../helpers/root.js';

const root = isRoot;
const serial = rootSerial;

let mesh: Mesh;
let client: Pod; // ambient, node-1, sa client
let other: Pod; // ambient, node-1, namespace other
let legacy: Pod; // not in the mesh, node-1
let v1: Pod; // ambient, node-2
let v2: Pod; // ambient, node-2

test.before(async () => {
  if (!root) return;
  mesh = await createMesh(undefined, { nodes: 2 });
  client = await mesh.pod({ name: 'client', node: 'node-1', ambient: true });
  other = await mesh.pod({ name: 'other', node: 'node-1', namespace: 'other', ambient: true });
  legacy = await mesh.pod({ name: 'legacy', node: 'node-1' });
  v1 = await mesh.pod({ name: 'echo-v1', node: 'node-2', ambient: true, labels: { app: 'echo', version: 'v1' }, serviceAccount: 'echo' });
  v2 = await mesh.pod({ name: 'echo-v2', node: 'node-2', ambient: true, labels: { app: 'echo', version: 'v2' }, serviceAccount: 'echo' });
  await Promise.all([mesh.echo(v1, 'v1'), mesh.echo(v2, 'v2'), mesh.echo(legacy)]);
});
test.after.always(async () => { await mesh?.destroy(); });

const capture = (node: string, fn: () => Promise<void>): Promise<Buffer> => captureUnderlay(mesh.cluster, node, fn);

serial('pod to pod across nodes goes over HBONE; the underlay sees TLS, never the app bytes', async (t) => {
  const marker = 'PLAINTEXT-MARKER-7f3a9c';
  let mesh1 = { ok: false } as { ok: boolean; data?: string };
  const pcap = await capture('node-1', async () => { mesh1 = await mesh.tcp(client, v1.ip, 9090, marker); });
  t.deepEqual(mesh1, { ok: true, data: marker });
  t.true(pcap.length > 200, 'packets were captured');
  t.false(pcap.includes(Buffer.from(marker)), 'the marker never crossed the underlay in clear');
  t.true(pcap.includes(Buffer.from([0x3a, 0xa0])), 'traffic went to port 15008'); // 0x3aa0 = 15008
  // control: the same capture does see plaintext when the client is not in the mesh
  const plain = await capture('node-1', async () => { await mesh.tcp(legacy, v1.ip, 9090, marker); });
  t.true(plain.includes(Buffer.from(marker)));
  const m = await mesh.agent('node-2').telemetry.metrics();
  t.regex(m, /istio_tcp_connections_opened_total\{reporter="destination",source_workload="client",.*source_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/client".*connection_security_policy="mutual_tls"\} 1/);
});

serial('HBONE tunnels are not connection-tracked in the pods; the captured app connections are', async (t) => {
  const held = await mesh.openTcp(client, v1.ip, 9090);
  try {
    t.is(await held.roundTrip('ct'), 'ct');
    const table = async (p: Pod) => (await mesh.cluster.exec(p, ['/bin/cat', '/proc/net/nf_conntrack'])).stdout;
    const [cli, srv] = [await table(client), await table(v1)];
    // the app's connection is tracked (REDIRECT needs it) in the client pod...
    t.regex(cli, new RegExp(`dst=${v1.ip.replace(/\./g, '\\.')} sport=\\d+ dport=9090`));
    // ...but no tunnel packet (port 15008) in either pod
    t.notRegex(cli, /port=15008/);
    t.notRegex(srv, /port=15008/);
  } finally {
    held.end();
    await held.closed;
  }
});

serial('the app sees the client pod IP; telemetry and baggage flow', async (t) => {
  const r = await mesh.http(client, v2.ip, 8080);
  t.true(r.ok, r.error);
  t.is(r.body?.remoteAddress, client.ip);
  t.is(r.body?.name, 'echo-v2');
});

serial('service VIP is load-balanced over HBONE: both versions answer', async (t) => {
  const svc = await mesh.service('echo', { app: 'echo' }, [{ port: 80, targetPort: 8080 }]);
  const seen = new Set<string>();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const r = await mesh.http(client, svc.vips[0]!, 80);
    t.true(r.ok, r.error);
    seen.add(r.body!.version);
  }
  t.deepEqual([...seen].sort(), ['v1', 'v2']);
  const m = await mesh.agent('node-2').telemetry.metrics();
  t.regex(m, /destination_service="echo.default.svc.cluster.local"/);
});

const allow = (name: string, match: Authorization['rules'][number]['clauses'][number]['matches'][number]): Authorization => ({
  name, namespace: 'default', scope: 'namespace', action: 'allow', dryRun: false, rules: [{ clauses: [{ matches: [match] }] }],
});
const deny = (name: string, match: Authorization['rules'][number]['clauses'][number]['matches'][number]): Authorization => ({
  ...allow(name, match), action: 'deny',
});

serial('L4 ALLOW by principal: only the named identity gets in', async (t) => {
  await mesh.setPolicies([allow('only-client', { principals: [{ exact: 'cluster.local/ns/default/sa/client' }] })]);
  t.true((await mesh.http(client, v1.ip, 8080)).ok);
  t.false((await mesh.http(other, v1.ip, 8080)).ok);
  t.false((await mesh.http(legacy, v1.ip, 8080)).ok, 'plaintext has no principal');
  await mesh.setPolicies([]);
});

serial('L4 DENY by namespace and by port', async (t) => {
  await mesh.setPolicies([deny('no-other-ns', { namespaces: [{ exact: 'other' }] })]);
  t.false((await mesh.http(other, v1.ip, 8080)).ok);
  t.true((await mesh.http(client, v1.ip, 8080)).ok);
  await mesh.setPolicies([deny('no-9090', { destinationPorts: [9090] })]);
  t.false((await mesh.tcp(client, v1.ip, 9090, 'x')).ok);
  t.true((await mesh.http(client, v1.ip, 8080)).ok);
  await mesh.setPolicies([]);
  const m = await mesh.agent('node-2').telemetry.metrics();
  t.regex(m, /response_flags="DENY"/);
});

/**
 * Sends `bytes` of pseudo-random data to ip:port from inside the pod, half-closes, reads the echo
 * to the end; prints the SHA-256 of both directions and the byte counts as JSON.
 */
const BULK_CLIENT = `
const net = require('node:net'); const { createHash } = require('node:crypto');
const [ip, port, total] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const sent = createHash('sha256'); const got = createHash('sha256'); let n = 0, m = 0, seed = 7;
const s = net.connect(port, ip, () => {
  const chunk = () => { const b = Buffer.alloc(Math.min(65536, total - n)); for (let i = 0; i < b.length; i++) { seed = (seed * 1103515245 + 12345) >>> 0; b[i] = seed >>> 24; } return b; };
  const pump = () => { while (n < total) { const b = chunk(); n += b.length; sent.update(b); if (!s.write(b)) { s.once('drain', pump); return; } } s.end(); };
  pump();
});
s.on('data', (d) => { m += d.length; got.update(d); });
s.on('end', () => { console.log(JSON.stringify({ sent: n, received: m, same: sent.digest('hex') === got.digest('hex') })); process.exit(0); });
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code || e.message, sent: n, received: m })); process.exit(0); });
`;

serial('a bulk transfer over HBONE (past every flow-control window) arrives intact both ways, then half-closes cleanly', async (t) => {
  const total = 24 * 1024 * 1024; // more than the 16 MiB connection window and the 4 MiB stream window
  const r = await mesh.cluster.exec(client, [process.execPath, '-e', BULK_CLIENT, v1.ip, '9090', String(total)], { timeoutMs: 60_000 });
  const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { sent?: number; received?: number; same?: boolean; error?: string };
  t.is(out.error, undefined);
  t.is(out.sent, total);
  t.is(out.received, total, 'every byte came back through both agents');
  t.true(out.same, 'and in order, unchanged');
  const m = await mesh.agent('node-1').telemetry.metrics();
  t.regex(m, /istio_tcp_sent_bytes_total\{reporter="source",source_workload="client",.*connection_security_policy="mutual_tls".*\} \d{8,}/);
});

serial('a DENY applied to an open HBONE connection closes it', async (t) => {
  const conn = await mesh.openTcp(client, v1.ip, 9090);
  t.is(await conn.roundTrip('one'), 'one');
  await mesh.setPolicies([deny('cut-client', { principals: [{ exact: 'cluster.local/ns/default/sa/client' }] })]);
  await conn.closed;
  t.pass();
  await mesh.setPolicies([]);
});

/** An HBONE client run from the test process (node:http2), dialing from inside the unenrolled pod's netns. */
async function directConnect(o: { certFor?: 'mesh' | 'foreign'; expect?: string; authority: string; headers?: Record<string, string> }): Promise<string> {
  const pki = o.certFor === 'foreign' ? makeForeignPki() : mesh.control.pki;
  const source = await pki.issue(pki.id('default', 'tester'));
  try {
    const socket = new Socket({ fd: await native.connectInNetns(legacy.netnsPath, { address: v1.ip, port: 15008 }), readable: true, writable: true });
    const s = await hboneConnect({
      socket, source, authority: o.authority, headers: o.headers ?? {},
      expected: [{ trustDomain: 'cluster.local', namespace: 'default', serviceAccount: o.expect ?? 'echo' }],
    });
    s.close();
    return s.status === 200 ? 'ok' : `status ${s.status}`;
  } catch (e) {
    return (e as Error).message;
  }
}

serial('HBONE server: CONNECT to another IP or to an agent port is refused with 400', async (t) => {
  t.is(await directConnect({ authority: `${v1.ip}:8080` }), 'ok', 'positive control');
  t.regex(await directConnect({ authority: `${v2.ip}:8080` }), /status 400/);
  t.regex(await directConnect({ authority: `${v1.ip}:15006` }), /status 400/);
  t.regex(await directConnect({ authority: `${v1.ip}:15008` }), /status 400/);
  // A malformed authority never leaves the client (the server's 400 for one on the wire is covered
  // by test/native/engine.test.ts with a raw HTTP/2 client).
  t.regex(await directConnect({ authority: 'not-an-address' }), /hbone authority "not-an-address"/);
});

serial('a peer cannot mint metric label values through Forwarded host= (only known Services become labels)', async (t) => {
  // Every distinct label value is a new series kept for the life of the agent: a peer choosing
  // them could grow the agent's memory without bound (the Linkerd proxy metrics advisory).
  const minted = `minted-${process.pid}.evil.svc.cluster.local`;
  t.is(await directConnect({ authority: `${v1.ip}:8080`, headers: { forwarded: `for="10.9.9.9:1";host=${minted}` } }), 'ok');
  const refused = `refused-${process.pid}.evil.svc.cluster.local`;
  t.regex(await directConnect({ authority: `${v1.ip}:15006`, headers: { forwarded: `for="10.9.9.9:1";host=${refused}` } }), /status 400/);
  const m = await mesh.agent('node-2').telemetry.metrics();
  t.false(m.includes(minted), 'an unknown host from a peer became a label value');
  t.false(m.includes(refused), 'an unknown host from a refused peer became a label value');
  t.regex(m, /source_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/tester"/, 'the connections were counted');
});

serial('HBONE server refuses a client certificate from another trust domain', async (t) => {
  t.not(await directConnect({ certFor: 'foreign', authority: `${v1.ip}:8080` }), 'ok');
});

serial('HBONE client refuses a server presenting the wrong identity', async (t) => {
  t.regex(await directConnect({ expect: 'somebody-else', authority: `${v1.ip}:8080` }), /presented spiffe:\/\/cluster.local\/ns\/default\/sa\/echo, expected .*somebody-else/);
});

serial('control plane down: a valid certificate stays in use; a pod without one is not started (its CNI ADD waits, then is refused) until it has one', async (t) => {
  mesh.control.setDown(true);
  let late: Pod | undefined;
  try {
    t.true((await mesh.http(client, v1.ip, 8080)).ok, 'existing identities keep working');
    await t.throwsAsync(mesh.pod({ name: 'late', node: 'node-1', ambient: true }), { message: /pod not started \(it would run outside the mesh\): no certificate yet for spiffe:\/\/cluster.local\/ns\/default\/sa\/late/ });
    late = mesh.cluster.pods.find((p) => p.name === 'late')!;
    // had the runtime started it anyway, it would be captured and refused, never plaintext
    t.deepEqual(mesh.agent('node-1').enrolledPods().filter((p) => p.name === 'late').length, 1, 'captured while its ADD waited');
    const r = await mesh.http(late, v1.ip, 8080);
    t.false(r.ok, 'no certificate: refused, never plaintext');
  } finally {
    mesh.control.setDown(false);
  }
  // the runtime retries the ADD: now the certificate can be issued and the pod starts in the mesh
  const pod = late!;
  const fd = native.openNetns(pod.netnsPath);
  try {
    await sendCniRequest({ native, path: mesh.agent('node-1').socketPath }, { op: 'ADD', name: pod.name, namespace: pod.namespace, ip: pod.ip }, fd);
  } finally {
    native.closeFd(fd);
  }
  const ok = await mesh.http(pod, v1.ip, 8080);
  t.true(ok.ok, ok.error);
});