/**
 * A real waypoint in a mesh of network namespaces: two node agents, the in-process control
 * plane, echo v1 (node-1) and v2 (node-2) behind Service echo (port 80 named http, bound to the
 * waypoint with istio.io/use-waypoint), the waypoint's pod on node-2 with the program using the
 * engine's HBONE. Client requests go client -> agent -> waypoint -> agent -> echo.
 */
import test from 'ava';
import type { Pod } from '../../src/local/index.js';
import { setLogLevel } from '../../src/core/index.js';
import { createMesh, type Mesh } from '../helpers/mesh.js';
import { addWaypoint, type TestWaypoint } from '../helpers/waypoint-mesh.js';
import { isRoot, rootSerial } from '../helpers/root.js';

const root = isRoot;
const serial = rootSerial;
setLogLevel((process.env.WP_LOG as 'info') ?? 'warn');

let mesh: Mesh;
let client: Pod;
let other: Pod;
let wp: TestWaypoint;
let vip = '';

const GRPC = new URL('../helpers/grpc-echo.ts', import.meta.url).pathname;
const TSX = import.meta.resolve('tsx');

// N requests on one keep-alive connection; prints {codes: {status: n}, names: {name: n}, last: body}
const LOAD = `
const http = require('node:http');
const [host, port, path, n, headersJson] = process.argv.slice(1);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const headers = JSON.parse(headersJson || '{}');
const codes = {}; const names = {}; let last = null; let errors = 0;
(async () => {
  for (let i = 0; i < Number(n); i++) {
    await new Promise((resolve) => {
      const req = http.get({ host, port: Number(port), path, agent, headers, timeout: 15000 }, (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => {
          codes[res.statusCode] = (codes[res.statusCode] || 0) + 1;
          try { const o = JSON.parse(b); names[o.version] = (names[o.version] || 0) + 1; last = o; } catch { last = b.slice(0, 300); }
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => { errors++; codes[e.code || e.message] = (codes[e.code || e.message] || 0) + 1; resolve(); });
    });
  }
  console.log(JSON.stringify({ codes, names, last, errors }));
  agent.destroy();
})();
`;

interface Load { codes: Record<string, number>; names: Record<string, number>; last: { name?: string; headers?: Record<string, string> } | string | null; errors: number }

async function load(from: Pod, path: string, n: number, headers: Record<string, string> = {}): Promise<Load> {
  const r = await mesh.cluster.exec(from, [process.execPath, '-e', LOAD, vip, '80', path, String(n), JSON.stringify(headers)], { timeoutMs: 120_000 });
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Load;
}

async function grpc(from: Pod, mode: string, arg: string, timeout?: string): Promise<{ status?: number; grpcStatus?: string; messages?: string[]; error?: string }> {
  const r = await mesh.cluster.exec(from, [process.execPath, '--import', TSX, GRPC, 'client', vip, '50051', mode, arg, ...(timeout ? [timeout] : [])], { timeoutMs: 30_000 });
  return JSON.parse(r.stdout.trim().split('\n')[0] ?? '{}') as { status?: number; grpcStatus?: string; messages?: string[]; error?: string };
}

const SEED = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: echo, namespace: default }
spec:
  hosts: [echo]
  http:
    - match: [{ headers: { end-user: { exact: jason } } }]
      route: [{ destination: { host: echo, subset: v2 } }]
    - route:
        - { destination: { host: echo, subset: v1 }, weight: 90 }
        - { destination: { host: echo, subset: v2 }, weight: 10 }
      retries: { attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset,connect-failure,retriable-4xx" }
      timeout: 10s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: echo, namespace: default }
