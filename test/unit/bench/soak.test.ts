/** bench/soak/analyze.ts: slopes after the warm-up and the levels-off verdict. */
import test from 'ava';
import { slopePerMin, soakPlan, trend, type Sample } from '../../../bench/soak/analyze.js';

const series = (n: number, every: number, rss: (t: number) => number, fds: (t: number) => number = () => 50): Sample[] =>
  Array.from({ length: n }, (_, i) => ({ tSec: i * every, rssKb: rss(i * every), fds: fds(i * every) }));

test('slopePerMin: least squares per minute; too few or identical x give null', (t) => {
  t.is(slopePerMin([[0, 100], [60, 160]]), 60);
  t.is(slopePerMin([[0, 0], [30, 10], [60, 5], [90, 15]]), 8);
  t.is(slopePerMin([[5, 1]]), null);
  t.is(slopePerMin([[5, 1], [5, 9]]), null);
});

test('trend: a steady climb after the warm-up does not level off; the warm-up\'s own growth is left out', (t) => {
  // 1 MB/min growth throughout
  const climb = trend(series(61, 10, (s) => 50_000 + (s / 60) * 1000), 100);
  t.is(Math.round(climb.rssKbPerMin!), 1000);
  t.is(Math.round(climb.lastHalfKbPerMin!), 1000);
  t.false(climb.levelsOff);
  t.is(climb.samplesAfterWarmup, 51);
  // fast growth during the warm-up, flat after it
  const flat = trend(series(61, 10, (s) => (s < 100 ? 40_000 + s * 100 : 50_000)), 100);
  t.is(flat.rssKbPerMin, 0);
  t.true(flat.levelsOff);
  t.is(flat.startRssKb, 50_000);
});

test('trend: growth that slows down levels off; a growing fd count does not', (t) => {
  // grows over the first half of the window, flat over the second
  const slows = trend(series(61, 10, (s) => 50_000 + Math.min(s, 330) * 20), 0);
  t.true(slows.firstHalfKbPerMin! > 1000);
  t.true(slows.levelsOff);
  const leak = trend(series(61, 10, () => 50_000, (s) => 50 + Math.floor(s / 6)), 0);
  t.true(leak.fdsPerMin! > 5);
  t.false(leak.levelsOff);
  // a few connections more in flight at the end is not a leak
  const jitter = trend(series(61, 10, () => 50_000, (s) => (s > 500 ? 58 : 50)), 0);
  t.true(jitter.levelsOff);
});

test('trend: too few samples after the warm-up gives no verdict', (t) => {
  const r = trend(series(4, 10, () => 1), 10);
  t.is(r.levelsOff, null);
  t.is(trend([], 0).startRssKb, null);
});

test('soakPlan: warm-up a third within 10 s..5 min, a sample every 2..10 s; under 10 s refused', (t) => {
  t.deepEqual(soakPlan(60), { warmupSec: 20, sampleEverySec: 2 });
  t.deepEqual(soakPlan(1800), { warmupSec: 300, sampleEverySec: 10 });
  t.deepEqual(soakPlan(12), { warmupSec: 10, sampleEverySec: 2 });
  t.throws(() => soakPlan(5), { instanceOf: RangeError });
});
