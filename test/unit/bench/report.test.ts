/** bench/l4/report.ts: the side-by-side table, added latency, and the targets. */
import test from 'ava';
import type { PathMetrics } from '../../../bench/l4/measure.js';
import { added, addedP50, formatL4Table, formatTargets, l4Targets } from '../../../bench/l4/report.js';
import type { Outcomes } from '../../../bench/l4/report.js';

function m(over: Partial<PathMetrics> = {}): PathMetrics {
  return { throughputGbps: null, rrP50Us: null, rrP90Us: null, rrP99Us: null, rps: null, connPerSec: null, memKbPerConn: null, notes: [], ...over };
}

const direct = m({ throughputGbps: 27.61, rrP50Us: 40, rrP90Us: 55, rrP99Us: 90, rps: 69810.8, connPerSec: 9000 });
const stunnel = m({ throughputGbps: 3.2, rrP50Us: 140, rrP90Us: 190, rrP99Us: 290, rps: 21000, connPerSec: 900, memKbPerConn: 30.25 });
const haproxy = m({ throughputGbps: 4, rrP50Us: 120, rrP90Us: 150, rrP99Us: 250, rps: 30000, connPerSec: 1500, memKbPerConn: 20 });

function outcomes(ambit: PathMetrics | null, error?: string): Outcomes {
  return {
    direct: { metrics: direct }, stunnel: { metrics: stunnel }, haproxy: { metrics: haproxy },
    ambit: { metrics: ambit, ...(error ? { error } : {}) },
  };
}

/** an ambit row meeting every target against the rows above */
const good = m({ throughputGbps: 4.8, rrP50Us: 110, rrP90Us: 150, rrP99Us: 250, rps: 40000, connPerSec: 4500, memKbPerConn: 4.2 });

test('added latency is the path\'s percentile minus direct\'s; null when either is missing', (t) => {
  const o = outcomes(m({ rrP50Us: 100, rrP99Us: 300 }));
  t.is(addedP50(o, 'ambit'), 60);
  t.is(addedP50(o, 'stunnel'), 100);
  t.is(addedP50(o, 'direct'), 0);
  t.is(added(o, 'ambit', 'rrP99Us'), 210);
  t.is(added(o, 'ambit', 'rrP90Us'), null);
  t.is(addedP50(outcomes(m()), 'ambit'), null);
  t.is(addedP50(outcomes(null, 'agent did not start'), 'ambit'), null);
  t.is(addedP50({ ...o, direct: { metrics: m() } }, 'ambit'), null);
});

test('every target met, with the value each is judged on', (t) => {
  const got = l4Targets(outcomes(good));
  t.deepEqual(got.map((c) => [c.name, c.value, c.met]), [
    ['throughput vs stunnel', 1.5, true],
    ['requests/s vs stunnel', 1.9, true],
    ['new connections/s vs stunnel', 5, true],
    ['added p50 latency vs stunnel', 70, true],
    ['added p90 latency vs stunnel', 95, true],
    ['added p99 latency vs stunnel', 160, true],
    ['memory per extra connection', 4.2, true],
    ['throughput vs haproxy pair', 1.2, true],
    ['requests/s vs haproxy pair', 1.33, true],
    ['added p50 latency vs haproxy pair', 70, true],
  ]);
  t.is(got[3]!.goal, '<= stunnel\'s 100 us');
  t.is(got[9]!.goal, '<= haproxy\'s 80 us');
  t.is(got[2]!.goal, '>= 5x');
});