spec:
  host: echo
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
`;

test.before(async () => {
  if (!root) return;
  mesh = await createMesh(undefined, { nodes: 2, control: 'real' });
  await mesh.setNamespaceLabels('default', { 'istio.io/dataplane-mode': 'ambient' });
  client = await mesh.pod({ name: 'client', node: 'node-1' });
  other = await mesh.pod({ name: 'other', node: 'node-1' });
  const v1 = await mesh.pod({ name: 'echo-v1', node: 'node-1', labels: { app: 'echo', version: 'v1' }, serviceAccount: 'echo' });
  const v2 = await mesh.pod({ name: 'echo-v2', node: 'node-2', labels: { app: 'echo', version: 'v2' }, serviceAccount: 'echo' });
  await Promise.all([mesh.echo(v1, 'v1'), mesh.echo(v2, 'v2')]);
  for (const [p, n] of [[v1, 'v1'], [v2, 'v2']] as const) {
    const child = mesh.cluster.spawn(p, [process.execPath, '--import', TSX, GRPC, 'server', '50051', n]);
    await new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()));
  }
  const svc = mesh.cluster.addService({
    name: 'echo', namespace: 'default', selector: { app: 'echo' }, labels: { 'istio.io/use-waypoint': 'waypoint' },
    ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }, { name: 'grpc', port: 50051, targetPort: 50051 }, { name: 'tcp', port: 9090, targetPort: 9090 }],
  });
  vip = svc.clusterIP;
  wp = await addWaypoint(mesh, { node: 'node-2' });
  await wp.app.whenConfig((s) => s.service('default/echo.default.svc.cluster.local')?.waypoint !== undefined);
});
test.after.always(async () => { await wp?.stop(0); await mesh?.destroy(); });

serial('HTTP through the waypoint; the destination agent sees the waypoint, the waypoint sees the client', async (t) => {
  const r = await load(client, '/hello', 4);
  t.deepEqual(r.codes, { 200: 4 }, JSON.stringify(r));
  const last = r.last as { headers: Record<string, string> };
  t.is(last.headers['x-forwarded-client-cert'], 'By=spiffe://cluster.local/ns/default/sa/waypoint;URI=spiffe://cluster.local/ns/default/sa/client');
  t.regex(last.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/);
  t.regex(last.headers.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  const wm = await wp.app.telemetry.metrics();
  t.regex(wm, /istio_requests_total\{reporter="waypoint",source_workload="client",[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/client"[^}]*destination_service="echo.default.svc.cluster.local"[^}]*destination_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/echo"[^}]*request_protocol="http",response_code="200"[^}]*connection_security_policy="mutual_tls"\} [1-9]/);
  const am = (await mesh.agent('node-2').telemetry.metrics()) + (await mesh.agent('node-1').telemetry.metrics());
  t.regex(am, /istio_tcp_connections_opened_total\{reporter="destination",[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/waypoint"/);
});

serial('the seed VirtualService and DestinationRule: header canary, 90/10 within 5 % over 1,000 requests', async (t) => {
  await mesh.applyYaml(wp.yaml + SEED, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => (l7.get('default/echo.default.svc.cluster.local')?.http.length ?? 0) === 2);
  const jason = await load(client, '/', 20, { 'end-user': 'jason' });
  t.deepEqual(jason.names, { v2: 20 });
  let t0 = Date.now();
  const warm = await load(client, '/', 50);
  t.log('50 requests', Date.now() - t0, 'ms', JSON.stringify(warm.codes));
  t0 = Date.now();
  const split = await load(client, '/', 1000);
  t.log('1000 requests', Date.now() - t0, 'ms');
  t.is(split.codes['200'], 1000, JSON.stringify(split.codes));
  const v2 = split.names.v2 ?? 0;
  t.true(v2 >= 50 && v2 <= 150, `v2 got ${v2} of 1000 (want 100 +- 50)`);
});

serial('retries turn a flaky backend\'s 503s into 200s; without them the 503 arrives', async (t) => {
  await mesh.applyYaml(wp.yaml + SEED, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => l7.get('default/echo.default.svc.cluster.local')?.http[1]?.action.retries !== undefined);
  const r = await load(client, '/?fail=first', 20);
  t.deepEqual(r.codes, { 200: 20 });
  // no retries written at all would leave Istio's default policy, which retries a 503 too
  const noRetry = SEED.replace(/ {6}retries:.*\n/, '      retries: { attempts: 0 }\n');
  await mesh.applyYaml(wp.yaml + noRetry, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => (l7.get('default/echo.default.svc.cluster.local')?.http[1]?.action.retries?.attempts ?? 0) === 0);
  const plain = await load(client, '/?fail=first', 5);
  t.deepEqual(plain.codes, { 503: 5 });
});

serial('a route timeout gives 504 (UT)', async (t) => {
  await mesh.applyYaml(wp.yaml + SEED.replace('timeout: 10s', 'timeout: 300ms'), { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => l7.get('default/echo.default.svc.cluster.local')?.http[1]?.action.timeoutMs === 300);
  const r = await load(client, '/?delayMs=3000', 1);
  t.deepEqual(r.codes, { 504: 1 });
  t.regex(await wp.app.telemetry.metrics(), /istio_requests_total\{[^}]*response_code="504"[^}]*response_flags="UT"/);
});

serial('a bad route is refused by the control plane naming the field; the waypoint keeps the last good config', async (t) => {
  await mesh.applyYaml(wp.yaml + SEED, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => l7.get('default/echo.default.svc.cluster.local')?.http[1]?.action.timeoutMs === 10_000);
  const bad = SEED.replace('exact: jason', 'regex: "(?=lookahead)jason"');
  await mesh.applyYaml(wp.yaml + bad, { waitForAgents: false });
  const rejected = mesh.real!.cp.current?.rejected.find((r) => r.kind === 'VirtualService' && r.name === 'echo');
  t.truthy(rejected, 'the control plane rejected the VirtualService');
  t.regex(rejected?.field ?? '', /http\[0\]\.match\[0\]\.headers/);
  const jason = await load(client, '/', 10, { 'end-user': 'jason' });
  t.deepEqual(jason.names, { v2: 10 });
});

serial('gRPC unary (with grpc-timeout) and bidirectional streaming through the waypoint', async (t) => {
  const u = await grpc(client, 'unary', 'hi');
  t.is(u.status, 200, JSON.stringify(u));
  t.is(u.grpcStatus, '0');
  t.true(u.messages?.[0] === 'v1:hi' || u.messages?.[0] === 'v2:hi', JSON.stringify(u));
  const s = await grpc(client, 'stream', 'a,b,c,d');
  t.is(s.grpcStatus, '0', JSON.stringify(s));
  t.is(s.messages?.length, 4);
  t.deepEqual(s.messages?.map((m) => m.split(':')[1]), ['a', 'b', 'c', 'd']);
  const late = await grpc(client, 'unary', 'sleep:3000', '200m');
  // the deadline passed after the response headers: the stream is cut, never left hanging
  t.true(late.error !== undefined || (late.grpcStatus !== undefined && late.grpcStatus !== '0'), JSON.stringify(late));
  t.regex(await wp.app.telemetry.metrics(), /istio_requests_total\{[^}]*request_protocol="grpc"[^}]*response_flags="UT"/);
});

serial('a WebSocket echo through the waypoint', async (t) => {
  const script = `
