/**
 * A port the waypoint proxies as opaque TCP, on loopback (test/helpers/waypoint-harness.ts): the Service's
 * targetRefs AuthorizationPolicies apply with TCP semantics before anything is dialled; a refused connection is
 * closed without a byte, an allowed one carries bytes both ways.
 */
import test from 'ava';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { setLogLevel } from '../../src/core/index.js';
import type { L7Authorization, ServiceL7 } from '../../src/model/l7.js';
import { CLIENT_ID, harness } from '../helpers/waypoint-harness.js';

setLogLevel('warn');

const KEY = 'default/echo.default.svc.cluster.local';
const OTHER = 'spiffe://cluster.local/ns/other/sa/intruder';

/** Sends `ping`, resolves with what came back before the connection closed. */
function exchange(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let out = '';
    s.on('data', (d: Buffer) => { out += d.toString(); if (out === 'echo:ping') s.end(); });
    s.on('error', () => undefined);
    s.once('close', () => resolve(out));
    s.write('ping');
  });
}

test('TCP port at the waypoint: L4 authorization (principals, ports, HTTP-only fields) before dialling, fail closed', async (t) => {
  const sockets = new Set<Socket>();
  const echo = createServer((s) => { sockets.add(s); s.on('data', (d: Buffer) => s.write(`echo:${d.toString()}`)); s.on('end', () => s.end()); });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const h = await harness({ ports: [{ port: 9000, targetPort: 9000, name: 'tcp-db', appProtocol: 'tcp' }], endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: (echo.address() as AddressInfo).port }] });
  t.teardown(async () => { await h.close(); for (const s of sockets) s.destroy(); echo.close(); });
  const client = await h.port('10.96.0.10:9000');
  const intruder = await h.port('10.96.0.10:9000', OTHER);
  const set = (...authorization: L7Authorization[]): void => h.set({ service: KEY, http: [], grpc: [], authorization } satisfies ServiceL7);
  const allow = (rules: L7Authorization['rules']): L7Authorization => ({ name: 'allow', namespace: 'default', action: 'allow', dryRun: false, rules });
  const deny = (rules: L7Authorization['rules']): L7Authorization => ({ name: 'deny', namespace: 'default', action: 'deny', dryRun: false, rules });
  const me = { exact: CLIENT_ID.slice('spiffe://'.length) };

  // no policy: open
  t.is(await exchange(client), 'echo:ping');
  // ALLOW from the client only
  set(allow([{ from: [{ principals: [me] }] }]));
  t.is(await exchange(client), 'echo:ping');
  let dialled = h.transport.connects.length;
  t.is(await exchange(intruder), '');
  t.is(h.transport.connects.length, dialled, 'a refused connection dials nothing');
  // ALLOW on another port, and ALLOW that names an HTTP method: no rule can match on TCP
  set(allow([{ to: [{ ports: [80] }] }]));
  t.is(await exchange(client), '');
  set(allow([{ from: [{ principals: [me] }], to: [{ methods: [{ exact: 'GET' }] }] }]));
  t.is(await exchange(client), '');
  set(allow([{ to: [{ ports: [9000] }] }]));
  t.is(await exchange(client), 'echo:ping');
  // DENY naming only an HTTP path: on TCP it denies every connection of that source
  set(deny([{ from: [{ principals: [me] }], to: [{ paths: [{ exact: '/admin' }] }] }]));
  dialled = h.transport.connects.length;
  t.is(await exchange(client), '');
  t.is(await exchange(intruder), 'echo:ping');
  t.is(h.transport.connects.length, dialled + 1);
  t.regex(await h.telemetry.metrics(), /istio_tcp_connections_closed_total\{[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/other\/sa\/intruder"/);
});

test('TCP port at the waypoint: the DestinationRule\'s consistent hash on the source IP keeps a client on one endpoint', async (t) => {
  const servers = await Promise.all(['a', 'b', 'c'].map(async (name) => {
    const sockets = new Set<Socket>();
    const srv = createServer((s) => { sockets.add(s); s.on('data', () => s.end(name)); });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return { name, port: (srv.address() as AddressInfo).port, close: () => { for (const s of sockets) s.destroy(); srv.close(); } };
  }));
  const h = await harness({ ports: [{ port: 9000, targetPort: 9000, name: 'tcp-db', appProtocol: 'tcp' }], endpoints: servers.map((s, i) => ({ name: `echo-${s.name}`, ip: `10.244.1.${i + 3}`, port: s.port })) });
  t.teardown(async () => { await h.close(); for (const s of servers) s.close(); });
  const port = await h.port('10.96.0.10:9000');
  const name = (): Promise<string> => new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let out = '';
    s.on('data', (d: Buffer) => { out += d.toString(); });
    s.on('error', () => undefined);
    s.once('close', () => resolve(out));
    s.write('who');
  });
  h.set({ service: KEY, http: [], grpc: [], destination: { origin: { kind: 'DestinationRule', namespace: 'default', name: 'echo', rule: 0 }, trafficPolicy: { consistentHash: { key: { sourceIp: true }, algorithm: 'ring' } }, subsets: [] } });
  const names = new Set<string>();
  for (let i = 0; i < 24; i++) names.add(await name());
  t.is(names.size, 1, [...names].join(','));
  t.true(['a', 'b', 'c'].includes([...names][0]!));
});

