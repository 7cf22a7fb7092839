/** Small statistics and formatting helpers shared by the benches. Pure. */

/** Nearest-rank percentile of an ascending array; NaN when empty. `p` in 0..100. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile: p=${p} is outside 0..100`);
  // (p * n) / 100 keeps the rank exact where (p / 100) * n rounds up in floating point (p99.9 of 1000)
  const rank = Math.ceil((p * sorted.length) / 100);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Rounds to `digits` decimals, keeping null for "not measured". */
export function round(v: number | null | undefined, digits = 1): number | null {
  if (v === null || v === undefined || !Number.isFinite(v)) return null;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/**
 * A plain-text table: first row is the header, columns padded to the widest cell; numbers align
 * right so columns of results can be compared at a glance.
 */
export function formatTable(rows: readonly (readonly string[])[]): string {
  if (rows.length === 0) return '';
  const cols = Math.max(...rows.map((r) => r.length));
  const width = Array.from({ length: cols }, (_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: readonly string[]) => r.map((cell, c) => {
    const w = width[c]!;
    return c === 0 || !/^[-+]?[\d.,]+/.test(cell) ? cell.padEnd(w) : cell.padStart(w);
  }).join('  ').trimEnd();
  const out = [line(rows[0]!), width.map((w) => '-'.repeat(w)).join('  ')];
  for (const r of rows.slice(1)) out.push(line(r));
  return out.join('\n') + '\n';
}