const WebSocket = require(${JSON.stringify(new URL('../../node_modules/ws/index.js', import.meta.url).pathname)});
const ws = new WebSocket('ws://${vip}/chat');
const got = [];
ws.on('open', () => ws.send('one'));
ws.on('message', (d) => { got.push(d.toString()); if (got.length === 1) ws.send('two'); else { console.log(JSON.stringify(got)); ws.close(); } });
ws.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(0); });
setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', got })); process.exit(0); }, 10000).unref();
`;
  const r = await mesh.cluster.exec(client, [process.execPath, '-e', script], { timeoutMs: 20_000 });
  const got = JSON.parse(r.stdout.trim().split('\n')[0] ?? '[]') as string[];
  t.is(got.length, 2, r.stdout + r.stderr);
  t.regex(got[0]!, /^echo-v[12]:one$/);
  t.regex(got[1]!, /^echo-v[12]:two$/);
});

serial('h2c with prior knowledge through the waypoint', async (t) => {
  const script = `
const http2 = require('node:http2');
const s = http2.connect('http://${vip}:80');
const r = s.request({ ':path': '/h2', 'end-user': 'jason' });
let b = ''; let st = 0;
r.on('response', (h) => { st = h[':status']; });
r.on('data', (d) => { b += d; });
r.on('end', () => { console.log(JSON.stringify({ status: st, body: JSON.parse(b) })); s.close(); });
r.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); s.close(); });
r.end();
`;
  const r = await mesh.cluster.exec(client, [process.execPath, '-e', script], { timeoutMs: 20_000 });
  const o = JSON.parse(r.stdout.trim().split('\n')[0] ?? '{}') as { status: number; body: { name: string; httpVersion: string } };
  t.is(o.status, 200, r.stdout + r.stderr);
  t.is(o.body.name, 'echo-v2');
  // the service port is `http`: HTTP/1.1 to the backend
  t.is(o.body.httpVersion, '1.1');
});

serial('TCP ports are proxied as TCP', async (t) => {
  const r = await mesh.tcp(other, vip, 9090, 'opaque-bytes');
  t.deepEqual(r, { ok: true, data: 'opaque-bytes' });
  t.regex(await wp.app.telemetry.metrics(), /istio_tcp_connections_opened_total\{reporter="waypoint",source_workload="other"/);
});

const POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: default }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin", "/admin/*"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: only-client, namespace: default }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: ALLOW
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/default/sa/client"] } }] }]
---
`;

serial('L7 authorization at the waypoint: DENY by path (normalization bypasses too), ALLOW by the original client\'s identity', async (t) => {
  await mesh.applyYaml(wp.yaml + SEED + POLICY, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => (l7.get('default/echo.default.svc.cluster.local')?.authorization?.length ?? 0) === 2);
  t.deepEqual((await load(client, '/ok', 2)).codes, { 200: 2 });
  for (const p of ['/admin', '//admin', '/./admin', '/a/../admin', '/%61dmin', '/admin/x']) {
    const r = await load(client, p, 1);
    t.deepEqual(r.codes, { 403: 1 }, p);
    t.is(r.last, 'RBAC: access denied');
  }
  // another identity: the ALLOW policy names only the client (the waypoint sees the original caller)
  t.deepEqual((await load(other, '/ok', 2)).codes, { 403: 2 });
  await mesh.applyYaml(wp.yaml + SEED, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => (l7.get('default/echo.default.svc.cluster.local')?.authorization?.length ?? 0) === 0);
  t.deepEqual((await load(other, '/admin', 1)).codes, { 200: 1 });
});

