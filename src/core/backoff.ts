/**
 * Exponential backoff with jitter below the curve. Pure: the caller owns timers.
 *
 * The n-th delay is `min(maxMs, initialMs * factor^n)` shortened by a random fraction of at most
 * `jitter`: it lies in [base * (1 - jitter), base], so the cap is a real ceiling (jitter never
 * adds to it) while clients that failed together still spread their retries.
 */
export interface BackoffOptions {
  /** first delay, ms; default 10 */
  initialMs?: number;
  /** ceiling no delay exceeds, ms; default 15_000 (a larger `initialMs` raises it to `initialMs`) */
  maxMs?: number;
  /** multiplier; default 2 */
  factor?: number;
  /** largest fraction taken off a delay at random, 0..1; default 0.2 */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  #attempt = 0;
  readonly #o: Required<BackoffOptions>;
  constructor(o: BackoffOptions = {}) {
    this.#o = { initialMs: 10, maxMs: 15_000, factor: 2, jitter: 0.2, random: Math.random, ...o };
  }
  /** The ceiling every delay stays at or under, ms. */
  get capMs(): number { return Math.max(this.#o.maxMs, this.#o.initialMs); }
  /** Delay before the next attempt, ms. */
  next(): number {
    const { initialMs, factor, random } = this.#o;
    const jitter = Math.min(1, Math.max(0, this.#o.jitter));
    const cap = this.capMs;
    // once at the cap the exponent stops mattering (and must not overflow to Infinity * 0)
    const base = Math.min(cap, initialMs * factor ** Math.min(this.#attempt, 64));
    this.#attempt++;
    const r = Math.min(1, Math.max(0, random()));
    return Math.min(cap, Math.max(0, Math.round(base * (1 - jitter * r))));
  }
  reset(): void { this.#attempt = 0; }
  get attempts(): number { return this.#attempt; }
}
