import test from 'ava';
import { execFileSync } from 'node:child_process';
import { parseAllDocuments } from 'yaml';
import { isMeshError } from '../../src/core/index.js';
import { createCluster, listNetns, startEchoServer, type Cluster, type Pod } from '../../src/local/index.js';
import { isRoot, rootTest } from '../helpers/root.js';

const root = isRoot;
const nt = rootTest;

/**
 * Connects from `from` to ip:port with a raw TCP socket, sends a line and prints what comes back.
 * Runs a plain node one-liner in the pod: no DNS, no tools beyond node.
 */
async function tcpRoundTrip(cluster: Cluster, from: Pod, ip: string, port: number, payload: string): Promise<string> {
  const script = `
    const s = require('net').connect({ host: process.argv[1], port: Number(process.argv[2]) });
    let got = '';
    s.setTimeout(10000, () => { console.error('timeout'); process.exit(3); });
    s.on('connect', () => s.write(process.argv[3]));
    s.on('data', (d) => { got += d; if (got.length >= process.argv[3].length) { process.stdout.write(got); s.end(); } });
    s.on('error', (e) => { console.error(e.message); process.exit(4); });`;
  const r = await cluster.exec(from, [process.execPath, '-e', script, ip, String(port), payload]);
  if (r.code !== 0) throw new Error(`tcp from ${from.name} to ${ip}:${port} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

async function httpGet(cluster: Cluster, from: Pod, url: string): Promise<Record<string, unknown>> {
  const script = `fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t), (e) => { console.error(e.message); process.exit(4); })`;
  const r = await cluster.exec(from, [process.execPath, '-e', script, url]);
  if (r.code !== 0) throw new Error(`GET ${url} from ${from.name} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Root-namespace links with the names the cluster uses inside its namespaces (there must be none of ours). */
function rootLinks(): string[] {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n').filter(Boolean).map((l) => l.split(':')[1]!.trim().replace(/@.*$/, ''))
    .filter((n) => /^(vn\d+|vp\d+|br0)$/.test(n)).sort();
}

let cluster: Cluster;
let a: Pod; // node-1
let b: Pod; // node-2
let c: Pod; // node-1
let linksBefore: string[];

test.before(async () => {
  if (!root) return;
  linksBefore = rootLinks();
  cluster = await createCluster({ nodes: 2 });
  a = await cluster.addPod({ name: 'a', node: 'node-1', labels: { app: 'a' } });
  b = await cluster.addPod({ name: 'b', namespace: 'shop', node: 'node-2', labels: { app: 'b' }, serviceAccount: 'bsa' });
  c = await cluster.addPod({ name: 'c', node: 'node-1' });
  await Promise.all([startEchoServer(cluster, b), startEchoServer(cluster, c)]);
});

test.after.always(async () => {
  if (cluster) await cluster.destroy();
});

nt('pods get addresses from their node CIDR and namespaces named ambit-<pid36>-', (t) => {
  t.regex(a.ip, /^10\.244\.1\.\d+$/);
  t.regex(c.ip, /^10\.244\.1\.\d+$/);
  t.regex(b.ip, /^10\.244\.2\.\d+$/);
  t.not(a.ip, c.ip);
  t.true(a.netnsName.startsWith(`ambit-${process.pid.toString(36)}-`));
  t.is(a.netnsPath, `/run/netns/${a.netnsName}`);
});

nt('a pod reaches a pod on another node by IP (TCP echo)', async (t) => {
  t.is(await tcpRoundTrip(cluster, a, b.ip, 9090, 'hello-across'), 'hello-across');
});

nt('a pod reaches a pod on the same node by IP (TCP echo)', async (t) => {
  t.is(await tcpRoundTrip(cluster, a, c.ip, 9090, 'hello-same'), 'hello-same');
});

nt('there is no NAT: the server sees the client pod IP', async (t) => {
  const res = await httpGet(cluster, a, `http://${b.ip}:8080/x?y=1`);
  t.is(res.remoteAddress, a.ip);
  t.is(res.podIP, b.ip);
  t.is(res.name, 'b');
  t.is(res.path, '/x');
});

nt('a process in the underlay reaches pods on every node', async (t) => {
  const r = await cluster.exec({ underlay: true }, [process.execPath, '-e',
    `fetch(process.argv[1]).then((r) => r.json()).then((j) => process.stdout.write(j.remoteAddress))`, `http://${c.ip}:8080/`]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, cluster.underlay.hostIP);
});

nt('unknown node and duplicate or malformed pod names are clear errors', async (t) => {
  const unknown = await t.throwsAsync(cluster.addPod({ name: 'z', node: 'node-9' }));
  t.true(isMeshError(unknown, 'AMBIT_CONFIG_INVALID'));
  t.regex(unknown!.message, /pod z: node: unknown node "node-9"; nodes are node-1, node-2/);
  const dup = await t.throwsAsync(cluster.addPod({ name: 'a', node: 'node-2' }));
  t.regex(dup!.message, /pod a: name: a pod with this name already exists/);
  const bad = await t.throwsAsync(cluster.addPod({ name: 'Bad_Name', node: 'node-1' }));
  t.regex(bad!.message, /name: "Bad_Name" is not a DNS-1123 label/);
  const badLabel = await t.throwsAsync(cluster.addPod({ name: 'l', node: 'node-1', labels: { app: 'x y' } }));
  t.regex(badLabel!.message, /pod l: labels\.app: invalid label value/);
  // none of the failed attempts left a namespace behind (other tests add pods meanwhile, so
  // look for these names only)
  const names = await listNetns();
  t.false(names.includes(`${cluster.prefix}pod-z`));
  t.false(names.includes(`${cluster.prefix}pod-l`));
  t.false(names.some((n) => n.startsWith(cluster.prefix) && n.toLowerCase().includes('bad_name')));
  t.is(names.filter((n) => n === `${cluster.prefix}pod-a`).length, 1);
});

