/**
 * A steady request loop inside a pod: one new HTTP/1.0 connection every `intervalMs` to each
 * target in turn, each result a JSON line. For restart and replacement tests (and the bench's
 * restart step): how many failed, and the longest gap between two successful answers.
 */
import type { ChildProcess } from 'node:child_process';
import type { SpawnInNetnsOptions } from '../../src/local/index.js';

/** Where the loop runs: a `Cluster` and one of its pods, or anything that spawns in a pod's netns (a CLI-run `ambit up`). */
export interface LoopHost<P> {
  spawn(place: P, argv: readonly string[], opts?: SpawnInNetnsOptions): ChildProcess;
}

// Runs in the pod with `node -e`. Stops sending on stdin end, waits for what is in flight, exits.
const LOOP = `
const net = require('node:net');
const [intervalMs, ...targets] = process.argv.slice(1);
let i = 0, open = 0, stopping = false;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const one = (target) => {
  const [host, port] = target.split(':');
  const start = Date.now();
  open++;
  let data = '', settled = false;
  const s = net.connect({ host, port: Number(port) });
  const done = (ok, error) => {
    if (settled) return;
    settled = true; open--;
    out({ target, ok, error, start, end: Date.now() });
    s.destroy();
    if (stopping && open === 0) process.exit(0);
  };
  s.setTimeout(10000, () => done(false, 'ETIMEDOUT'));
  s.on('error', (e) => done(false, e.code || e.message));
  s.on('connect', () => s.write('GET / HTTP/1.0\\r\\nhost: ' + host + '\\r\\n\\r\\n'));
  s.on('data', (d) => { data += d; });
  s.on('end', () => done(data.startsWith('HTTP/1.1 200') || data.startsWith('HTTP/1.0 200'), data ? undefined : 'empty answer'));
};
const timer = setInterval(() => { one(targets[i++ % targets.length]); }, Number(intervalMs));
process.stdin.on('end', () => { stopping = true; clearInterval(timer); if (open === 0) process.exit(0); });
process.stdin.resume();
out({ started: true });
`;

export interface LoopResult {
  readonly target: string;
  readonly ok: boolean;
  readonly error?: string;
  /** ms since the epoch (pod clock = host clock) */
  readonly start: number;
  readonly end: number;
}

export interface LoopSummary {
  readonly total: number;
  readonly failed: readonly LoopResult[];
  /** per target, the longest time between two successful answers, ms */
  readonly longestGapMs: Readonly<Record<string, number>>;
  readonly results: readonly LoopResult[];
}

export interface RequestLoop {
  /** resolves once `n` more requests (from now) have succeeded */
  successes(n: number): Promise<void>;
  /** stops sending, waits for what is in flight, summarizes */
  stop(): Promise<LoopSummary>;
}

/** Starts the loop in `from`; resolves once it runs. `targets` are "ip:port". */
export async function startRequestLoop<P extends { readonly name: string }>(cluster: LoopHost<NoInfer<P>>, from: P, targets: readonly string[], intervalMs = 20): Promise<RequestLoop> {
  const child: ChildProcess = cluster.spawn(from, [process.execPath, '-e', LOOP, String(intervalMs), ...targets], { stdio: ['pipe', 'pipe', 'pipe'] });
  const results: LoopResult[] = [];
  const waiters: Array<{ at: number; resolve: () => void }> = [];
  let ok = 0;
  let buf = '';
  let started!: () => void;
  const running = new Promise<void>((resolve) => { started = resolve; });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString(); });
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const o = JSON.parse(buf.slice(0, nl)) as LoopResult & { started?: boolean };
      buf = buf.slice(nl + 1);
      if (o.started) { started(); continue; }
      results.push(o);
      if (o.ok) ok++;
      for (const w of [...waiters]) if (ok >= w.at) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
    }
  });
  await Promise.race([running, exited.then(() => { throw new Error(`request loop in ${from.name} exited: ${stderr}`); })]);
  return {
    successes: (n) => new Promise<void>((resolve, reject) => {
      waiters.push({ at: ok + n, resolve });
      void exited.then(() => reject(new Error(`request loop in ${from.name} exited: ${stderr}`)));
    }),
    async stop() {
      child.stdin?.end();
      await exited;
      const longestGapMs: Record<string, number> = {};
      for (const target of targets) {
        const ends = results.filter((r) => r.target === target && r.ok).map((r) => r.end).sort((a, b) => a - b);
        let gap = 0;
        for (let i = 1; i < ends.length; i++) gap = Math.max(gap, ends[i]! - ends[i - 1]!);
        longestGapMs[target] = gap;
      }
      return { total: results.length, failed: results.filter((r) => !r.ok), longestGapMs, results };
    },
  };
}
