/**
 * Drain: a one-shot signal that tells every listener and task to stop taking new work, plus a
 * helper that waits for in-flight work until a deadline and then forces the rest closed.
 */
export class Drain {
  #draining = false;
  readonly #waiters = new Set<() => void>();
  readonly #tasks = new Set<Promise<unknown>>();

  get draining(): boolean { return this.#draining; }

  /** Called once when draining starts; returns an unsubscribe function. */
  onDrain(fn: () => void): () => void {
    if (this.#draining) { queueMicrotask(fn); return () => {}; }
    this.#waiters.add(fn);
    return () => this.#waiters.delete(fn);
  }

  /** Track an in-flight unit of work so `start` can wait for it. */
  track<T>(p: Promise<T>): Promise<T> {
    this.#tasks.add(p);
    const done = () => { this.#tasks.delete(p); };
    p.then(done, done);
    return p;
  }

  get inFlight(): number { return this.#tasks.size; }

  /**
   * Start draining: notify subscribers, wait for tracked work up to `deadlineMs`, then call
   * `force` for whatever is still running. Resolves true when everything finished in time.
   */
  async start(deadlineMs: number, force?: () => void): Promise<boolean> {
    if (!this.#draining) {
      this.#draining = true;
      for (const fn of this.#waiters) fn();
      this.#waiters.clear();
    }
    if (this.#tasks.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), deadlineMs); });
    const finished = Promise.allSettled([...this.#tasks]).then(() => true as const);
    const ok = await Promise.race([finished, timedOut]);
    clearTimeout(timer);
    if (!ok) force?.();
    return ok;
  }
}
