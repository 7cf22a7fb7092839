/**
 * The addon's data-path engine (native/src/engine*.c) for real: real sockets, TLS 1.3, HTTP/2.
 *
 * - The HBONE server side is driven by node:http2 clients (mutual TLS, ALPN h2) sending CONNECT
 *   to an engine listener on 127.0.0.1 in the root netns, in front of an echo server.
 * - The client side (captured connection -> pooled HBONE -> HBONE server -> app) runs in a fresh
 *   netns where nftables redirects the app's connections to the engine's outbound listener.
 *
 * The engine asks JS for every decision; the callbacks here record what they were asked, so the
 * tests check both the bytes on the wire and what the engine told JS.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { connect as h2connect, constants as h2c, type ClientHttp2Session, type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { spiffeUri, verifyPeerChain, verifyTlsPeer, type CertBundle } from '../../src/identity/index.js';
import {
  closeFd, connectInNetns, Engine, FAIL, isSyscallError, listenInNetns, type EngineCallbacks, type EngineTls, type InboundTarget, type OutboundPlan,
} from '../../src/native/index.js';
import { engineOptions, type HboneSettings } from '../../src/hbone/index.js';
import { addBlackhole, addLocalAddrs, addNetns, cleanupStaleNetns, podPair, type RawNetns, type TeardownHost } from '../helpers/netns-raw.js';
import { makeForeignPki, makeTestPki, type TestPki } from '../helpers/pki.js';
import { netnsOk, netnsTest, rootSerial, rootTest } from '../helpers/root.js';

const SELF = '/proc/self/ns/net';
const execFileP = promisify(execFile);
/** listenInNetns enters a netns (setns needs CAP_SYS_ADMIN), even the process's own. */

test.before(() => {
  if (netnsOk) cleanupStaleNetns();
});

// ---------------------------------------------------------------------------------------------
// small helpers

const TD = 'cluster.local';
let shared: Promise<{ pki: TestPki; client: CertBundle; server: CertBundle; clientId: string; serverId: string }> | undefined;

/** One CA and two identities for the whole file (key generation is the slow part). */
function pkiOnce(): Promise<{ pki: TestPki; client: CertBundle; server: CertBundle; clientId: string; serverId: string }> {
  shared ??= (async () => {
    const pki = makeTestPki({ trustDomain: TD });
    const [client, server] = await Promise.all([pki.issue(pki.id('ns-a', 'client')), pki.issue(pki.id('ns-b', 'server'))]);
    return { pki, client, server, clientId: spiffeUri(client.identity), serverId: spiffeUri(server.identity) };
  })();
  return shared;
}

/** Waits (polling) for `cond`, failing after a generous deadline. */
async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A promise with a deadline, so a test fails instead of hanging. */
async function within<T>(p: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

function ticks(n = 5): Promise<void> {
  return (async () => { for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r)); })();
}

/** The TCP port a listening fd is bound to: its socket inode looked up in /proc/self/net/tcp{,6}. */
function boundPort(fd: number): number {
  const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
  if (inode === undefined) throw new Error(`fd ${fd} is not a socket`);
  for (const file of ['/proc/self/net/tcp', '/proc/self/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[9] === inode) return parseInt(f[1]!.split(':')[1]!, 16);
    }
  }
  throw new Error(`socket inode ${inode} not found in /proc/self/net/tcp`);
}

/** Resolves on 'close' (an 'error' before it is expected here, unlike events.once). */
function closed(s: { once(ev: 'close', fn: () => void): unknown; on(ev: 'error', fn: (e: Error) => void): unknown }): Promise<void> {
  s.on('error', () => {});
  return new Promise<void>((resolve) => { s.once('close', () => resolve()); });
}

/** Whether a loopback TCP connection between the two ports is ESTABLISHED (either end). */
function established(portA: number, portB: number): boolean {
  const hex = (p: number): string => p.toString(16).toUpperCase().padStart(4, '0');
  const a = hex(portA), b = hex(portB);
  return readFileSync('/proc/self/net/tcp', 'utf8').split('\n').slice(1).some((line) => {
    const f = line.trim().split(/\s+/);
    const l = f[1]?.split(':')[1], r = f[2]?.split(':')[1];
    return f[3] === '01' && ((l === a && r === b) || (l === b && r === a));
  });
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Reads a stream to its end. */
function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

/** Reads until `n` bytes arrived. */
function readN(s: NodeJS.ReadableStream, n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString();
      if (got.length >= n) { s.off('data', onData); resolve(got); }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.once('end', () => reject(new Error(`ended after ${got.length} of ${n} bytes`)));
  });
}

// ---------------------------------------------------------------------------------------------
// an echo app that tracks its connections

interface EchoConn { remote: string | undefined; received: number; sent: number; ended: boolean; error?: string; closed: boolean }
interface Echo { port: number; conns: EchoConn[]; server: Server }

/** Echoes every chunk; on FIN writes `bye` and ends (the half-close test). */
async function echoServer(t: TeardownHost, fd?: number): Promise<Echo> {
  const conns: EchoConn[] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    const c: EchoConn = { remote: s.remoteAddress, received: 0, sent: 0, ended: false, closed: false };
    conns.push(c);
    s.on('error', (e: NodeJS.ErrnoException) => { c.error = e.code ?? e.message; });
    s.on('data', (d: Buffer) => { c.received += d.length; c.sent += d.length; s.write(d); });
    s.on('end', () => { c.ended = true; c.sent += 3; s.end('bye'); });
    s.on('close', () => { c.closed = true; });
  });
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); }));
  if (fd === undefined) server.listen(0, '127.0.0.1');
  else server.listen({ fd });
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, conns, server };
}

// ---------------------------------------------------------------------------------------------
// an engine whose callbacks record their calls and can be re-pointed per test

interface InboundCall { lid: number; flowId: number; peer: string; authority: string; forwarded: string | undefined; rip: string; rport: number; lip: string; lport: number }
interface OutboundCall { lid: number; flowId: number; dstIp: string; dstPort: number; peerIp: string; peerPort: number }
/** `fail`: the close event's FAIL code (0 none) */
interface EventCall { kind: 1 | 2; flowId: number; fromApp: number; toApp: number; error: string | undefined; fail: number }

interface Recorder {
  engine: Engine;
  inbound: InboundCall[];
  outbound: OutboundCall[];
  events: EventCall[];
  verify: { tag: string; id: string }[];
  context: number[];
  /** the engine's log lines */
  logs: { level: number; message: string }[];
  /** callbacks made after destroy() (must stay 0) */
  late: number;
  onInbound: (c: InboundCall) => InboundTarget | number;
  onOutbound: (c: OutboundCall) => OutboundPlan | null;
  onVerify: (chain: Buffer[], roots: string, tag: string) => string;
  onContext: (lid: number) => EngineTls | null;
  /** runs after an event was recorded (may call back into the engine) */
  onEvent: (ev: EventCall) => void;
  destroy(): void;
}

/** The production identity rule: OpenSSL verified the chain; SPIFFE rules here; a tag naming an identity must match it. */
function spiffeVerify(chain: Buffer[], roots: string, tag: string): string {
  const id = spiffeUri(verifyPeerChain(chain, roots));
  if (tag.startsWith('spiffe://') && tag !== id) throw new Error(`peer ${id} is not the expected ${tag}`);
  return id;
}

function recorder(t: TeardownHost, opts: Partial<HboneSettings> = {}): Recorder {
  let destroyed = false;
  const r: Recorder = {
    engine: undefined as unknown as Engine,
    inbound: [], outbound: [], events: [], verify: [], context: [], logs: [], late: 0,
    onInbound: () => 500,
    onOutbound: () => null,
    onVerify: spiffeVerify,
    onContext: () => null,
    onEvent: () => {},
    destroy() { destroyed = true; r.engine.destroy(); },
  };
  const cb: EngineCallbacks = {
    outbound(lid, flowId, dstIp, dstPort, peerIp, peerPort) {
      if (destroyed) r.late++;
      const c = { lid, flowId, dstIp, dstPort, peerIp, peerPort };
      r.outbound.push(c);
      return r.onOutbound(c);
    },
    inbound(lid, flowId, peer, authority, forwarded, rip, rport, lip, lport) {
      if (destroyed) r.late++;
      const c = { lid, flowId, peer, authority, forwarded, rip, rport, lip, lport };
      r.inbound.push(c);
      return r.onInbound(c);
    },
    verify(chain, roots, tag) {
      if (destroyed) r.late++;
      const id = r.onVerify(chain, roots, tag);
      r.verify.push({ tag, id });
      return id;
    },
    context(lid) {
      if (destroyed) r.late++;
      r.context.push(lid);
      return r.onContext(lid);
    },
    event(kind, flowId, fromApp, toApp, error, fail) {
      if (destroyed) r.late++;
      const ev = { kind, flowId, fromApp, toApp, error, fail };
      r.events.push(ev);
      r.onEvent(ev);
    },
    log(level, message) { r.logs.push({ level, message }); },
  };
  r.engine = new Engine(cb, engineOptions(opts));
  t.teardown(() => { r.destroy(); });
  return r;
}

function ctxOf(e: Engine, b: CertBundle): EngineTls {
  return e.tls(b.chainPem.join(''), b.keyPem, b.rootsPem);
}

function target(authority: string): InboundTarget {
  const i = authority.lastIndexOf(':');
  return { ip: authority.slice(0, i), port: Number(authority.slice(i + 1)) };
}

/** An HBONE server engine on 127.0.0.1:<port> (root netns) in front of an echo app. */
interface ServerRig { r: Recorder; port: number; lid: number; echo: Echo; client: CertBundle; server: CertBundle; clientId: string; serverId: string; pki: TestPki }

async function serverRig(t: TeardownHost, opts: Partial<HboneSettings> = {}): Promise<ServerRig> {
  const { pki, client, server, clientId, serverId } = await pkiOnce();
  const echo = await echoServer(t);
  const r = recorder(t, opts);
  const ctx = ctxOf(r.engine, server);
  r.onContext = () => ctx;
  r.onInbound = (c) => target(c.authority);
  const fd = listenInNetns(SELF, { address: '127.0.0.1', port: 0 });
  const port = boundPort(fd);
  const lid = r.engine.listen(fd, SELF, { kind: 'hbone', mark: 0, tag: 'hbone-listener' });
  return { r, port, lid, echo, client, server, clientId, serverId, pki };
}

// ---------------------------------------------------------------------------------------------
// a node:http2 client over mutual TLS

interface Creds { keyPem?: string; chainPem?: string[]; rootsPem: string }

function tlsTo(port: number, c: Creds): TLSSocket {
  const sock = tlsConnect({
    host: '127.0.0.1', port, ca: c.rootsPem, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3',
    ...(c.keyPem !== undefined && c.chainPem !== undefined ? { key: c.keyPem, cert: c.chainPem.join('') } : {}),
    // the server's SPIFFE identity is not a host name; the chain is still verified against `ca`
    checkServerIdentity: () => undefined,
  });
  sock.on('error', () => {});
  return sock;
}

async function h2Session(t: TeardownHost, port: number, c: Creds): Promise<{ session: ClientHttp2Session; tls: TLSSocket }> {
  const tls = tlsTo(port, c);
  t.teardown(() => { tls.destroy(); });
  await within(new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', () => resolve());
    tls.once('close', () => reject(new Error('closed during the TLS handshake')));
  }), 'tls handshake');
  const session = h2connect('https://hbone', { createConnection: () => tls, maxHeaderListPairs: 1000 });
  session.on('error', () => {});
  t.teardown(() => { session.destroy(); });
  return { session, tls };
}

function connectReq(session: ClientHttp2Session, authority: string, extra: OutgoingHttpHeaders = {}): ClientHttp2Stream {
  const s = session.request({ ':method': 'CONNECT', ':authority': authority, ...extra });
  s.on('error', () => {});
  return s;
}

/** The response status, or a rejection naming the reset code when the stream closed without one. */
function status(s: ClientHttp2Stream): Promise<number> {
  return within(new Promise<number>((resolve, reject) => {
    s.once('response', (h) => resolve(Number(h[':status'])));
    s.once('close', () => reject(new Error(`stream closed without a response (rst ${s.rstCode})`)));
  }), 'response');
}

