/**
 * The status listener's debug views answer loopback callers only: a caller on another address
 * gets 403 without the views being built (no config, no timing to learn from).
 */
import test from 'ava';
import { once } from 'node:events';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Registry } from 'prom-client';
import { createStatusServer } from '../../src/control/status/index.js';

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
