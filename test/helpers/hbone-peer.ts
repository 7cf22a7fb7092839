/**
 * An HBONE peer for tests: node:tls + node:http2 sending one CONNECT over mutual TLS 1.3 on a TCP
 * socket the test connected (e.g. from inside a pod netns). It plays a client the mesh does not
 * control, so the agents' HBONE servers (the addon's engine) can be probed with certificates,
 * identities and authorities of the test's choosing. The mesh itself never speaks HBONE from Node.
 */
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { parseAuthority } from '../../src/hbone/index.js';
import { spiffeUri, verifyTlsPeer, type CertBundle, type Identity } from '../../src/identity/index.js';

export interface HbonePeerRequest {
  /** a connected TCP socket to the HBONE listener; the peer takes ownership */
  socket: Socket;
  /** the certificate the peer presents */
  source: CertBundle;
  /** the server must present one of these (checked on the DER chain, as the mesh does) */
  expected: readonly Identity[];
  /** the CONNECT target; refused before anything is sent when malformed */
  authority: string;
  headers?: Record<string, string>;
  /** default 20_000 */
  timeoutMs?: number;
}

export interface HboneTunnelStream {
  status: number;
  /** the server's SPIFFE id */
  peer: string;
  stream: ClientHttp2Stream;
  /** ends the stream, the session and the socket */
  close(): void;
}

/**
 * One CONNECT: resolves with the response status (any status, 200 or a refusal), rejects when the
 * TLS handshake, the identity check or the session fails (the message says which).
 */
export function hboneConnect(o: HbonePeerRequest): Promise<HboneTunnelStream> {
  try {
    parseAuthority(o.authority);
  } catch (e) {
    o.socket.destroy();
    return Promise.reject(e instanceof Error ? e : new Error(String(e)));
  }
  const tls = tlsConnect({
    socket: o.socket, key: o.source.keyPem, cert: o.source.chainPem.join(''), ca: o.source.rootsPem,
    ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
    // a SPIFFE identity is not a host name: the chain is verified against `ca`, the identity below
    checkServerIdentity: () => undefined,
  });
  let session: ClientHttp2Session | undefined;
  const close = (): void => { session?.destroy(); tls.destroy(); };
  return new Promise<HboneTunnelStream>((resolve, reject) => {
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      close();
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail('hbone peer: timed out'), o.timeoutMs ?? 20_000);
    tls.on('error', (e) => fail(`tls: ${e.message}`));
    tls.once('close', () => fail('tls: connection closed'));
    tls.once('secureConnect', () => {
      let peer: string;
      try {
        peer = spiffeUri(verifyTlsPeer(tls, o.source.rootsPem));
      } catch (e) {
        fail(`server identity: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
      const want = o.expected.map(spiffeUri);
      if (!want.includes(peer)) {
        fail(`server presented ${peer}, expected ${want.join(' or ')}`);
        return;
      }
      session = h2connect('https://hbone', { createConnection: () => tls });
      session.on('error', (e) => fail(`http2: ${e.message}`));
      const stream = session.request({ ':method': 'CONNECT', ':authority': o.authority, ...o.headers });
      stream.on('error', () => { /* the close below reports it */ });
      stream.once('response', (h) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status: Number(h[':status']), peer, stream, close });
      });
      stream.once('close', () => fail(`stream closed without a response (rst ${stream.rstCode})`));
    });
  });
}
