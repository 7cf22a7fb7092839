/** bench/common/stats.ts: nearest-rank percentiles, rounding that keeps "not measured", tables. */
import test from 'ava';
import { formatTable, percentile, round } from '../../../bench/common/stats.js';

const ten = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

test('percentile: nearest rank, never interpolated', (t) => {
  t.is(percentile(ten, 50), 5);
  t.is(percentile(ten, 90), 9);
  t.is(percentile(ten, 91), 10);
  t.is(percentile(ten, 99), 10);
  t.is(percentile(ten, 100), 10);
  t.is(percentile(ten, 0), 1);
  t.is(percentile(ten, 10), 1);
  t.is(percentile(ten, 10.1), 2);
  // 1000 samples: p99 is the 990th, p99.9 the 999th
  const k = Array.from({ length: 1000 }, (_, i) => i + 1);
  t.is(percentile(k, 99), 990);
  t.is(percentile([7], 50), 7);
  t.is(percentile([7], 0), 7);
});

// (p / 100) * n rounds up in floating point (99.9 / 100 * 1000 = 999.0000000000001), which made
// p99.9 of 1000 samples the maximum; the rank is computed as ceil((p * n) / 100).
test('percentile: p99.9 of 1000 samples is the 999th (floating-point rank)', (t) => {
  const k = Array.from({ length: 1000 }, (_, i) => i + 1);
  t.is(percentile(k, 99.9), 999);
});

test('percentile: empty is NaN, p outside 0..100 or NaN is an error', (t) => {
  t.true(Number.isNaN(percentile([], 50)));
  t.throws(() => percentile(ten, 101), { instanceOf: RangeError, message: /p=101/ });
  t.throws(() => percentile(ten, -1), { instanceOf: RangeError });
  t.throws(() => percentile(ten, NaN), { instanceOf: RangeError });
});

test('round: digits, half away from zero for positives, null for not measured', (t) => {
  t.is(round(1.25), 1.3);
  t.is(round(1.24), 1.2);
  t.is(round(1234.5678, 2), 1234.57);
  t.is(round(1234.5, 0), 1235);
  t.is(round(-2.26, 1), -2.3);
  t.is(round(0), 0);
  t.is(round(null), null);
  t.is(round(undefined), null);
  t.is(round(NaN), null);
  t.is(round(Infinity), null);
});

test('formatTable: header rule, text left, numbers right, ragged rows padded', (t) => {
  const out = formatTable([['path', 'Gbit/s', 'note'], ['direct', '27.61', 'ok'], ['ambit', '3.5', 'slow start'], ['x']]);
  t.is(out, [
    'path    Gbit/s  note',
    '------  ------  ----------',
    'direct   27.61  ok',
    'ambit      3.5  slow start',
    'x',
    '',
  ].join('\n'));
  t.is(formatTable([]), '');
  // a leading '-' for "not measured" is text, a negative number is a number
  t.is(formatTable([['a', 'b'], ['r', '-'], ['s', '-12']]), 'a  b\n-  ---\nr  -\ns  -12\n');
});
