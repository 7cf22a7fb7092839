/** The side-by-side table and the issue's targets, from the three paths' metrics. Pure. */
import { formatTable, round } from '../common/stats.js';
import type { TargetCheck } from '../common/suite.js';
import type { PathMetrics } from './measure.js';

export type PathName = 'direct' | 'stunnel' | 'ambit';
export const PATHS: readonly PathName[] = ['direct', 'stunnel', 'ambit'];

export interface PathOutcome {
  /** null when the path could not be set up */
  readonly metrics: PathMetrics | null;
  /** why the path could not be set up */
  readonly error?: string;
}

export type Outcomes = Readonly<Record<PathName, PathOutcome>>;

function cell(v: number | null | undefined, digits: number): string {
  const r = round(v, digits);
  return r === null ? '-' : r.toFixed(digits);
}

/** p50 latency the path adds over direct TCP, microseconds */
export function addedP50(o: Outcomes, path: PathName): number | null {
  const d = o.direct.metrics?.rrP50Us;
  const p = o[path].metrics?.rrP50Us;
  return d == null || p == null ? null : p - d;
}

export function formatL4Table(o: Outcomes): string {
  const rows: string[][] = [[
    'path', 'throughput Gbit/s', 'rr p50 us', 'rr p90 us', 'added p50 us', 'req/s c=16', 'new conn/s', 'kB/extra conn',
  ]];
  const notRun: string[] = [];
  for (const p of PATHS) {
    const m = o[p].metrics;
    if (!m) {
      rows.push([p, '-', '-', '-', '-', '-', '-', '-']);
      notRun.push(`${p}: not run: ${o[p].error ?? 'unknown'}`);
      continue;
    }
    rows.push([
      p, cell(m.throughputGbps, 2), cell(m.rrP50Us, 0), cell(m.rrP90Us, 0), p === 'direct' ? '0' : cell(addedP50(o, p), 0),
      cell(m.rps, 0), cell(m.connPerSec, 0), p === 'direct' ? 'n/a' : cell(m.memKbPerConn, 1),
    ]);
  }
  const notes = PATHS.flatMap((p) => (o[p].metrics?.notes ?? []).map((n) => `${p}: ${n}`));
  return formatTable(rows) + [...notRun, ...notes].map((l) => `  ${l}\n`).join('');
}

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return a == null || b == null || b === 0 ? null : a / b;
}

function check(name: string, value: number | null, unit: string, goal: string, ok: (v: number) => boolean): TargetCheck {
  return { name, value: round(value, 2), unit, goal, met: value === null ? null : ok(value) };
}

/** The issue's four targets for the ambit path. */
export function l4Targets(o: Outcomes): TargetCheck[] {
  const a = o.ambit.metrics;
  const s = o.stunnel.metrics;
  const addA = addedP50(o, 'ambit');
  const addS = addedP50(o, 'stunnel');
  return [
    check('throughput vs stunnel', ratio(a?.throughputGbps, s?.throughputGbps), 'x', '>= 1.0x', (v) => v >= 1.0),
    check('new connections/s vs stunnel', ratio(a?.connPerSec, s?.connPerSec), 'x', '>= 3x', (v) => v >= 3),
    {
      name: 'added p50 latency vs stunnel',
      value: round(addA, 0),
      unit: 'us',
      goal: `<= stunnel's ${addS === null ? '?' : Math.round(addS)} us`,
      met: addA === null || addS === null ? null : addA <= addS,
    },
    check('memory per extra connection', a?.memKbPerConn ?? null, 'kB', '<= 5 kB', (v) => v <= 5),
  ];
}

export function formatTargets(t: readonly TargetCheck[]): string {
  return t.map((c) => {
    const mark = c.met === null ? 'n/a ' : c.met ? 'met ' : 'MISS';
    return `${mark} ${c.name}: ${c.value === null ? '-' : `${c.value} ${c.unit}`} (target ${c.goal})`;
  }).join('\n') + '\n';
}
