/**
 * A steady HTTP request loop run inside a client pod (restart and soak steps): open loop at a
 * fixed rate (requests leave on schedule whether or not earlier ones finished), each request a
 * GET expecting 200 with a body, a share of them over keep-alive connections and the rest each on
 * a new connection. It counts successes and failures (by error code), keeps the first failures
 * with their wall-clock time, and the longest time between two successful responses.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Pod } from '../../src/local/index.js';
import { BenchError, messageOf } from './errors.js';
import { OutputTail, stopChild, waitForLine } from './proc.js';

/**
 * argv: host port ratePerSec keepAliveShare(0..1) timeoutMs resultFile. Prints "STARTED" once
 * running; stdin "STOP" (or stdin closed) stops sending, waits for the requests in flight (bounded
 * by their timeout), writes the LoadResult JSON to resultFile (it can be large: the failures'
 * times) and prints "LOAD DONE", then exits.
 */
export const REQUEST_LOOP = `
const http = require('node:http');
const readline = require('node:readline');
const [host, port, rate, kaShare, timeout] = process.argv.slice(1, 6).map((v, i) => i === 0 ? v : Number(v));
const resultFile = process.argv[6];
const MAX_FAILS_KEPT = 50000;
const ka = new http.Agent({ keepAlive: true, maxSockets: 4 });
const start = Date.now();
let sent = 0, ok = 0, failed = 0, failsDropped = 0, inflight = 0, stopping = false, reported = false, kaCredit = 0, kaSent = 0;
let lastOk = 0, longestGap = 0, gapEndAt = 0;
const errors = {};
const fails = [];
const report = () => {
  if (reported) return;
  reported = true;
  const end = Date.now();
  if (lastOk && end - lastOk > longestGap) { longestGap = end - lastOk; gapEndAt = end; }
  require('node:fs').writeFileSync(resultFile, JSON.stringify({ sent, ok, failed, keepAliveSent: kaSent, errors, fails, failsDropped, longestGapMs: longestGap, gapEndAt, startedAt: start, durationMs: end - start }));
  console.log('LOAD DONE');
  process.exit(0);
};
const one = (useKa) => {
  sent++; inflight++;
  if (useKa) kaSent++;
  const t0 = Date.now();
  let done = false;
  const finish = (err) => {
    if (done) return;
    done = true; inflight--;
    const now = Date.now();
    if (!err) {
      ok++;
      if (lastOk && now - lastOk > longestGap) { longestGap = now - lastOk; gapEndAt = now; }
      lastOk = now;
    } else {
      failed++;
      errors[err] = (errors[err] || 0) + 1;
      if (fails.length < MAX_FAILS_KEPT) fails.push([t0, err, useKa ? 'keep-alive' : 'new']); else failsDropped++;
    }
    if (stopping && inflight === 0) report();
  };
  const req = http.get({ host, port, path: '/', agent: useKa ? ka : false, timeout }, (res) => {
    let n = 0;
    res.on('data', (d) => { n += d.length; });
    res.on('end', () => finish(res.statusCode === 200 && n > 0 ? null : 'status ' + res.statusCode));
    res.on('error', (e) => finish(e.code || e.message));
  });
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
  req.on('error', (e) => finish(e.code || e.message));
};
const tick = setInterval(() => {
  const due = Math.floor(((Date.now() - start) * rate) / 1000) + 1;
  while (sent < due) {
    kaCredit += kaShare;
    const useKa = kaCredit >= 1;
    if (useKa) kaCredit -= 1;
    one(useKa);
  }
}, Math.max(1, Math.min(10, Math.floor(1000 / rate))));
const stop = () => {
  if (stopping) return;
  stopping = true;
  clearInterval(tick);
  if (inflight === 0) report();
};
readline.createInterface({ input: process.stdin }).on('line', (l) => { if (l.trim() === 'STOP') stop(); }).on('close', stop);
console.log('STARTED');
`;

export interface LoadResult {
  readonly sent: number;
  readonly ok: number;
  readonly failed: number;
  readonly keepAliveSent: number;
  /** error code (or "status N") -> count */
  readonly errors: Readonly<Record<string, number>>;
  /** the first 50,000 failures: [wall-clock ms when sent, error, 'new' | 'keep-alive'] */
  readonly fails: readonly (readonly [number, string, string])[];
  /** failures past that many, not listed */
  readonly failsDropped: number;
  /** longest time between two successful responses (or from the last one to the end), ms */
  readonly longestGapMs: number;
  /** wall-clock ms when that gap ended */
  readonly gapEndAt: number;
  readonly startedAt: number;
  readonly durationMs: number;
}

let loads = 0;

export interface RunningLoad {
  /** stops sending, waits for the requests in flight, returns the counts */
  stop(): Promise<LoadResult>;
  readonly pid: number | undefined;
}

export async function startLoad(o: {
  cluster: Cluster; client: Pod; host: string; port: number; ratePerSec: number; keepAliveShare: number; timeoutMs?: number;
  /** a directory for the result file */
  dir: string;
}): Promise<RunningLoad> {
  if (!(o.ratePerSec > 0 && o.ratePerSec <= 10_000)) throw new RangeError(`load: rate ${o.ratePerSec}/s is outside 0..10000`);
  if (!(o.keepAliveShare >= 0 && o.keepAliveShare <= 1)) throw new RangeError(`load: keep-alive share ${o.keepAliveShare} is outside 0..1`);
  const timeoutMs = o.timeoutMs ?? 5000;
  const resultFile = join(o.dir, `load-${process.pid}-${++loads}.json`);
  const child: ChildProcess = o.cluster.spawn(o.client, [process.execPath, '-e', REQUEST_LOOP, o.host, String(o.port), String(o.ratePerSec), String(o.keepAliveShare), String(timeoutMs), resultFile],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  const tail = new OutputTail(child);
  try {
    await waitForLine(child, /^STARTED$/, 'request loop', 15_000);
  } catch (e) {
    await stopChild(child, 1000);
    throw new BenchError('request loop', `${messageOf(e)} ${tail.last(3)}`.trim(), { cause: e });
  }
  return {
    pid: child.pid,
    stop: async () => {
      const line = waitForLine(child, /^LOAD DONE$/, 'request loop', timeoutMs + 15_000);
      child.stdin?.write('STOP\n');
      try {
        await line;
        return JSON.parse(readFileSync(resultFile, 'utf8')) as LoadResult;
      } catch (e) {
        throw new BenchError('request loop', `${messageOf(e)} ${tail.last(3)}`.trim(), { cause: e });
      } finally {
        await stopChild(child, 1000);
      }
    },
  };
}
