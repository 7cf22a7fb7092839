/**
 * Request and response header hygiene, pure: hop-by-hop headers never cross the proxy,
 * client-supplied internal headers (the mesh's own, Envoy's, a forged client certificate
 * header) are dropped, and the header list is bounded. Input is Node's raw header list
 * (`[name, value, name, value, ...]`), which keeps repeated headers apart.
 */

/** RFC 9110 7.6.1 connection-specific fields, plus the legacy ones proxies must not forward. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate', 'proxy-authorization', 'http2-settings',
]);

/** Headers a client must not be able to set: they carry the mesh's own assertions. */
export function isInternalHeader(lower: string): boolean {
  return lower === 'x-forwarded-client-cert' || lower.startsWith('x-envoy-') || lower.startsWith('x-ambit-')
    || lower === 'x-istio-attributes';
}

export interface HeaderLimits {
  /** most header fields in a request; default 100 (Envoy's default) */
  readonly maxCount: number;
  /** most bytes of names and values together; default 60 KiB (Envoy: 60 KiB) */
  readonly maxBytes: number;
}

export const DEFAULT_HEADER_LIMITS: HeaderLimits = { maxCount: 100, maxBytes: 60 * 1024 };

/** Over a limit: the client gets 431. */
export function headerListTooLarge(raw: readonly string[], limits: HeaderLimits = DEFAULT_HEADER_LIMITS): string | undefined {
  if (raw.length / 2 > limits.maxCount) return `${raw.length / 2} header fields, more than ${limits.maxCount}`;
  let bytes = 0;
  for (const s of raw) bytes += s.length;
  if (bytes > limits.maxBytes) return `${bytes} bytes of headers, more than ${limits.maxBytes}`;
  return undefined;
}

/** Header fields to forward as [lowercase name, value] pairs, in order; pseudo headers dropped. */
export type HeaderList = Array<[string, string]>;

/**
 * The fields of `raw` that may go upstream: no hop-by-hop field, nothing named by `Connection`,
 * no internal field, no pseudo header. `te: trailers` survives (gRPC needs it over HTTP/2).
 */
export function forwardableRequestHeaders(raw: readonly string[]): HeaderList {
  const named = connectionTokens(raw);
  const out: HeaderList = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (name.startsWith(':')) continue;
    if (name === 'te') { if (value.toLowerCase().split(',').some((t) => t.trim() === 'trailers')) out.push(['te', 'trailers']); continue; }
    if (HOP_BY_HOP.has(name) || named.has(name) || isInternalHeader(name)) continue;
    out.push([name, value]);
  }
  return out;
}

/** Response fields to pass back to the client: no hop-by-hop, no pseudo headers. */
export function forwardableResponseHeaders(raw: readonly string[]): HeaderList {
  const named = connectionTokens(raw);
  const out: HeaderList = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name.startsWith(':') || HOP_BY_HOP.has(name) || named.has(name)) continue;
    out.push([name, raw[i + 1]!]);
  }
  return out;
}

function connectionTokens(raw: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'connection') continue;
    for (const t of raw[i + 1]!.split(',')) { const x = t.trim().toLowerCase(); if (x) out.add(x); }
  }
  return out;
}

export function getHeader(list: HeaderList, name: string): string | undefined {
  for (const [k, v] of list) if (k === name) return v;
  return undefined;
}

export function setHeader(list: HeaderList, name: string, value: string): void {
  removeHeader(list, name);
  list.push([name, value]);
}

export function removeHeader(list: HeaderList, name: string): void {
  for (let i = list.length - 1; i >= 0; i--) if (list[i]![0] === name) list.splice(i, 1);
}

/** Node's outgoing header object; repeated names become arrays (set-cookie, etc.). */
export function toOutgoing(list: HeaderList): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of list) {
    const cur = out[k];
    if (cur === undefined) out[k] = v;
    else if (Array.isArray(cur)) cur.push(v);
    else out[k] = [cur, v];
  }
  return out;
}

/** Does the request ask for a protocol switch (HTTP/1.1 `Connection: upgrade` + `Upgrade`)? */
export function upgradeOf(raw: readonly string[]): string | undefined {
  let upgrade: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'upgrade') upgrade = raw[i + 1];
  if (upgrade === undefined || !connectionTokens(raw).has('upgrade')) return undefined;
  return upgrade;
}