const TCP_POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: tcp-only-client, namespace: default }
spec:
  targetRefs: [{ kind: Service, group: "", name: echo }]
  action: ALLOW
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/default/sa/client"] } }], to: [{ operation: { ports: ["9090"] } }] }]
---
`;

serial('TCP ports at the waypoint enforce the targetRefs policies (L4 fields): the client passes, another identity is refused', async (t) => {
  await mesh.applyYaml(wp.yaml + SEED + TCP_POLICY, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => (l7.get('default/echo.default.svc.cluster.local')?.authorization?.length ?? 0) === 1);
  t.deepEqual(await mesh.tcp(client, vip, 9090, 'from-client'), { ok: true, data: 'from-client' });
  const refused = await mesh.tcp(other, vip, 9090, 'from-other');
  t.not(refused.data, 'from-other', JSON.stringify(refused));
  await mesh.applyYaml(wp.yaml + SEED, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => (l7.get('default/echo.default.svc.cluster.local')?.authorization?.length ?? 0) === 0);
  t.deepEqual(await mesh.tcp(other, vip, 9090, 'again'), { ok: true, data: 'again' });
});

const MIRROR = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: echo, namespace: default }
spec:
  hosts: [echo]
  http:
    - route: [{ destination: { host: echo, subset: v1 } }]
      mirror: { host: echo, subset: v2 }
      mirrorPercentage: { value: 100 }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: echo, namespace: default }
spec:
  host: echo
  trafficPolicy: { connectionPool: { http: { maxRequestsPerConnection: 1 } } }
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
`;

serial('a VirtualService mirror sends copies to v2 over HBONE while v1 answers; maxRequestsPerConnection 1 (one upstream stream per request) still serves', async (t) => {
  const KEY = 'default/echo.default.svc.cluster.local';
  const sent = async (): Promise<number> => Number(/ambit_waypoint_mirror_requests_total\{result="sent"\} (\d+)/.exec(await wp.app.telemetry.metrics())?.[1] ?? 0);
  const before = await sent();
  await mesh.applyYaml(wp.yaml + MIRROR, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => l7.get(KEY)?.http[0]?.action.mirrors.length === 1);
  const r = await load(client, '/mirrored', 10);
  t.deepEqual(r.codes, { 200: 10 }, JSON.stringify(r));
  t.deepEqual(r.names, { v1: 10 });
  // the copies' answers come back on their own (nothing waits for them): count them as they arrive, bounded
  for (let i = 0; i < 500 && await sent() < before + 10; i++) await new Promise((res) => setTimeout(res, 20));
  t.is(await sent(), before + 10);
  await mesh.applyYaml(wp.yaml + SEED, { waitForAgents: false });
  await wp.app.whenConfig((_s, l7) => l7.get(KEY)?.http.length === 2);
});

serial('SIGTERM (terminate): not ready at once, yet new connections and requests are served through the grace', async (t) => {
  const readiness = async (): Promise<number> => (await fetch(`http://127.0.0.1:${wp.app.ports.readiness}/healthz/ready`)).status;
  t.is(await readiness(), 200);
  // a grace longer than the test: the next test's stop() ends it (a stop during the grace drains at once)
  void wp.app.terminate(600_000, 1000);
  t.false(wp.app.isReady());
  t.is(await readiness(), 503, 'the endpoint is withdrawn at once');
  // agents that have not seen the withdrawal keep sending: new client connections, new HBONE streams
  const [a, b] = await Promise.all([load(client, '/in-grace', 5), load(other, '/in-grace', 5)]);
  t.deepEqual(a.codes, { 200: 5 }, JSON.stringify(a));
  t.deepEqual(b.codes, { 200: 5 }, JSON.stringify(b));
});

serial('a waypoint killed mid-request leaves no client hanging', async (t) => {
  const pending = load(client, '/?delayMs=20000', 1);
  // in flight: the waypoint counts it as an active request (checked, not slept on)
  const active = async (): Promise<boolean> => /ambit_waypoint_active_requests\{protocol="http"\} [1-9]/.test(await wp.app.telemetry.metrics());
  while (!(await active())) await new Promise((r) => setTimeout(r, 20));
  await wp.stop(0);
  const r = await pending;
  t.false('200' in r.codes, JSON.stringify(r));
  t.true(r.errors === 1 || (r.codes['503'] ?? 0) + (r.codes['502'] ?? 0) === 1, JSON.stringify(r));
});