test('TCP port at the waypoint: outlier detection ejects an endpoint whose connects fail', async (t) => {
  const sockets = new Set<Socket>();
  const srv = createServer((s) => { sockets.add(s); s.on('data', () => s.end('up')); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const up = (srv.address() as AddressInfo).port;
  const h = await harness({ ports: [{ port: 9000, targetPort: 9000, name: 'tcp-db', appProtocol: 'tcp' }], endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: up }, { name: 'echo-b', ip: '10.244.1.4', port: up }] });
  t.teardown(async () => { await h.close(); for (const s of sockets) s.destroy(); srv.close(); });
  h.transport.failIps.add('10.244.1.4');
  const port = await h.port('10.96.0.10:9000');
  const once = (): Promise<string> => new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let out = '';
    s.on('data', (d: Buffer) => { out += d.toString(); });
    s.on('error', () => undefined);
    s.once('close', () => resolve(out));
    s.write('x');
  });
  h.set({
    service: KEY, http: [], grpc: [],
    destination: { origin: { kind: 'DestinationRule', namespace: 'default', name: 'echo', rule: 0 }, trafficPolicy: { loadBalancer: 'RANDOM', outlierDetection: { consecutive5xxErrors: 1, intervalMs: 10_000, baseEjectionTimeMs: 60_000, maxEjectionPercent: 50, minHealthPercent: 0 } }, subsets: [] },
  });
  // until the broken endpoint was picked once (a connect failure: the connection is closed without a byte)
  let failures = 0;
  for (let i = 0; i < 60 && failures === 0; i++) if (await once() === '') failures++;
  t.is(failures, 1);
  // ejected: every connection now goes to the healthy endpoint
  const results: string[] = [];
  for (let i = 0; i < 16; i++) results.push(await once());
  t.deepEqual(results, new Array(16).fill('up'));
});

test('TCP port at the waypoint: the DestinationRule\'s maxConnections refuses connections beyond it (UO) and admits again once one closes', async (t) => {
  const sockets = new Set<Socket>();
  const echo = createServer((s) => { sockets.add(s); s.on('data', (d: Buffer) => s.write(`echo:${d.toString()}`)); s.on('end', () => s.end()); });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const h = await harness({ ports: [{ port: 9000, targetPort: 9000, name: 'tcp-db', appProtocol: 'tcp' }], endpoints: [{ name: 'echo-a', ip: '10.244.1.3', port: (echo.address() as AddressInfo).port }] });
  t.teardown(async () => { await h.close(); for (const s of sockets) s.destroy(); echo.close(); });
  h.set({
    service: KEY, http: [], grpc: [],
    destination: { origin: { kind: 'DestinationRule', namespace: 'default', name: 'echo', rule: 0 }, trafficPolicy: { connectionPool: { maxConnections: 1 } }, subsets: [] },
  });
  const port = await h.port('10.96.0.10:9000');
  // one connection held open, its bytes answered
  const held = connect({ host: '127.0.0.1', port });
  held.on('error', () => undefined);
  const first = await new Promise<string>((resolve) => { held.once('data', (d: Buffer) => resolve(d.toString())); held.write('ping'); });
  t.is(first, 'echo:ping');
  const dialled = h.transport.connects.length;
  t.is(await exchange(port), '', 'the second connection is refused while the first is open');
  t.is(h.transport.connects.length, dialled, 'a refused connection dials nothing');
  t.regex(await h.telemetry.metrics(), /istio_tcp_connections_closed_total\{[^}]*response_flags="UO"[^}]*\} 1/);
  // the held one closes: the next connection is admitted (once the waypoint saw the close)
  const closed = new Promise((r) => held.once('close', r));
  held.end();
  await closed;
  let answer = '';
  for (let i = 0; i < 50 && answer === ''; i++) answer = await exchange(port);
  t.is(answer, 'echo:ping');
});
