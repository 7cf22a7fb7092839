/** bench/l4/interleave.ts: the rotated round order and percentiles over merged rounds. */
import test from 'ava';
import { roundOrder, schedule, summarizeRounds } from '../../../bench/l4/interleave.js';

const paths = ['direct', 'stunnel', 'ambit'] as const;

test('roundOrder: rotated left by the round, wrapping around', (t) => {
  t.deepEqual(roundOrder(paths, 0), ['direct', 'stunnel', 'ambit']);
  t.deepEqual(roundOrder(paths, 1), ['stunnel', 'ambit', 'direct']);
  t.deepEqual(roundOrder(paths, 2), ['ambit', 'direct', 'stunnel']);
  t.deepEqual(roundOrder(paths, 3), roundOrder(paths, 0));
  t.deepEqual(roundOrder(['only'], 7), ['only']);
  t.deepEqual(roundOrder([], 4), []);
  t.deepEqual([...paths], ['direct', 'stunnel', 'ambit'], 'the input is not changed');
});

test('roundOrder/schedule: a negative or fractional round count is an error', (t) => {
  t.throws(() => roundOrder(paths, -1), { instanceOf: RangeError });
  t.throws(() => roundOrder(paths, 1.5), { instanceOf: RangeError });
  t.throws(() => schedule(paths, -1), { instanceOf: RangeError });
  t.throws(() => schedule(paths, NaN), { instanceOf: RangeError });
});

test('schedule: every path runs once per round; over n rounds once in every position', (t) => {
  const s = schedule(paths, 3);
  t.is(s.length, 3);
  for (const order of s) t.deepEqual([...order].sort(), [...paths].sort());
  for (let pos = 0; pos < paths.length; pos++) t.deepEqual(s.map((o) => o[pos]).sort(), [...paths].sort());
  // 10 rounds over 3 paths: positions are as even as 10 allows (4/3/3)
  const ten = schedule(paths, 10);
  t.deepEqual(paths.map((p) => ten.filter((o) => o[0] === p).length), [4, 3, 3]);
  t.deepEqual(schedule(paths, 0), []);
});

test('summarizeRounds: percentiles are over all samples merged, not an average of the rounds', (t) => {
  // a quiet round and a loaded one of different lengths: merged p50 is the 5th of 9 samples (41),
  // where the mean of the round p50s would be 26.5
  const r = summarizeRounds([[10, 11, 12], [40, 41, 42, 43, 44, 45]]);
  t.is(r.n, 9);
  t.is(r.p50, 41);
  t.is(r.p90, 45);
  t.deepEqual(r.roundP50s, [11, 42]);
  // unsorted input within and across rounds, same nearest-rank rule as bench/common/stats
  const k = summarizeRounds([[5, 3, 1, 9, 7], [10, 2, 8, 6, 4]]);
  t.is(k.p50, 5);
  t.is(k.p90, 9);
  t.is(k.p99, 10);
  t.deepEqual(k.roundP50s, [5, 6]);
  // p99 of 200 samples is the 198th: one slow outlier does not reach it, three do
  const base = Array.from({ length: 200 }, (_, i) => i % 100);
  t.is(summarizeRounds([base.slice(0, 100), [...base.slice(100, 199), 5000]]).p99, 98);
  t.is(summarizeRounds([base.slice(0, 100), [...base.slice(100, 197), 5000, 6000, 7000]]).p99, 5000);
});

test('summarizeRounds: empty rounds are skipped; no samples at all is NaN with n 0', (t) => {
  const r = summarizeRounds([[], [30], []]);
  t.is(r.n, 1);
  t.is(r.p50, 30);
  t.deepEqual(r.roundP50s, [30]);
  const none = summarizeRounds([]);
  t.is(none.n, 0);
  t.true(Number.isNaN(none.p50));
  t.deepEqual(none.roundP50s, []);
});

test('summarizeRounds: does not reorder the caller\'s rounds', (t) => {
  const rounds = [[3, 1, 2]];
  summarizeRounds(rounds);
  t.deepEqual(rounds, [[3, 1, 2]]);
});
