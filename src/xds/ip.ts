/** Textual IP <-> the 4/16 bytes used on the wire. Text out is canonical (IPv6 compressed, lowercase). */
import { isIPv4, isIPv6 } from 'node:net';
import { MeshError } from '../core/index.js';

export function ipToBytes(ip: string): Uint8Array {
  if (isIPv4(ip)) return Uint8Array.from(ip.split('.').map(Number));
  if (isIPv6(ip)) {
    let text = ip;
    const out = new Uint8Array(16);
    // an embedded dotted quad (::ffff:1.2.3.4) becomes the last two groups
    const lastColon = text.lastIndexOf(':');
    const tail = text.slice(lastColon + 1);
    if (tail.includes('.')) {
      const q = tail.split('.').map(Number);
      text = `${text.slice(0, lastColon + 1)}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
    }
    const [head, rest] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined];
    const h = head ? head.split(':') : [];
    const r = rest ? rest.split(':') : [];
    const groups = rest === undefined ? h : [...h, ...new Array<string>(8 - h.length - r.length).fill('0'), ...r];
    groups.forEach((g, i) => { const v = parseInt(g, 16); out[i * 2] = v >> 8; out[i * 2 + 1] = v & 0xff; });
    return out;
  }
  throw new MeshError('AMBIT_CONFIG_INVALID', `not an IP address: ${JSON.stringify(ip)}`);
}

/** Returns undefined when the length is neither 4 nor 16. */
export function bytesToIp(b: Uint8Array): string | undefined {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) return undefined;
  if (b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on a tie
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}
