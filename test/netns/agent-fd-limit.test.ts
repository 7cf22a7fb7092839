/**
 * The node agent out of file descriptors (issue 8, fault 3). This file lowers the soft
 * RLIMIT_NOFILE of its own worker process (prlimit on our pid), where the agent runs: only this
 * file's test runs in that process. Pods' connections use up the limit; the engine stops
 * accepting before the last fds (its reserve), backs off instead of spinning, logs a warn line,
 * counts it, and the agent reports not-ready while its admin, metrics and readiness servers keep
 * answering. When the connections close it accepts again and is ready, by itself.
 */
import { execFileSync } from 'node:child_process';
import { get } from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { setLogSink } from '../../src/core/index.js';
import * as native from '../../src/native/index.js';
import { createMesh } from '../helpers/mesh.js';
import { rootSerial } from '../helpers/root.js';

const serial = rootSerial;

function limits(): { soft: number; hard: number } {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))!;
  const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/);
  return { soft: Number(soft), hard: Number(hard) };
}

function setSoftLimit(soft: number, hard: number): void {
  execFileSync('/usr/bin/prlimit', ['--pid', String(process.pid), `--nofile=${soft}:${hard}`]);
}

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timed out`)));
    req.on('error', reject);
  });
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

serial('out of fds: the agent stops accepting before the last fds, stays responsive and not-ready, logs a warn, and recovers', async (t) => {
  const lines: string[] = [];
  const prevSink = setLogSink((l) => { lines.push(l); });
  t.teardown(() => { setLogSink(prevSink); });
  const mesh = await createMesh(t, { nodes: 1 });
  const client = await mesh.pod({ name: 'client', node: 'node-1', ambient: true });
  const server = await mesh.pod({ name: 'server', node: 'node-1', ambient: true });
  await mesh.echo(server);
  const agent = mesh.agent('node-1');
  await agent.whenReady();
  const { readiness, admin, metrics } = agent.ports;

  const conns: Socket[] = [];
  t.teardown(() => { for (const c of conns) c.destroy(); });
  /** A connection from the client pod to the server's echo port, through the agent (captured, HBONE). */
  const open = async (): Promise<Socket> => {
    const fd = await native.connectInNetns(client.netnsPath, { address: server.ip, port: 9090, timeoutMs: 10_000 });
    const s = new Socket({ fd, readable: true, writable: true });
    s.on('error', () => {});
    conns.push(s);
    return s;
  };
  const echoed = (s: Socket, text: string): Promise<boolean> => new Promise((resolve) => {
    let got = '';
    s.on('data', (d: Buffer) => { got += d.toString(); if (got.includes(text)) resolve(true); });
    s.once('close', () => resolve(false));
    s.write(text);
  });
  t.true(await echoed(await open(), 'warm-up'), 'a connection works before the limit');

  // the soft limit a little above what is open now: room for some 40 proxied connections
  const orig = limits();
  t.teardown(() => { setSoftLimit(orig.soft, orig.hard); });
  const inUse = readdirSync('/proc/self/fd').length;
  setSoftLimit(inUse + 200, orig.hard);

  // connections until the engine's listener starves (each costs this process about 3 fds)
  let carried = 0;
  for (let i = 0; i < 150 && agent.isReady(); i++) {
    const s = await open();
    const ok = echoed(s, `c${i}`);
    await until(async () => !agent.isReady() || await Promise.race([ok, new Promise<boolean>((r) => setImmediate(() => r(false)))]), `connection ${i} carried or the engine starved`);
    if (agent.isReady()) carried++;
  }
  t.false(agent.isReady(), `still ready after ${carried} connections`);
  t.log(`${carried} connections carried before the engine kept its fd reserve (soft limit ${inUse + 200})`);

  // responsive meanwhile: readiness says not ready, admin and metrics answer
  const ready = await httpGet(readiness, '/healthz/ready');
  t.is(ready.status, 503);
  const dump = await httpGet(admin, '/config_dump');
  t.is(dump.status, 200);
  t.true((JSON.parse(dump.body) as { engine: { starved: number } }).engine.starved > 0);
  const m = await httpGet(metrics, '/metrics');
  t.regex(m.body, /ambit_engine_accept_failures_total\{reason="EMFILE"\} [1-9]/);
  t.regex(m.body, /ambit_engine_listeners_starved [1-9]/);
  const warn = lines.map((l) => JSON.parse(l) as { level: string; msg: string }).find((l) => l.level === 'warn' && /open-file limit/.test(l.msg));
  t.truthy(warn, 'a warn line names the limit');

  // the pods' connections close: the engine accepts again and the agent is ready, by itself
  for (const c of conns.splice(0)) c.destroy();
  await until(() => agent.isReady(), 'ready again after the connections closed');
  t.is((await httpGet(readiness, '/healthz/ready')).status, 200);
  t.true(await echoed(await open(), 'after'), 'a new connection is carried');
});
