/**
 * src/hbone's face of the engine (HboneEndpoint) for real: TLS 1.3 with SPIFFE certificates,
 * HTTP/2 CONNECT in the engine, and HTTP/1.1 and h2c spoken by node:http / node:http2 over the
 * HboneSockets it hands out:
 *   (a) inbound: a node:http2 client CONNECTs to an endpoint listener; the accepted stream feeds a
 *       node:http or node:http2 server (server.emit('connection', socket));
 *   (b) outbound: endpoint.connect() through the engine's pool to a node:http2 HBONE server that
 *       relays each CONNECT to a real TCP server;
 *   (a)+(b): endpoint.connect() -> engine -> endpoint listener -> node:http server.
 * Errors are typed (HboneError), never a clean EOF for a failed stream.
 */
import { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import { connect as netConnect, createServer as netServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Duplex } from 'node:stream';
import { HBONE_SETTINGS, HboneEndpoint, HboneError, HboneSocket, type HboneStreamInfo } from '../../src/hbone/index.js';
import { spiffeUri, type CertBundle } from '../../src/identity/index.js';
import { Engine, listenInNetns, type EngineOptions } from '../../src/native/index.js';
import type { TeardownHost } from '../helpers/netns-raw.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { rootTest } from '../helpers/root.js';

const SELF = '/proc/self/ns/net';
const TD = 'cluster.local';

interface Pki { pki: TestPki; client: CertBundle; server: CertBundle; clientId: string; serverId: string }
let shared: Promise<Pki> | undefined;
function pkiOnce(): Promise<Pki> {
  shared ??= (async () => {
    const pki = makeTestPki({ trustDomain: TD });
    const [client, server] = await Promise.all([pki.issue(pki.id('ns-a', 'client')), pki.issue(pki.id('ns-b', 'waypoint'))]);
    return { pki, client, server, clientId: spiffeUri(client.identity), serverId: spiffeUri(server.identity) };
  })();
  return shared;
}

/** A promise with a deadline, so a test fails instead of hanging. */
async function within<T>(p: Promise<T>, what: string, ms = 30_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`), ), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The TCP port a listening fd is bound to (its socket inode in /proc/self/net/tcp). */
function boundPort(fd: number): number {
  const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
  for (const line of readFileSync('/proc/self/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[9] === inode) return parseInt(f[1]!.split(':')[1]!, 16);
  }
  throw new Error(`fd ${fd}: not a listening IPv4 socket`);
}

/** Unix sockets this process holds (the HboneSockets' pairs live here; TCP pools do not). */
function unixFds(): number {
  const inodes = new Set(readFileSync('/proc/self/net/unix', 'utf8').split('\n').slice(1).map((l) => l.trim().split(/\s+/)[6]));
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m && inodes.has(m[1])) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The error a socket ends with (rejects if it ends cleanly). */
function failure(s: Socket): Promise<Error> {
  return new Promise((resolve, reject) => {
    s.once('error', resolve);
    s.once('end', () => reject(new Error('clean EOF where an error was expected')));
    s.resume();
  });
}

// ---------------------------------------------------------------------------------------------
// the HTTP servers and the endpoints

/** An HTTP/1.1 server fed by hand: '/echo' echoes the body, '/big/N' sends N bytes, else the path. */
function httpApp(t: TeardownHost): { server: http.Server; conns: Socket[] } {
  const conns: Socket[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/echo') {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        const body = Buffer.concat(parts);
        res.setHeader('x-sha', sha(body));
        res.end(body);
      });
      return;
    }
    const big = /^\/big\/(\d+)$/.exec(req.url ?? '');
    if (big) {
      const n = Number(big[1]);
      const body = Buffer.alloc(n, 7);
      res.setHeader('content-length', n);
      res.end(body);
      return;
    }
    res.end(`path ${req.url} via ${req.socket.remoteAddress}`);
  });
  server.on('connection', (s: Socket) => conns.push(s));
  t.teardown(() => { server.close(); for (const c of conns) c.destroy(); });
  return { server, conns };
}

/** An h2c server: '/stream' sends 40 chunks one by one, else answers its path. */
function h2App(t: TeardownHost): http2.Http2Server {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    if (headers[':path'] === '/stream') {
      stream.respond({ ':status': 200 });
      let i = 0;
      const next = (): void => {
        if (i === 40) { stream.end(); return; }
        stream.write(`chunk ${i++};`, () => setImmediate(next));
      };
      next();
      return;
    }
    stream.respond({ ':status': 200 });
    stream.end(`h2 ${String(headers[':path'])}`);
  });
  t.teardown(() => { server.close(); });
  return server;
}

interface Rig {
  pki: Pki;
  srv: HboneEndpoint;
  cli: HboneEndpoint;
  port: number;
  decided: HboneStreamInfo[];
  decide: (info: HboneStreamInfo) => 'accept' | number;
  streams: HboneSocket[];
  /** what the listener does with each accepted stream (default: nothing) */
  onStream: (s: HboneSocket) => void;
}

/** A server endpoint with a listener on 127.0.0.1 and a client endpoint, both torn down after. */
async function rig(t: TeardownHost): Promise<Rig> {
  const pki = await pkiOnce();
  const srv = new HboneEndpoint();
  const cli = new HboneEndpoint();
  t.teardown(() => { cli.close(); srv.close(); });
  const fd = listenInNetns(SELF, { address: '127.0.0.1', port: 0 });
  const port = boundPort(fd);
  const r: Rig = {
    pki, srv, cli, port, decided: [], streams: [],
    decide: () => 'accept',
    onStream: () => {},
  };
  const l = srv.listen(fd, SELF, {
    trustDomain: TD,
    certificate: () => pki.server,
    decide: (info) => { r.decided.push(info); return r.decide(info); },
  });
  l.on('stream', (s: HboneSocket) => { s.on('error', () => {}); r.streams.push(s); r.onStream(s); });
  return r;
}

function connectOpts(r: Rig, authority = '10.9.8.7:8080', expect = [r.pki.serverId]) {
  return { ip: '127.0.0.1', port: r.port, authority, expect, identity: r.pki.client };
}

// ---------------------------------------------------------------------------------------------
// (a): a node:http2 client speaking HBONE to the endpoint's listener

/** A CONNECT stream from node:http2 over mutual TLS to the listener, as a Duplex. */
async function h2Connect(t: TeardownHost, r: Rig, authority: string): Promise<http2.ClientHttp2Stream> {
  const tls = tlsConnect({
    host: '127.0.0.1', port: r.port, ca: r.pki.client.rootsPem, key: r.pki.client.keyPem, cert: r.pki.client.chainPem.join(''),
    ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', checkServerIdentity: () => undefined,
  });
  tls.on('error', () => {});
  await once(tls, 'secureConnect');
  const session = http2.connect('https://hbone', { createConnection: () => tls });
  session.on('error', () => {});
  t.teardown(() => { session.destroy(); tls.destroy(); });
  const s = session.request({ ':method': 'CONNECT', ':authority': authority, forwarded: 'for="10.1.1.1"' });
  s.on('error', () => {});
  const [headers] = await once(s, 'response') as [http2.IncomingHttpHeaders];
  if (Number(headers[':status']) !== 200) throw new Error(`CONNECT answered ${String(headers[':status'])}`);
  return s;
}

// ---------------------------------------------------------------------------------------------
// (b): a node:http2 HBONE server relaying CONNECT streams to a TCP server

/**
 * policy: refuse-first / refuse-all: RST_STREAM REFUSED_STREAM the first / every stream;
 * goaway-second: a GOAWAY naming the first stream as the last one processed when the second
 * arrives (node picks the last-stream-id itself when given 0, so the first stream is accepted).
 */
interface H2Hbone {
  port: number; sessions: number; refusals: number; connects: string[]; policy: 'ok' | 'refuse-first' | 'goaway-second' | 'refuse-all';
  onSession: (s: http2.ServerHttp2Session) => void;
}

/** Relays each CONNECT to the port of its authority on 127.0.0.1. */
async function h2HboneServer(t: TeardownHost, pki: Pki): Promise<H2Hbone> {
  const st: H2Hbone = { port: 0, sessions: 0, refusals: 0, connects: [], policy: 'ok', onSession: () => {} };
  const server = http2.createSecureServer({
    key: pki.server.keyPem, cert: pki.server.chainPem.join(''), ca: pki.server.rootsPem, requestCert: true, rejectUnauthorized: true,
    minVersion: 'TLSv1.3', ALPNProtocols: ['h2'],
  });
  server.on('session', (sess) => { st.sessions++; sess.on('error', () => {}); st.onSession(sess); });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    st.connects.push(String(headers[':authority']));
    if (st.policy === 'refuse-all' || (st.policy === 'refuse-first' && st.refusals === 0)) {
      st.refusals++;
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    if (st.policy === 'goaway-second' && st.refusals === 0 && (stream.id ?? 0) > 1) {
      st.refusals++;
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, 1);
      return;
    }
    const up = netConnect(Number(String(headers[':authority']).split(':')[1]), '127.0.0.1');
    up.on('error', () => stream.destroy());
    up.once('connect', () => {
      stream.respond({ ':status': 200 });
      stream.pipe(up);
      up.pipe(stream);
    });
  });
  t.teardown(() => { server.close(); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  st.port = (server.address() as AddressInfo).port;
  return st;
}

/** A plain TCP listener handing its connections to a node:http(2) server. */
async function tcpFront(t: TeardownHost, app: { emit(ev: 'connection', s: Socket): boolean }): Promise<number> {
  const s: Server = netServer((c) => app.emit('connection', c));
  t.teardown(() => { s.close(); });
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return (s.address() as AddressInfo).port;
}

// ---------------------------------------------------------------------------------------------
// the HTTP checks, run over each path

type Dial = () => Duplex;

async function request(agent: http.Agent, path: string, body?: Buffer | Buffer[]): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return await within(new Promise((resolve, reject) => {
    const req = http.request({ host: 'app.test', path, method: body ? 'POST' : 'GET', agent }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (Array.isArray(body)) {
      // chunked: no content-length, several writes
      (async () => {
        for (const b of body) {
          if (!req.write(b)) await once(req, 'drain');
        }
        req.end();
      })().catch(reject);
    } else {
      req.end(body);
    }
  }), `HTTP/1.1 ${path}`, 60_000);
}

async function http1Checks(t: ExecutionContext, dial: Dial, serverConns: () => number): Promise<void> {
  let dials = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  (agent as unknown as { createConnection: () => Duplex }).createConnection = () => { dials++; return dial(); };
  t.teardown(() => agent.destroy());
  for (const p of ['/a', '/b', '/c']) {
    const r = await request(agent, p);
    t.is(r.status, 200);
    t.true(r.body.toString().startsWith(`path ${p} via `), r.body.toString());
  }
  t.is(dials, 1, 'keep-alive: three requests, one HBONE stream');
  t.is(serverConns(), 1, 'the server saw one connection');
  const pieces = Array.from({ length: 20 }, (_, i) => randomBytes(1000 + i * 997));
  const chunked = await request(agent, '/echo', pieces);
  t.is(chunked.headers['x-sha'], sha(Buffer.concat(pieces)), 'chunked request body arrived whole');
  t.is(sha(chunked.body), sha(Buffer.concat(pieces)));
  // past the stream (4 MiB) and connection (16 MiB) windows, both ways
  const large = randomBytes(18 * 1024 * 1024 + 3);
  const echoed = await request(agent, '/echo', large);
  t.is(echoed.body.length, large.length);
  t.is(sha(echoed.body), sha(large), 'large body intact both ways');
  t.is(dials, 1, 'still the same stream');
}

async function h2cChecks(t: ExecutionContext, dial: Dial): Promise<void> {
  const session = http2.connect('http://app.test', { createConnection: () => dial() });
  session.on('error', () => {});
  t.teardown(() => { session.destroy(); });
  const get = (path: string): Promise<string> => within(new Promise<string>((resolve, reject) => {
    const req = session.request({ ':path': path });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  }), `h2c ${path}`);
  const paths = Array.from({ length: 12 }, (_, i) => `/p${i}`);
  const got = await Promise.all(paths.map(get));
  t.deepEqual(got, paths.map((p) => `h2 ${p}`), 'concurrent h2c requests on one stream');
  const streamed = await get('/stream');
  t.is(streamed, Array.from({ length: 40 }, (_, i) => `chunk ${i};`).join(''), 'streamed response');
  session.close();
}

// =============================================================================================

rootTest('(a) inbound: HTTP/1.1 and h2c servers fed from accepted HBONE streams, with the stream metadata', async (t) => {
  const r = await rig(t);
  const app = httpApp(t);
  r.onStream = (s) => app.server.emit('connection', s);
  await http1Checks(t, () => {
    // createConnection must return synchronously: a Duplex that becomes the CONNECT stream
    const d = new DeferredDuplex();
    h2Connect(t, r, '10.0.0.5:80').then((s) => d.attach(s), (e: Error) => d.destroy(e));
    return d;
  }, () => app.conns.length);
  const info = r.decided[0]!;
  t.like(info, { direction: 'inbound', peer: r.pki.clientId, authority: '10.0.0.5:80', forwarded: 'for="10.1.1.1"', local: { ip: '127.0.0.1', port: r.port } });
  t.is(info.remote.ip, '127.0.0.1');
  t.is(r.streams[0]!.remoteAddress, '127.0.0.1', 'the socket reports the HBONE client address');
  t.is(r.streams[0]!.localPort, r.port);

  const h2 = h2App(t);
  r.onStream = (s) => h2.emit('connection', s);
  await h2cChecks(t, () => {
    const d = new DeferredDuplex();
    h2Connect(t, r, '10.0.0.6:80').then((s) => d.attach(s), (e: Error) => d.destroy(e));
    return d;
  });
});

rootTest('(b) outbound: HTTP/1.1 and h2c through endpoint.connect() to a node:http2 HBONE server', async (t) => {
  const pki = await pkiOnce();
  const app = httpApp(t);
  const appPort = await tcpFront(t, app.server);
  const hb = await h2HboneServer(t, pki);
  const cli = new HboneEndpoint();
  t.teardown(() => cli.close());
  const established: number[] = [];
  const closed: { sent: number; received: number; error: string | undefined }[] = [];
  cli.on('established', (i: HboneStreamInfo) => established.push(i.flowId));
  cli.on('closed', (_i: HboneStreamInfo, res: { sent: number; received: number; error: string | undefined }) => closed.push(res));
  const opts = { ip: '127.0.0.1', port: hb.port, authority: `127.0.0.1:${appPort}`, expect: [pki.serverId], identity: pki.client, headers: { forwarded: 'for="10.2.2.2"' } };
  await http1Checks(t, () => cli.connect(opts), () => app.conns.length);
  t.deepEqual(hb.connects, [`127.0.0.1:${appPort}`]);
  t.is(established.length, 1);

  const h2 = h2App(t);
  const h2Port = await tcpFront(t, h2);
  await h2cChecks(t, () => cli.connect({ ...opts, authority: `127.0.0.1:${h2Port}` }));
  t.is(hb.sessions, 1, 'both streams on one pooled HBONE connection');
  // the h2c session closed its connection: that stream ended cleanly, with its byte counts
  await until(() => closed.length >= 1, 'close event of the h2c stream');
  t.is(closed[0]!.error, undefined);
  t.true(closed[0]!.sent > 24 && closed[0]!.received > 40 * 9, `bytes counted: ${JSON.stringify(closed[0])}`);
});

rootTest('(a)+(b): connect() -> engine -> endpoint listener -> node:http server, HTTP/1.1 and h2c', async (t) => {
  const r = await rig(t);
  const app = httpApp(t);
  const h2 = h2App(t);
  r.onStream = (s) => (s.info.authority.endsWith(':82') ? h2 : app.server).emit('connection', s);
  const srvClosed: { sent: number; received: number }[] = [];
  r.srv.on('closed', (_i: HboneStreamInfo, res: { sent: number; received: number }) => srvClosed.push(res));
  await http1Checks(t, () => r.cli.connect(connectOpts(r, '10.0.0.7:81')), () => app.conns.length);
  await h2cChecks(t, () => r.cli.connect(connectOpts(r, '10.0.0.7:82')));
  t.is(r.decided.length, 2);
  t.like(r.decided[0], { peer: r.pki.clientId, authority: '10.0.0.7:81' });
  t.is(r.srv.stats().tunnels, 1, 'one HBONE connection carried both streams');
  app.server.closeAllConnections();
  await until(() => srvClosed.some((c) => c.received > 18 * 1024 * 1024), 'the server side counted the large body in its close event');
  t.pass();
});

for (const policy of ['refuse-first', 'goaway-second'] as const) {
  rootTest(`a stream refused by ${policy === 'refuse-first' ? 'RST_STREAM REFUSED_STREAM' : 'GOAWAY (above last-stream-id)'} is retried once on a fresh connection, its early bytes replayed`, async (t) => {
    const pki = await pkiOnce();
    const app = httpApp(t);
    const appPort = await tcpFront(t, app.server);
    const hb = await h2HboneServer(t, pki);
    hb.policy = policy;
    const cli = new HboneEndpoint();
    t.teardown(() => cli.close());
    const opts = { ip: '127.0.0.1', port: hb.port, authority: `127.0.0.1:${appPort}`, expect: [pki.serverId], identity: pki.client };
    let first: http.Agent | undefined;
    if (policy === 'goaway-second') {
      // a first stream the server accepts, kept open across the GOAWAY
      first = new http.Agent({ keepAlive: true, maxSockets: 1 });
      (first as unknown as { createConnection: () => Duplex }).createConnection = () => cli.connect(opts);
      t.teardown(() => first!.destroy());
      t.is((await request(first, '/before')).status, 200);
    }
    const agent = new http.Agent({ keepAlive: false });
    (agent as unknown as { createConnection: () => Duplex }).createConnection = () => cli.connect(opts);
    t.teardown(() => agent.destroy());
    // the request and its 100 kB body are written at once, before any answer: the first 64 kB go
    // out with the CONNECT and are replayed on the retry, the rest waits for the answer
    const body = randomBytes(100_000);
    const res = await request(agent, '/echo', body);
    t.is(res.status, 200);
    t.is(sha(res.body), sha(body), 'the body sent before the refusal arrived whole, once');
    t.is(hb.refusals, 1);
    t.is(hb.connects.length, first ? 3 : 2, 'the refused CONNECT was sent twice');
    t.is(hb.sessions, 2, 'the retry went on a fresh connection');
    if (first) {
      // the stream below the GOAWAY's last-stream-id goes on, on the old connection
      t.is((await request(first, '/after')).status, 200);
      t.is(hb.sessions, 2);
    }
  });
}

rootTest('a stream refused again after its retry fails with a retry-safe "refused" error', async (t) => {
  const pki = await pkiOnce();
  const hb = await h2HboneServer(t, pki);
  hb.policy = 'refuse-all';
  const cli = new HboneEndpoint();
  t.teardown(() => cli.close());
  const s = cli.connect({ ip: '127.0.0.1', port: hb.port, authority: '127.0.0.1:9', expect: [pki.serverId], identity: pki.client });
  s.write('GET / HTTP/1.1\r\n\r\n');
  const err = await within(failure(s), 'refused twice') as HboneError;
  t.is(err.code, 'AMBIT_HBONE_REFUSED', err.message);
  t.true(err.retrySafe);
  t.is(hb.refusals, 2, 'retried exactly once');
  t.is(hb.sessions, 2);
});

rootTest('identity refused: a wrong expected identity fails the stream (tls, retry-safe); nothing reaches the server', async (t) => {
  const r = await rig(t);
  const app = httpApp(t);
  r.onStream = (s) => app.server.emit('connection', s);
  const s = r.cli.connect(connectOpts(r, '10.0.0.1:80', [`spiffe://${TD}/ns/ns-b/sa/someone-else`]));
  s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  const err = await within(failure(s), 'identity failure');
  t.true(err instanceof HboneError, err.message);
  const he = err as HboneError;
  t.is(he.code, 'AMBIT_HBONE_TLS');
  t.is(he.failure, 'tls');
  t.true(he.retrySafe);
  t.false(he.established);
  t.is(r.decided.length, 0, 'no CONNECT reached the server');
  t.is(app.conns.length, 0);
});

