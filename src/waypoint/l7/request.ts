/**
 * What a waypoint knows about one request, and the normalization every later decision (authorization,
 * route match, rewrite) runs on. Pure: no sockets, timers or files.
 */

/** Header map as the HTTP layer hands it over: lowercase names; a repeated header keeps each value. */
export type HeaderValues = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * The facts of one request, as received. The caller builds it from node:http / node:http2 and the
 * HBONE tunnel it came through.
 */
export interface RequestFacts {
  /** as received (`GET`, `POST` ...); lower-case methods are refused with 400 */
  readonly method: string;
  /** the raw request target: path with query (HTTP/1 origin-form or HTTP/2 `:path`) */
  readonly path: string;
  /** `Host` / `:authority` as received, port included when the client sent one */
  readonly authority: string;
  /** `http` for plaintext from the client's point of view (the mesh's mTLS does not count) */
  readonly scheme: string;
  /**
   * Lowercase names; pass `req.headersDistinct` (or an equivalent) so that each line of a repeated
   * header stays its own value: matches and policies look at every value separately.
   */
  readonly headers: HeaderValues;
  /** the service port the request was sent to (the port of the HBONE CONNECT target) */
  readonly port: number;
  /** verified SPIFFE id of the client (`spiffe://<td>/ns/<ns>/sa/<sa>`); absent without a peer identity */
  readonly sourcePrincipal?: string | undefined;
  /** the client's IP (from the HBONE tunnel: the original source) */
  readonly sourceIp: string;
  /** the address the client connected to (service VIP or pod IP), for `destination.ip` conditions */
  readonly destinationIp?: string | undefined;
  /** content-type `application/grpc*`: GRPCRoutes are consulted before HTTP routes */
  readonly isGrpc: boolean;
}

/** A decision that ends the request at the waypoint with a local response. */
export interface LocalResponse {
  readonly kind: 'respond';
  readonly status: number;
  /**
   * Envoy `%RESPONSE_FLAGS%`: `NR` no route, `UH` no healthy upstream, `UO` overflow, `FI` fault abort,
   * `DPE` bad request, `-` none (redirects, direct responses, RBAC denials).
   */
  readonly flag: ResponseFlag;
  /** response headers to send, lowercase names (e.g. `location`) */
  readonly headers: readonly (readonly [string, string])[];
  readonly body?: string;
  /** gRPC requests: the `grpc-status` to answer with (the HTTP status is then 200 with trailers) */
  readonly grpcStatus?: number;
  /** Envoy-style response code details for logs, e.g. `path_normalization_failed`, `route_not_found` */
  readonly details: string;
}

export type ResponseFlag = 'NR' | 'UH' | 'UO' | 'FI' | 'DI' | 'DPE' | 'UF' | 'UT' | 'URX' | 'UC' | 'UPE' | 'DC' | 'RL' | '-';

/** Facts plus the normalized path: what routing and authorization match on. */
export interface PreparedRequest {
  readonly facts: RequestFacts;
  /** normalized path, no query or fragment */
  readonly path: string;
  /** raw query without `?` ('' when none) */
  readonly query: string;
  /** lowercase authority without port */
  readonly host: string;
}

/** Longest request target accepted (characters). */
export const MAX_PATH_LENGTH = 16 * 1024;

export type NormalizedPath = { readonly path: string; readonly query: string } | { readonly error: string };

