/**
 * Shared pieces of the HBONE tests: a real CA (test/helpers/pki.ts), an HBONE server on loopback
 * port 0 in front of an echo upstream, a pool, and a raw HTTP/2-over-mTLS client for requests the
 * pool refuses to make. Also leaf certificates the CA would never issue (no SAN, two SANs), signed
 * with the CA's own key by openssl, for negative tests.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { ExecutionContext } from 'ava';
import { CertificateAuthority, certValidity, generateKeyAndCsr, pemToDers, type CertBundle, type Identity } from '../../../src/identity/index.js';
import { HbonePool, HboneServer, type ConnectResult, type HboneConnectRequest, type HbonePoolOptions, type HboneServerOptions, type TunnelCloseInfo } from '../../../src/hbone/index.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';

export const TD = 'cluster.local';

let shared: Promise<{ pki: TestPki; client: CertBundle; server: CertBundle }> | undefined;

/** One CA and two identities per test file (RSA key generation is the slow part). */
export function pkiOnce(): Promise<{ pki: TestPki; client: CertBundle; server: CertBundle }> {
  shared ??= (async () => {
    const pki = makeTestPki({ trustDomain: TD });
    const [client, server] = await Promise.all([pki.issue(pki.id('ns-a', 'client')), pki.issue(pki.id('ns-b', 'server'))]);
    return { pki, client, server };
  })();
  return shared;
}

/** An echo upstream: answers `echo:<data>` per chunk; on FIN it writes `bye` and ends (half-close test). */
export async function echoUpstream(t: ExecutionContext): Promise<{ port: number; server: Server; fins: number }> {
  const state = { port: 0, server: undefined as unknown as Server, fins: 0 };
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.on('data', (d) => s.write(`echo:${d.toString()}`));
    s.on('end', () => { state.fins++; s.end('bye'); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.port = (server.address() as { port: number }).port;
  state.server = server;
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); }));
  return state;
}

export function connectUpstream(port: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port, allowHalfOpen: true });
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

export interface Rig {
  server: HboneServer;
  port: number;
  address: { address: string; port: number };
  pool: HbonePool;
  client: CertBundle;
  serverBundle: CertBundle;
  pki: TestPki;
  serverId: Identity;
  requests: HboneConnectRequest[];
  closes: TunnelCloseInfo[];
  /** sockets the pool dialled (through the injected connector) */
  dialled: Socket[];
  echo: { port: number; fins: number };
}

export interface RigOptions {
  onConnect?: (req: HboneConnectRequest, rig: Rig) => Promise<ConnectResult>;
  server?: Partial<HboneServerOptions>;
  pool?: HbonePoolOptions;
  serverBundle?: CertBundle;
}

/** Server + echo upstream + pool, all torn down after the test. */
export async function rig(t: ExecutionContext, o: RigOptions = {}): Promise<Rig> {
  const { pki, client, server: serverBundle0 } = await pkiOnce();
  const serverBundle = o.serverBundle ?? serverBundle0;
  const echo = await echoUpstream(t);
  const r = {} as Rig;
  const server = new HboneServer({
    identity: () => serverBundle,
    trustDomain: TD,
    onConnect: async (req) => {
      r.requests.push(req);
      if (o.onConnect) return o.onConnect(req, r);
      const upstream = await connectUpstream(echo.port);
      return { status: 200, upstream, onClose: (i) => r.closes.push(i) };
    },
    ...o.server,
  });
  await server.listen({ port: 0, host: '127.0.0.1' });
  const port = server.address()!.port;
  const dialled: Socket[] = [];
  const pool = new HbonePool({
    connect: (a) => new Promise<Socket>((resolve, reject) => {
      const s = createConnection({ host: a.address, port: a.port });
      s.once('connect', () => { s.off('error', reject); dialled.push(s); resolve(s); });
      s.once('error', reject);
    }),
    ...o.pool,
  });
  Object.assign(r, {
    server, port, address: { address: '127.0.0.1', port }, pool, client, serverBundle, pki,
    serverId: serverBundle.identity, requests: [], closes: [], dialled, echo,
  });
  t.teardown(async () => {
    await pool.close(100);
    await server.close(100);
  });
  return r;
}