/** One CONNECT attempt on a fresh connection: the status, or 'refused' when TLS or the session failed. */
function attempt(port: number, c: Creds, authority: string): Promise<number | 'refused'> {
  return within(new Promise<number | 'refused'>((resolve) => {
    const tls = tlsTo(port, c);
    let session: ClientHttp2Session | undefined;
    const done = (v: number | 'refused'): void => { resolve(v); session?.destroy(); tls.destroy(); };
    tls.once('close', () => done('refused'));
    tls.once('secureConnect', () => {
      session = h2connect('https://hbone', { createConnection: () => tls });
      session.on('error', () => {});
      session.once('close', () => done('refused'));
      const s = connectReq(session, authority);
      s.once('response', (h) => done(Number(h[':status'])));
      s.once('close', () => done('refused'));
    });
  }), `CONNECT attempt to ${authority}`);
}

async function goodRoundTrip(t: ExecutionContext, rig: ServerRig, what: string): Promise<void> {
  const { session } = await h2Session(t, rig.port, rig.client);
  const s = connectReq(session, `127.0.0.1:${rig.echo.port}`);
  t.is(await status(s), 200, `${what}: status`);
  s.write('ping');
  t.is(await within(readN(s, 4), `${what}: echo`), 'ping', `${what}: echo`);
  s.end();
  t.is((await within(readAll(s), `${what}: end`)).toString(), 'bye', `${what}: half-close`);
  session.close();
}

// =============================================================================================
// 1. the HBONE server side, end to end

rootTest('HBONE CONNECT from a node:http2 client: 200, bytes both ways, half-close, inbound arguments, events with byte counts', async (t) => {
  const rig = await serverRig(t);
  const { r, echo } = rig;
  const { session, tls } = await h2Session(t, rig.port, rig.client);
  const s = connectReq(session, `127.0.0.1:${echo.port}`, { forwarded: 'for="10.1.2.3"' });
  t.is(await status(s), 200);

  // what JS was asked
  t.is(r.context.length, 1);
  t.deepEqual(r.context, [rig.lid]);
  t.deepEqual(r.verify, [{ tag: 'hbone-listener', id: rig.clientId }]);
  t.is(r.inbound.length, 1);
  const call = r.inbound[0]!;
  t.like(call, {
    lid: rig.lid, peer: rig.clientId, authority: `127.0.0.1:${echo.port}`, forwarded: 'for="10.1.2.3"',
    rip: '127.0.0.1', rport: tls.localPort, lip: '127.0.0.1', lport: rig.port,
  });

  s.write('hello ');
  t.is(await within(readN(s, 6), 'first echo'), 'hello ');
  s.write('world');
  t.is(await within(readN(s, 5), 'second echo'), 'world');
  // the established event is telemetry (news): it may wait for company, so take what waits
  await r.engine.flush();
  t.is(r.events.length, 1);
  t.like(r.events[0], { kind: 1, flowId: call.flowId });

  // Half-close: our END_STREAM reaches the app as a FIN; the app can still answer afterwards.
  const rest = readAll(s);
  s.end();
  t.is((await within(rest, 'rest after half-close')).toString(), 'bye');
  t.is(echo.conns.length, 1);
  t.true(echo.conns[0]!.ended, 'the app saw the FIN');
  await until(() => r.events.length === 2, 'close event');
  const closeEv = r.events[1]!;
  t.is(closeEv.kind, 2);
  t.is(closeEv.flowId, call.flowId);
  // bytes are the app side's: what the app sent us (echo + "bye"), what we wrote to it
  t.is(closeEv.fromApp, 11 + 3);
  t.is(closeEv.toApp, 11);
  t.is(closeEv.error, undefined);
  t.is(closeEv.fail, 0, 'a clean end carries no failure code');
  t.is(echo.conns[0]!.error, undefined, 'the app connection ended cleanly, not reset');
  await until(() => r.engine.stats().flows === 0, 'flow gone');
  t.is(r.engine.stats().tunnels, 1, 'the TLS connection stays up for more streams');

  // a second stream on the same connection works and is a new flow
  const s2 = connectReq(session, `127.0.0.1:${echo.port}`);
  t.is(await status(s2), 200);
  s2.end('x');
  t.is((await within(readAll(s2), 'second stream')).toString(), 'xbye');
  t.is(r.verify.length, 1, 'no second handshake');
  t.not(r.inbound[1]!.flowId, call.flowId);
});

rootTest('HBONE: a large transfer through the server side round-trips intact (flow control both ways)', async (t) => {
  const rig = await serverRig(t);
  const { session } = await h2Session(t, rig.port, rig.client);
  const s = connectReq(session, `127.0.0.1:${rig.echo.port}`);
  t.is(await status(s), 200);
  const data = randomBytes(3 * 1024 * 1024 + 7);
  const all = readAll(s);
  s.end(data);
  const got = await within(all, '3 MB echo', 60_000);
  t.is(got.length, data.length + 3);
  t.true(got.subarray(0, data.length).equals(data));
  await until(() => rig.r.events.some((e) => e.kind === 2), 'close event');
  t.like(rig.r.events.find((e) => e.kind === 2), { fromApp: data.length + 3, toApp: data.length, error: undefined });
});

// =============================================================================================
// 2. refusals

rootTest('HBONE refusals: an inbound status is answered as is, non-CONNECT never reaches inbound, a refused upstream is 503 with a connect error', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);

  // JS refuses with 401
  r.onInbound = () => 401;
  const denied = connectReq(session, `127.0.0.1:${rig.echo.port}`);
  t.is(await status(denied), 401);
  t.is(r.inbound.length, 1);
  denied.close();

  // Not CONNECT: the engine answers by itself
  r.onInbound = (c) => target(c.authority);
  for (const method of ['GET', 'POST']) {
    const s = session.request({ ':method': method, ':path': '/', ':authority': `127.0.0.1:${rig.echo.port}` }, { endStream: method === 'GET' });
    s.on('error', () => {});
    const got = await status(s);
    t.true(got === 405 || got === 400, `${method}: ${got}`);
    s.close();
  }
  t.is(r.inbound.length, 1, 'inbound is not asked about non-CONNECT requests');

  // Nothing listens on the target port
  const gone = await echoServer(t);
  await new Promise<void>((res) => { gone.server.close(() => res()); });
  const s = connectReq(session, `127.0.0.1:${gone.port}`);
  t.is(await status(s), 503);
  t.is(r.inbound.length, 2);
  const flowId = r.inbound[1]!.flowId;
  await until(() => r.events.some((e) => e.flowId === flowId && e.kind === 2), 'close event of the refused upstream');
  const evs = r.events.filter((e) => e.flowId === flowId);
  t.is(evs.length, 1, 'no established event for it');
  t.regex(evs[0]!.error ?? '', /connect/i);
  t.regex(evs[0]!.error ?? '', /ECONNREFUSED/);
  t.is(evs[0]!.fail, FAIL.CONNECT, 'the failure as a code');
  // refused streams (401, 405) were accounted by JS already: no events for them
  t.is(r.events.length, 1);
  t.is(rig.echo.conns.length, 0);

  // the connection is still usable
  const ok = connectReq(session, `127.0.0.1:${rig.echo.port}`);
  t.is(await status(ok), 200);
  ok.end('z');
  t.is((await within(readAll(ok), 'after refusals')).toString(), 'zbye');
  t.is(r.verify.length, 1);
});

rootTest('HBONE: an inbound callback that throws or returns garbage refuses the stream with 500', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  r.onInbound = () => { throw new Error('policy engine exploded'); };
  t.is(await status(connectReq(session, `127.0.0.1:${rig.echo.port}`)), 500);
  r.onInbound = () => 200 as number; // not a refusal status: must not be taken for success
  t.is(await status(connectReq(session, `127.0.0.1:${rig.echo.port}`)), 500);
  t.is(rig.echo.conns.length, 0);
  r.onInbound = (c) => target(c.authority);
  t.is(await status(connectReq(session, `127.0.0.1:${rig.echo.port}`)), 200);
});

rootTest('HBONE: bytes a refused stream never delivered are given back to the connection window', async (t) => {
  // Small windows so that a leak shows after two refused streams: 2 x 30_000 of the 65_535 bytes.
  const rig = await serverRig(t, { streamWindow: 65_535, connectionWindow: 65_535 });
  const { r } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  for (const [i, refuse] of [() => 403, () => ({ ip: '127.0.0.1', port: 1 })].entries()) {
    // data sent along with the CONNECT, before the answer (what the engine's own client does)
    r.onInbound = refuse;
    const s = connectReq(session, `127.0.0.1:${rig.echo.port}`);
    const done = closed(s);
    s.end(Buffer.alloc(30_000, 0x61));
    t.is(await status(s), i === 0 ? 403 : 503);
    await within(done, 'refused stream closed');
  }
  r.onInbound = (c) => target(c.authority);
  const s = connectReq(session, `127.0.0.1:${rig.echo.port}`);
  t.is(await status(s), 200);
  const all = readAll(s);
  s.end(Buffer.alloc(20_000, 0x62));
  const got = await within(all, 'a good stream after two refused ones (stalls if their bytes still count against the connection window)', 10_000);
  t.is(got.length, 20_003);
});

rootTest('HBONE: data sent with the CONNECT, before the answer, reaches the app once it is dialed', async (t) => {
  const rig = await serverRig(t);
  const { session } = await h2Session(t, rig.port, rig.client);
  const s = connectReq(session, `127.0.0.1:${rig.echo.port}`);
  const all = readAll(s);
  s.end('early');
  t.is(await status(s), 200);
  t.is((await within(all, 'early data echoed')).toString(), 'earlybye');
  await until(() => rig.r.events.some((e) => e.kind === 2), 'close event');
  t.like(rig.r.events.find((e) => e.kind === 2), { fromApp: 8, toApp: 5, error: undefined });
});

rootTest('HBONE: the app is dialed from the spoofed source address inbound asks for; a bad target is 503', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  r.onInbound = (c) => ({ ...target(c.authority), spoof: '127.0.0.5' });
  const s = connectReq(session, `127.0.0.1:${rig.echo.port}`);
  t.is(await status(s), 200);
  s.end('s');
  t.is((await within(readAll(s), 'spoofed')).toString(), 'sbye');
  t.is(rig.echo.conns[0]!.remote, '127.0.0.5');

  for (const [bad, why] of [[{ ip: 'not-an-ip', port: 80 }, /bad address/], [{ ip: '127.0.0.1', port: 0 }, /bad port/],
    [{ ip: '127.0.0.1', port: rig.echo.port, spoof: '::1' }, /bad source/]] as const) {
    r.onInbound = () => bad;
    const before = r.events.length;
    t.is(await status(connectReq(session, `127.0.0.1:${rig.echo.port}`)), 503, JSON.stringify(bad));
    // the first flow's own close event may still come in meanwhile: look for the failed one
    await until(() => r.events.slice(before).some((e) => e.kind === 2 && e.error !== undefined), 'close event');
    t.regex(r.events.slice(before).find((e) => e.kind === 2 && e.error !== undefined)!.error ?? '', why);
  }
  t.is(rig.echo.conns.length, 1);
});

rootTest('HBONE: a client that never finishes its handshake is dropped at the handshake deadline', async (t) => {
  const rig = await serverRig(t, { handshakeTimeoutMs: 200 });
  const raw = new Socket();
  t.teardown(() => { raw.destroy(); });
  const gone = closed(raw);
  raw.connect(rig.port, '127.0.0.1');
  raw.resume();
  await within(gone, 'silent client dropped');
  t.is(rig.r.context.length, 1);
  t.is(rig.r.verify.length, 0);
  await until(() => rig.r.engine.stats().tunnels === 0, 'connection gone');
});

// =============================================================================================
// 3. TLS

