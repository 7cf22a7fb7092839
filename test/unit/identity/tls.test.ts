// Real mutual TLS on loopback with the material the identity module hands out.
import test from 'ava';
import { connect, createServer } from 'node:tls';
import type { ConnectionOptions, Server, TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  CA_FILES, CertificateAuthority, certValidity, generateKeyAndCsr, pemToDers, tlsClientOptions, tlsServerOptions, verifyTlsPeer,
} from '../../../src/identity/index.js';
import type { CertBundle, Identity } from '../../../src/identity/index.js';
import { isMeshError } from '../../../src/core/index.js';
import { makeForeignPki, makeTestPki } from '../../helpers/pki.js';

const pki = makeTestPki({ trustDomain: 'cluster.local' });
const serverId = pki.id('shop', 'db');
const clientId = pki.id('shop', 'web');
const material = Promise.all([pki.issue(serverId), pki.issue(clientId)]);

interface Started { server: Server; port: number; peers: Promise<Identity>; clientErrors: Promise<Error> }

async function startServer(t: { teardown(fn: () => void): void }, b: CertBundle): Promise<Started> {
  let onPeer!: (id: Identity) => void;
  let onErr!: (e: Error) => void;
  const peers = new Promise<Identity>((r) => { onPeer = r; });
  const clientErrors = new Promise<Error>((r) => { onErr = r; });
  const server = createServer(tlsServerOptions(b), (s: TLSSocket) => {
    onPeer(verifyTlsPeer(s, b.rootsPem));
    s.end('hello');
  });
  server.on('tlsClientError', (e) => onErr(e));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return { server, port: (server.address() as AddressInfo).port, peers, clientErrors };
}

function dial(port: number, opts: ConnectionOptions): Promise<{ data: string } | { error: Error }> {
  return new Promise((resolve) => {
    const s = connect({ ...opts, host: '127.0.0.1', port, servername: 'irrelevant.example' });
    let data = '';
    s.on('data', (d: Buffer) => { data += d.toString(); });
    s.on('end', () => resolve({ data }));
    s.on('error', (error) => resolve({ error }));
  });
}

test('mutual TLS succeeds with the expected identities on both sides', async (t) => {
  const [sb, cb] = await material;
  const srv = await startServer(t, sb);
  const res = await dial(srv.port, tlsClientOptions(cb, serverId));
  t.deepEqual(res, { data: 'hello' });
  t.deepEqual(await srv.peers, clientId);
});

test('client refuses a server that is not the expected identity', async (t) => {
  const [sb, cb] = await material;
  const srv = await startServer(t, sb);
  const res = await dial(srv.port, tlsClientOptions(cb, pki.id('shop', 'someone-else')));
  t.true('error' in res);
  if ('error' in res) t.true(isMeshError(res.error, 'AMBIT_IDENTITY_MISMATCH'), String(res.error));
});

test('server refuses a client certificate from a foreign CA', async (t) => {
  const [sb] = await material;
  const foreign = makeForeignPki('evil.example');
  const fb = await foreign.issue(foreign.id('shop', 'web'));
  const srv = await startServer(t, sb);
  // The foreign client trusts our root so only the server-side check can stop it.
  const res = await dial(srv.port, { ...tlsClientOptions(fb, serverId), ca: sb.rootsPem });
  t.false('data' in res && res.data === 'hello');
  // The handshake fails on the server: it never gets a connection to hand to the application.
  const first = await Promise.race([srv.peers.then(() => 'peer'), srv.clientErrors.then(() => 'tlsClientError')]);
  t.is(first, 'tlsClientError');
});

test('client refuses a server whose chain is from another root', async (t) => {
  const [, cb] = await material;
  const other = makeTestPki({ trustDomain: 'cluster.local' });
  const impostor = await other.issue(serverId); // right name, wrong CA
  const srv = await startServer(t, impostor);
  const res = await dial(srv.port, tlsClientOptions(cb, serverId));
  t.true('error' in res);
});

test('mutual TLS through an intermediate CA (plug-in layout)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), `ambit-${process.pid.toString(36)}-tls-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const inter = pki.ca.issueIntermediate();
  await writeFile(join(dir, CA_FILES.cert), inter.certPem);
  await writeFile(join(dir, CA_FILES.key), inter.keyPem);
  await writeFile(join(dir, CA_FILES.root), inter.rootsPem);
  await writeFile(join(dir, CA_FILES.chain), inter.chainPem);
  const ica = await CertificateAuthority.fromDirectory(dir, { trustDomain: 'cluster.local' });
  const issue = async (id: Identity): Promise<CertBundle> => {
    const { keyPem, csrPem } = await generateKeyAndCsr(id);
    const chainPem = ica.sign(csrPem, id);
    return { identity: id, keyPem, chainPem, rootsPem: ica.rootsPem, ...certValidity(pemToDers(chainPem[0]!)[0]!) };
  };
  const [sb, cb] = await Promise.all([issue(serverId), issue(clientId)]);
  t.is(sb.chainPem.length, 2);
  const srv = await startServer(t, sb);
  t.deepEqual(await dial(srv.port, tlsClientOptions(cb, serverId)), { data: 'hello' });
  t.deepEqual(await srv.peers, clientId);
});
