/**
 * The control listeners (ws and wss) bound their open connections: beyond maxConnections a new
 * connection is closed before it can send anything, peers included in the count, and counted.
 * Real control plane, real sockets; a small limit.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { createControlPlane } from '../../src/control/app.js';
import type { ConfigSource, KubeObject } from '../../src/control/config/types.js';
import { BootstrapTokenAuthenticator } from '../../src/control/push/index.js';
import { controlSettings } from '../../src/control/main.js';
import { XdsClient } from '../../src/xds/index.js';
import { makeTestPki } from '../helpers/pki.js';
import { startControlPlane } from '../helpers/push-harness.js';

const TD = 'cluster.local';
const pki = makeTestPki({ trustDomain: TD });

const fixedSource = (objects: KubeObject[]): ConfigSource => ({
  async start(fn) { fn(objects, 'test'); },
  async stop() {},
});
const ns: KubeObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } };

async function plane(t: ExecutionContext, maxConnections: number, timeouts: { requestTimeoutMs?: number; handshakeTimeoutMs?: number } = {}) {
  let token = '';
  let peers = 0;
  const h = await startControlPlane(t, 'limits', async (dir) => {
    const boot = await BootstrapTokenAuthenticator.loadOrCreate(dir, TD);
    token = boot.token;
    return {
      source: fixedSource([ns]), ca: pki.ca, trustDomain: TD, stateDir: dir, authenticator: boot.authenticator, debounceMs: 1,
      listen: { host: '127.0.0.1', plainPort: 0, tlsPort: 0, statusPort: 0, maxConnections, ...timeouts },
    };
  });
  const { cp } = h;
  return {
    cp,
    async peer(tls: boolean): Promise<XdsClient> {
      const url = tls ? `wss://127.0.0.1:${cp.addresses.tls!.port}` : `ws://127.0.0.1:${cp.addresses.plain!.port}`;
      const c = h.track(new XdsClient({ url, token, node: `node-${peers++}`, role: 'agent', ...(tls ? { caPem: pki.ca.rootsPem } : {}) }));
      c.start();
      await c.ready;
      return c;
    },
    metrics: h.metrics,
  };
}

/** A plain HTTP request (no upgrade) on a new connection: what came back before the server closed it. */
async function plainRequest(port: number): Promise<string> {
  const s = connect(port, '127.0.0.1');
  let got = '';
  s.on('data', (d: Buffer) => { got += d.toString(); });
  // a refused connection may see a reset rather than a clean close
  s.on('error', () => {});
  s.write('GET / HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n');
  await once(s, 'close');
  return got;
}

test('ws: a connection beyond maxConnections is closed unanswered; a freed slot is usable again', async (t) => {
  const p = await plane(t, 2);
  const port = p.cp.addresses.plain!.port;
  const a = await p.peer(false);
  // below the limit a plain request is answered (426: only upgrades are served)
  t.regex(await plainRequest(port), /^HTTP\/1\.1 426/);
  await p.peer(false);
  // two peers hold both slots: a third connection gets nothing, not even a status line
  t.is(await plainRequest(port), '');
  t.regex(await p.metrics(), /ambit_control_refused_connections_total\{reason="max_connections"\} 1/);
  t.is(p.cp.push.peerCount, 2);
  // once a peer leaves, its slot serves again
  const gone = once(p.cp.push, 'disconnected');
  await a.close();
  await gone;
  t.regex(await plainRequest(port), /^HTTP\/1\.1 426/);
});

test('wss: a connection beyond maxConnections is closed before the TLS handshake', async (t) => {
  const p = await plane(t, 1);
  await p.peer(true);
  const s = tlsConnect({ port: p.cp.addresses.tls!.port, host: '127.0.0.1', ca: pki.ca.rootsPem, servername: 'control' });
  let secured = false;
  s.on('secureConnect', () => { secured = true; });
  let err: Error | undefined;
  s.on('error', (e) => { err = e; });
  await new Promise((resolve) => s.on('close', resolve));
  t.false(secured);
  // the server closed the socket (FIN or reset), before the handshake could finish
  t.regex(err?.message ?? '', /disconnected before secure TLS connection|ECONNRESET/);
  t.regex(await p.metrics(), /ambit_control_refused_connections_total\{reason="max_connections"\} 1/);
  t.is(p.cp.push.peerCount, 1);
});

test('a connection that never finishes its request or its TLS handshake is closed by the server', async (t) => {
  // short limits so the test does not wait for the 10 s defaults; only the outcome is asserted
  const p = await plane(t, 10, { requestTimeoutMs: 200, handshakeTimeoutMs: 200 });
  const half = connect(p.cp.addresses.plain!.port, '127.0.0.1');
  let got = '';
  half.on('data', (d: Buffer) => { got += d.toString(); });
  half.on('error', () => {});
  half.write('GET / HTTP/1.1\r\nHost: control\r\n');
  const silent = connect(p.cp.addresses.tls!.port, '127.0.0.1');
  silent.on('error', () => {});
  let tlsBytes = 0;
  silent.on('data', (d: Buffer) => { tlsBytes += d.length; });
  await Promise.all([once(half, 'close'), once(silent, 'close')]);
  // whichever limit fires first (request timeout: 408; idle: plain close), nothing else is answered
  t.regex(got, /^(HTTP\/1\.1 408 [^]*)?$/);
  t.is(tlsBytes, 0);
  // a connected peer is not a pending request: it outlives those limits (a silent connection
  // opened after it is closed by them first)
  const c = await p.peer(false);
  const again = connect(p.cp.addresses.plain!.port, '127.0.0.1');
  again.on('error', () => {});
  await once(again, 'close');
  t.is(p.cp.push.peerCount, 1);
  t.is(c.snapshot.counts.workloads, 0);
});

test('AMBIT_MAX_CONNECTIONS: default 10000, checked', (t) => {
  t.is(controlSettings({}).maxConnections, 10_000);
  t.is(controlSettings({ AMBIT_MAX_CONNECTIONS: '64' }).maxConnections, 64);
  for (const bad of ['0', '-1', '1.5', 'lots']) t.throws(() => controlSettings({ AMBIT_MAX_CONNECTIONS: bad }), { message: /AMBIT_MAX_CONNECTIONS/ }, bad);
  t.throws(() => createControlPlane({
    source: fixedSource([]), ca: pki.ca, trustDomain: TD, stateDir: '/nonexistent', authenticator: new BootstrapTokenAuthenticator({ token: 'x'.repeat(16), trustDomain: TD }),
    listen: { maxConnections: 0 },
  }), { message: /listen\.maxConnections: 0/ });
});