rootTest('TLS: no client certificate, a foreign CA, a null context or a throwing verify are refused; the engine keeps serving', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  const authority = `127.0.0.1:${rig.echo.port}`;

  // no certificate
  t.is(await attempt(rig.port, { rootsPem: rig.client.rootsPem }, authority), 'refused');
  t.is(r.verify.length, 0, 'verify is not asked without a chain');

  // a certificate of another CA (the attacker trusts our root so its side completes)
  const foreign = makeForeignPki('foreign.example');
  const mallory = await foreign.issue(foreign.id('ns', 'mallory'));
  t.is(await attempt(rig.port, { ...mallory, rootsPem: rig.client.rootsPem }, authority), 'refused');
  t.is(r.verify.length, 0, 'OpenSSL refused the chain before JS was asked');

  // our CA, but JS (verify) refuses it
  r.onVerify = () => { throw new Error('not today'); };
  t.is(await attempt(rig.port, rig.client, authority), 'refused');
  r.onVerify = spiffeVerify;

  // no TLS context for the listener: fail closed
  r.onContext = () => null;
  const contexts = r.context.length;
  t.is(await attempt(rig.port, rig.client, authority), 'refused');
  t.is(r.context.length, contexts + 1);

  t.is(r.inbound.length, 0, 'no refused connection got to ask for a stream');
  t.is(rig.echo.conns.length, 0);
  await until(() => r.engine.stats().tunnels === 0, 'refused connections gone');

  // and a good client still gets through
  r.onContext = () => ctxOf(r.engine, rig.server);
  await goodRoundTrip(t, rig, 'after refusals');
  t.is(r.inbound.length, 1);
});

rootTest('TLS: a client that does not offer h2 is refused', async (t) => {
  const rig = await serverRig(t);
  const tls = tlsConnect({
    host: '127.0.0.1', port: rig.port, ca: rig.client.rootsPem, key: rig.client.keyPem, cert: rig.client.chainPem.join(''),
    ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.3', checkServerIdentity: () => undefined,
  });
  t.teardown(() => { tls.destroy(); });
  let err: Error | undefined;
  tls.on('error', (e) => { err = e; });
  await within(closed(tls), 'refused handshake');
  t.truthy(err, 'the handshake failed');
  t.is(rig.r.verify.length, 0);
  t.is(rig.r.inbound.length, 0);
});

// =============================================================================================
// 4. hostile HTTP/2

rootTest('hostile HTTP/2: more than 128 header fields resets the stream before inbound; the session and engine go on', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  const authority = `127.0.0.1:${rig.echo.port}`;
  const many: OutgoingHttpHeaders = {};
  for (let i = 0; i < 200; i++) many[`x-h${i}`] = 'v';
  const wide = connectReq(session, authority, many);
  const e = await t.throwsAsync(status(wide));
  t.regex(e!.message, /without a response/);
  t.not(wide.rstCode, h2c.NGHTTP2_NO_ERROR);
  t.is(r.inbound.length, 0);

  // under the limit on the same session (2 pseudo headers + 100): fine
  const fewer: OutgoingHttpHeaders = {};
  for (let i = 0; i < 100; i++) fewer[`x-h${i}`] = 'v';
  const ok = connectReq(session, authority, fewer);
  t.is(await status(ok), 200);
  ok.end('q');
  t.is((await within(readAll(ok), 'under the limit')).toString(), 'qbye');
  t.is(r.inbound.length, 1);
  t.is(r.engine.stats().tunnels, 1);
});

rootTest('hostile HTTP/2: a rapid-reset flood gets the session closed by the server; a new client is served', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  const { session, tls } = await h2Session(t, rig.port, rig.client);
  const clientPort = tls.localPort!;
  t.true(established(clientPort, rig.port));
  let goaway = false;
  session.on('goaway', () => { goaway = true; });
  await until(() => r.engine.stats().tunnels === 1, 'session accepted');
  let sent = 0;
  for (; sent < 2000 && !session.closed && !session.destroyed && r.engine.stats().tunnels > 0; sent++) {
    const s = connectReq(session, `127.0.0.1:${rig.echo.port}`);
    s.close(h2c.NGHTTP2_CANCEL);
    if (sent % 10 === 9) await ticks(1);
  }
  // The engine closes the abusive session (the client may or may not have noticed yet).
  await until(() => r.engine.stats().tunnels === 0, 'abusive session closed by the engine');
  t.true(sent < 2000, `the engine put up with ${sent} reset streams`);
  await until(() => r.engine.stats().flows === 0, 'flows of the flood gone');
  // Node's session does not always notice a peer that hung up mid-flood, so this is checked in
  // the kernel: the TCP connection between the two is no longer established.
  await until(() => !established(clientPort, rig.port), 'TCP connection of the flood closed');
  t.log(`sent ${sent} streams before the engine closed the session; GOAWAY seen by the client: ${goaway}`);
  // everything the flood opened towards the app was torn down
  await until(() => rig.echo.conns.every((c) => c.closed), 'app connections of the flood closed');
  await goodRoundTrip(t, rig, 'after the flood');
});

rootTest('hostile bytes: garbage instead of a TLS ClientHello, and garbage after the handshake, are dropped', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  // not TLS at all
  const raw = new Socket();
  t.teardown(() => { raw.destroy(); });
  raw.on('error', () => {});
  raw.connect(rig.port, '127.0.0.1');
  await once(raw, 'connect');
  raw.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await within(closed(raw), 'plain HTTP dropped');
  // TLS fine, then not HTTP/2
  const tls = tlsTo(rig.port, rig.client);
  t.teardown(() => { tls.destroy(); });
  await within(once(tls, 'secureConnect'), 'handshake');
  tls.resume(); // read, or the peer's FIN is never noticed
  tls.write(Buffer.alloc(4096, 0x41));
  await within(closed(tls), 'non-h2 bytes dropped');
  await until(() => r.engine.stats().tunnels === 0, 'connections gone');
  t.is(r.inbound.length, 0);
  await goodRoundTrip(t, rig, 'after garbage');
});

// =============================================================================================
// 6. closeFlow and destroy (server side)

rootTest('closeFlow on an open HBONE flow resets the stream and the app connection and emits a close event', async (t) => {
  const rig = await serverRig(t);
  const { r, echo } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  const s = connectReq(session, `127.0.0.1:${echo.port}`);
  t.is(await status(s), 200);
  s.write('abc');
  t.is(await within(readN(s, 3), 'echo'), 'abc');
  const flowId = r.inbound[0]!.flowId;
  const closedStream = closed(s);
  r.engine.closeFlow(flowId, 'policy changed');
  await within(closedStream, 'stream reset');
  t.is(s.rstCode, h2c.NGHTTP2_CANCEL);
  await until(() => echo.conns[0]!.closed, 'app connection closed');
  t.is(echo.conns[0]!.error, 'ECONNRESET', 'the app connection was reset, not ended');
  await until(() => r.events.some((e) => e.kind === 2), 'close event');
  t.like(r.events.find((e) => e.kind === 2), { flowId, fromApp: 3, toApp: 3, error: 'policy changed' });
  // closing a flow that is gone (or never was) is a no-op: no second close event
  const closes = r.events.filter((e) => e.kind === 2).length;
  r.engine.closeFlow(flowId, 'again');
  r.engine.closeFlow(999_999, 'never existed');
  // the connection carries on
  const s2 = connectReq(session, `127.0.0.1:${echo.port}`);
  t.is(await status(s2), 200);
  await r.engine.flush(); // a close event would be news: make sure none is still waiting
  t.is(r.events.filter((e) => e.kind === 2).length, closes, 'no close event for the no-ops');
});

rootTest('closeFlows(listener) cuts every flow and connection of that listener', async (t) => {
  const rig = await serverRig(t);
  const { r, echo } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  const streams = [0, 1, 2].map(() => connectReq(session, `127.0.0.1:${echo.port}`));
  for (const s of streams) t.is(await status(s), 200);
  const sessionClosed = closed(session);
  r.engine.closeFlows(rig.lid, 'drain deadline');
  await within(sessionClosed, 'session cut');
  await until(() => r.events.filter((e) => e.kind === 2).length === 3, 'three close events');
  t.true(r.events.filter((e) => e.kind === 2).every((e) => e.error === 'drain deadline'));
  t.like(r.engine.stats(), { flows: 0, tunnels: 0, listeners: 1 });
  await goodRoundTrip(t, rig, 'listener still accepts');
});

rootTest('unlisten: no new connections; an open session gets GOAWAY while its stream goes on', async (t) => {
  const rig = await serverRig(t);
  const { r, echo } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  const s = connectReq(session, `127.0.0.1:${echo.port}`);
  t.is(await status(s), 200);
  const goaway = once(session, 'goaway');
  r.engine.unlisten(rig.lid);
  await within(goaway, 'GOAWAY');
  t.is(r.engine.stats().listeners, 0);
  s.write('still');
  t.is(await within(readN(s, 5), 'open stream after unlisten'), 'still');
  s.end();
  t.is((await within(readAll(s), 'end')).toString(), 'bye');
  t.is(await attempt(rig.port, rig.client, `127.0.0.1:${echo.port}`), 'refused');
});

// Callbacks may call back into the engine (a policy change closing flows, an agent shutting down).

rootTest('re-entrant: closeFlow from an event callback (inside the engine\'s poll) closes the other flow; the engine goes on', async (t) => {
  const rig = await serverRig(t);
  const { r, echo } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  const a = connectReq(session, `127.0.0.1:${echo.port}`);
  const b = connectReq(session, `127.0.0.1:${echo.port}`);
  t.is(await status(a), 200);
  t.is(await status(b), 200);
  const [idA, idB] = [r.inbound[0]!.flowId, r.inbound[1]!.flowId];
  const nested: boolean[] = [];
  const events = r.events;
  // when A closes, close B from inside the event callback
  r.onEvent = (ev) => { if (ev.kind === 2 && ev.flowId === idA) { r.engine.closeFlow(idB, 'nested close'); nested.push(true); } };
  const bClosed = closed(b);
  a.end();
  t.is((await within(readAll(a), 'A ends cleanly')).toString(), 'bye');
  await within(bClosed, 'B reset from the callback');
  t.deepEqual(nested, [true]);
  t.is(b.rstCode, h2c.NGHTTP2_CANCEL);
  await until(() => events.filter((e) => e.kind === 2).length === 2, 'both close events');
  t.like(events.find((e) => e.kind === 2 && e.flowId === idB), { error: 'nested close' });
  await goodRoundTrip(t, rig, 'after a nested closeFlow');
  t.like(r.engine.stats(), { flows: 0, tunnels: 2, listeners: 1 });
});

rootTest('re-entrant: closeFlows with an event callback that closes other flows closes each flow once', async (t) => {
  const rig = await serverRig(t);
  const { r, echo } = rig;
  const { session } = await h2Session(t, rig.port, rig.client);
  const streams = [0, 1, 2, 3].map(() => connectReq(session, `127.0.0.1:${echo.port}`));
  for (const s of streams) t.is(await status(s), 200);
  const ids = r.inbound.map((c) => c.flowId);
  const events = r.events;
  r.onEvent = (ev) => { if (ev.kind === 2) for (const id of ids) if (id !== ev.flowId) r.engine.closeFlow(id, 'nested'); };
  r.engine.closeFlows(0, 'outer');
  await until(() => events.filter((e) => e.kind === 2).length >= 4, 'four close events');
  const closes = events.filter((e) => e.kind === 2);
  t.is(closes.length, 4);
  t.is(new Set(closes.map((e) => e.flowId)).size, 4, 'each flow closed once');
  t.like(r.engine.stats(), { flows: 0, tunnels: 0, listeners: 1 });
  await goodRoundTrip(t, rig, 'after nested closes');
});

