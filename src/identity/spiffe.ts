/**
 * SPIFFE ids of the form `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
 *
 * Parsing is deliberately stricter than the SPIFFE spec allows in general: the mesh only ever
 * issues and accepts this one shape, so anything else (other paths, uppercase scheme or trust
 * domain, percent-encoding, query, fragment, port, userinfo) is refused rather than normalised.
 * A single canonical spelling means string equality is identity equality.
 */
import { MeshError } from '../core/index.js';

export interface Identity {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

const SCHEME = 'spiffe://';
/** SPIFFE-ID §2: the whole id is at most 2048 bytes, the trust domain at most 255. */
const MAX_ID = 2048;
const MAX_TRUST_DOMAIN = 255;
/** Kubernetes names: service accounts are DNS subdomains (253); namespaces are shorter still. */
const MAX_SEGMENT = 253;
const TD_RE = /^[a-z0-9._-]+$/;
const SEGMENT_RE = /^[a-zA-Z0-9._-]+$/;

function invalid(what: string, detail: string): never {
  throw new MeshError('AMBIT_CERT_INVALID', `spiffe id ${JSON.stringify(what.slice(0, 200))}: ${detail}`);
}

/** Throws unless `td` is a valid trust domain (lowercase `[a-z0-9._-]`, 1..255 bytes). */
export function checkTrustDomain(td: string, what = td): void {
  if (typeof td !== 'string' || td.length === 0) invalid(what, 'empty trust domain');
  if (td.length > MAX_TRUST_DOMAIN) invalid(what, `trust domain longer than ${MAX_TRUST_DOMAIN} bytes`);
  if (!TD_RE.test(td)) invalid(what, 'trust domain may contain only lowercase a-z, 0-9, ".", "_" and "-"');
}

function checkSegment(seg: string, field: string, what: string): void {
  if (typeof seg !== 'string' || seg.length === 0) invalid(what, `empty ${field}`);
  if (seg.length > MAX_SEGMENT) invalid(what, `${field} longer than ${MAX_SEGMENT} bytes`);
  if (seg === '.' || seg === '..') invalid(what, `${field} may not be "." or ".."`);
  if (!SEGMENT_RE.test(seg)) invalid(what, `${field} may contain only a-z, A-Z, 0-9, ".", "_" and "-"`);
}

/** Throws `AMBIT_CERT_INVALID` unless every field of `id` is well-formed. */
export function checkIdentity(id: Identity): void {
  const what = `${id?.trustDomain}/ns/${id?.namespace}/sa/${id?.serviceAccount}`;
  checkTrustDomain(id?.trustDomain, what);
  checkSegment(id.namespace, 'namespace', what);
  checkSegment(id.serviceAccount, 'service account', what);
}

/** `spiffe://td/ns/x/sa/y`; throws on a malformed identity (never builds an id that would not parse). */
export function spiffeUri(id: Identity): string {
  checkIdentity(id);
  return `${SCHEME}${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** Stable map key for an identity (its canonical URI). */
export function identityKey(id: Identity): string {
  return spiffeUri(id);
}

/** Parse a SPIFFE workload id; throws `MeshError('AMBIT_CERT_INVALID')` naming what is wrong. */
export function parseSpiffeUri(uri: string): Identity {
  if (typeof uri !== 'string') invalid(String(uri), 'not a string');
  if (Buffer.byteLength(uri) > MAX_ID) invalid(uri, `longer than ${MAX_ID} bytes`);
  if (!uri.startsWith(SCHEME)) invalid(uri, 'scheme must be "spiffe://" (lowercase)');
  const rest = uri.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  checkTrustDomain(td, uri);
  if (slash < 0) invalid(uri, 'no path: a trust domain id is not a workload identity');
  const segs = rest.slice(slash + 1).split('/');
  if (segs.length !== 4 || segs[0] !== 'ns' || segs[2] !== 'sa') {
    invalid(uri, 'path must be exactly /ns/<namespace>/sa/<service account>');
  }
  const id: Identity = { trustDomain: td, namespace: segs[1]!, serviceAccount: segs[3]! };
  checkSegment(id.namespace, 'namespace', uri);
  checkSegment(id.serviceAccount, 'service account', uri);
  return id;
}

export function sameIdentity(a: Identity, b: Identity): boolean {
  return a.trustDomain === b.trustDomain && a.namespace === b.namespace && a.serviceAccount === b.serviceAccount;
}

/** Outbound check: the peer must be exactly the identity we meant to reach (a DNS name is not enough). */
export function requireIdentity(actual: Identity, expected: Identity): void {
  if (!sameIdentity(actual, expected)) {
    throw new MeshError('AMBIT_IDENTITY_MISMATCH',
      `peer identity ${spiffeUri(actual)} is not the expected ${spiffeUri(expected)}`);
  }
}

/** Inbound check: the peer must belong to our trust domain. */
export function requireTrustDomain(actual: Identity, trustDomain: string): void {
  if (actual.trustDomain !== trustDomain) {
    throw new MeshError('AMBIT_TRUST_DOMAIN_MISMATCH',
      `peer identity ${spiffeUri(actual)} is not in trust domain ${trustDomain}`);
  }
}
