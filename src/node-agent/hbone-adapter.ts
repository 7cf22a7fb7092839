/**
 * HBONE for the pod proxies: HTTP/2 CONNECT over mutual TLS 1.3.
 *
 * SHIM: this is the smallest local implementation, used until src/hbone (client pool and server)
 * is wired here. It keeps the mesh's rules: TLS 1.3 only, ALPN h2, no SNI, client and server
 * certificates both required, the server's SPIFFE id must be one of the expected ones, the
 * client's must be in our trust domain; one h2 connection per (source identity, destination
 * identities, destination address); windows 4 MiB per stream, 16 MiB per connection.
 */
import { connect as h2connect, createSecureServer, type ClientHttp2Session, type Http2SecureServer, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { errorMessage, MeshError } from '../core/index.js';
import { identityKey, spiffeUri, tlsClientOptions, tlsServerOptions, verifyTlsPeer, type Identity } from '../identity/index.js';
import type { HboneListenerFactory, TunnelOpener } from './pod-proxy.js';

const STREAM_WINDOW = 4 * 1024 * 1024;
const CONN_WINDOW = 16 * 1024 * 1024;
const MAX_POOL = 1024;
const SETTINGS = { initialWindowSize: STREAM_WINDOW, maxFrameSize: 1 << 20, enablePush: false, maxHeaderListSize: 64 * 1024 };

function h2Session(tlsSock: TLSSocket): ClientHttp2Session {
  const s = h2connect('https://hbone', { createConnection: () => tlsSock, settings: { ...SETTINGS, maxHeaderListSize: 16 * 1024 } });
  s.on('connect', () => { try { s.setLocalWindowSize(CONN_WINDOW); } catch { /* closed meanwhile */ } });
  s.on('error', () => { /* surfaced on the streams */ });
  return s;
}

export function createTunnelOpener(): TunnelOpener & { close(): Promise<void> } {
  const pool = new Map<string, Promise<ClientHttp2Session>>();
  const dial = async (o: Parameters<TunnelOpener['open']>[0]): Promise<ClientHttp2Session> => {
    const expected = o.expected[0];
    if (!expected) throw new MeshError('AMBIT_IDENTITY_MISMATCH', 'hbone: no expected server identity');
    const tcp: Socket = await o.connect();
    const tlsSock = tlsConnect({ ...tlsClientOptions(o.source, expected), socket: tcp, ALPNProtocols: ['h2'], maxVersion: 'TLSv1.3' });
    await new Promise<void>((resolve, reject) => {
      tlsSock.once('secureConnect', () => {
        if (tlsSock.alpnProtocol !== 'h2') reject(new MeshError('AMBIT_HBONE_STATUS', 'hbone: server did not negotiate h2'));
        else resolve();
      });
      tlsSock.once('error', (e) => reject(new MeshError('AMBIT_CERT_INVALID', `hbone tls to ${o.address.ip}:${o.address.port}: ${e.message}`, { cause: e })));
    });
    return h2Session(tlsSock);
  };
  return {
    async open(o) {
      const key = [identityKey(o.source.identity), o.expected.map((e) => spiffeUri(e)).join(','), `${o.address.ip}:${o.address.port}`].join('|');
      let sp = pool.get(key);
      const cached = sp ? await sp.catch(() => undefined) : undefined;
      if (!cached || cached.closed || cached.destroyed) {
        if (pool.size >= MAX_POOL) for (const k of pool.keys()) { pool.delete(k); break; }
        sp = dial(o);
        pool.set(key, sp);
        sp.then((s) => s.once('close', () => { if (pool.get(key) === sp) pool.delete(key); }), () => pool.delete(key));
      }
      const session = await sp!;
      const stream = session.request({ ':method': 'CONNECT', ':authority': o.authority, ...o.headers }, { endStream: false });
      return new Promise<Duplex>((resolve, reject) => {
        stream.once('response', (h) => {
          const status = Number(h[':status']);
          if (status === 200) resolve(stream);
          else { stream.destroy(); reject(new MeshError('AMBIT_HBONE_STATUS', `hbone CONNECT ${o.authority}: status ${status}`)); }
        });
        stream.once('error', (e) => reject(new MeshError('AMBIT_HBONE_STATUS', `hbone CONNECT ${o.authority}: ${errorMessage(e)}`, { cause: e })));
        stream.once('close', () => reject(new MeshError('AMBIT_HBONE_STATUS', `hbone CONNECT ${o.authority}: stream closed (code ${stream.rstCode})`)));
      });
    },
    async close() {
      const all = [...pool.values()];
      pool.clear();
      for (const p of all) p.then((s) => s.close(), () => undefined);
    },
  };
}

function first(h: IncomingHttpHeaders, k: string): string | undefined {
  const v = h[k];
  return Array.isArray(v) ? v[0] : v;
}

export const createHboneListener: HboneListenerFactory = (o) => {
  let server: Http2SecureServer | undefined;
  const sessions = new Set<{ close(): void; destroy(): void }>();
  return {
    listen: (fd) => new Promise<void>((resolve, reject) => {
      const cert = o.cert();
      // No certificate: accept nothing (every handshake fails) rather than serve without identity.
      const tlsOpts = cert ? tlsServerOptions(cert) : { requestCert: true, rejectUnauthorized: true };
      server = createSecureServer({
        ...tlsOpts, ALPNProtocols: ['h2'], allowHTTP1: false, maxVersion: 'TLSv1.3', settings: { ...SETTINGS, maxConcurrentStreams: 200 },
        maxSessionInvalidFrames: 1000, maxSessionRejectedStreams: 100, maxHeaderListPairs: 128,
      });
      let current = cert;
      // A renewed (or first) certificate applies to the handshakes after this connection.
      server.on('connection', () => {
        const now = o.cert();
        if (now && now !== current) { current = now; try { server?.setSecureContext(tlsServerOptions(now)); } catch { /* keep the old one */ } }
      });
      server.on('secureConnection', (sock: TLSSocket) => {
        const now = o.cert();
        if (!now) { sock.destroy(); return; }
        try {
          const peer = verifyTlsPeer(sock, now.rootsPem);
          if (peer.trustDomain !== o.trustDomain) throw new MeshError('AMBIT_TRUST_DOMAIN_MISMATCH', `client trust domain ${peer.trustDomain}`);
        } catch {
          sock.destroy();
        }
      });
      server.on('session', (s) => {
        sessions.add(s);
        s.on('close', () => sessions.delete(s));
        s.on('connect', () => { try { s.setLocalWindowSize(CONN_WINDOW); } catch { /* closed */ } });
        s.on('error', () => undefined);
      });
      server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
        stream.on('error', () => undefined);
        const sock = stream.session?.socket as TLSSocket | undefined;
        if (headers[':method'] !== 'CONNECT' || !sock) {
          stream.respond({ ':status': 400 }, { endStream: true });
          return;
        }
        const now = o.cert();
        let peer: Identity;
        try {
          if (!now) throw new Error('no certificate');
          peer = verifyTlsPeer(sock, now.rootsPem);
        } catch {
          stream.respond({ ':status': 401 }, { endStream: true });
          return;
        }
        o.onConnect({
          authority: first(headers, ':authority') ?? '', headers, peer,
          remote: { ip: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 },
          local: { ip: sock.localAddress ?? '', port: sock.localPort ?? 0 },
        }).then((r) => {
          if (stream.destroyed) { if (r.status === 200) r.reject('client went away'); return; }
          if (r.status !== 200) { stream.respond({ ':status': r.status }, { endStream: true }); return; }
          stream.respond({ ':status': 200 });
          r.attach(stream);
        }, () => { if (!stream.destroyed) stream.respond({ ':status': 503 }, { endStream: true }); });
      });
      server.on('error', () => undefined);
      server.once('error', reject);
      server.listen({ fd }, () => resolve());
    }),
    close: (deadlineMs) => new Promise<void>((resolve) => {
      const s = server;
      if (!s) { resolve(); return; }
      for (const sess of sessions) sess.close(); // GOAWAY: open streams may finish
      const timer = setTimeout(() => { for (const sess of sessions) sess.destroy(); }, deadlineMs);
      s.close(() => { clearTimeout(timer); resolve(); });
      if (sessions.size === 0) { clearTimeout(timer); }
    }),
  };
};