rootTest('re-entrant: destroy() from inside an inbound, verify, event or context callback does not crash and cuts everything', async (t) => {
  for (const where of ['inbound', 'verify', 'event', 'context'] as const) {
    const rig = await serverRig(t);
    const { r } = rig;
    if (where === 'inbound') r.onInbound = () => { r.destroy(); return { ip: '127.0.0.1', port: rig.echo.port }; };
    if (where === 'verify') r.onVerify = (chain, roots, tag) => { r.destroy(); return spiffeVerify(chain, roots, tag); };
    if (where === 'context') { const ctx = r.onContext(rig.lid); r.onContext = () => { r.destroy(); return ctx; }; }
    if (where === 'event') r.onEvent = () => { r.destroy(); };
    // several CONNECTs in one burst, so more frames follow the one whose callback destroys
    const tls = tlsTo(rig.port, rig.client);
    t.teardown(() => { tls.destroy(); });
    const tlsClosed = closed(tls);
    tls.resume();
    await within(new Promise<void>((res) => { tls.once('secureConnect', () => res()); tls.once('close', () => res()); }), `${where}: handshake`);
    if (!tls.destroyed) {
      const session = h2connect('https://hbone', { createConnection: () => tls });
      session.on('error', () => {});
      t.teardown(() => { session.destroy(); });
      for (let i = 0; i < 4; i++) connectReq(session, `127.0.0.1:${rig.echo.port}`);
    }
    await within(tlsClosed, `${where}: connection cut by destroy`);
    t.like(r.engine.stats(), { flows: 0, tunnels: 0, listeners: 0 }, where);
    await ticks(10);
    await until(() => rig.echo.conns.every((c) => c.closed), `${where}: app connections closed`);
  }
  // the process is alive and a fresh engine works
  await goodRoundTrip(t, await serverRig(t), 'a new engine');
});

async function oneFlowThenDestroy(t: ExecutionContext): Promise<void> {
  const rig = await serverRig(t);
  const { r, echo } = rig;
  const { session, tls } = await h2Session(t, rig.port, rig.client);
  const s = connectReq(session, `127.0.0.1:${echo.port}`);
  t.is(await status(s), 200);
  s.write('x');
  t.is(await within(readN(s, 1), 'echo'), 'x');
  const events = r.events.length;
  const tlsClosed = closed(tls);
  r.destroy();
  t.like(r.engine.stats(), { flows: 0, tunnels: 0, listeners: 0 });
  await within(tlsClosed, 'client connection cut by destroy');
  await until(() => echo.conns.every((c) => c.closed), 'app connection cut by destroy');
  await ticks(10);
  // By now the engine's memory is freed (its uv handles closed); reuse the heap, then call in:
  // the wrapper must refuse without reaching the addon (which would read the freed engine).
  const scribble = Array.from({ length: 500 }, () => Buffer.allocUnsafeSlow(66_000).fill(0));
  const lfd = listenInNetns(SELF, { address: '127.0.0.1', port: 0 });
  t.teardown(() => { closeFd(lfd); });
  t.throws(() => r.engine.listen(lfd, SELF, { kind: 'hbone', mark: 0 }), { code: 'AMBIT_ENGINE_CLOSED' });
  t.is(scribble.length, 500);
  r.engine.destroy(); // twice is fine
  r.engine.closeFlow(1, 'x'); // no-ops after destroy
  r.engine.closeFlows(0, 'x');
  r.engine.unlisten(1);
  t.like(r.engine.stats(), { flows: 0, tunnels: 0, listeners: 0 });
  t.is(r.events.length, events, 'no events after destroy');
  t.is(r.late, 0, 'no callbacks after destroy');
  session.destroy();
  await new Promise<void>((res) => { echo.server.close(() => res()); });
}

rootSerial('destroy() cuts open flows silently and leaves no fd behind', async (t) => {
  await pkiOnce();
  // a first round warms up whatever the runtime opens once (io_uring, threadpool handles, ...)
  await oneFlowThenDestroy(t);
  await ticks(10);
  const before = openFds();
  for (let i = 0; i < 3; i++) await oneFlowThenDestroy(t);
  // epoll fd and uv handles close on the next loop turns; the listener fds and dialed sockets at once
  await until(() => openFds() <= before, `fd count back to ${before} (now ${openFds()})`).catch(() => undefined);
  t.true(openFds() <= before, `${openFds() - before} more fds after three engines were destroyed`);
});

/** Threads of this process named `name` (/proc/self/task/<tid>/comm). */
function threadsNamed(name: string): number {
  let n = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === name) n++;
    } catch { /* the thread ended while we looked */ }
  }
  return n;
}

test.serial('the engine thread is named ambit-engine (top -H, profiles) and is gone after destroy()', async (t) => {
  const before = threadsNamed('ambit-engine');
  const r = recorder(t);
  await until(() => threadsNamed('ambit-engine') === before + 1, 'the named engine thread');
  t.is(threadsNamed('ambit-engine'), before + 1);
  r.destroy();
  t.is(threadsNamed('ambit-engine'), before, 'destroy() joined it');
});

rootSerial('engines with listeners but no traffic leave no fd behind after destroy()', async (t) => {
  await ticks(10);
  const before = openFds();
  for (let i = 0; i < 10; i++) {
    const r = recorder(t);
    r.engine.listen(listenInNetns(SELF, { address: '127.0.0.1', port: 0 }), SELF, { kind: 'outbound', mark: 0 });
    r.engine.listen(listenInNetns(SELF, { address: '127.0.0.1', port: 0 }), SELF, { kind: 'hbone', mark: 0 });
    r.destroy();
  }
  await until(() => openFds() <= before, 'fd count back').catch(() => undefined);
  t.true(openFds() <= before, `${openFds() - before} more fds after ten engines`);
});

rootTest('an outbound connection without a redirect (no original destination) is reset, not carried', async (t) => {
  const r = recorder(t);
  const fd = listenInNetns(SELF, { address: '127.0.0.1', port: 0 });
  const port = boundPort(fd);
  r.engine.listen(fd, SELF, { kind: 'outbound', mark: 0 });
  r.onOutbound = () => { throw new Error('must not be asked'); };
  const s = new Socket();
  t.teardown(() => { s.destroy(); });
  let code: string | undefined;
  s.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
  s.connect(port, '127.0.0.1');
  await within(closed(s), 'reset');
  t.is(code, 'ECONNRESET');
  t.is(r.outbound.length, 0);
  t.is(r.engine.stats().flows, 0);
});

// =============================================================================================
// 5. the client side, with real redirection in a pod netns

const RULES = `
table inet ambit-nat {
  chain output {
    type nat hook output priority -100;
    tcp dport 9999 mark and 0xfff != 0x539 redirect to :15001
  }
}
table inet ambit-mangle {
  chain output {
    type filter hook output priority 0;
    tcp dport { 7777-7779, 15008 } mark and 0xfff != 0x539 reject with tcp reset
  }
}
`;
const POD_IP = '10.77.0.1';
const APP_PORT = 7777;
/** counts what it receives; on FIN answers with the count and ends */
const SINK_PORT = 7778;
/** writes `hello` and ends at once, then counts what still arrives */
const GREETER_PORT = 7779;

interface Counter { received: number[]; ended: number }

async function sinkServer(t: TeardownHost, fd: number): Promise<Counter> {
  const c: Counter = { received: [], ended: 0 };
  const server = createServer({ allowHalfOpen: true }, (s) => {
    const i = c.received.push(0) - 1;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => { c.received[i]! += d.length; });
    s.on('end', () => { c.ended++; s.end(String(c.received[i])); });
  });
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); }));
  server.listen({ fd });
  await once(server, 'listening');
  return c;
}

async function greeterServer(t: TeardownHost, fd: number): Promise<Counter> {
  const c: Counter = { received: [], ended: 0 };
  const server = createServer({ allowHalfOpen: true }, (s) => {
    const i = c.received.push(0) - 1;
    s.on('error', () => {});
    s.end('hello');
    s.on('data', (d: Buffer) => { c.received[i]! += d.length; });
    s.on('end', () => { c.ended++; });
  });
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); }));
  server.listen({ fd });
  await once(server, 'listening');
  return c;
}

interface PodRig {
  ns: RawNetns;
  cli: Recorder;
  srv: Recorder;
  echo: Echo;
  sink: Counter;
  greeter: Counter;
  outLid: number;
  clientId: string;
  serverId: string;
  cctx: EngineTls;
  /** dials POD_IP:9999 from the pod (captured), half-open allowed */
  dial(): Promise<Socket>;
}

/**
 * One netns: the app's connections to POD_IP:9999 are redirected to the client engine's outbound
 * listener (15001); its plan carries them over HBONE to the server engine's listener on
 * POD_IP:15008, which dials the echo app on 127.0.0.1:7777. Both engines must dial with mark
 * 0x539: unmarked connections to 7777 and 15008 are rejected.
 */
async function podRig(t: TeardownHost, cliOpts: Partial<HboneSettings> = {}, srvOpts: Partial<HboneSettings> = {}): Promise<PodRig> {
  const { client, server, clientId, serverId } = await pkiOnce();
  const ns = addNetns(t, 'eng');
  addLocalAddrs(ns, [`${POD_IP}/32`]);
  ns.nft(RULES);
  const echo = await echoServer(t, listenInNetns(ns.path, { address: '127.0.0.1', port: APP_PORT }));
  const sink = await sinkServer(t, listenInNetns(ns.path, { address: '127.0.0.1', port: SINK_PORT }));
  const greeter = await greeterServer(t, listenInNetns(ns.path, { address: '127.0.0.1', port: GREETER_PORT }));

  const srv = recorder(t, srvOpts);
  const sctx = ctxOf(srv.engine, server);
  srv.onContext = () => sctx;
  srv.onInbound = (c) => target(c.authority);
  srv.engine.listen(listenInNetns(ns.path, { address: POD_IP, port: 15008 }), ns.path, { kind: 'hbone', mark: 0x539, tag: 'inbound' });

  const cli = recorder(t, cliOpts);
  const cctx = ctxOf(cli.engine, client);
  cli.onOutbound = (c) => ({
    t: 2, ctx: cctx, key: `${clientId}|${serverId}|${POD_IP}`, tag: serverId, ip: POD_IP, port: 15008,
    authority: `127.0.0.1:${APP_PORT}`, headers: `forwarded\0for="${c.peerIp}"`,
  });
  const outLid = cli.engine.listen(listenInNetns(ns.path, { address: '0.0.0.0', port: 15001 }), ns.path, { kind: 'outbound', mark: 0x539 });

  const dial = async (): Promise<Socket> => {
    const fd = await connectInNetns(ns.path, { address: POD_IP, port: 9999 });
    const s = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    s.on('error', () => {});
    t.teardown(() => { s.destroy(); });
    return s;
  };
  return { ns, cli, srv, echo, sink, greeter, outLid, clientId, serverId, cctx, dial };
}

netnsTest('client side: a captured connection goes over HBONE to the app; 1 MB round-trips intact; plan, verify tag and events check out', async (t) => {
  const p = await podRig(t);
  // the engines' marks matter: without one, the app and the HBONE port are out of reach
  for (const [address, port] of [['127.0.0.1', APP_PORT], [POD_IP, 15008]] as const) {
    await t.throwsAsync(connectInNetns(p.ns.path, { address, port, timeoutMs: 5000 }), undefined, `unmarked ${address}:${port}`);
  }
  const app = await p.dial();
  const appAddr = { ip: app.localAddress, port: app.localPort };
  t.truthy(appAddr.ip);
  const data = randomBytes(1024 * 1024);
  const all = readAll(app);
  app.end(data);
  const got = await within(all, '1 MB through the engines', 60_000);
  t.is(got.length, data.length + 3);
  t.true(got.subarray(0, data.length).equals(data), 'bytes intact');
  t.is(got.subarray(data.length).toString(), 'bye', 'half-close passed through both engines');

  // the outbound decision saw the original destination and the app's address
  t.is(p.cli.outbound.length, 1);
  t.like(p.cli.outbound[0], { lid: p.outLid, dstIp: POD_IP, dstPort: 9999, peerIp: appAddr.ip, peerPort: appAddr.port });
  // the client checked the server with the plan's tag, the server checked the client with its listener's
  t.deepEqual(p.cli.verify, [{ tag: p.serverId, id: p.serverId }]);
  t.deepEqual(p.srv.verify, [{ tag: 'inbound', id: p.clientId }]);
  // the CONNECT carried the plan's authority and headers
  t.like(p.srv.inbound[0], { peer: p.clientId, authority: `127.0.0.1:${APP_PORT}`, forwarded: `for="${appAddr.ip}"`, lip: POD_IP, lport: 15008 });

  const flowId = p.cli.outbound[0]!.flowId;
  await until(() => p.cli.events.some((e) => e.kind === 2) && p.srv.events.some((e) => e.kind === 2), 'close events on both sides');
  t.deepEqual(p.cli.events.map((e) => [e.kind, e.flowId]), [[1, flowId], [2, flowId]]);
  // client side: the app is the captured client (it sent the data, received the echo)
  t.like(p.cli.events[1], { fromApp: data.length, toApp: data.length + 3, error: undefined });
  // server side: the app is the echo server
  t.like(p.srv.events.find((e) => e.kind === 2), { fromApp: data.length + 3, toApp: data.length, error: undefined });
  t.is(p.cli.engine.stats().flows, 0);
  t.is(p.cli.engine.stats().tunnels, 1, 'the HBONE connection stays pooled');
});