rootTest('CONNECT refused with a status: a typed error carrying it; a refused stream is never a clean EOF', async (t) => {
  const r = await rig(t);
  r.decide = () => 403;
  const s = r.cli.connect(connectOpts(r));
  s.end('GET / HTTP/1.1\r\n\r\n');
  const err = await within(failure(s), 'status failure') as HboneError;
  t.is(err.code, 'AMBIT_HBONE_STATUS');
  t.is(err.status, 403);
  t.true(err.retrySafe);
  t.is(r.streams.length, 0);
  t.false(s.established);
});

rootTest('connect failure: nothing listening is a connect error (retry-safe), not a clean EOF', async (t) => {
  const pki = await pkiOnce();
  const cli = new HboneEndpoint();
  t.teardown(() => cli.close());
  // a port nothing listens on: bind one, note it, close it
  const fd = listenInNetns(SELF, { address: '127.0.0.1', port: 0 });
  const port = boundPort(fd);
  (await import('../../src/native/index.js')).closeFd(fd);
  const s = cli.connect({ ip: '127.0.0.1', port, authority: '10.0.0.1:80', expect: [pki.serverId], identity: pki.client });
  const err = await within(failure(s), 'connect failure') as HboneError;
  t.is(err.code, 'AMBIT_HBONE_CONNECT_FAILED');
  t.true(err.retrySafe);
});

