/** The restart step's summary and table. Pure. */
import type { LoadResult } from '../common/load.js';
import { formatTable, round } from '../common/stats.js';
import type { TargetCheck } from '../common/suite.js';
import type { Replacement } from '../l4/mesh.js';

export interface ReplacementSummary extends Replacement {
  /** requests sent from the start of this replacement until the next one began (or the end) that failed */
  readonly failed: number;
}

export interface RestartSummary {
  readonly sent: number;
  readonly ok: number;
  readonly failed: number;
  /** ok / sent, percent */
  readonly successPct: number | null;
  readonly longestGapMs: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly replacements: readonly ReplacementSummary[];
}

/** Failures are attributed to the replacement whose window (its start up to the next one's) they were sent in. */
export function summarizeRestart(load: LoadResult, replacements: readonly Replacement[]): RestartSummary {
  const sorted = [...replacements].sort((a, b) => a.startedAt - b.startedAt);
  const per = sorted.map((r, i) => {
    const until = sorted[i + 1]?.startedAt ?? Infinity;
    return { ...r, failed: load.fails.filter(([t]) => t >= r.startedAt && t < until).length };
  });
  return {
    sent: load.sent, ok: load.ok, failed: load.failed,
    successPct: load.sent === 0 ? null : (100 * load.ok) / load.sent,
    longestGapMs: load.longestGapMs, errors: load.errors, replacements: per,
  };
}

export function formatRestart(s: RestartSummary, intervalMs: number): string {
  const rows = [['agent replaced', 'how', 'old gone ms', 'new ready ms', 'failed requests']];
  for (const r of s.replacements) rows.push([r.node, r.mode, r.oldGoneMs === null ? '-' : String(r.oldGoneMs), String(r.newReadyMs), String(r.failed)]);
  const errs = Object.entries(s.errors).map(([k, v]) => `${k} x${v}`).join(', ');
  return formatTable(rows)
    + `requests (one every ${intervalMs} ms, each on a new connection, client pod node-1 -> server pod node-2): `
    + `${s.ok} of ${s.sent} succeeded (${s.successPct === null ? '-' : round(s.successPct, 2)} %), longest gap between successes ${s.longestGapMs} ms`
    + `${errs ? `; failures: ${errs}` : ''}\n`;
}

/** Issue 8: 100 % of requests succeed across an agent replacement. */
export function restartTargets(s: RestartSummary): TargetCheck[] {
  return [{
    name: 'requests succeeding across agent replacements', value: round(s.successPct, 2), unit: '%', goal: '100 %',
    met: s.successPct === null || s.replacements.length === 0 ? null : s.failed === 0,
  }];
}
