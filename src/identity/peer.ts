/**
 * Peer identity checks (X.509-SVID verifier rules). Identity comes only from a certificate whose
 * chain verified against our trust bundle; every decision reads the DER, never Node's rendered
 * strings.
 */
import { X509Certificate } from 'node:crypto';
import { MeshError, errorMessage } from '../core/index.js';
import {
  OID, certExtensions, certValidity, parseBasicConstraints, parseExtKeyUsage, parseGeneralNames, parseKeyUsage,
} from './der.js';
import type { Extension } from './der.js';
import { pemToDers } from './pem.js';
import { parseSpiffeUri } from './spiffe.js';
import type { Identity } from './spiffe.js';

/** Longest chain we walk (leaf + intermediates); real meshes use one or two intermediates. */
export const MAX_CHAIN = 8;

function invalid(msg: string, cause?: unknown): never {
  throw new MeshError('AMBIT_CERT_INVALID', msg, cause === undefined ? undefined : { cause });
}

function findExt(exts: Extension[], oid: string): Extension | undefined {
  return exts.find((e) => e.oid === oid);
}

/** URI SANs read from a DER certificate by walking the ASN.1 (any key type). `[]` when there is no SAN. */
export function uriSans(der: Buffer): string[] {
  const san = findExt(certExtensions(der), OID.subjectAltName);
  return san === undefined ? [] : parseGeneralNames(san.value).uris;
}

/**
 * The single SPIFFE identity of a leaf certificate. Enforces the leaf shape too, so a CA
 * certificate can never authenticate a peer: exactly one URI SAN (spiffe), not a CA, keyUsage
 * critical with digitalSignature and without keyCertSign/cRLSign, EKU (if present) with both
 * serverAuth and clientAuth.
 */
export function peerIdentity(der: Buffer): Identity {
  const exts = certExtensions(der);
  const san = findExt(exts, OID.subjectAltName);
  const uris = san === undefined ? [] : parseGeneralNames(san.value).uris;
  if (uris.length !== 1) invalid(`peer certificate: expected exactly one URI SAN, found ${uris.length}`);
  const id = parseSpiffeUri(uris[0]!);
  const bc = findExt(exts, OID.basicConstraints);
  if (bc !== undefined && parseBasicConstraints(bc).ca) invalid('peer certificate: is a CA certificate (cA=true)');
  const kuExt = findExt(exts, OID.keyUsage);
  if (kuExt === undefined) invalid('peer certificate: keyUsage missing');
  const ku = parseKeyUsage(kuExt);
  if (!ku.critical) invalid('peer certificate: keyUsage not critical');
  if (!ku.digitalSignature) invalid('peer certificate: keyUsage lacks digitalSignature');
  if (ku.keyCertSign || ku.cRLSign) invalid('peer certificate: keyUsage allows certificate or crl signing');
  const ekuExt = findExt(exts, OID.extKeyUsage);
  if (ekuExt !== undefined) {
    const eku = parseExtKeyUsage(ekuExt);
    if (!eku.includes(OID.serverAuth) || !eku.includes(OID.clientAuth)) {
      invalid('peer certificate: extKeyUsage must include serverAuth and clientAuth');
    }
  }
  return id;
}

interface Parsed { der: Buffer; x: X509Certificate; notBefore: number; notAfter: number }

function parse(der: Buffer, what: string): Parsed {
  let x: X509Certificate;
  try {
    x = new X509Certificate(der);
  } catch (e) {
    invalid(`${what}: not a certificate: ${errorMessage(e)}`, e);
  }
  return { der, x, ...certValidity(der) };
}

function checkTime(c: Parsed, now: number, what: string): void {
  if (now < c.notBefore) invalid(`${what}: not yet valid (notBefore ${new Date(c.notBefore).toISOString()})`);
  if (now > c.notAfter) invalid(`${what}: expired (notAfter ${new Date(c.notAfter).toISOString()})`);
}

/** A signing certificate: cA=true and, if keyUsage is present, keyCertSign. */
function isSigner(c: Parsed): boolean {
  const exts = certExtensions(c.der);
  const bc = findExt(exts, OID.basicConstraints);
  if (bc === undefined || !parseBasicConstraints(bc).ca) return false;
  const ku = findExt(exts, OID.keyUsage);
  return ku === undefined || parseKeyUsage(ku).keyCertSign;
}

function issuedBy(child: Parsed, issuer: Parsed): boolean {
  // checkIssued compares names and key identifiers; verify proves the signature. Both are needed:
  // a different CA with the same subject passes the first and fails the second.
  return child.x.checkIssued(issuer.x) && child.x.verify(issuer.x.publicKey);
}

// Parsing the trust bundle on every handshake would be wasteful; bundles change rarely.
const rootCache = new Map<string, Parsed[]>();
const ROOT_CACHE_MAX = 16;

function parseRoots(rootsPem: string): Parsed[] {
  const hit = rootCache.get(rootsPem);
  if (hit !== undefined) return hit;
  const roots = pemToDers(rootsPem, 'trust bundle').map((d, i) => parse(d, `trust bundle certificate ${i}`));
  if (rootCache.size >= ROOT_CACHE_MAX) rootCache.delete(rootCache.keys().next().value!);
  rootCache.set(rootsPem, roots);
  return roots;
}

/**
 * Verify a peer chain (leaf first, then intermediates in any order; a copy of the root may be
 * included) against the trust bundle `rootsPem` at time `now` (ms), then return the leaf's
 * identity. Throws `AMBIT_CERT_INVALID` on any failure. Used by HBONE on both sides.
 */
export function verifyPeerChain(chainDer: Buffer[], rootsPem: string, now: number = Date.now()): Identity {
  if (!Array.isArray(chainDer) || chainDer.length === 0) invalid('peer chain: empty');
  if (chainDer.length > MAX_CHAIN) invalid(`peer chain: more than ${MAX_CHAIN} certificates`);
  const roots = parseRoots(rootsPem);
  const chain = chainDer.map((d, i) => parse(d, i === 0 ? 'peer certificate' : `peer chain certificate ${i}`));
  const leaf = chain[0]!;
  checkTime(leaf, now, 'peer certificate');
  const id = peerIdentity(leaf.der);
  let current = leaf;
  const used = new Set<number>([0]);
  for (let depth = 0; depth < MAX_CHAIN; depth++) {
    for (const r of roots) {
      if (issuedBy(current, r)) {
        checkTime(r, now, 'trust anchor');
        return id;
      }
    }
    let next = -1;
    for (let i = 1; i < chain.length; i++) {
      if (!used.has(i) && issuedBy(current, chain[i]!)) { next = i; break; }
    }
    if (next < 0) invalid('peer chain: does not lead to a trusted root');
    const issuer = chain[next]!;
    used.add(next);
    if (!isSigner(issuer)) invalid(`peer chain certificate ${next}: not a CA`);
    checkTime(issuer, now, `peer chain certificate ${next}`);
    current = issuer;
  }
  invalid('peer chain: too long');
}
