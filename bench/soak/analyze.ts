/** The soak step's memory and fd trends: least-squares slopes after a warm-up, and whether they level off. Pure. */

export interface Sample {
  /** seconds since the load started */
  readonly tSec: number;
  readonly rssKb: number;
  readonly fds: number;
}

/** RSS growth per minute below which a process counts as levelled off, kB/min */
export const LEVEL_KB_PER_MIN = 100;
/** fd growth per minute (last half) below which the fd count counts as flat; connections in flight make it move */
export const LEVEL_FDS_PER_MIN = 5;
/** a soak shorter than this gives slopes dominated by GC and allocator noise: the verdict is n/a */
export const MIN_TREND_SECONDS = 600;

/** Least-squares slope of y over x, per minute of x seconds; null with fewer than 2 distinct x. */
export function slopePerMin(points: readonly (readonly [number, number])[]): number | null {
  const n = points.length;
  if (n < 2) return null;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const [x, y] of points) { sxy += (x - mx) * (y - my); sxx += (x - mx) ** 2; }
  return sxx === 0 ? null : (sxy / sxx) * 60;
}

export interface Trend {
  readonly samples: number;
  /** after the warm-up */
  readonly samplesAfterWarmup: number;
  readonly startRssKb: number | null;
  readonly endRssKb: number | null;
  /** RSS slope over everything after the warm-up, kB/min */
  readonly rssKbPerMin: number | null;
  /** the same over the first and the last half of that window */
  readonly firstHalfKbPerMin: number | null;
  readonly lastHalfKbPerMin: number | null;
  readonly fdsPerMin: number | null;
  readonly startFds: number | null;
  readonly endFds: number | null;
  /**
   * the last half's RSS slope is at most LEVEL_KB_PER_MIN and the fd count is flat (last half at
   * most LEVEL_FDS_PER_MIN, or at most 10 more fds at the end than after the warm-up); null with
   * fewer than 3 samples in either half
   */
  readonly levelsOff: boolean | null;
}

export function trend(samples: readonly Sample[], warmupSec: number): Trend {
  const after = samples.filter((s) => s.tSec >= warmupSec);
  const mid = after.length > 0 ? (after[0]!.tSec + after[after.length - 1]!.tSec) / 2 : 0;
  const first = after.filter((s) => s.tSec <= mid);
  const last = after.filter((s) => s.tSec >= mid);
  const rss = (xs: readonly Sample[]) => xs.map((s) => [s.tSec, s.rssKb] as const);
  const fds = (xs: readonly Sample[]) => xs.map((s) => [s.tSec, s.fds] as const);
  const lastHalf = slopePerMin(rss(last));
  const lastFds = slopePerMin(fds(last));
  return {
    samples: samples.length,
    samplesAfterWarmup: after.length,
    startRssKb: after[0]?.rssKb ?? null,
    endRssKb: after[after.length - 1]?.rssKb ?? null,
    rssKbPerMin: slopePerMin(rss(after)),
    firstHalfKbPerMin: slopePerMin(rss(first)),
    lastHalfKbPerMin: lastHalf,
    fdsPerMin: slopePerMin(fds(after)),
    startFds: after[0]?.fds ?? null,
    endFds: after[after.length - 1]?.fds ?? null,
    levelsOff: first.length < 3 || last.length < 3 || lastHalf === null || lastFds === null
      ? null
      : lastHalf <= LEVEL_KB_PER_MIN && (lastFds <= LEVEL_FDS_PER_MIN || after[after.length - 1]!.fds - after[0]!.fds <= 10),
  };
}

/** Soak timing from its length: warm-up a third (10 s to 5 min), a sample every 2-10 s. */
export function soakPlan(seconds: number): { warmupSec: number; sampleEverySec: number } {
  if (!(Number.isFinite(seconds) && seconds >= 10)) throw new RangeError(`soak: ${seconds} s is shorter than 10 s`);
  return {
    warmupSec: Math.round(Math.min(300, Math.max(10, seconds / 3))),
    sampleEverySec: Math.min(10, Math.max(2, Math.round(seconds / 60))),
  };
}
