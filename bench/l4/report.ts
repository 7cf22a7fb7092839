/** The side-by-side table and the issue's targets, from the paths' metrics. Pure. */
import { formatTable, round } from '../common/stats.js';
import type { TargetCheck } from '../common/suite.js';
import type { PathMetrics } from './measure.js';

export type PathName = 'direct' | 'stunnel' | 'haproxy' | 'ambit';
export const PATHS: readonly PathName[] = ['direct', 'stunnel', 'haproxy', 'ambit'];

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

/** latency the path adds over direct TCP at a percentile, microseconds */
export function added(o: Outcomes, path: PathName, key: 'rrP50Us' | 'rrP90Us' | 'rrP99Us' = 'rrP50Us'): number | null {
  const d = o.direct.metrics?.[key];
  const p = o[path].metrics?.[key];
  return d == null || p == null ? null : p - d;
}

/** p50 latency the path adds over direct TCP, microseconds */
export function addedP50(o: Outcomes, path: PathName): number | null {
  return added(o, path, 'rrP50Us');
}

export function formatL4Table(o: Outcomes): string {
  const rows: string[][] = [[
    'path', 'throughput Gbit/s', 'rr p50 us', 'rr p90 us', 'rr p99 us', 'added p50 us', 'req/s c=16', 'new conn/s', 'kB/extra conn',
  ]];
  const notRun: string[] = [];
  for (const p of PATHS) {
    const m = o[p].metrics;
    if (!m) {
      rows.push([p, '-', '-', '-', '-', '-', '-', '-', '-']);
      notRun.push(`${p}: not run: ${o[p].error ?? 'unknown'}`);
      continue;
    }
    rows.push([
      p, cell(m.throughputGbps, 2), cell(m.rrP50Us, 0), cell(m.rrP90Us, 0), cell(m.rrP99Us, 0), p === 'direct' ? '0' : cell(addedP50(o, p), 0),
      cell(m.rps, 0), cell(m.connPerSec, 0), p === 'direct' ? 'n/a' : cell(m.memKbPerConn, 1),
    ]);
  }
  const cpu = PATHS.flatMap((p) => {
    const m = o[p].metrics;
    if (m?.cpuUsPerConn == null) return [];
    return [`${p}: proxy CPU per new connection ${Math.round(m.cpuUsPerConn)} us${m.jsUsPerConn == null ? '' : ` (JS threads ${Math.round(m.jsUsPerConn)} us)`}`];
  });
  const notes = PATHS.flatMap((p) => (o[p].metrics?.notes ?? []).map((n) => `${p}: ${n}`));
  return formatTable(rows) + [...notRun, ...cpu, ...notes].map((l) => `  ${l}\n`).join('');
}

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return a == null || b == null || b === 0 ? null : a / b;
}

function check(name: string, value: number | null, unit: string, goal: string, ok: (v: number) => boolean): TargetCheck {
  return { name, value: round(value, 2), unit, goal, met: value === null ? null : ok(value) };
}

function notAbove(name: string, value: number | null, bound: number | null, boundName: string): TargetCheck {
  return {
    name, value: round(value, 0), unit: 'us', goal: `<= ${boundName}'s ${bound === null ? '?' : Math.round(bound)} us`,
    met: value === null || bound === null ? null : value <= bound,
  };
}

/**
 * The targets of the ambit path (issue 9): no L4 figure below stunnel's (throughput, requests/s,
 * latency added at p50/p90/p99, memory per connection at most 5 kB), new connections/s at least
 * 5x stunnel's; throughput and requests/s at least the haproxy pair's, added p50 at most its.
 */
export function l4Targets(o: Outcomes): TargetCheck[] {
  const a = o.ambit.metrics;
  const s = o.stunnel.metrics;
  const h = o.haproxy.metrics;
  return [
    check('throughput vs stunnel', ratio(a?.throughputGbps, s?.throughputGbps), 'x', '>= 1.0x', (v) => v >= 1.0),
    check('requests/s vs stunnel', ratio(a?.rps, s?.rps), 'x', '>= 1.0x', (v) => v >= 1.0),
    check('new connections/s vs stunnel', ratio(a?.connPerSec, s?.connPerSec), 'x', '>= 5x', (v) => v >= 5),
    notAbove('added p50 latency vs stunnel', added(o, 'ambit', 'rrP50Us'), added(o, 'stunnel', 'rrP50Us'), 'stunnel'),
    notAbove('added p90 latency vs stunnel', added(o, 'ambit', 'rrP90Us'), added(o, 'stunnel', 'rrP90Us'), 'stunnel'),
    notAbove('added p99 latency vs stunnel', added(o, 'ambit', 'rrP99Us'), added(o, 'stunnel', 'rrP99Us'), 'stunnel'),
    check('memory per extra connection', a?.memKbPerConn ?? null, 'kB', '<= 5 kB', (v) => v <= 5),
    check('throughput vs haproxy pair', ratio(a?.throughputGbps, h?.throughputGbps), 'x', '>= 1.0x', (v) => v >= 1.0),
    check('requests/s vs haproxy pair', ratio(a?.rps, h?.rps), 'x', '>= 1.0x', (v) => v >= 1.0),
    notAbove('added p50 latency vs haproxy pair', added(o, 'ambit', 'rrP50Us'), added(o, 'haproxy', 'rrP50Us'), 'haproxy'),
  ];
}

export function formatTargets(t: readonly TargetCheck[]): string {
  return t.map((c) => {
    const mark = c.met === null ? 'n/a ' : c.met ? 'met ' : 'MISS';
    return `${mark} ${c.name}: ${c.value === null ? '-' : `${c.value} ${c.unit}`} (target ${c.goal})`;
  }).join('\n') + '\n';
}
