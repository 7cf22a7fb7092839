/** Exponential backoff with full jitter. Pure: the caller owns timers. */
export interface BackoffOptions {
  /** first delay, ms; default 10 */
  initialMs?: number;
  /** ceiling, ms; default 15_000 */
  maxMs?: number;
  /** multiplier; default 2 */
  factor?: number;
  /** fraction of the delay randomised, 0..1; default 0.2 */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  #attempt = 0;
  readonly #o: Required<BackoffOptions>;
  constructor(o: BackoffOptions = {}) {
    this.#o = { initialMs: 10, maxMs: 15_000, factor: 2, jitter: 0.2, random: Math.random, ...o };
  }
  /** Delay before the next attempt, ms. */
  next(): number {
    const { initialMs, maxMs, factor, jitter, random } = this.#o;
    const base = Math.min(maxMs, initialMs * factor ** this.#attempt);
    this.#attempt++;
    return Math.max(0, Math.round(base * (1 - jitter + 2 * jitter * random())));
  }
  reset(): void { this.#attempt = 0; }
  get attempts(): number { return this.#attempt; }
}
