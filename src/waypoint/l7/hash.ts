/**
 * Consistent hashing for the load balancer: ring hash (ketama style) and Maglev. Both keep most keys on
 * the same endpoint when the endpoint set changes. Pure and deterministic (no seeds from the process).
 */

/** 32-bit hash of a string (FNV-1a, then murmur3's finalizer for avalanche). */
export function hash32(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** A lookup from hash key to an index into the endpoint list it was built from. */
export interface HashTable {
  lookup(key: string): number;
}

/** Default and bounds of the ring size (Envoy: minimum 1024, maximum 8M). */
export const MIN_RING_SIZE = 1024;
const MAX_RING_SIZE = 1 << 20;

/**
 * Ring hash over `keys` (stable endpoint ids): each endpoint gets about minimumRingSize / n points on a
 * 32-bit ring; a key goes to the first point at or after its hash. Adding an endpoint moves only the keys
 * it takes over (while n stays between the same powers of two).
 */
export function ringHash(keys: readonly string[], minimumRingSize = MIN_RING_SIZE): HashTable {
  const n = keys.length;
  // Points per endpoint: enough for the minimum ring size, rounded up to a power of two so that the count (and
  // with it every existing point: they are numbered) only changes when n crosses a power of two.
  const need = Math.max(1, Math.ceil(Math.min(Math.max(minimumRingSize, n), MAX_RING_SIZE) / Math.max(1, n)));
  const per = 2 ** Math.ceil(Math.log2(need));
  const points: { h: number; i: number }[] = [];
  keys.forEach((k, i) => { for (let v = 0; v < per; v++) points.push({ h: hash32(`${k}_${v}`), i }); });
  points.sort((a, b) => a.h - b.h || a.i - b.i);
  const hs = Uint32Array.from(points.map((p) => p.h));
  const is = Int32Array.from(points.map((p) => p.i));
  return {
    lookup(key: string): number {
      if (hs.length === 0) return -1;
      const h = hash32(key);
      let lo = 0, hi = hs.length;
      while (lo < hi) { const mid = (lo + hi) >>> 1; if (hs[mid]! < h) lo = mid + 1; else hi = mid; }
      return is[lo === hs.length ? 0 : lo]!;
    },
  };
}

/** Maglev lookup table size (a prime; Envoy's default). */
export const MAGLEV_TABLE_SIZE = 65537;

/** Maglev hashing (Eisenbud et al. 2016): each endpoint fills table slots in its own permutation order. */
export function maglev(keys: readonly string[], tableSize = MAGLEV_TABLE_SIZE): HashTable {
  const n = keys.length;
  const m = tableSize;
  const table = new Int32Array(m).fill(-1);
  if (n > 0) {
    const offset = keys.map((k) => hash32(k, 0x9e3779b9) % m);
    const skip = keys.map((k) => (hash32(k, 0x7f4a7c15) % (m - 1)) + 1);
    const next = new Array<number>(n).fill(0);
    let filled = 0;
    while (filled < m) {
      for (let i = 0; i < n && filled < m; i++) {
        let c = (offset[i]! + next[i]! * skip[i]!) % m;
        while (table[c]! >= 0) { next[i] = next[i]! + 1; c = (offset[i]! + next[i]! * skip[i]!) % m; }
        table[c] = i;
        next[i] = next[i]! + 1;
        filled++;
      }
    }
  }
  return { lookup: (key) => (n === 0 ? -1 : table[hash32(key) % m]!) };
}
