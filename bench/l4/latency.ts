/**
 * The latency step, interleaved across the paths: one c=1 connection per path (a RR_SESSION in
 * the path's client pod), all open at once, driven in rounds. In each round every path, in the
 * round's rotated order, does a short untimed warm-up and then its timed round trips; only one
 * path is on the wire at a time. Each path's p50/p90 are over all its rounds' samples together
 * (interleave.ts), so every path sees the same background load on a shared machine.
 */
import type { ChildProcess } from 'node:child_process';
import type { Cluster, Pod } from '../../src/local/index.js';
import { BenchError, messageOf } from '../common/errors.js';
import { OutputTail, stopChild, waitExit, waitForLine } from '../common/proc.js';
import { schedule, summarizeRounds, type LatencySummary } from './interleave.js';
import type { MeasureSettings, PathTarget } from './measure.js';
import { parseScriptJson } from './parse.js';
import { RR_SESSION } from './pod-scripts.js';

/** A path taking part in the interleaved latency step. */
export interface LatencyPath<N extends string = string> {
  readonly name: N;
  /** the pod the connection starts from */
  readonly client: Pod;
  readonly target: PathTarget;
}

export type LatencyOutcome = { ok: true; summary: LatencySummary } | { ok: false; error: string };

/** Upper bound of a run's timed round trips: one run's samples are one stdout line. */
const MAX_PER_RUN = 10_000;

/** One open c=1 connection through a path, driven run by run. */
class RrSession {
  readonly #child: ChildProcess;
  readonly #tail: OutputTail;
  readonly #what: string;

  private constructor(child: ChildProcess, what: string) {
    this.#child = child;
    this.#tail = new OutputTail(child);
    this.#what = what;
  }

  static async open(cluster: Cluster, path: LatencyPath, bytes: number): Promise<RrSession> {
    const child = cluster.spawn(path.client, [process.execPath, '-e', RR_SESSION, path.target.host, String(path.target.ports.echo), String(bytes)],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    const s = new RrSession(child, `latency: ${path.name}`);
    try {
      const line = await s.#wait(/^(CONNECTED|RR )/, 30_000);
      if (line.startsWith('RR ')) parseScriptJson('latency', line.slice(3));
      return s;
    } catch (e) {
      await s.close();
      throw e;
    }
  }

  /** `warmup` untimed round trips, then `count` timed ones; their times, microseconds. */
  async run(warmup: number, count: number): Promise<number[]> {
    if (!(Number.isInteger(warmup) && warmup >= 0 && Number.isInteger(count) && count >= 0 && count <= MAX_PER_RUN)) {
      throw new RangeError(`latency run: warmup ${warmup}, count ${count}`);
    }
    const answer = this.#wait(/^RR /, 15_000 + (warmup + count) * 20);
    this.#child.stdin?.write(`${warmup} ${count}\n`);
    const r = parseScriptJson<{ samples?: unknown }>('latency', (await answer).slice(3));
    if (!Array.isArray(r.samples) || r.samples.length !== count || r.samples.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
      throw new BenchError('latency', `expected ${count} samples, got: ${JSON.stringify(r).slice(0, 120)}`);
    }
    return r.samples as number[];
  }

  async close(): Promise<void> {
    this.#child.stdin?.end();
    await waitExit(this.#child, this.#what, 5_000).catch(() => undefined);
    await stopChild(this.#child, 1000);
  }

  async #wait(re: RegExp, timeoutMs: number): Promise<string> {
    try {
      return await waitForLine(this.#child, re, this.#what, timeoutMs);
    } catch (e) {
      // the script's last words (its RR {"error"} line may race the exit event)
      throw new BenchError(this.#what, `${messageOf(e)} ${this.#tail.last(2)}`.trim(), { cause: e });
    }
  }
}

/**
 * Runs the interleaved latency step over `paths`. Never throws: a path whose connection cannot be
 * opened, or that fails in a round, gets its error and leaves the rotation; the others go on.
 */
export async function measureLatencyInterleaved<N extends string>(o: {
  cluster: Cluster;
  paths: readonly LatencyPath<N>[];
  settings: MeasureSettings;
  log: (line: string) => void;
}): Promise<Map<N, LatencyOutcome>> {
  const st = o.settings;
  const out = new Map<N, LatencyOutcome>();
  const sessions = new Map<N, RrSession>();
  const samples = new Map<N, number[][]>();
  const drop = async (name: N, e: unknown) => {
    out.set(name, { ok: false, error: messageOf(e) });
    o.log(`latency: ${name} failed: ${messageOf(e)}`);
    const s = sessions.get(name);
    sessions.delete(name);
    await s?.close();
  };
  try {
    // Every connection is opened and warmed up before the first timed round trip of any path.
    for (const p of o.paths) {
      try {
        const s = await RrSession.open(o.cluster, p, st.rrBytes);
        sessions.set(p.name, s);
        await s.run(st.rrWarmup, 0);
        samples.set(p.name, []);
      } catch (e) {
        await drop(p.name, e);
      }
    }
    o.log(`latency: ${st.rrRounds} rounds of ${st.rrPerRound} round trips (after ${st.rrRoundWarmup} untimed) over ${[...sessions.keys()].join(', ') || 'no path'}`);
    for (const order of schedule(o.paths.map((p) => p.name), st.rrRounds)) {
      for (const name of order) {
        const s = sessions.get(name);
        if (!s) continue;
        try {
          samples.get(name)!.push(await s.run(st.rrRoundWarmup, st.rrPerRound));
        } catch (e) {
          await drop(name, e);
        }
      }
    }
    for (const [name, rounds] of samples) {
      if (out.has(name)) continue;
      const summary = summarizeRounds(rounds);
      if (summary.n === 0) { out.set(name, { ok: false, error: 'no timed round trips (0 rounds?)' }); continue; }
      out.set(name, { ok: true, summary });
      o.log(`latency: ${name} p50 ${summary.p50} us, p90 ${summary.p90} us over ${summary.n}; per-round p50 ${summary.roundP50s.join(' ')}`);
    }
  } finally {
    await Promise.all([...sessions.values()].map((s) => s.close()));
  }
  return out;
}