const HEX = /^[0-9A-Fa-f]{2}$/;
const NOT_VISIBLE_ASCII = /[^\x21-\x7e]/;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * Normalizes a request target the way the reference's strictest mode does (DECODE_AND_MERGE_SLASHES):
 * - query (`?...`) and fragment (`#...`) are split off; they are never part of the path;
 * - percent-escapes of unreserved characters (`%41` `%2E` `%7E` ...) are decoded, so `/%2E%2E/admin` is `/../admin`;
 *   `%2F` and `%5C` are decoded too (a path that means `/admin` to the backend must match `/admin` here);
 *   other escapes are kept, with upper-case hex;
 * - `\` becomes `/`, runs of `/` become one `/`;
 * - `.` and `..` segments are resolved (RFC 3986 5.2.4); `..` never climbs above `/`.
 * Refused (the caller answers 400): `%00`, an invalid escape (`%G1`, `%4`), a target that does not start with
 * `/`, control characters, spaces or non-ASCII bytes, longer than MAX_PATH_LENGTH.
 * `;` has no special meaning (`/admin;x` stays `/admin;x`; authorization reads it both ways, see src/policy).
 */
export function normalizePath(raw: string): NormalizedPath {
  if (raw.length > MAX_PATH_LENGTH) return { error: `request target longer than ${MAX_PATH_LENGTH} characters` };
  const hash = raw.indexOf('#');
  const noFragment = hash < 0 ? raw : raw.slice(0, hash);
  const q = noFragment.indexOf('?');
  const rawPath = q < 0 ? noFragment : noFragment.slice(0, q);
  const query = q < 0 ? '' : noFragment.slice(q + 1);
  if (!rawPath.startsWith('/')) return { error: 'request target must start with "/"' };
  if (NOT_VISIBLE_ASCII.test(noFragment)) return { error: 'request target contains a control character, a space or a non-ASCII byte' };
  // the common case: nothing to decode, no backslash, no dot segment, no empty segment
  if (!rawPath.includes('%') && !rawPath.includes('\\') && !rawPath.includes('/.') && !rawPath.includes('//')) return { path: rawPath, query };
  let decoded = '';
  for (let i = 0; i < rawPath.length; i++) {
    const c = rawPath[i]!;
    if (c !== '%') { decoded += c === '\\' ? '/' : c; continue; }
    const hex = rawPath.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return { error: `invalid percent-escape at offset ${i}` };
    const ch = String.fromCharCode(parseInt(hex, 16));
    if (ch === '\0') return { error: 'percent-encoded NUL (%00) in the path' };
    if (UNRESERVED.test(ch)) decoded += ch;
    else if (ch === '/' || ch === '\\') decoded += '/';
    else decoded += '%' + hex.toUpperCase();
    i += 2;
  }
  return { path: removeDotSegments(decoded.replace(/\/{2,}/g, '/')), query };
}

/** RFC 3986 5.2.4 on an absolute path without `//`. */
function removeDotSegments(path: string): string {
  const segs = path.split('/');
  const out: string[] = [];
  // segs[0] is '' (the leading '/')
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    const last = i === segs.length - 1;
    if (s === '.') { if (last) out.push(''); continue; }
    if (s === '..') { out.pop(); if (last) out.push(''); continue; }
    out.push(s);
  }
  return '/' + out.join('/');
}

/** Every value of header `name` (lowercase), each line of a repeated header on its own. */
export function headerValues(headers: HeaderValues, name: string): readonly string[] {
  const v = headers[name];
  if (v === undefined) return [];
  return typeof v === 'string' ? [v] : v;
}

/** Lowercase host of an authority, without the port (`Foo.Example:8080` -> `foo.example`, `[::1]:80` -> `[::1]`). */
export function hostOf(authority: string): string {
  const a = authority.toLowerCase();
  if (a.startsWith('[')) { const end = a.indexOf(']'); return end < 0 ? a : a.slice(0, end + 1); }
  const colon = a.lastIndexOf(':');
  return colon < 0 || a.indexOf(':') !== colon ? a : a.slice(0, colon);
}

/**
 * Normalizes the path and checks the facts every decision relies on. Refusals are 400 with flag `DPE`:
 * a bad path, a lower-case or malformed method, a header name with whitespace or upper case.
 */
export function prepareRequest(facts: RequestFacts): PreparedRequest | LocalResponse {
  if (!/^[A-Z][A-Z0-9_-]{0,31}$/.test(facts.method)) return badRequest(`invalid method ${JSON.stringify(facts.method.slice(0, 32))}`);
  for (const name of Object.keys(facts.headers)) {
    if (name === '' || /[\s\0A-Z]/.test(name)) return badRequest('invalid header name');
  }
  const n = normalizePath(facts.path);
  if ('error' in n) return badRequest(n.error);
  return { facts, path: n.path, query: n.query, host: hostOf(facts.authority) };
}

function badRequest(reason: string): LocalResponse {
  return { kind: 'respond', status: 400, flag: 'DPE', headers: [], body: `bad request: ${reason}\n`, details: 'path_normalization_failed' };
}

/**
 * Query parameters by name, values percent-decoded (an invalid escape is kept as written), in order.
 * At most 256 parameters are read; the rest are ignored for matching.
 */
export function parseQuery(query: string): ReadonlyMap<string, readonly string[]> {
  const out = new Map<string, string[]>();
  if (query === '') return out;
  const parts = query.split('&', 256);
  for (const p of parts) {
    if (p === '') continue;
    const eq = p.indexOf('=');
    const name = decode(eq < 0 ? p : p.slice(0, eq));
    const value = eq < 0 ? '' : decode(p.slice(eq + 1));
    const l = out.get(name);
    if (l) l.push(value); else out.set(name, [value]);
  }
  return out;
}

function decode(s: string): string {
  try { return decodeURIComponent(s); } catch { return s; }
}
