/**
 * Keeping unchanged model objects identical across updates. The wire encoder caches encodings by
 * object identity (src/xds/tables.ts), so a freshly built but equal Workload costs a re-encode
 * and a re-hash; handing back the previous object instead makes a one-pod change cost one encode.
 *
 * The comparison is on the OUTPUT objects, not on the inputs that produced them: a Workload
 * depends on its pod, on every Service and policy whose selector matches it, on its namespace's
 * labels and on waypoints, and tracking all of those edges would be easy to get wrong. Comparing
 * the result is cheap (inputs that did not change are already shared references, so most fields
 * compare by identity) and cannot miss a dependency.
 */

/** Nesting deeper than this is not model data; such values count as different (a re-encode, never a wrong reuse). */
const MAX_DEPTH = 32;

/**
 * Structural equality of plain data: primitives (Object.is), arrays, and objects whose prototype
 * is Object.prototype or null. Anything else (Map, Set, Date, class instances) is equal only to
 * itself, so an unexpected type can cost a re-encode but never hides a change.
 */
export function samePlainData(a: unknown, b: unknown, depth = 0): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (depth >= MAX_DEPTH) return false;
  const aArr = Array.isArray(a);
  if (aArr !== Array.isArray(b)) return false;
  if (aArr) {
    const xs = a as readonly unknown[];
    const ys = b as readonly unknown[];
    if (xs.length !== ys.length) return false;
    for (let i = 0; i < xs.length; i++) if (!samePlainData(xs[i], ys[i], depth + 1)) return false;
    return true;
  }
  if (!isPlainObject(a) || !isPlainObject(b)) return false;
  let count = 0;
  for (const k in a) {
    if (!Object.hasOwn(a, k)) continue;
    count++;
    if (!Object.hasOwn(b, k) || !samePlainData(a[k], b[k], depth + 1)) return false;
  }
  for (const k in b) if (Object.hasOwn(b, k)) count--;
  return count === 0;
}

function isPlainObject(x: object): x is Record<string, unknown> {
  const p: unknown = Object.getPrototypeOf(x);
  return p === Object.prototype || p === null;
}

/** `obj`, or the previous object of the same key when that one is equal to it. */
export function reuse<T extends object>(previous: T | undefined, obj: T): T {
  return previous !== undefined && previous !== obj && samePlainData(previous, obj) ? previous : obj;
}