netnsTest('flush: once a captured flow is gone, flush() has delivered its events, and the flush answers never reach event()', async (t) => {
  const p = await podRig(t);
  const app = await p.dial();
  const all = readAll(app);
  app.end('ping');
  t.is((await within(all, 'echo')).toString(), 'pingbye');
  // The flow is freed before its close event is delivered: the event may still wait (news are
  // batched, engine.h NEWS_MS), so counting flows is no proof; flush() is.
  await until(() => p.cli.engine.stats().flows === 0, 'the client flow freed');
  await p.cli.engine.flush();
  const flowId = p.cli.outbound[0]!.flowId;
  t.deepEqual(p.cli.events.map((e) => [e.kind, e.flowId]), [[1, flowId], [2, flowId]], 'established and closed, delivered by the flush');
  // concurrent flushes each resolve; none shows up as an event
  await Promise.all([p.cli.engine.flush(), p.cli.engine.flush(), p.srv.engine.flush()]);
  t.true(p.cli.events.every((e) => e.kind === 1 || e.kind === 2));
  // after destroy a flush resolves at once (nothing more will come)
  p.cli.destroy();
  await p.cli.engine.flush();
});

netnsTest('client side: 150 sequential connections share pooled connections, at most 100 streams each', async (t) => {
  const p = await podRig(t);
  for (let i = 0; i < 150; i++) {
    const app = await p.dial();
    const all = readAll(app);
    app.end(`ping${i}`);
    const got = (await within(all, `connection ${i}`)).toString();
    if (got !== `ping${i}bye`) {
      t.fail(`connection ${i}: got ${JSON.stringify(got)}`);
      return;
    }
  }
  t.is(p.cli.outbound.length, 150);
  // 150 streams at 100 per connection: exactly two TLS connections, seen from both ends
  t.is(p.cli.verify.length, 2);
  t.true(p.cli.verify.every((v) => v.tag === p.serverId && v.id === p.serverId));
  t.is(p.srv.verify.length, 2);
  t.is(p.srv.inbound.length, 150);
  await until(() => p.cli.engine.stats().flows === 0 && p.cli.engine.stats().tunnels === 1, 'the spent connection retired');
  await until(() => p.srv.engine.stats().tunnels === 1, 'the server saw the spent connection go');
  t.is(p.cli.events.filter((e) => e.kind === 2 && e.error !== undefined).length, 0);
});

netnsTest('client side: concurrent connections while the first handshake is in flight all wait for it and share it', async (t) => {
  const p = await podRig(t);
  const apps = await Promise.all(Array.from({ length: 20 }, () => p.dial()));
  const results = apps.map((a, i) => { const all = readAll(a); a.end(`c${i}`); return all; });
  const got = await within(Promise.all(results), 'twenty connections');
  t.deepEqual(got.map((b) => b.toString()), apps.map((_, i) => `c${i}bye`));
  t.is(p.cli.verify.length, 1, 'one handshake for all of them');
  t.is(p.srv.verify.length, 1);
});

netnsTest('client side: refusals reset the captured connection (null plan, a server answering 403, a server with the wrong identity)', async (t) => {
  const p = await podRig(t);
  const reset = async (what: string): Promise<string | undefined> => {
    let app: Socket;
    try {
      app = await p.dial();
    } catch (e) {
      // the reset can beat connectInNetns's own check of the handshake
      if (isSyscallError(e, 'ECONNRESET')) return 'ECONNRESET';
      throw e;
    }
    let code: string | undefined;
    app.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
    app.write('x');
    await within(closed(app), what);
    return code;
  };
  const plan = p.cli.onOutbound;

  // JS refuses the captured connection
  p.cli.onOutbound = () => null;
  t.is(await reset('null plan'), 'ECONNRESET');
  t.is(p.cli.events.length, 0, 'a refused connection is JS\'s own to account');

  // the server refuses the stream
  p.cli.onOutbound = plan;
  p.srv.onInbound = () => 403;
  t.is(await reset('403'), 'ECONNRESET');
  await until(() => p.cli.events.some((e) => e.kind === 2), 'close event');
  t.regex(p.cli.events.find((e) => e.kind === 2)!.error ?? '', /403/);
  t.is(p.cli.events.find((e) => e.kind === 2)!.fail, FAIL.STATUS);
  t.false(p.cli.events.some((e) => e.kind === 1), 'never established');
  t.is(p.echo.conns.length, 0);

  // the server is not who the plan expects: the client refuses the TLS connection
  p.srv.onInbound = (c) => target(c.authority);
  p.cli.onOutbound = (c) => ({ ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), key: 'other', tag: `spiffe://${TD}/ns/ns-x/sa/someone-else` });
  const inbound = p.srv.inbound.length;
  t.is(await reset('wrong server identity'), 'ECONNRESET');
  t.is(p.srv.inbound.length, inbound, 'no stream was opened to the wrong server');
  await until(() => p.cli.events.filter((e) => e.kind === 2).length === 2, 'close event of the refused TLS connection');
  t.is(p.cli.events.filter((e) => e.kind === 2)[1]!.fail, FAIL.TLS, 'a refused server identity is a TLS failure');
  t.is(p.echo.conns.length, 0);

  // and the right plan works again
  p.cli.onOutbound = plan;
  const app = await p.dial();
  const all = readAll(app);
  app.end('ok');
  t.is((await within(all, 'good plan')).toString(), 'okbye');
});

netnsTest('client side: closeFlow resets the captured connection and the HBONE stream, both engines report it', async (t) => {
  const p = await podRig(t);
  const app = await p.dial();
  app.write('hello');
  t.is(await within(readN(app, 5), 'echo'), 'hello');
  const flowId = p.cli.outbound[0]!.flowId;
  let code: string | undefined;
  app.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
  const appClosed = closed(app);
  p.cli.engine.closeFlow(flowId, 'policy changed');
  await within(appClosed, 'app connection reset');
  t.is(code, 'ECONNRESET');
  await until(() => p.cli.events.some((e) => e.kind === 2), 'client close event');
  t.like(p.cli.events.find((e) => e.kind === 2), { flowId, fromApp: 5, toApp: 5, error: 'policy changed', fail: FAIL.LOCAL });
  // the server engine got RST_STREAM and reset the app connection
  await until(() => p.srv.events.some((e) => e.kind === 2), 'server close event');
  t.regex(p.srv.events.find((e) => e.kind === 2)!.error ?? '', /reset|cancel/i);
  await until(() => p.echo.conns[0]!.closed, 'echo connection closed');
  t.is(p.echo.conns[0]!.error, 'ECONNRESET');
  // the pooled connection survives the reset stream
  t.is(p.cli.engine.stats().tunnels, 1);
  const again = await p.dial();
  const all = readAll(again);
  again.end('more');
  t.is((await within(all, 'after closeFlow')).toString(), 'morebye');
  t.is(p.cli.verify.length, 1);
});

netnsTest('client side: a server engine that goes away resets the flows it carried; the next connection dials anew', async (t) => {
  const p = await podRig(t);
  const app = await p.dial();
  app.write('one');
  t.is(await within(readN(app, 3), 'echo'), 'one');
  let code: string | undefined;
  app.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
  const appClosed = closed(app);
  p.srv.destroy();
  await within(appClosed, 'app connection cut');
  t.is(code, 'ECONNRESET');
  await until(() => p.cli.events.some((e) => e.kind === 2), 'client close event');
  t.regex(p.cli.events.find((e) => e.kind === 2)!.error ?? '', /^hbone: /);
  await until(() => p.cli.engine.stats().tunnels === 0 && p.cli.engine.stats().flows === 0, 'dead connection dropped from the pool');
  // nothing listens on 15008 any more: the next captured connection is refused cleanly
  const next = await p.dial().catch((e: unknown) => e);
  if (next instanceof Socket) {
    await within(closed(next), 'next connection reset');
  } else {
    t.true(isSyscallError(next, 'ECONNRESET'), String(next));
  }
  await until(() => p.cli.events.filter((e) => e.kind === 2).length === 2, 'second close event');
  t.regex(p.cli.events.filter((e) => e.kind === 2)[1]!.error ?? '', /connect|ECONNREFUSED/);
  t.is(p.cli.verify.length, 1);
});

netnsTest('client side: an idle pooled connection is retired after idleMs, on both ends', async (t) => {
  const p = await podRig(t, { idleMs: 1 });
  const app = await p.dial();
  const all = readAll(app);
  app.end('idle');
  t.is((await within(all, 'one flow')).toString(), 'idlebye');
  await until(() => p.cli.engine.stats().tunnels === 0, 'client retired the idle connection');
  await until(() => p.srv.engine.stats().tunnels === 0, 'server saw it go');
  // a new connection gets a new TLS connection
  const again = await p.dial();
  const all2 = readAll(again);
  again.end('x');
  t.is((await within(all2, 'after retire')).toString(), 'xbye');
  t.is(p.cli.verify.length, 2);
});

netnsTest('client and server side: unreachable peers time out (HBONE connect, app dial) and reset the captured connection', async (t) => {
  // the client's handshake deadline is generous: under load a real handshake (two JS round trips
  // for the identity checks) can take longer than 200 ms, and the second half needs one
  const p = await podRig(t, { connectTimeoutMs: 200, handshakeTimeoutMs: 5_000 }, { connectTimeoutMs: 200 });
  addBlackhole(t, p.ns, 'bh0', '10.99.0.1/24', '10.99.0.2');
  const plan = p.cli.onOutbound;
  const resetOf = async (what: string): Promise<void> => {
    // the engine (its own thread) may reset the captured connection before our side saw it connect
    const app = await p.dial().catch((e: unknown) => { if (isSyscallError(e, 'ECONNRESET')) return undefined; throw e; });
    if (app === undefined) return;
    app.write('x');
    await within(closed(app), what);
  };

  // the HBONE peer does not answer: the pooled connection's deadline fails the waiting flow
  p.cli.onOutbound = (c) => ({ ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), key: 'blackhole', ip: '10.99.0.2' });
  await resetOf('HBONE connect timeout');
  await until(() => p.cli.events.some((e) => e.kind === 2), 'client close event');
  t.regex(p.cli.events.find((e) => e.kind === 2)!.error ?? '', /ETIMEDOUT/);
  t.is(p.cli.engine.stats().tunnels, 0);

  // the app behind the server does not answer: 503 to the client engine, which resets the app
  p.cli.onOutbound = plan;
  p.srv.onInbound = () => ({ ip: '10.99.0.2', port: 80 });
  await resetOf('app dial timeout');
  await until(() => p.srv.events.some((e) => e.kind === 2), 'server close event');
  t.regex(p.srv.events.find((e) => e.kind === 2)!.error ?? '', /connect: ETIMEDOUT/);
  await until(() => p.cli.events.filter((e) => e.kind === 2).length === 2, 'second client close event');
  // usually the server's 503; when the file's other tests load the machine the client sometimes
  // sees the session closed instead (open question, in the issue note): either way an error, never a clean end
  t.regex(p.cli.events.filter((e) => e.kind === 2)[1]!.error ?? '', /503|peer closed the connection/);
});

