/** bench/restart/report.ts: failures attributed to the replacement they happened in, and the 100 % target. */
import test from 'ava';
import type { LoadResult } from '../../../bench/common/load.js';
import { formatRestart, restartTargets, summarizeRestart } from '../../../bench/restart/report.js';
import type { Replacement } from '../../../bench/l4/mesh.js';

const load = (over: Partial<LoadResult>): LoadResult => ({
  sent: 1000, ok: 1000, failed: 0, keepAliveSent: 0, errors: {}, fails: [], failsDropped: 0, longestGapMs: 40, gapEndAt: 0, startedAt: 0, durationMs: 20_000, ...over,
});
const reps: Replacement[] = [
  { node: 'node-1', mode: 'restart', startedAt: 9000, oldGoneMs: 400, newReadyMs: 2000 },
  { node: 'node-2', mode: 'restart', startedAt: 3000, oldGoneMs: 500, newReadyMs: 2500 },
];

test('failures go to the replacement whose window they were sent in; before the first one, to none', (t) => {
  const s = summarizeRestart(load({
    ok: 996, failed: 4, errors: { ECONNREFUSED: 3, ECONNRESET: 1 }, longestGapMs: 1800,
    fails: [[1000, 'ECONNRESET', 'new'], [3100, 'ECONNREFUSED', 'new'], [3500, 'ECONNREFUSED', 'new'], [9400, 'ECONNREFUSED', 'new']],
  }), reps);
  t.deepEqual(s.replacements.map((r) => [r.node, r.failed]), [['node-2', 2], ['node-1', 1]]);
  t.is(s.successPct, 99.6);
  t.deepEqual(restartTargets(s), [{ name: 'requests succeeding across agent replacements', value: 99.6, unit: '%', goal: '100 %', met: false }]);
  const text = formatRestart(s, 20);
  t.regex(text, /996 of 1000 succeeded \(99\.6 %\), longest gap between successes 1800 ms; failures: ECONNREFUSED x3, ECONNRESET x1/);
  t.deepEqual(text.split('\n')[2]!.split(/\s+/), ['node-2', 'restart', '500', '2500', '2']);
});

test('all requests succeeding meets the target; nothing sent or nothing replaced is n/a', (t) => {
  t.true(restartTargets(summarizeRestart(load({}), reps))[0]!.met);
  t.is(restartTargets(summarizeRestart(load({ sent: 0, ok: 0 }), reps))[0]!.met, null);
  t.is(restartTargets(summarizeRestart(load({}), []))[0]!.met, null);
});
