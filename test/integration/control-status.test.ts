/**
 * The status listener's debug views answer loopback callers only: a caller on another address
 * gets 403 without the views being built (no config, no timing to learn from). Inside the control
 * plane it is bounded like the control listeners: a connection limit and request timeouts.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createControlPlane } from '../../src/control/app.js';
import type { ListenOptions } from '../../src/control/app.js';
import type { ConfigSource } from '../../src/control/config/types.js';
import { BootstrapTokenAuthenticator } from '../../src/control/push/index.js';
import { createStatusServer } from '../../src/control/status/index.js';
import { makeTestPki } from '../helpers/pki.js';

function nonLoopbackV4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

async function get(host: string, port: number, path: string, localAddress?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, ...(localAddress ? { localAddress } : {}) }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const addr = nonLoopbackV4();
const withAddr = addr ? test : test.skip;

withAddr('debug views: 403 from a non-loopback address without building them; loopback gets them; /ready for all', async (t) => {
  let built = 0;
  const server = createStatusServer({
    ready: () => true, registry: new Registry(),
    configDump: () => { built++; return { secret: 'config' }; },
    syncz: () => { built++; return []; },
  });
  server.listen(0, '0.0.0.0');
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  const port = (server.address() as AddressInfo).port;
  for (const path of ['/debug/config_dump', '/debug/syncz', '/debug/config_dump?x=1']) {
    const r = await get(addr!, port, path, addr);
    t.is(r.status, 403, path);
    t.notRegex(r.body, /secret/);
  }
  t.is(built, 0);
  t.is((await get(addr!, port, '/ready', addr)).status, 200);
  const local = await get('127.0.0.1', port, '/debug/config_dump');
  t.is(local.status, 200);
  t.regex(local.body, /secret/);
  for (const path of ['//debug/config_dump', '/debug/config_dump/', '/debug/%63onfig_dump']) t.is((await get(addr!, port, path, addr)).status, 404, path);
});

const TD = 'cluster.local';
const pki = makeTestPki({ trustDomain: TD });

/** A control plane with only its status listener. */
async function statusOnly(t: ExecutionContext, listen: ListenOptions): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-status-'));
  const source: ConfigSource = { async start(fn) { fn([], 'test'); }, async stop() {} };
  const cp = createControlPlane({
    source, ca: pki.ca, trustDomain: TD, stateDir: dir, debounceMs: 1,
    authenticator: new BootstrapTokenAuthenticator({ token: 'status-test-token-0123456789', trustDomain: TD }),
    listen: { host: '127.0.0.1', plainPort: null, tlsPort: null, statusPort: 0, ...listen },
  });
  t.teardown(async () => {
    await cp.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await cp.start();
  return cp.addresses.status!.port;
}

/** Send `req` on `s` and collect what comes back until `done` says it is whole. */
async function exchange(s: Socket, req: string, done: (got: string) => boolean): Promise<string> {
  let got = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      got += d.toString();
      if (done(got)) { s.off('data', onData); s.off('close', onClose); resolve(got); }
    };
    const onClose = () => { s.off('data', onData); reject(new Error(`closed after ${got.length} bytes`)); };
    s.on('data', onData);
    s.on('close', onClose);
    s.write(req);
  });
}

/** Send `req` on `s` and collect everything until the server closes it. */
async function toClose(s: Socket, req: string): Promise<string> {
  let got = '';
  s.on('data', (d: Buffer) => { got += d.toString(); });
  const closed = once(s, 'close');
  s.write(req);
  await closed;
  return got;
}

async function open(port: number, t: ExecutionContext): Promise<Socket> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  t.teardown(() => { s.destroy(); });
  await once(s, 'connect');
  return s;
}

test('in the control plane: a status connection beyond maxConnections is closed unanswered and counted', async (t) => {
  const port = await statusOnly(t, { maxConnections: 2 });
  // two kept-alive connections that the server has provably accepted (each got an answer)
  const held: Socket[] = [];
  for (let i = 0; i < 2; i++) {
    const s = await open(port, t);
    t.regex(await exchange(s, 'GET /ready HTTP/1.1\r\nHost: status\r\n\r\n', (g) => /\r\n\r\n(not )?ready\n$/.test(g)), /^HTTP\/1\.1 (200|503) /);
    held.push(s);
  }
  // a third gets nothing, not even a status line
  const third = await open(port, t);
  t.is(await toClose(third, 'GET /ready HTTP/1.1\r\nHost: status\r\nConnection: close\r\n\r\n'), '');
  // the held connections still serve, and the refusal is counted apart from the control channel's
  const metrics = await toClose(held[0]!, 'GET /metrics HTTP/1.1\r\nHost: status\r\nConnection: close\r\n\r\n');
  t.regex(metrics, /^HTTP\/1\.1 200 /);
  t.regex(metrics, /ambit_control_refused_connections_total\{reason="status_max_connections"\} 1/);
  t.notRegex(metrics, /reason="max_connections"/);
});

test('in the control plane: a status connection that never finishes its request is closed by the server', async (t) => {
  // a short limit so the test does not wait for the 10 s default; only the outcome is asserted
  const port = await statusOnly(t, { requestTimeoutMs: 200 });
  const half = await open(port, t);
  const silent = await open(port, t);
  const halfGot = toClose(half, 'GET /ready HTTP/1.1\r\nHost: status\r\n');
  await once(silent, 'close');
  // request timeout: 408; idle timeout: a plain close. Never the answer to the request.
  const got = await halfGot;
  t.regex(got, /^(HTTP\/1\.1 408 [^]*)?$/);
  t.notRegex(got, /ready/);
});
