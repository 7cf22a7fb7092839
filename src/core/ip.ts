/**
 * IP address and CIDR handling without node:net (pure: the model and policy use it). Addresses are held as four
 * 32-bit words so IPv4 and IPv6 share one comparison path; IPv4 uses only `w3`.
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports) are folded into
 * IPv4, so a policy written with an IPv4 CIDR also matches them.
 */

export interface IpAddr {
  readonly family: 4 | 6;
  /** most significant word first; IPv4 lives in w3 with w0..w2 = 0 */
  readonly w0: number;
  readonly w1: number;
  readonly w2: number;
  readonly w3: number;
}

export interface CompiledCidr {
  readonly family: 4 | 6;
  /** network words, already masked */
  readonly w0: number;
  readonly w1: number;
  readonly w2: number;
  readonly w3: number;
  readonly m0: number;
  readonly m1: number;
  readonly m2: number;
  readonly m3: number;
}

function parseV4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0;
  for (const p of parts) {
    // decimal only, no leading zeros (they read as octal in some parsers: ambiguous, so refuse)
    if (p.length === 0 || p.length > 3 || !/^[0-9]+$/.test(p) || (p.length > 1 && p[0] === '0')) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = v * 256 + n;
  }
  return v >>> 0;
}

function parseV6(s: string): [number, number, number, number] | undefined {
  if (s.length > 45) return undefined;
  let head = s;
  let tail = '';
  const dbl = s.indexOf('::');
  if (dbl !== -1) {
    if (s.indexOf('::', dbl + 1) !== -1) return undefined;
    head = s.slice(0, dbl);
    tail = s.slice(dbl + 2);
  }
  const groups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const it = items[i] as string;
      if (it.includes('.')) {
        // embedded IPv4 is only legal as the last item
        if (i !== items.length - 1) return undefined;
        const v4 = parseV4(it);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return undefined;
      out.push(parseInt(it, 16));
    }
    return out;
  };
  const h = groups(head);
  const t = groups(tail);
  if (!h || !t) return undefined;
  // an embedded IPv4 must be at the very end of the address
  if (dbl !== -1 && head.includes('.')) return undefined;
  let all: number[];
  if (dbl === -1) {
    if (h.length !== 8) return undefined;
    all = h;
  } else {
    if (h.length + t.length > 7) return undefined;
    all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  }
  const w = (i: number): number => (((all[i] as number) << 16) | (all[i + 1] as number)) >>> 0;
  return [w(0), w(2), w(4), w(6)];
}

/** Parse a textual IPv4 or IPv6 address (no zone, no brackets). */
export function parseIp(s: string): IpAddr | undefined {
  if (typeof s !== 'string' || s.length === 0) return undefined;
  if (!s.includes(':')) {
    const v = parseV4(s);
    return v === undefined ? undefined : { family: 4, w0: 0, w1: 0, w2: 0, w3: v };
  }
  const w = parseV6(s);
  if (!w) return undefined;
  if (w[0] === 0 && w[1] === 0 && w[2] === 0xffff) return { family: 4, w0: 0, w1: 0, w2: 0, w3: w[3] };
  return { family: 6, w0: w[0], w1: w[1], w2: w[2], w3: w[3] };
}

function formatV4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** Canonical text: IPv4 dotted; IPv6 per RFC 5952 (lowercase, longest zero run compressed). */
export function formatIp(a: IpAddr): string {
  if (a.family === 4) return formatV4(a.w3);
  const g = [a.w0 >>> 16, a.w0 & 0xffff, a.w1 >>> 16, a.w1 & 0xffff, a.w2 >>> 16, a.w2 & 0xffff, a.w3 >>> 16, a.w3 & 0xffff];
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (bestLen < 2) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/** Canonical form of an address, or undefined when it is not one. */
export function canonicalIp(s: string): string | undefined {
  const a = parseIp(s);
  return a ? formatIp(a) : undefined;
}

/**
 * Parse `addr` or `addr/len`. A bare address is a host route (/32, /128). Host bits set below the
 * prefix are refused: `10.0.0.1/8` is almost always a typo and silently masking it hides that.
 */
export function parseCidr(s: string): { address: string; prefixLen: number } | { error: string } {
  if (typeof s !== 'string') return { error: 'not a string' };
  const slash = s.indexOf('/');
  const addrText = slash === -1 ? s : s.slice(0, slash);
  const a = parseIp(addrText);
  if (!a) return { error: `"${s}" is not an IP address or CIDR` };
  const max = a.family === 4 ? 32 : 128;
  let len = max;
  if (slash !== -1) {
    const lt = s.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(lt)) return { error: `"${s}" has an invalid prefix length` };
    len = Number(lt);
    if (len > max) return { error: `"${s}" prefix length ${len} exceeds ${max}` };
  }
  const c = compileCidr({ address: formatIp(a), prefixLen: len });
  if (c.w0 !== a.w0 || c.w1 !== a.w1 || c.w2 !== a.w2 || c.w3 !== a.w3) {
    return { error: `"${s}" has host bits set beyond the /${len} prefix` };
  }
  return { address: formatIp(a), prefixLen: len };
}

function maskWord(bits: number): number {
  if (bits <= 0) return 0;
  if (bits >= 32) return 0xffffffff;
  return (0xffffffff << (32 - bits)) >>> 0;
}

/** Precompute the masks of a model CIDR. Throws on an address that is not one (model invariant). */
export function compileCidr(c: { address: string; prefixLen: number }): CompiledCidr {
  const a = parseIp(c.address);
  if (!a) throw new Error(`invalid cidr address ${c.address}`);
  let m0 = 0, m1 = 0, m2 = 0, m3 = 0;
  if (a.family === 4) {
    m3 = maskWord(c.prefixLen);
  } else {
    m0 = maskWord(c.prefixLen);
    m1 = maskWord(c.prefixLen - 32);
    m2 = maskWord(c.prefixLen - 64);
    m3 = maskWord(c.prefixLen - 96);
  }
  return {
    family: a.family,
    w0: (a.w0 & m0) >>> 0, w1: (a.w1 & m1) >>> 0, w2: (a.w2 & m2) >>> 0, w3: (a.w3 & m3) >>> 0,
    m0, m1, m2, m3,
  };
}

export function cidrContains(c: CompiledCidr, a: IpAddr): boolean {
  return c.family === a.family
    && ((a.w3 & c.m3) >>> 0) === c.w3
    && ((a.w2 & c.m2) >>> 0) === c.w2
    && ((a.w1 & c.m1) >>> 0) === c.w1
    && ((a.w0 & c.m0) >>> 0) === c.w0;
}