nt('services get cluster IPs from 10.96.0.0/16 and bad ports are rejected', (t) => {
  const s = cluster.addService({ name: 'b', namespace: 'shop', selector: { app: 'b' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
  t.regex(s.clusterIP, /^10\.96\.\d+\.\d+$/);
  const fixed = cluster.addService({ name: 'fixed', selector: { app: 'a' }, ports: [{ port: 81 }], clusterIP: '10.96.7.7' });
  t.is(fixed.clusterIP, '10.96.7.7');
  t.is(fixed.ports[0]!.targetPort, 81);
  t.throws(() => cluster.addService({ name: 'again', selector: {}, ports: [{ port: 1 }], clusterIP: '10.96.7.7' }),
    { message: /clusterIP: 10\.96\.7\.7 is already used/ });
  t.throws(() => cluster.addService({ name: 'p', selector: {}, ports: [{ port: 70000 }] }),
    { message: /service p: ports\[0\]\.port: must be an integer 1\.\.65535/ });
  t.throws(() => cluster.addService({ name: 'b', namespace: 'shop', selector: {}, ports: [{ port: 1 }] }),
    { message: /service shop\/b: name: a service with this name already exists/ });
});

nt('toYaml describes the live cluster', (t) => {
  cluster.setNamespaceLabels('shop', { 'istio.io/dataplane-mode': 'ambient' });
  const docs = parseAllDocuments(cluster.toYaml()).map((d) => d.toJS() as {
    kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> };
    spec?: Record<string, unknown>; status?: Record<string, unknown>;
  });
  const pb = docs.find((d) => d.kind === 'Pod' && d.metadata.name === 'b')!;
  t.is(pb.metadata.namespace, 'shop');
  t.is(pb.status?.podIP, b.ip);
  t.is(pb.spec?.nodeName, 'node-2');
  t.is(pb.spec?.serviceAccountName, 'bsa');
  const ns = docs.find((d) => d.kind === 'Namespace' && d.metadata.name === 'shop')!;
  t.is(ns.metadata.labels?.['istio.io/dataplane-mode'], 'ambient');
});

nt('removePod deletes the namespace and the next pod gets a fresh address', async (t) => {
  const tmp = await cluster.addPod({ name: 'tmp', node: 'node-2' });
  await cluster.removePod('tmp');
  t.false((await listNetns()).includes(tmp.netnsName));
  const next = await cluster.addPod({ name: 'tmp2', node: 'node-2' });
  t.not(next.ip, tmp.ip);
  t.throws(() => cluster.pod('tmp'), { message: /pod tmp: name: no such pod/ });
});

nt('destroy removes every namespace, leaves nothing in the root namespace, and is idempotent', async (t) => {
  const other = await createCluster({ nodes: ['alpha', 'beta', 'gamma'], cleanupStale: false });
  await other.addPod({ name: 'p1', node: 'gamma' });
  const server = other.spawn('p1', ['sleep', '1000']);
  const exited = new Promise((resolve) => server.once('exit', resolve));
  t.is(other.netnsNames.length, 5);
  await other.destroy();
  await other.destroy();
  await exited;
  const left = (await listNetns()).filter((n) => n.startsWith(other.prefix));
  t.deepEqual(left, []);
  t.deepEqual(rootLinks(), linksBefore);
  await t.throwsAsync(other.addPod({ name: 'p2', node: 'alpha' }), { message: /already destroyed/ });
});

nt('bad cluster options are rejected before anything is created', async (t) => {
  await t.throwsAsync(createCluster({ nodes: 0 }), { message: /cluster Kubernetes: nodes: must be 1\.\.200/ });
  await t.throwsAsync(createCluster({ nodes: ['a', 'a'] }), { message: /node "a" listed twice/ });
  await t.throwsAsync(createCluster({ nodes: 1, podCidrBase: '10.0.0.0/8' }), { message: /podCidrBase: "10\.0\.0\.0\/8": prefix length/ });
});

nt('with ipv6, pods also reach each other across nodes over IPv6 ULA addresses', async (t) => {
  const v6 = await createCluster({ nodes: 2, ipv6: true, cleanupStale: false });
  t.teardown(() => v6.destroy());
  const x = await v6.addPod({ name: 'x', node: 'node-1' });
  const y = await v6.addPod({ name: 'y', node: 'node-2' });
  t.is(x.ips.length, 2);
  t.regex(x.ips[1]!, /^fd00:a4b1:1::[0-9a-f]+$/);
  await startEchoServer(v6, y);
  const res = await httpGet(v6, x, `http://[${y.ips[1]}]:8080/six`);
  t.is(res.remoteAddress, x.ips[1]);
  t.is(res.localAddress, y.ips[1]);
});
