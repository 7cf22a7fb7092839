/**
 * TLS material for mutual TLS between mesh peers. Node/OpenSSL verifies the chain during the
 * handshake (`ca` = our trust bundle); then the SPIFFE rules are applied by our own DER code,
 * because hostname checks and Node's rendered SAN strings must never decide identity.
 */
import type { ConnectionOptions, PeerCertificate, DetailedPeerCertificate, TLSSocket, TlsOptions } from 'node:tls';
import { MeshError, errorMessage } from '../core/index.js';
import type { CertBundle } from './cert-manager.js';
import { MAX_CHAIN, verifyPeerChain } from './peer.js';
import { requireIdentity } from './spiffe.js';
import type { Identity } from './spiffe.js';

/** Options for a TLS server that requires and verifies client certificates (TLS 1.3 only). */
export function tlsServerOptions(b: CertBundle): TlsOptions {
  return {
    key: b.keyPem,
    cert: b.chainPem.join(''),
    ca: b.rootsPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  };
}

/**
 * Options for a TLS client presenting `b` and accepting only a server whose verified leaf is
 * exactly `expected` (the DNS name is irrelevant; `servername` is left to the caller).
 */
export function tlsClientOptions(b: CertBundle, expected: Identity): ConnectionOptions {
  const roots = b.rootsPem;
  return {
    key: b.keyPem,
    cert: b.chainPem.join(''),
    ca: roots,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      try {
        requireIdentity(verifyPeerChain(chainOf(cert), roots), expected);
        return undefined;
      } catch (e) {
        return e instanceof Error ? e : new MeshError('AMBIT_CERT_INVALID', errorMessage(e));
      }
    },
  };
}

/** DER chain (leaf first) of a peer certificate object as Node reports it. */
function chainOf(cert: PeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  let cur: PeerCertificate | undefined = cert;
  while (cur !== undefined && cur.raw !== undefined && out.length <= MAX_CHAIN) {
    out.push(cur.raw);
    const next: DetailedPeerCertificate | undefined = (cur as DetailedPeerCertificate).issuerCertificate;
    // A self-signed root is reported as its own issuer.
    if (next === undefined || next === cur || next.raw === undefined || next.raw.equals(cur.raw)) break;
    cur = next;
  }
  return out;
}

/** The peer's DER chain on an established TLS socket (leaf first). Empty when the peer sent none. */
export function peerChainDer(socket: TLSSocket): Buffer[] {
  const cert = socket.getPeerCertificate(true);
  if (cert === null || typeof cert !== 'object' || cert.raw === undefined) return [];
  return chainOf(cert);
}

/** Verify the peer of an established socket against `rootsPem` and return its identity (fail closed). */
export function verifyTlsPeer(socket: TLSSocket, rootsPem: string, now?: number): Identity {
  const chain = peerChainDer(socket);
  if (chain.length === 0) throw new MeshError('AMBIT_CERT_INVALID', 'peer presented no certificate');
  return verifyPeerChain(chain, rootsPem, now);
}