rootTest('server gone after the stream was established: the client gets a reset error, not EOF; same when the server side destroys its socket', async (t) => {
  const r = await rig(t);
  // the server side reads a line, then destroys its socket: the stream is reset, not ended
  r.onStream = (s) => { s.once('data', () => s.destroy()); };
  const a = r.cli.connect(connectOpts(r));
  await once(a, 'established');
  a.write('hello\n');
  const e1 = await within(failure(a), 'reset after destroy') as HboneError;
  t.is(e1.code, 'AMBIT_HBONE_RESET', e1.message);
  t.true(e1.established);
  t.false(e1.retrySafe);

  // the whole server endpoint goes away under an open stream
  r.onStream = () => {};
  const b = r.cli.connect(connectOpts(r));
  await once(b, 'established');
  await until(() => r.streams.length === 2, 'server side stream');
  const gone = failure(b);
  r.srv.close();
  const e2 = await within(gone, 'server gone') as HboneError;
  t.true(e2 instanceof HboneError);
  t.true(['AMBIT_HBONE_RESET', 'AMBIT_HBONE_LOST'].includes(e2.code), e2.code);
  t.true(e2.established);
});

rootTest('clean ends: half-close passes both ways and the close event reports the bytes', async (t) => {
  const r = await rig(t);
  r.onStream = (s) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => s.end(`got ${Buffer.concat(parts).length}`));
  };
  const s = r.cli.connect(connectOpts(r));
  const closed = once(s, 'hbone-closed');
  s.end(Buffer.alloc(5000, 1));
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  await within(once(s, 'end'), 'clean end');
  t.is(Buffer.concat(chunks).toString(), 'got 5000');
  const [res] = await within(closed, 'close event') as [{ sent: number; received: number; error: string | undefined }];
  t.deepEqual(res, { sent: 5000, received: 8, error: undefined });
});