/** Writes `total` bytes in 1 MiB chunks, honouring backpressure, then ends. */
async function blast(s: Socket, total: number): Promise<void> {
  const chunk = Buffer.alloc(1024 * 1024, 0x5a);
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!s.write(chunk.subarray(0, Math.min(chunk.length, total - sent)))) await once(s, 'drain');
  }
  s.end();
}

for (const mode of ['hbone', 'plain'] as const) {
  netnsTest(`${mode}: 32 MiB to an app that only reads arrive whole, and its answer after our FIN comes back`, async (t) => {
    const p = await podRig(t);
    const hbone = p.cli.onOutbound;
    p.cli.onOutbound = (c) => (mode === 'plain' ? { t: 1, ip: '127.0.0.1', port: SINK_PORT } : { ...(hbone(c) as Extract<OutboundPlan, { t: 2 }>), authority: `127.0.0.1:${SINK_PORT}` });
    const total = 32 * 1024 * 1024;
    const app = await p.dial();
    const answer = readAll(app);
    await within(blast(app, total), 'sending 32 MiB', 60_000);
    t.is((await within(answer, 'the sink\'s count', 60_000)).toString(), String(total));
    await until(() => p.cli.events.some((e) => e.kind === 2), 'close event');
    t.like(p.cli.events.find((e) => e.kind === 2), { fromApp: total, toApp: String(total).length, error: undefined });
    t.is(p.cli.events[0]!.kind, 1);
  });

  netnsTest(`${mode}: an app that answers and closes first still receives what the client sends afterwards`, async (t) => {
    const p = await podRig(t);
    const hbone = p.cli.onOutbound;
    p.cli.onOutbound = (c) => (mode === 'plain' ? { t: 1, ip: '127.0.0.1', port: GREETER_PORT } : { ...(hbone(c) as Extract<OutboundPlan, { t: 2 }>), authority: `127.0.0.1:${GREETER_PORT}` });
    const app = await p.dial();
    const appClosed = closed(app);
    const greeting = await within(readAll(app), 'greeting and FIN');
    t.is(greeting.toString(), 'hello');
    t.false(app.writableEnded);
    app.end('late words');
    await until(() => p.greeter.ended === 1, 'the app got our FIN');
    t.deepEqual(p.greeter.received, [10]);
    await within(appClosed, 'connection closed');
    await until(() => p.cli.events.some((e) => e.kind === 2), 'close event');
    t.like(p.cli.events.find((e) => e.kind === 2), { fromApp: 10, toApp: 5, error: undefined });
  });
}

netnsTest('plain: an upstream that refuses resets the captured connection with a connect error', async (t) => {
  const p = await podRig(t);
  p.cli.onOutbound = () => ({ t: 1, ip: '127.0.0.1', port: 7770 });
  let code: string | undefined;
  // The engine (its own thread) may reset the captured connection before our side of the
  // handshake is even reported complete: the reset then shows at connect.
  const app = await p.dial().catch((e: { errno?: string; code?: string }) => { code = e.errno ?? e.code; return undefined; });
  if (app) {
    app.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
    app.write('x');
    await within(closed(app), 'reset');
  }
  t.is(code, 'ECONNRESET');
  await until(() => p.cli.events.some((e) => e.kind === 2), 'close event');
  t.regex(p.cli.events.find((e) => e.kind === 2)!.error ?? '', /connect: ECONNREFUSED/);
  t.false(p.cli.events.some((e) => e.kind === 1));
});

for (const mode of ['plain', 'hbone'] as const) {
  netnsTest(`${mode}: long fast transfers to a reading app never stall in the relay`, async (t) => {
    // Large windows (this netns only) let more pile up per poll than the relay takes in one turn;
    // what it leaves must be picked up again although edge-triggered epoll reports nothing new.
    const p = await podRig(t);
    p.ns.exec('/usr/sbin/sysctl', '-w', 'net.ipv4.tcp_wmem=4096 16384 33554432');
    p.ns.exec('/usr/sbin/sysctl', '-w', 'net.ipv4.tcp_rmem=4096 131072 33554432');
    const hbone = p.cli.onOutbound;
    p.cli.onOutbound = (c) => (mode === 'plain' ? { t: 1, ip: '127.0.0.1', port: SINK_PORT } : { ...(hbone(c) as Extract<OutboundPlan, { t: 2 }>), authority: `127.0.0.1:${SINK_PORT}` });
    const total = 256 * 1024 * 1024;
    for (let k = 0; k < 8; k++) {
      const app = await p.dial();
      const answer = readAll(app);
      await within(blast(app, total), `transfer ${k}: sending`, 60_000);
      t.is((await within(answer, `transfer ${k}: the sink's count`, 20_000)).toString(), String(total));
    }
  });
}

netnsTest('client side: plan headers are sent as given; a dangling name without a value is not read past', async (t) => {
  const p = await podRig(t);
  const plan = p.cli.onOutbound;
  const cases: [string, string | undefined][] = [
    ['forwarded\0for=a', 'for=a'],
    ['x-a\0b\0forwarded\0for=b', 'for=b'],
    ['', undefined],
    ['forwarded', undefined],
    ['x-a\0b\0forwarded', undefined],
    ['forwarded\0for=c\0', 'for=c'],
  ];
  for (const [headers, forwarded] of cases) {
    p.cli.onOutbound = (c) => ({ ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), headers });
    const app = await p.dial();
    const all = readAll(app);
    app.end('h');
    t.is((await within(all, JSON.stringify(headers))).toString(), 'hbye', JSON.stringify(headers));
    t.is(p.srv.inbound.at(-1)!.forwarded, forwarded, JSON.stringify(headers));
  }
});

// =============================================================================================
// 6. cases carried over from the Node HBONE pool and server tests (removed with that data path)

rootTest('TLS: a new context (certificate rotation) applies to new connections; an open one keeps its own', async (t) => {
  const rig = await serverRig(t);
  const rotated = await rig.pki.issue(rig.pki.id('ns-b', 'server-v2'));
  const before = await h2Session(t, rig.port, rig.client);
  t.is(spiffeUri(verifyTlsPeer(before.tls, rig.client.rootsPem)), rig.serverId);
  const v2 = ctxOf(rig.r.engine, rotated);
  rig.r.onContext = () => v2;
  const after = await h2Session(t, rig.port, rig.client);
  t.is(spiffeUri(verifyTlsPeer(after.tls, rig.client.rootsPem)), spiffeUri(rotated.identity));
  // the connection made before the rotation still carries new streams
  const s = connectReq(before.session, `127.0.0.1:${rig.echo.port}`);
  t.is(await status(s), 200);
  s.write('old');
  t.is(await within(readN(s, 3), 'echo on the old connection'), 'old');
  s.destroy();
});

rootTest('hostile HTTP/2: a header list over 64 KiB resets the stream before inbound; the engine goes on', async (t) => {
  const rig = await serverRig(t);
  const tls = tlsTo(rig.port, rig.client);
  t.teardown(() => { tls.destroy(); });
  await within(once(tls, 'secureConnect'), 'tls handshake');
  // node's own limit on what it sends is raised, so the engine is the one to refuse
  const session = h2connect('https://hbone', { createConnection: () => tls, maxSendHeaderBlockLength: 1 << 20 });
  session.on('error', () => {});
  t.teardown(() => { session.destroy(); });
  let unsent = false;
  session.on('frameError', () => { unsent = true; });
  const big = connectReq(session, `127.0.0.1:${rig.echo.port}`, { 'x-big': 'a'.repeat(70 * 1024) });
  big.on('frameError', () => { unsent = true; });
  await t.throwsAsync(status(big), { message: /closed without a response/ });
  t.false(unsent, 'node refused to send the headers itself');
  t.is(rig.r.inbound.length, 0, 'inbound was never asked');
  await goodRoundTrip(t, rig, 'after the oversized header list');
});

/** Extensions of the TLS ClientHello record at the start of `rec` (type -> body). */
function helloExtensions(rec: Buffer): Map<number, Buffer> {
  let p = 5; // record header
  if (rec[p] !== 1) throw new Error('not a ClientHello');
  p += 4 + 2 + 32; // handshake header, legacy version, random
  p += 1 + rec[p]!; // session id
  p += 2 + rec.readUInt16BE(p); // cipher suites
  p += 1 + rec[p]!; // compression methods
  const end = p + 2 + rec.readUInt16BE(p);
  p += 2;
  const out = new Map<number, Buffer>();
  while (p < end) {
    const type = rec.readUInt16BE(p);
    const len = rec.readUInt16BE(p + 2);
    out.set(type, rec.subarray(p + 4, p + 4 + len));
    p += 4 + len;
  }
  return out;
}

netnsTest('client side on the wire: TLS records both ways, no SNI, ALPN exactly h2, the payload never in clear', async (t) => {
  const p = await podRig(t);
  // a recording relay in the pod netns between the client engine and the server engine's 15008
  const WIRE_PORT = 15018;
  const up: Buffer[] = [];
  const down: Buffer[] = [];
  const open = new Set<Socket>();
  const relay = createServer({ pauseOnConnect: true }, (c) => {
    c.on('error', () => {});
    open.add(c);
    void connectInNetns(p.ns.path, { address: POD_IP, port: 15008, mark: 0x539 }).then((fd) => {
      const s = new Socket({ fd, readable: true, writable: true });
      s.on('error', () => {});
      c.on('data', (d: Buffer) => { up.push(d); s.write(d); });
      s.on('data', (d: Buffer) => { down.push(d); c.write(d); });
      c.on('close', () => s.destroy());
      s.on('close', () => c.destroy());
      c.resume();
    }, () => c.destroy());
  });
  relay.listen({ fd: listenInNetns(p.ns.path, { address: POD_IP, port: WIRE_PORT }) });
  await once(relay, 'listening');
  // the client engine keeps its HBONE connection pooled: cut it, or close() waits for its idle timeout
  t.teardown(() => new Promise<void>((r) => { relay.close(() => r()); for (const c of open) c.destroy(); }));
  const plan = p.cli.onOutbound;
  p.cli.onOutbound = (c) => ({ ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), port: WIRE_PORT });
  const secret = 'TOP-SECRET-PAYLOAD-0123456789';
  const app = await p.dial();
  const all = readAll(app);
  app.end(secret);
  t.is((await within(all, 'through the relay')).toString(), `${secret}bye`);
  const upBytes = Buffer.concat(up);
  const downBytes = Buffer.concat(down);
  t.deepEqual([...upBytes.subarray(0, 2)], [0x16, 0x03], 'the client starts with a TLS handshake record');
  t.deepEqual([...downBytes.subarray(0, 2)], [0x16, 0x03], 'the server answers with one');
  t.false(upBytes.includes(secret), 'the payload crossed in clear towards the server');
  t.false(downBytes.includes(secret), 'the payload crossed in clear towards the client');
  const ext = helloExtensions(upBytes);
  t.false(ext.has(0), 'no server_name extension');
  // ALPN: u16 list length, then u8-prefixed names: exactly "h2"
  t.deepEqual([...ext.get(16)!], [0, 3, 2, 0x68, 0x32]);
});

netnsTest('client side: a server certificate from a CA the client does not trust is refused before any stream', async (t) => {
  const p = await podRig(t);
  const foreign = makeForeignPki(TD);
  const fake = await foreign.issue(foreign.id('ns-b', 'server'));
  // the impostor trusts our root, so only the client's check can stop it
  const fakeCtx = ctxOf(p.srv.engine, { ...fake, rootsPem: (await pkiOnce()).client.rootsPem });
  const good = p.srv.onContext;
  p.srv.onContext = () => fakeCtx;
  let app: Socket | undefined;
  try {
    app = await p.dial();
  } catch (e) {
    // the reset can beat connectInNetns's own check of the handshake
    if (!isSyscallError(e, 'ECONNRESET')) throw e;
  }
  if (app) {
    let code: string | undefined;
    app.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
    app.write('x');
    await within(closed(app), 'refused');
    t.is(code, 'ECONNRESET');
  }
  await until(() => p.cli.events.some((e) => e.kind === 2), 'close event');
  t.false(p.cli.events.some((e) => e.kind === 1), 'never established');
  t.is(p.cli.verify.length, 0, 'OpenSSL refused the chain before JS was asked');
  t.is(p.srv.inbound.length, 0);
  t.is(p.echo.conns.length, 0);
  p.srv.onContext = good;
  const ok = await p.dial();
  const all = readAll(ok);
  ok.end('ok');
  t.is((await within(all, 'the real server')).toString(), 'okbye');
});

