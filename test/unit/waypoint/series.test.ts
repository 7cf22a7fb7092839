import test from 'ava';
import { Counter, Histogram, Registry } from 'prom-client';
import { RequestSeriesSet } from '../../../src/waypoint/series.js';

const BUCKETS = [1, 10, 100];
const SIZES = [5, 50];

// the same observations through prom-client's own metrics and through RequestSeriesSet
function both(): { ours: Registry; theirs: Registry; record(labels: Record<string, string>, d: number, b: number): void } {
  const ours = new Registry();
  const theirs = new Registry();
  const set = new RequestSeriesSet(ours, { name: 'req_total', help: 'requests' }, [
    { name: 'dur_ms', help: 'duration', buckets: BUCKETS },
    { name: 'size_bytes', help: 'size', buckets: SIZES },
  ]);
  const labelNames = ['code', 'flags'];
  const c = new Counter({ name: 'req_total', help: 'requests', labelNames, registers: [theirs] });
  const h1 = new Histogram({ name: 'dur_ms', help: 'duration', labelNames, buckets: BUCKETS, registers: [theirs] });
  const h2 = new Histogram({ name: 'size_bytes', help: 'size', labelNames, buckets: SIZES, registers: [theirs] });
  return {
    ours, theirs,
    record(labels, d, b) {
      set.observe(set.series(`${labels.code}\0${labels.flags}`, () => labels), [d, b]);
      c.inc(labels);
      h1.observe(labels, d);
      h2.observe(labels, b);
    },
  };
}

test('request series print exactly what prom-client prints for the same observations', async (t) => {
  const r = both();
  // values on bucket bounds (le is inclusive), between them, above them all, and zero
  for (const [d, b] of [[0, 0], [1, 5], [1.5, 6], [10, 50], [99.9, 51], [250, 4000]] as const) r.record({ code: '200', flags: '-' }, d, b);
  r.record({ code: '503', flags: 'UO' }, 3, 7);
  r.record({ code: '503', flags: 'UO' }, 300, 70);
  const ours = await r.ours.metrics();
  t.is(ours, await r.theirs.metrics());
  // and the figures are the ones expected, not merely equal
  t.regex(ours, /dur_ms_bucket\{le="1",code="200",flags="-"\} 2\n/);
  t.regex(ours, /dur_ms_bucket\{le="10",code="200",flags="-"\} 4\n/);
  t.regex(ours, /dur_ms_bucket\{le="\+Inf",code="200",flags="-"\} 6\n/);
  t.regex(ours, /dur_ms_sum\{code="200",flags="-"\} 362.4\n/);
  t.regex(ours, /req_total\{code="503",flags="UO"\} 2\n/);
  t.regex(ours, /size_bytes_count\{code="503",flags="UO"\} 2\n/);
});

test('a series is made once per key and keeps counting', async (t) => {
  const reg = new Registry();
  const set = new RequestSeriesSet(reg, { name: 'n_total', help: 'n' }, [{ name: 'd', help: 'd', buckets: [1] }]);
  let made = 0;
  const labels = () => { made++; return { a: 'x' }; };
  for (let i = 0; i < 5; i++) set.observe(set.series('k', labels), [0.5]);
  set.observe(set.series('k', labels), [Number.NaN]);
  t.is(made, 1);
  const text = await reg.metrics();
  t.regex(text, /n_total\{a="x"\} 6\n/);
  // a value that is not a number is counted as a request but not observed
  t.regex(text, /d_count\{a="x"\} 5\n/);
});

test('buckets that do not increase are refused', (t) => {
  t.throws(() => new RequestSeriesSet(new Registry(), { name: 'a', help: 'a' }, [{ name: 'b', help: 'b', buckets: [1, 1] }]), { message: /b: buckets must increase/ });
});