/** Read everything until 'end'. */
export function readAll(s: NodeJS.ReadableStream): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buf = '';
    s.on('data', (d: Buffer) => { buf += d.toString(); });
    s.once('end', () => resolve(buf));
    s.once('error', reject);
  });
}

/** Wait for the next chunk. */
export function nextData(s: NodeJS.ReadableStream): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    s.once('error', reject);
  });
}

/** Wait until `cond` holds, checking after each turn of the event loop (bounded). */
export async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (cond()) return;
    await new Promise<void>((r) => setTimeout(r, i < 100 ? 0 : 5));
  }
  throw new Error(`gave up waiting for ${what}`);
}

export function closed(s: { once(ev: 'close', fn: () => void): unknown; destroyed?: boolean }): Promise<void> {
  return new Promise<void>((resolve) => {
    if (s.destroyed) resolve(); else s.once('close', () => resolve());
  });
}

/** TLS + HTTP/2 with a mesh certificate, but no pool rules: for requests the pool would not send. */
export async function rawSession(t: ExecutionContext, port: number, bundle: CertBundle, alpn = ['h2']): Promise<{ tls: TLSSocket; session: ClientHttp2Session }> {
  const tls = tlsConnect({
    host: '127.0.0.1', port, key: bundle.keyPem, cert: bundle.chainPem.join('\n'), ca: bundle.rootsPem,
    ALPNProtocols: alpn, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined,
  });
  tls.on('error', () => {});
  await new Promise<void>((resolve, reject) => { tls.once('secureConnect', () => resolve()); tls.once('close', () => reject(new Error('closed during handshake'))); });
  const session = h2connect('https://hbone', { createConnection: () => tls });
  session.on('error', () => {});
  t.teardown(() => { session.destroy(); tls.destroy(); });
  return { tls, session };
}

/**
 * A CA on disk (so the test can use its key), plus `leaf(uris)`: a certificate from the same CA
 * with exactly the given URI SANs and otherwise valid SVID shape, which the CA API never makes.
 */
export async function diskPki(t: ExecutionContext, trustDomain = TD): Promise<{
  ca: CertificateAuthority; issue(id: Identity): Promise<CertBundle>; leaf(uris: string[]): CertBundle;
}> {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-hbone-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ca = await CertificateAuthority.loadOrCreate(join(dir, 'ca'), { trustDomain });
  const issueWith = async (id: Identity): Promise<CertBundle> => {
    const { keyPem, csrPem } = await generateKeyAndCsr(id);
    const chainPem = ca.sign(csrPem, id);
    const { notBefore, notAfter } = certValidity(pemToDers(chainPem[0]!)[0]!);
    return { identity: id, keyPem, chainPem, rootsPem: ca.rootsPem, notBefore, notAfter };
  };
  return {
    ca,
    issue: issueWith,
    leaf(uris: string[]): CertBundle {
      const n = Math.random().toString(36).slice(2);
      const key = join(dir, `${n}.key`);
      const csr = join(dir, `${n}.csr`);
      const crt = join(dir, `${n}.pem`);
      const ext = join(dir, `${n}.ext`);
      const lines = [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth,clientAuth',
      ];
      if (uris.length > 0) lines.push(`subjectAltName=critical,${uris.map((u) => `URI:${u}`).join(',')}`);
      writeFileSync(ext, lines.join('\n') + '\n');
      const run = (args: string[]): void => { execFileSync('openssl', args, { stdio: 'pipe' }); };
      run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/O=ambit-test']);
      run(['x509', '-req', '-in', csr, '-CA', join(dir, 'ca', 'ca-cert.pem'), '-CAkey', join(dir, 'ca', 'ca-key.pem'),
        '-set_serial', `0x${Date.now().toString(16)}`, '-days', '1', '-out', crt, '-extfile', ext]);
      const leafPem = readFileSync(crt, 'utf8');
      const { notBefore, notAfter } = certValidity(pemToDers(leafPem)[0]!);
      return {
        identity: { trustDomain, namespace: 'forged', serviceAccount: 'forged' },
        keyPem: readFileSync(key, 'utf8'), chainPem: [leafPem], rootsPem: ca.rootsPem, notBefore, notAfter,
      };
    },
  };
}