netnsTest("client side: the server's SETTINGS_MAX_CONCURRENT_STREAMS caps the streams the pool puts on one connection", async (t) => {
  const p = await podRig(t, {}, { maxConcurrentStreams: 2 });
  const held: Socket[] = [];
  for (let i = 0; i < 5; i++) {
    const app = await p.dial();
    app.write(`c${i}`);
    t.is(await within(readN(app, 2), `held flow ${i}`), `c${i}`);
    held.push(app);
  }
  t.is(p.cli.engine.stats().tunnels, 3, '2 + 2 + 1 streams');
  t.is(p.cli.verify.length, 3);
  t.is(p.srv.engine.stats().flows, 5);
  for (const app of held) app.destroy();
});

netnsTest('client side: connections are pooled by plan key and context; another key or context never shares one', async (t) => {
  const p = await podRig(t);
  const plan = p.cli.onOutbound;
  let key = 'a';
  let ctx = p.cctx;
  p.cli.onOutbound = (c) => ({ ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), key, ctx });
  const roundTrip = async (what: string): Promise<void> => {
    const app = await p.dial();
    const all = readAll(app);
    app.end('k');
    t.is((await within(all, what)).toString(), 'kbye', what);
  };
  await roundTrip('key a');
  await roundTrip('key a again');
  t.is(p.cli.verify.length, 1, 'one TLS connection for key a');
  key = 'b';
  await roundTrip('key b');
  t.is(p.cli.verify.length, 2, 'a second TLS connection for key b');
  ctx = ctxOf(p.cli.engine, (await pkiOnce()).client);
  await roundTrip('key b, another context');
  t.is(p.cli.verify.length, 3, 'a third for another context');
  key = 'a';
  ctx = p.cctx;
  await roundTrip('key a once more');
  t.is(p.cli.verify.length, 3, 'key a is still pooled');
  t.is(p.cli.engine.stats().tunnels, 3);
});

netnsTest('client side: a connection with an open stream is not retired as idle', async (t) => {
  const p = await podRig(t, { idleMs: 1 });
  const plan = p.cli.onOutbound;
  let key = 'busy';
  p.cli.onOutbound = (c) => ({ ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), key });
  const busy = await p.dial();
  busy.write('1');
  t.is(await within(readN(busy, 1), 'busy flow'), '1');
  key = 'idle';
  const idle = await p.dial();
  const all = readAll(idle);
  idle.end('i');
  t.is((await within(all, 'idle flow')).toString(), 'ibye');
  t.is(p.cli.verify.length, 2);
  // the connection left without streams is retired: the idle deadline has passed for both
  await until(() => p.cli.engine.stats().tunnels === 1, 'the idle connection retired');
  // the one that stayed is the busy one, still carrying its stream
  busy.write('2');
  t.is(await within(readN(busy, 1), 'busy flow after'), '2');
  t.is(p.cli.verify.length, 2, 'no new connection');
  t.is(p.cli.engine.stats().tunnels, 1);
});

// =============================================================================================
// 9. faults (issue 8): dead and silent peers, half-closed and idle flows, dial cancellation,
// abusive sessions, the clean end of a session. Deadlines are shortened through the options;
// the tests wait for the events, never for a time.

/**
 * TCP sockets in `state` (ss's state names) in a netns, matching the ss filter. Asynchronous:
 * polled in a loop, a synchronous exec would stall every other test of this file meanwhile.
 */
async function sockets(ns: RawNetns, state: string, ...filter: string[]): Promise<number> {
  const { stdout } = await execFileP('/usr/sbin/ip', ['netns', 'exec', ns.name, '/usr/bin/ss', '-Htn', 'state', state, ...filter]);
  return stdout.split('\n').filter((l) => l.trim() !== '').length;
}

const PEER_IP = '10.78.0.3';

interface PairRig { pod: RawNetns; peer: RawNetns; cli: Recorder; srv: Recorder; echo: Echo; dial(): Promise<Socket> }

/**
 * Two netns joined by a veth (podPair): the client engine in `pod` (its app's connections to
 * 127.0.0.1:9999 captured), the server engine and the echo app in `peer`. The HBONE connection
 * crosses the veth, so the peer can vanish (link deleted) or go silent (nftables drop).
 */
async function pairRig(t: TeardownHost, cliOpts: Partial<HboneSettings>, srvOpts: Partial<HboneSettings>): Promise<PairRig> {
  const { client, server, serverId } = await pkiOnce();
  const { pod, peer } = podPair(t);
  pod.nft(RULES);
  const echo = await echoServer(t, listenInNetns(peer.path, { address: '127.0.0.1', port: APP_PORT }));
  const srv = recorder(t, srvOpts);
  const sctx = ctxOf(srv.engine, server);
  srv.onContext = () => sctx;
  srv.onInbound = (c) => target(c.authority);
  srv.engine.listen(listenInNetns(peer.path, { address: PEER_IP, port: 15008 }), peer.path, { kind: 'hbone', mark: 0, tag: 'inbound' });
  const cli = recorder(t, cliOpts);
  const cctx = ctxOf(cli.engine, client);
  cli.onOutbound = () => ({ t: 2, ctx: cctx, key: 'peer', tag: serverId, ip: PEER_IP, port: 15008, authority: `127.0.0.1:${APP_PORT}`, headers: '' });
  cli.engine.listen(listenInNetns(pod.path, { address: '0.0.0.0', port: 15001 }), pod.path, { kind: 'outbound', mark: 0x539 });
  const dial = async (): Promise<Socket> => {
    // over loopback (captured all the same): the app's own connection never crosses the veth
    const fd = await connectInNetns(pod.path, { address: '127.0.0.1', port: 9999, timeoutMs: 60_000 });
    const s = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    s.on('error', () => {});
    t.teardown(() => { s.destroy(); });
    return s;
  };
  return { pod, peer, cli, srv, echo, dial };
}

/** Short keepalive for the dead-peer tests: PING after 300 ms of silence, dead 1 s later. */
const FAST_PING: Partial<HboneSettings> = { pingIntervalMs: 300, pingTimeoutMs: 1000 };

netnsTest('dead peer: the HBONE peer\'s network removed mid-stream resets the client once PING goes unanswered; the server side reaps its end', async (t) => {
  const p = await pairRig(t, FAST_PING, FAST_PING);
  const app = await p.dial();
  app.write('hello');
  t.is(await within(readN(app, 5), 'echo across the veth'), 'hello');
  let code: string | undefined;
  app.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
  const appClosed = closed(app);
  // the veth goes (both ends): no FIN, no RST ever reaches either engine
  p.pod.ip('link', 'del', 'eth0');
  await within(appClosed, 'client connection reset after the peer vanished');
  t.is(code, 'ECONNRESET');
  await until(() => p.cli.events.some((e) => e.kind === 2), 'client close event');
  t.regex(p.cli.events.find((e) => e.kind === 2)!.error ?? '', /^hbone: peer did not answer PING within 1000 ms$/);
  t.like(p.cli.engine.stats(), { flows: 0, tunnels: 0, deadPeers: 1 });
  t.true(p.cli.logs.some((l) => l.level === 2 && /PING/.test(l.message)), 'an info line names the dead peer');
  // the server engine's PINGs go unanswered as well: its flow and the app connection are cut
  await until(() => p.echo.conns.length === 1 && p.echo.conns[0]!.closed, 'app connection behind the dead peer closed');
  await until(() => p.srv.events.some((e) => e.kind === 2), 'server close event');
  t.regex(p.srv.events.find((e) => e.kind === 2)!.error ?? '', /PING/);
  t.like(p.srv.engine.stats(), { flows: 0, tunnels: 0, deadPeers: 1 });
});

netnsTest('silent peers: connections whose peer drops every packet are all reaped, on both sides', async (t) => {
  const p = await pairRig(t, FAST_PING, FAST_PING);
  const apps = await Promise.all(Array.from({ length: 20 }, () => p.dial()));
  for (const [i, a] of apps.entries()) {
    a.write(`m${i}`);
    t.is(await within(readN(a, `m${i}`.length), `echo ${i}`), `m${i}`);
  }
  t.is(p.srv.engine.stats().flows, 20);
  t.true(await sockets(p.pod, 'established', 'dst', `${PEER_IP}:15008`) >= 1);
  const cut = apps.map((a) => closed(a));
  // the peer's link stays up, but everything crossing it is dropped (a frozen node, a partition)
  p.peer.nft(`table inet ambit-silent {
    chain in { type filter hook input priority -300; iifname "eth0" drop; }
    chain out { type filter hook output priority -300; oifname "eth0" drop; }
  }`);
  await within(Promise.all(cut), 'every client connection reset');
  await until(() => p.cli.engine.stats().flows === 0 && p.cli.engine.stats().tunnels === 0, 'client engine reaped its flows and tunnel');
  await until(async () => await sockets(p.pod, 'established', 'dst', `${PEER_IP}:15008`) === 0, 'no tunnel socket left established');
  await until(() => p.srv.engine.stats().flows === 0 && p.srv.engine.stats().tunnels === 0, 'server engine reaped its side');
  await until(() => p.echo.conns.every((c) => c.closed), 'every app connection behind the silent peer closed');
  t.true(p.cli.events.filter((e) => e.kind === 2).every((e) => /PING/.test(e.error ?? '')));
});

/** A server that writes `hello` and ends at once, then keeps the connection half-open (root netns). */
async function greeterRoot(t: TeardownHost): Promise<{ port: number; closed: () => number }> {
  let n = 0;
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.on('close', () => { n++; });
    s.end('hello');
  });
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); }));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, closed: () => n };
}

rootTest('half-closed limit: a CONNECT stream whose client never ends its half is reset, and the app socket is closed', async (t) => {
  const rig = await serverRig(t, { halfClosedMs: 300 });
  const greeter = await greeterRoot(t);
  const { session, tls } = await h2Session(t, rig.port, rig.client);
  const seen: string[] = [];
  const t0 = Date.now();
  session.on('goaway', (code, last) => seen.push(`goaway ${code} ${last} @${Date.now() - t0}`));
  session.on('close', () => seen.push(`session close @${Date.now() - t0}`));
  session.on('error', (e) => seen.push(`session error ${String(e)} @${Date.now() - t0}`));
  tls.on('end', () => seen.push(`tls end @${Date.now() - t0}`));
  tls.on('close', () => seen.push(`tls close @${Date.now() - t0}`));
  const s = connectReq(session, `127.0.0.1:${greeter.port}`);
  s.on('close', () => seen.push(`stream close ${s.rstCode} @${Date.now() - t0}`));
  t.is(await status(s), 200);
  const streamClosed = closed(s);
  // the app said hello and ended; the client reads it all and never ends its own half
  t.is((await within(readAll(s), 'greeting and END_STREAM')).toString(), 'hello');
  await within(streamClosed, 'stream reset at the half-closed limit');
  t.is(s.rstCode, h2c.NGHTTP2_CANCEL);
  await until(() => greeter.closed() === 1, 'the app connection (CLOSE-WAIT on our side) closed');
  await until(() => rig.r.events.some((e) => e.kind === 2), 'close event');
  t.is(rig.r.events.find((e) => e.kind === 2)!.error, 'half-closed with no traffic for 300 ms');
  t.is(rig.r.engine.stats().halfClosed, 1);
  // OPEN (2026-12-03): one loaded CI run saw the session gone here (tunnels 0), never reproduced
  // since; the message carries what would say why (the engine's log, the client's view)
  const why = () => `the session itself goes on; client session closed=${session.closed} destroyed=${session.destroyed}; engine log: ${JSON.stringify(rig.r.logs.slice(-6))}; seen ${seen.join(', ')} now @${Date.now() - t0}; engine stats ${JSON.stringify(rig.r.engine.stats())}`;
  t.is(rig.r.engine.stats().tunnels, 1, why());
});

