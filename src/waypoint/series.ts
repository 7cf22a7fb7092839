/**
 * Istio's four request metrics (a counter and three histograms sharing one label set) kept in
 * plain records, one per label set: a request costs one map lookup and a few additions.
 *
 * prom-client's own Counter and Histogram validate and hash every label of every call, also
 * through a child from `labels()`; with Istio's 25 labels that was about 6 % of the waypoint's
 * JavaScript time per request in a profile of bench/l7. Here the text format is still
 * prom-client's: each metric is registered in its Registry, which only asks a metric for
 * `get()` (name, help, type and values, buckets cumulative with `le` first, as its Histogram
 * reports them).
 */
import type { Registry } from 'prom-client';

interface Hist {
  /** observations per bucket (not cumulative); the last slot holds those above every bound */
  readonly counts: Float64Array;
  sum: number;
}

export interface Series {
  readonly labels: Readonly<Record<string, string>>;
  requests: number;
  readonly hist: readonly Hist[];
}

interface MetricValue { labels: Record<string, string | number>; value: number; metricName?: string }

export interface HistogramSpec { name: string; help: string; buckets: readonly number[] }

export class RequestSeriesSet {
  readonly #series = new Map<string, Series>();
  readonly #specs: readonly HistogramSpec[];

  /** `counter`, then the histograms, in the order `observe` takes their values */
  constructor(registry: Registry, counter: { name: string; help: string }, histograms: readonly HistogramSpec[]) {
    this.#specs = histograms;
    for (const b of histograms) {
      for (let i = 1; i < b.buckets.length; i++) if (!(b.buckets[i]! > b.buckets[i - 1]!)) throw new Error(`${b.name}: buckets must increase`);
    }
    const metric = (name: string, help: string, type: 'counter' | 'histogram', values: () => MetricValue[]) => ({
      name, help, type, aggregator: 'sum',
      get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
      reset: () => this.#series.clear(),
    });
    registry.registerMetric(metric(counter.name, counter.help, 'counter', () => [...this.#series.values()].map((s) => ({ labels: { ...s.labels }, value: s.requests }))) as never);
    histograms.forEach((spec, h) => registry.registerMetric(metric(spec.name, spec.help, 'histogram', () => this.#histogramValues(spec, h)) as never));
  }

  /** The series of a label set (`key` names it uniquely), made on first use. */
  series(key: string, labels: () => Readonly<Record<string, string>>): Series {
    let s = this.#series.get(key);
    if (!s) {
      s = { labels: labels(), requests: 0, hist: this.#specs.map((b) => ({ counts: new Float64Array(b.buckets.length + 1), sum: 0 })) };
      this.#series.set(key, s);
    }
    return s;
  }

  /** One request: the counter, and one value per histogram (non-finite values are dropped). */
  observe(s: Series, values: readonly number[]): void {
    s.requests++;
    for (let h = 0; h < this.#specs.length; h++) {
      const v = values[h]!;
      if (!Number.isFinite(v)) continue;
      const bounds = this.#specs[h]!.buckets;
      let i = 0;
      while (i < bounds.length && v > bounds[i]!) i++;
      const x = s.hist[h]!;
      x.counts[i]!++;
      x.sum += v;
    }
  }

  #histogramValues(spec: HistogramSpec, h: number): MetricValue[] {
    const out: MetricValue[] = [];
    for (const s of this.#series.values()) {
      const x = s.hist[h]!;
      let cum = 0;
      for (let i = 0; i < spec.buckets.length; i++) {
        cum += x.counts[i]!;
        out.push({ labels: { le: spec.buckets[i]!, ...s.labels }, value: cum, metricName: `${spec.name}_bucket` });
      }
      cum += x.counts[spec.buckets.length]!;
      out.push({ labels: { le: '+Inf', ...s.labels }, value: cum, metricName: `${spec.name}_bucket` });
      out.push({ labels: { ...s.labels }, value: x.sum, metricName: `${spec.name}_sum` });
      out.push({ labels: { ...s.labels }, value: cum, metricName: `${spec.name}_count` });
    }
    return out;
  }
}
