/** bench/l4/report.ts: the side-by-side table, added latency, and the four targets. */
import test from 'ava';
import type { PathMetrics } from '../../../bench/l4/measure.js';
import { addedP50, formatL4Table, formatTargets, l4Targets } from '../../../bench/l4/report.js';
import type { Outcomes } from '../../../bench/l4/report.js';

function m(over: Partial<PathMetrics> = {}): PathMetrics {
  return { throughputGbps: null, rrP50Us: null, rrP90Us: null, rps: null, connPerSec: null, memKbPerConn: null, notes: [], ...over };
}

const direct = m({ throughputGbps: 27.61, rrP50Us: 40, rrP90Us: 55, rps: 69810.8, connPerSec: 9000 });
const stunnel = m({ throughputGbps: 3.2, rrP50Us: 140, rrP90Us: 190, rps: 21000, connPerSec: 900, memKbPerConn: 30.25 });

function outcomes(ambit: PathMetrics | null, error?: string): Outcomes {
  return { direct: { metrics: direct }, stunnel: { metrics: stunnel }, ambit: { metrics: ambit, ...(error ? { error } : {}) } };
}

test('addedP50 is the path\'s p50 minus direct\'s; null when either is missing', (t) => {
  const o = outcomes(m({ rrP50Us: 100 }));
  t.is(addedP50(o, 'ambit'), 60);
  t.is(addedP50(o, 'stunnel'), 100);
  t.is(addedP50(o, 'direct'), 0);
  t.is(addedP50(outcomes(m()), 'ambit'), null);
  t.is(addedP50(outcomes(null, 'agent did not start'), 'ambit'), null);
  t.is(addedP50({ ...o, direct: { metrics: m() } }, 'ambit'), null);
});

test('all four targets met', (t) => {
  const got = l4Targets(outcomes(m({ throughputGbps: 4.8, rrP50Us: 120, connPerSec: 2700, memKbPerConn: 4.2 })));
  t.deepEqual(got, [
    { name: 'throughput vs stunnel', value: 1.5, unit: 'x', goal: '>= 1.0x', met: true },
    { name: 'new connections/s vs stunnel', value: 3, unit: 'x', goal: '>= 3x', met: true },
    { name: 'added p50 latency vs stunnel', value: 80, unit: 'us', goal: '<= stunnel\'s 100 us', met: true },
    { name: 'memory per extra connection', value: 4.2, unit: 'kB', goal: '<= 5 kB', met: true },
  ]);
});

test('targets missed at the boundaries, and exactly-on-target counts as met', (t) => {
  const miss = l4Targets(outcomes(m({ throughputGbps: 3.1, rrP50Us: 141, connPerSec: 2699, memKbPerConn: 5.01 })));
  t.deepEqual(miss.map((c) => c.met), [false, false, false, false]);
  t.is(miss[0]!.value, 0.97);
  const edge = l4Targets(outcomes(m({ throughputGbps: 3.2, rrP50Us: 140, connPerSec: 2700, memKbPerConn: 5 })));
  t.deepEqual(edge.map((c) => c.met), [true, true, true, true]);
});

test('not measured is n/a (null), never a pass: missing ambit path, missing stunnel, zero stunnel', (t) => {
  t.deepEqual(l4Targets(outcomes(null, 'agent did not start')).map((c) => [c.value, c.met]), [[null, null], [null, null], [null, null], [null, null]]);
  const noStunnel: Outcomes = { ...outcomes(m({ throughputGbps: 5, rrP50Us: 90, connPerSec: 3000, memKbPerConn: 2 })), stunnel: { metrics: null, error: 'stunnel missing' } };
  const r = l4Targets(noStunnel);
  t.deepEqual(r.map((c) => c.met), [null, null, null, true]);
  t.is(r[2]!.goal, '<= stunnel\'s ? us');
  const zero: Outcomes = { ...outcomes(m({ throughputGbps: 5 })), stunnel: { metrics: m({ throughputGbps: 0 }) } };
  t.is(l4Targets(zero)[0]!.met, null, 'a ratio over zero is not a number to compare');
});

test('formatTargets marks met, MISS and n/a', (t) => {
  const text = formatTargets(l4Targets(outcomes(m({ throughputGbps: 4.8, rrP50Us: 150, connPerSec: null, memKbPerConn: 4.2 }))));
  t.is(text, [
    'met  throughput vs stunnel: 1.5 x (target >= 1.0x)',
    'n/a  new connections/s vs stunnel: - (target >= 3x)',
    'MISS added p50 latency vs stunnel: 110 us (target <= stunnel\'s 100 us)',
    'met  memory per extra connection: 4.2 kB (target <= 5 kB)',
    '',
  ].join('\n'));
});

test('formatL4Table: one row per path, direct has no added latency or memory, a path not run says why, notes follow', (t) => {
  const o = outcomes(null, 'agent did not start: EPERM');
  const withNote: Outcomes = { ...o, stunnel: { metrics: { ...stunnel, notes: ['rps: 3 non-2xx'] } } };
  const lines = formatL4Table(withNote).split('\n');
  t.regex(lines[0]!, /^path\s+throughput Gbit\/s\s+rr p50 us\s+rr p90 us\s+added p50 us\s+req\/s c=16\s+new conn\/s\s+kB\/extra conn$/);
  t.regex(lines[1]!, /^-+( +-+){7}$/);
  t.deepEqual(lines[2]!.split(/\s+/), ['direct', '27.61', '40', '55', '0', '69811', '9000', 'n/a']);
  t.deepEqual(lines[3]!.split(/\s+/), ['stunnel', '3.20', '140', '190', '100', '21000', '900', '30.3']);
  t.deepEqual(lines[4]!.split(/\s+/), ['ambit', '-', '-', '-', '-', '-', '-', '-']);
  t.is(lines[5], '  ambit: not run: agent did not start: EPERM');
  t.is(lines[6], '  stunnel: rps: 3 non-2xx');
  t.is(lines.length, 8);
});
