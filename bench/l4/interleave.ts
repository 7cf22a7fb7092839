/**
 * The interleaved latency schedule and its summary. Pure.
 *
 * Background load on a shared machine changes from one window of a few hundred ms to the next,
 * so paths measured one after the other are compared under different conditions. The latency
 * step therefore alternates between the paths in rounds: every path runs a short block of round
 * trips per round, in an order rotated from round to round, and each path's percentiles are taken
 * over all its rounds together.
 */
import { percentile } from '../common/stats.js';

/**
 * The order of the paths in round `round` (from 0): the list rotated left by `round`, so over
 * `paths.length` consecutive rounds every path runs once in every position (first after the
 * others' turns, last before the next round, ...).
 */
export function roundOrder<T>(paths: readonly T[], round: number): T[] {
  if (!Number.isInteger(round) || round < 0) throw new RangeError(`roundOrder: round=${round} is not a whole number >= 0`);
  const n = paths.length;
  if (n === 0) return [];
  const k = round % n;
  return [...paths.slice(k), ...paths.slice(0, k)];
}

/** The whole schedule: one order per round. */
export function schedule<T>(paths: readonly T[], rounds: number): T[][] {
  if (!Number.isInteger(rounds) || rounds < 0) throw new RangeError(`schedule: rounds=${rounds} is not a whole number >= 0`);
  return Array.from({ length: rounds }, (_, r) => roundOrder(paths, r));
}

export interface LatencySummary {
  /** timed round trips over all rounds */
  readonly n: number;
  /** nearest-rank percentiles over all rounds' samples together, microseconds; NaN when none */
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  /** p50 of each round on its own (the spread shows how much the conditions moved), microseconds */
  readonly roundP50s: number[];
}

/**
 * Percentiles of one path over all its rounds. The samples are merged before ranking: the p50 of
 * all round trips, not a mean of per-round p50s (which would weigh a short round like a long one).
 * Rounds without samples are skipped.
 */
export function summarizeRounds(rounds: readonly (readonly number[])[]): LatencySummary {
  const all = rounds.flat().sort((a, b) => a - b);
  const roundP50s = rounds.filter((r) => r.length > 0).map((r) => percentile([...r].sort((a, b) => a - b), 50));
  return { n: all.length, p50: percentile(all, 50), p90: percentile(all, 90), p99: percentile(all, 99), roundP50s };
}