netnsTest('half-closed limit: a relayed connection whose client never ends its half leaves no upstream socket in CLOSE-WAIT', async (t) => {
  const p = await podRig(t, { halfClosedMs: 300 });
  p.cli.onOutbound = () => ({ t: 1, ip: '127.0.0.1', port: GREETER_PORT });
  const app = await p.dial();
  t.is((await within(readAll(app), 'greeting and FIN')).toString(), 'hello');
  // our upstream socket got the greeter's FIN: CLOSE-WAIT until the engine closes it
  await until(() => p.cli.events.some((e) => e.kind === 2), 'flow closed at the half-closed limit');
  t.is(p.cli.events.find((e) => e.kind === 2)!.error, 'half-closed with no traffic for 300 ms');
  t.is(await sockets(p.ns, 'close-wait', 'dst', `127.0.0.1:${GREETER_PORT}`), 0, 'no upstream socket left in CLOSE-WAIT');
  t.is(p.cli.engine.stats().halfClosed, 1);
  // the captured connection was reset (Node stopped reading at the FIN: a write finds out)
  let code: string | undefined;
  app.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
  const appClosed = closed(app);
  app.write('late');
  await within(appClosed, 'captured connection was reset');
  t.true(code === 'ECONNRESET' || code === 'EPIPE', String(code));
});

netnsTest('idle limit: a flow with no byte moved either way for flowIdleMs is reset; one that talks is not', async (t) => {
  const p = await podRig(t, { flowIdleMs: 3000 });
  const quiet = await p.dial();
  quiet.write('q');
  t.is(await within(readN(quiet, 1), 'quiet echo'), 'q');
  let code: string | undefined;
  quiet.on('error', (e: NodeJS.ErrnoException) => { code = e.code; });
  const quietClosed = closed(quiet);
  // the talker: its own process in the pod, a byte every 100 ms (our event loop may stall under load)
  const talker = spawn('/usr/sbin/ip', ['netns', 'exec', p.ns.name, process.execPath, '-e',
    `const s = require('node:net').connect(9999, ${JSON.stringify(POD_IP)}); s.on('data', () => {}); s.on('close', () => process.exit(1)); setInterval(() => s.write('t'), 100);`,
  ], { stdio: 'ignore' });
  t.teardown(() => { talker.kill(); });
  await until(() => p.cli.outbound.length === 2, 'the talker captured');
  const [quietId, talkerId] = [p.cli.outbound[0]!.flowId, p.cli.outbound[1]!.flowId];
  await within(quietClosed, 'quiet connection reset at the idle limit');
  t.is(code, 'ECONNRESET');
  await until(() => p.cli.events.some((e) => e.kind === 2 && e.flowId === quietId), 'quiet flow close event');
  t.like(p.cli.events.find((e) => e.kind === 2 && e.flowId === quietId), { error: 'idle for 3000 ms' });
  t.false(p.cli.events.some((e) => e.kind === 2 && e.flowId === talkerId), 'the flow that moved bytes is still open');
  t.is(talker.exitCode, null, 'the talker\'s connection is open');
  t.true(p.cli.engine.stats().idleClosed >= 1);
});

for (const mode of ['plain', 'hbone'] as const) {
  netnsTest(`${mode}: dials to an unanswering address are cancelled when their clients reset (no socket left in SYN-SENT)`, async (t) => {
    // a connect deadline far beyond the test's: only the cancellation can clear the dials
    const p = await podRig(t, { connectTimeoutMs: 600_000, handshakeTimeoutMs: 600_000 });
    addBlackhole(t, p.ns, 'bh0', '10.99.0.1/24', '10.99.0.2');
    const plan = p.cli.onOutbound;
    p.cli.onOutbound = (c) => (mode === 'plain' ? { t: 1, ip: '10.99.0.2', port: 80 } : { ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), key: 'blackhole', ip: '10.99.0.2' });
    const n = 20;
    const apps = await Promise.all(Array.from({ length: n }, () => p.dial()));
    // plain: one dial per client; hbone: the clients queue on one pooled connection's dial
    const dials = mode === 'plain' ? n : 1;
    await until(async () => await sockets(p.ns, 'syn-sent', 'dst', '10.99.0.2') === dials, `${dials} dials in SYN-SENT`);
    for (const a of apps) a.resetAndDestroy();
    await until(async () => await sockets(p.ns, 'syn-sent', 'dst', '10.99.0.2') === 0, 'no dial left in SYN-SENT');
    await until(() => p.cli.engine.stats().flows === 0, 'flows gone');
    t.is(p.cli.engine.stats().dialsCancelled, dials);
    t.is(p.cli.engine.stats().tunnels, 0);
  });
}

/**
 * The attacker runs in a child process (its own JS thread and CPU), so the bystander's round
 * trips measured here show the engine's delay, not ours: mutual TLS with a valid certificate,
 * then `count` CONNECTs with 200 header fields of 50 bytes each (the limit is 128 fields).
 * Prints {sent, goaway} when the session ends.
 */
const ATTACKER = `
const http2 = require('node:http2');
const tls = require('node:tls');
const [port, authority, count] = process.argv.slice(1);
const c = JSON.parse(process.env.AMBIT_TEST_CREDS);
const sock = tls.connect({ host: '127.0.0.1', port: Number(port), ca: c.roots, key: c.key, cert: c.cert, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
sock.on('error', () => {});
let sent = 0, goaway = null, done = false;
const finish = () => { if (done) return; done = true; process.stdout.write(JSON.stringify({ sent, goaway }) + '\\n'); process.exit(0); };
sock.once('secureConnect', () => {
  const s = http2.connect('https://hbone', { createConnection: () => sock, maxHeaderListPairs: 1000, peerMaxConcurrentStreams: 1000 });
  s.on('error', () => {});
  s.on('goaway', (code) => { goaway = code; });
  s.on('close', finish);
  const wide = { ':method': 'CONNECT', ':authority': authority };
  for (let i = 0; i < 200; i++) wide['x-h' + i] = 'v'.repeat(50);
  const burst = () => {
    for (let i = 0; i < 20 && sent < Number(count) && !s.closed && !s.destroyed; i++, sent++) s.request(wide).on('error', () => {});
    if (sent < Number(count) && !s.closed && !s.destroyed) setImmediate(burst); else setTimeout(finish, 2000);
  };
  burst();
});
sock.once('close', () => setTimeout(finish, 100));
`;

/** Starts the attacker; resolves with what it printed when its session ended. */
function attack(t: TeardownHost, port: number, authority: string, count: number, creds: CertBundle): Promise<{ sent: number; goaway: number | null }> {
  const child = spawn(process.execPath, ['-e', ATTACKER, String(port), authority, String(count)], {
    env: { ...process.env, AMBIT_TEST_CREDS: JSON.stringify({ roots: creds.rootsPem, key: creds.keyPem, cert: creds.chainPem.join('') }) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => { child.kill(); });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  return within(new Promise((resolve, reject) => {
    child.once('exit', () => { try { resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as { sent: number; goaway: number | null }); } catch { reject(new Error(`attacker printed ${JSON.stringify(out)}`)); } });
  }), 'the attacker\'s session to end', 120_000);
}

/** Ping-pong on `s` until `stop` resolves; the round trips, ms. */
async function roundTrips(s: ClientHttp2Stream, stop: Promise<unknown>): Promise<number[]> {
  const rtts: number[] = [];
  let running = true;
  void stop.finally(() => { running = false; });
  while (running) {
    const t0 = performance.now();
    s.write('p');
    await within(readN(s, 1), 'bystander echo');
    rtts.push(performance.now() - t0);
  }
  return rtts;
}

function summary(rtts: number[]): string {
  const sorted = [...rtts].sort((a, b) => a - b);
  const q = (f: number): string => (sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))] ?? NaN).toFixed(2);
  return `n=${rtts.length} median=${q(0.5)} ms p99=${q(0.99)} ms max=${q(1)} ms`;
}

rootSerial('hostile HTTP/2: a session that keeps sending over-limit headers gets GOAWAY (ENHANCE_YOUR_CALM); another client\'s stream keeps flowing', async (t) => {
  const rig = await serverRig(t);
  const { r } = rig;
  const authority = `127.0.0.1:${rig.echo.port}`;
  const good = await h2Session(t, rig.port, rig.client);
  const gs = connectReq(good.session, authority);
  gs.setMaxListeners(0);
  t.is(await status(gs), 200);
  const attacked = attack(t, rig.port, authority, 6000, rig.client);
  const rtts = roundTrips(gs, attacked);
  const { sent, goaway } = await attacked;
  t.is(goaway, h2c.NGHTTP2_ENHANCE_YOUR_CALM, 'the abusive session got GOAWAY ENHANCE_YOUR_CALM');
  t.true(sent < 6000, `the engine put up with ${sent} abusive streams`);
  await until(() => r.engine.stats().tunnels === 1, 'the abusive session closed');
  t.is(r.engine.stats().abusiveSessions, 1);
  t.is(r.inbound.length, 1, 'no abusive stream reached the inbound decision');
  t.true(r.logs.some((l) => l.level === 3 && /21 protocol errors/.test(l.message)), 'a warn line names the session');
  // the bystander's stream kept working through the attack, and after it
  const during = await rtts;
  gs.write('after');
  t.is(await within(readN(gs, 5), 'bystander after the attack'), 'after');
  t.log(`${sent} abusive streams sent (budget 20); bystander round trips meanwhile: ${summary(during)}`);
});

rootSerial('hostile HTTP/2: one session flooding over-limit headers (budget lifted) cannot stall another session\'s stream', async (t) => {
  // with the budget out of the way, only the per-turn slice keeps the flood from hogging the engine
  const rig = await serverRig(t, { abuseBudget: 1_000_000 });
  const authority = `127.0.0.1:${rig.echo.port}`;
  const good = await h2Session(t, rig.port, rig.client);
  const gs = connectReq(good.session, authority);
  gs.setMaxListeners(0);
  t.is(await status(gs), 200);
  const idle: number[] = [];
  for (let i = 0; i < 20; i++) idle.push(...await roundTrips(gs, Promise.resolve()));
  const attacked = attack(t, rig.port, authority, 6000, rig.client);
  const rtts = roundTrips(gs, attacked);
  const { sent } = await attacked;
  const during = await rtts;
  t.is(sent, 6000);
  t.true(during.length > 0, 'the bystander got answers during the flood');
  gs.write('after');
  t.is(await within(readN(gs, 5), 'bystander after the flood'), 'after');
  t.log(`bystander round trips: idle ${summary(idle)}; during a flood of ${sent} over-limit streams: ${summary(during)}`);
});

netnsTest('a session the client closes right after its last stream ended: no flow of it is logged with an error', async (t) => {
  // one stream per connection: the client engine sends the stream's last frame, GOAWAY and its
  // FIN in one burst, so the server often reads the FIN in the same batch as that last frame
  const p = await podRig(t, { streamsPerConnection: 1 });
  const plan = p.cli.onOutbound;
  p.cli.onOutbound = (c) => ({ ...(plan(c) as Extract<OutboundPlan, { t: 2 }>), authority: `127.0.0.1:${GREETER_PORT}` });
  const n = 30;
  for (let i = 0; i < n; i++) {
    const app = await p.dial();
    t.is((await within(readAll(app), `greeting ${i}`)).toString(), 'hello');
    const done = closed(app);
    app.end('bye');
    await within(done, `connection ${i} closed`);
  }
  await until(() => p.srv.events.filter((e) => e.kind === 2).length === n, 'every server flow closed');
  await until(() => p.greeter.ended === n, 'every app got the client\'s FIN');
  t.deepEqual(p.srv.events.filter((e) => e.kind === 2 && e.error !== undefined).map((e) => e.error), [], 'server flows closed cleanly');
  t.deepEqual(p.cli.events.filter((e) => e.kind === 2 && e.error !== undefined).map((e) => e.error), [], 'client flows closed cleanly');
});