rootTest('no fds left after many streams (HTTP requests through both sides)', async (t) => {
  const r = await rig(t);
  const app = httpApp(t);
  r.onStream = (s) => app.server.emit('connection', s);
  const one = async (): Promise<void> => {
    const agent = new http.Agent({ keepAlive: false });
    (agent as unknown as { createConnection: () => Duplex }).createConnection = () => r.cli.connect(connectOpts(r));
    const res = await request(agent, '/x');
    t.is(res.status, 200);
    agent.destroy();
  };
  await one(); // warm: pooled connection, netns socket pool
  await until(() => r.cli.stats().flows === 0 && r.srv.stats().flows === 0, 'warm-up flows gone');
  const before = unixFds();
  for (let round = 0; round < 6; round++) await Promise.all(Array.from({ length: 10 }, one));
  await until(() => r.cli.stats().flows === 0 && r.srv.stats().flows === 0, 'all flows gone');
  for (const c of app.conns) c.destroy();
  await until(() => unixFds() <= before, `unix sockets back to ${before} (now ${unixFds()})`);
  t.true(unixFds() <= before);
  t.is(r.decided.length, 61);
});

rootTest('re-entrancy: sockets destroyed inside stream, established and close callbacks; the endpoint closed from a close event', async (t) => {
  const r = await rig(t);
  // destroyed in the listener's own 'stream' callback
  r.onStream = (s) => s.destroy();
  const a = r.cli.connect(connectOpts(r));
  a.write('x');
  t.true((await within(failure(a), 'destroyed in stream cb')) instanceof HboneError);

  // destroyed in its own 'established' callback: no error to nobody, no crash, close event comes
  r.onStream = () => {};
  const b = r.cli.connect(connectOpts(r));
  b.on('error', () => {});
  const bClosed = once(b, 'hbone-closed');
  b.once('established', () => b.destroy());
  await within(bClosed, 'close event after destroy in established');

  // destroyed in 'hbone-closed' of another flow, and a new stream opened there
  const c = r.cli.connect(connectOpts(r));
  c.on('error', () => {});
  await once(c, 'established');
  let d: HboneSocket | undefined;
  c.once('hbone-closed', () => { d = r.cli.connect(connectOpts(r)); d.destroy(); });
  c.destroy();
  await until(() => d !== undefined && d.destroyed, 'nested connect + destroy');

  // the endpoint closed from inside its own close event
  const e = r.cli.connect(connectOpts(r));
  e.on('error', () => {});
  await once(e, 'established');
  let closedInEvent = false;
  r.cli.on('closed', (info: HboneStreamInfo) => {
    if (info.flowId === e.flowId) { r.cli.close(); closedInEvent = true; }
  });
  e.destroy();
  await until(() => closedInEvent, 'client endpoint closed from its close event');
  t.throws(() => r.cli.connect(connectOpts(r)), { code: 'AMBIT_HBONE_ABORTED' });

  // the server endpoint still serves
  const cli2 = new HboneEndpoint();
  t.teardown(() => cli2.close());
  r.onStream = (s) => s.end('fine');
  const f = cli2.connect(connectOpts(r));
  const got: Buffer[] = [];
  f.on('data', (x: Buffer) => got.push(x));
  f.end();
  await within(once(f, 'end'), 'server still serves');
  t.is(Buffer.concat(got).toString(), 'fine');
});