test('each target misses on its own just past its boundary', (t) => {
  const cases: [Partial<PathMetrics>, number][] = [
    [{ throughputGbps: 3.1 }, 0],
    [{ rps: 20_999 }, 1],
    [{ connPerSec: 4499 }, 2],
    [{ rrP90Us: 191 }, 4],
    [{ rrP99Us: 291 }, 5],
    [{ memKbPerConn: 5.01 }, 6],
    [{ throughputGbps: 3.99 }, 7],
    [{ rps: 29_999 }, 8],
    [{ rrP50Us: 121 }, 9],
  ];
  for (const [over, idx] of cases) {
    const r = l4Targets(outcomes({ ...good, ...over }));
    const missed = r.flatMap((c, i) => (c.met === false ? [i] : []));
    // below stunnel's throughput or req/s is below haproxy's too; a p50 past haproxy's is not past stunnel's
    const expect = idx === 0 ? [0, 7] : idx === 1 ? [1, 8] : [idx];
    t.deepEqual(missed, expect, JSON.stringify(over));
  }
  // exactly on target counts as met
  const edge = l4Targets(outcomes({ ...good, throughputGbps: 4, rps: 30_000, connPerSec: 4500, rrP50Us: 120, rrP90Us: 190, rrP99Us: 290, memKbPerConn: 5 }));
  t.deepEqual(edge.map((c) => c.met), Array(10).fill(true));
});

test('not measured is n/a (null), never a pass: missing ambit path, missing baselines, zero baseline', (t) => {
  t.deepEqual(l4Targets(outcomes(null, 'agent did not start')).map((c) => c.met), Array(10).fill(null));
  const noBaselines: Outcomes = { ...outcomes(good), stunnel: { metrics: null, error: 'stunnel missing' }, haproxy: { metrics: null, error: 'haproxy missing' } };
  const r = l4Targets(noBaselines);
  t.deepEqual(r.map((c) => c.met), [null, null, null, null, null, null, true, null, null, null]);
  t.is(r[3]!.goal, '<= stunnel\'s ? us');
  const zero: Outcomes = { ...outcomes(good), haproxy: { metrics: m({ throughputGbps: 0 }) } };
  t.is(l4Targets(zero)[7]!.met, null, 'a ratio over zero is not a number to compare');
});

test('formatTargets marks met, MISS and n/a', (t) => {
  const text = formatTargets(l4Targets(outcomes({ ...good, rrP50Us: 150, connPerSec: null })));
  const lines = text.split('\n');
  t.is(lines[0], 'met  throughput vs stunnel: 1.5 x (target >= 1.0x)');
  t.is(lines[2], 'n/a  new connections/s vs stunnel: - (target >= 5x)');
  t.is(lines[3], 'MISS added p50 latency vs stunnel: 110 us (target <= stunnel\'s 100 us)');
  t.is(lines[9], 'MISS added p50 latency vs haproxy pair: 110 us (target <= haproxy\'s 80 us)');
  t.is(lines.length, 11);
});

test('formatL4Table: one row per path with p99, direct has no added latency or memory, a path not run says why, CPU per connection and notes follow', (t) => {
  const o = outcomes(null, 'agent did not start: EPERM');
  const withNote: Outcomes = { ...o, stunnel: { metrics: { ...stunnel, notes: ['rps: 3 non-2xx'] } }, haproxy: { metrics: { ...haproxy, cpuUsPerConn: 151.4 } } };
  const lines = formatL4Table(withNote).split('\n');
  t.regex(lines[0]!, /^path\s+throughput Gbit\/s\s+rr p50 us\s+rr p90 us\s+rr p99 us\s+added p50 us\s+req\/s c=16\s+new conn\/s\s+kB\/extra conn$/);
  t.regex(lines[1]!, /^-+( +-+){8}$/);
  t.deepEqual(lines[2]!.split(/\s+/), ['direct', '27.61', '40', '55', '90', '0', '69811', '9000', 'n/a']);
  t.deepEqual(lines[3]!.split(/\s+/), ['stunnel', '3.20', '140', '190', '290', '100', '21000', '900', '30.3']);
  t.deepEqual(lines[4]!.split(/\s+/), ['haproxy', '4.00', '120', '150', '250', '80', '30000', '1500', '20.0']);
  t.deepEqual(lines[5]!.split(/\s+/), ['ambit', '-', '-', '-', '-', '-', '-', '-', '-']);
  t.is(lines[6], '  ambit: not run: agent did not start: EPERM');
  t.is(lines[7], '  haproxy: proxy CPU per new connection 151 us');
  t.is(lines[8], '  stunnel: rps: 3 non-2xx');
  t.is(lines.length, 10);
});
