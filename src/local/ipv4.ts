/** Small IPv4 arithmetic for address plans. Addresses are handled as unsigned 32-bit numbers. */
import { ConfigError } from '../core/index.js';

export function ipv4ToInt(ip: string): number | undefined {
  const parts = ip.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Cidr4 {
  /** network address as a number (host bits cleared) */
  readonly base: number;
  readonly prefixLen: number;
}

/** Parses `a.b.c.d/len` and requires the prefix length to be within [minLen, maxLen]. */
export function parseCidr4(resource: string, field: string, text: string, minLen: number, maxLen: number): Cidr4 {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  const addr = m ? ipv4ToInt(m[1]!) : undefined;
  const len = m ? Number(m[2]) : NaN;
  if (addr === undefined || !(len >= 0 && len <= 32)) {
    throw new ConfigError(resource, field, `"${text}" is not an IPv4 CIDR like 10.244.0.0/16`);
  }
  if (len < minLen || len > maxLen) {
    throw new ConfigError(resource, field, `"${text}": prefix length must be between /${minLen} and /${maxLen}`);
  }
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { base: (addr & mask) >>> 0, prefixLen: len };
}

export function cidrSize(c: Cidr4): number {
  return 2 ** (32 - c.prefixLen);
}