rootTest('one settings table: the engine\'s server and client announce HBONE_SETTINGS (or the overrides); none missing is accepted', async (t) => {
  const pki = await pkiOnce();
  t.is(HBONE_SETTINGS.maxFrameSize, 64 * 1024);
  t.throws(() => new Engine({ outbound: () => null, inbound: () => 503, verify: () => '', context: () => null, event: () => {} },
    { ...HBONE_SETTINGS, maxFrameSize: undefined } as unknown as EngineOptions), { message: /maxFrameSize.*required/ });

  for (const over of [{}, { streamWindow: 1024 * 1024, maxFrameSize: 32 * 1024, maxConcurrentStreams: 7 }]) {
    const want = { ...HBONE_SETTINGS, ...over };
    // server side: what a node:http2 client is told
    const srv = new HboneEndpoint({ settings: over });
    t.teardown(() => srv.close());
    const fd = listenInNetns(SELF, { address: '127.0.0.1', port: 0 });
    const port = boundPort(fd);
    srv.listen(fd, SELF, { trustDomain: TD, certificate: () => pki.server });
    const tls = tlsConnect({
      host: '127.0.0.1', port, ca: pki.client.rootsPem, key: pki.client.keyPem, cert: pki.client.chainPem.join(''),
      ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', checkServerIdentity: () => undefined,
    });
    tls.on('error', () => {});
    const session = http2.connect('https://hbone', { createConnection: () => tls });
    session.on('error', () => {});
    t.teardown(() => session.destroy());
    const [remote] = await within(once(session, 'remoteSettings'), 'server settings') as [http2.Settings];
    t.is(remote.initialWindowSize, want.streamWindow);
    t.is(remote.maxFrameSize, want.maxFrameSize);
    t.is(remote.maxConcurrentStreams, want.maxConcurrentStreams);

    // client side: what a node:http2 HBONE server is told
    const hb = await h2HboneServer(t, pki);
    let seen: http2.Settings | undefined;
    const server = await new Promise<http2.Http2Session>((resolve) => {
      const cli = new HboneEndpoint({ settings: over });
      t.teardown(() => cli.close());
      const sock = cli.connect({ ip: '127.0.0.1', port: hb.port, authority: '127.0.0.1:9', expect: [pki.serverId], identity: pki.client });
      sock.on('error', () => {});
      hb.onSession = (sess) => { sess.once('remoteSettings', (st: http2.Settings) => { seen = st; resolve(sess); }); };
    });
    t.truthy(server);
    t.is(seen!.initialWindowSize, want.streamWindow);
    t.is(seen!.maxFrameSize, want.maxFrameSize);
    t.false(seen!.enablePush);
  }
});

