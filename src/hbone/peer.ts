/**
 * The identity rule the engine applies to every HBONE peer, after OpenSSL verified its chain
 * against the roots: our SPIFFE rules on the DER chain, then the tag the listener or the client
 * flow carries. Tags: `td:<trust domain>` (servers: any identity of that trust domain) or
 * `id:<uri>,<uri>` (clients: the server must be one of the expected identities).
 */
import { parseSpiffeUri, requireTrustDomain, spiffeUri, verifyPeerChain } from '../identity/index.js';

export const serverTag = (trustDomain: string): string => `td:${trustDomain}`;
export const clientTag = (expected: readonly string[]): string => `id:${expected.join(',')}`;

/** The peer's SPIFFE URI, or throws naming what did not match (the engine then refuses it). */
export function verifyEnginePeer(chain: Buffer[], roots: string, tag: string): string {
  const id = verifyPeerChain(chain, roots);
  if (tag.startsWith('td:')) {
    requireTrustDomain(id, tag.slice(3));
    return spiffeUri(id);
  }
  const uri = spiffeUri(id);
  if (tag.startsWith('id:') && tag.slice(3).split(',').includes(uri)) return uri;
  const expected = tag.startsWith('id:') ? tag.slice(3).split(',').map((u) => spiffeUri(parseSpiffeUri(u))).join(', ') : '?';
  throw new Error(`peer identity ${uri} is not the expected ${expected}`);
}