rootTest('bad options are thrown at once, with nothing opened', (t) => {
  const cli = new HboneEndpoint();
  t.teardown(() => cli.close());
  return pkiOnce().then((pki) => {
    const base = { ip: '127.0.0.1', port: 15008, authority: '10.0.0.1:80', expect: [pki.serverId], identity: pki.client };
    t.throws(() => cli.connect({ ...base, authority: 'no port' }), { code: 'AMBIT_HBONE_BAD_REQUEST' });
    t.throws(() => cli.connect({ ...base, expect: [] }), { code: 'AMBIT_CONFIG_INVALID' });
    t.throws(() => cli.connect({ ...base, headers: { 'Bad Name': 'x' } }), { code: 'AMBIT_CONFIG_INVALID' });
    t.throws(() => cli.connect({ ...base, headers: { x: 'a\r\nb' } }), { code: 'AMBIT_CONFIG_INVALID' });
    t.is(cli.stats().flows, 0);
  });
});

/**
 * A Duplex handed out at once that becomes another stream later (http.Agent's createConnection
 * is synchronous; an HTTP/2 CONNECT stream is not ready synchronously).
 */
class DeferredDuplex extends Duplex {
  #inner: Duplex | undefined;
  #pending: { chunk: Buffer; cb: (e?: Error | null) => void }[] = [];
  #ending: (() => void) | undefined;
  attach(inner: Duplex): void {
    this.#inner = inner;
    inner.on('data', (d: Buffer) => { if (!this.push(d)) inner.pause(); });
    inner.on('end', () => this.push(null));
    inner.on('error', (e) => this.destroy(e));
    for (const p of this.#pending) inner.write(p.chunk, p.cb);
    this.#pending = [];
    if (this.#ending) { inner.end(); this.#ending(); }
  }
  override _read(): void { this.#inner?.resume(); }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.#inner) this.#inner.write(chunk, cb);
    else this.#pending.push({ chunk, cb });
  }
  override _final(cb: () => void): void {
    if (this.#inner) { this.#inner.end(); cb(); } else this.#ending = cb;
  }
  override _destroy(err: Error | null, cb: (e: Error | null) => void): void { this.#inner?.destroy(); cb(err); }
  // what http.Agent calls on its sockets (an HTTP/2 stream has no TCP options)
  setKeepAlive(): this { return this; }
  setNoDelay(): this { return this; }
  setTimeout(): this { return this; }
  ref(): this { return this; }
  unref(): this { return this; }
}
