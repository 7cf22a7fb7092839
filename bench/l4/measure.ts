/**
 * The L4 measurements, run from the client pod against one path. Each measurement is
 * independent: a failure is recorded with its reason and the others still run, so one broken
 * tool does not hide the rest of the row. Latency is not here: it alternates between all the
 * paths at once (latency.ts).
 */
import type { Cluster, Pod } from '../../src/local/index.js';
import { BenchError, messageOf } from '../common/errors.js';
import { cpuSeconds, rssKb, stopChild, waitExit, waitForLine, OutputTail } from '../common/proc.js';
import { CONN_CLIENT, HOLD_CLIENT } from './pod-scripts.js';
import { parseHeld, parseIperfJson, parseScriptJson, parseWrk } from './parse.js';

/** Where the client pod connects to reach each server app over this path. */
export interface PathTarget {
  readonly host: string;
  readonly ports: { readonly iperf: number; readonly echo: number; readonly http: number };
}

export interface MeasureSettings {
  /** iperf3 -t, seconds */
  readonly iperfSeconds: number;
  /**
   * latency (interleaved across the paths, latency.ts): `rrRounds` rounds; in each, every path
   * does `rrRoundWarmup` untimed and then `rrPerRound` timed round trips. `rrWarmup` untimed ones
   * once per connection, before the first round.
   */
  readonly rrRounds: number;
  readonly rrPerRound: number;
  readonly rrRoundWarmup: number;
  readonly rrWarmup: number;
  /** request and response size of the latency test, bytes */
  readonly rrBytes: number;
  /** wrk -d, seconds */
  readonly wrkSeconds: number;
  readonly wrkConnections: number;
  readonly wrkThreads: number;
  /** connection-rate test length, ms, and parallel connectors */
  readonly connMs: number;
  readonly connConcurrency: number;
  /** idle connections opened before the first memory reading, and then the extra ones */
  readonly memBaseConnections: number;
  readonly memConnections: number;
}

export const FULL: MeasureSettings = {
  iperfSeconds: 5, rrRounds: 10, rrPerRound: 200, rrRoundWarmup: 20, rrWarmup: 200, rrBytes: 1024, wrkSeconds: 5, wrkConnections: 16, wrkThreads: 2,
  connMs: 3000, connConcurrency: 4, memBaseConnections: 100, memConnections: 500,
};

export const QUICK: MeasureSettings = {
  iperfSeconds: 1, rrRounds: 3, rrPerRound: 100, rrRoundWarmup: 10, rrWarmup: 50, rrBytes: 1024, wrkSeconds: 1, wrkConnections: 16, wrkThreads: 2,
  connMs: 1000, connConcurrency: 4, memBaseConnections: 20, memConnections: 100,
};

export interface PathMetrics {
  /** single-stream iperf3, Gbit/s */
  throughputGbps: number | null;
  /** 1 kB request/response at c=1, microseconds, over all rounds of the interleaved step */
  rrP50Us: number | null;
  rrP90Us: number | null;
  rrP99Us: number | null;
  /** p50 of each latency round on its own, microseconds (how much the conditions moved) */
  rrRoundP50Us?: number[];
  /** wrk requests per second at c=16 */
  rps: number | null;
  /** completed connect/1 byte/close exchanges per second */
  connPerSec: number | null;
  /**
   * CPU of the path's proxies per new connection during the connection-rate step, microseconds:
   * all their threads, and (Node processes) the JS thread alone; null when not measured
   */
  cpuUsPerConn?: number | null;
  jsUsPerConn?: number | null;
  /** RSS growth of the path's proxies per extra idle connection, kB; null when nothing proxies */
  memKbPerConn: number | null;
  /** what went wrong or looked odd, per measurement */
  notes: string[];
}

/** The five measurements, by the names `--only` takes. */
export const STEPS = ['memory', 'throughput', 'latency', 'rps', 'conn'] as const;
export type StepName = typeof STEPS[number];

export interface MeasureContext {
  /** run only these measurements; default all */
  readonly only?: ReadonlySet<StepName>;
  readonly cluster: Cluster;
  readonly client: Pod;
  readonly target: PathTarget;
  readonly tools: Readonly<Record<string, string>>;
  readonly settings: MeasureSettings;
  /** pids whose RSS is the path's memory cost (agents, stunnels); empty: not measured */
  readonly memoryPids: () => readonly number[];
  /** Node processes among memoryPids: their JS thread's CPU is reported apart; default none */
  readonly jsPids?: () => readonly number[];
  /** run before each RSS reading (e.g. a full GC in the agents); default nothing */
  readonly beforeRss?: () => Promise<unknown>;
  readonly log: (line: string) => void;
}

async function execJson<T>(ctx: MeasureContext, step: string, argv: string[], timeoutMs: number): Promise<T> {
  const r = await ctx.cluster.exec(ctx.client, argv, { timeoutMs });
  if (r.code !== 0 && r.stdout.trim() === '') throw new BenchError(step, `exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return parseScriptJson<T>(step, r.stdout);
}

export async function measureThroughput(ctx: MeasureContext): Promise<number> {
  const { host, ports } = ctx.target;
  const s = ctx.settings.iperfSeconds;
  const r = await ctx.cluster.exec(ctx.client, [ctx.tools.iperf3!, '-c', host, '-p', String(ports.iperf), '-t', String(s), '-J'],
    { timeoutMs: (s + 20) * 1000 });
  return parseIperfJson(r.stdout) / 1e9;
}

export async function measureRps(ctx: MeasureContext): Promise<{ rps: number; errors: number }> {
  const { host, ports } = ctx.target;
  const st = ctx.settings;
  const r = await ctx.cluster.exec(ctx.client, [ctx.tools.wrk!, `-c${st.wrkConnections}`, `-t${st.wrkThreads}`, `-d${st.wrkSeconds}s`,
    `http://${host}:${ports.http}/`], { timeoutMs: (st.wrkSeconds + 20) * 1000 });
  const w = parseWrk(r.stdout);
  return { rps: w.requestsPerSec, errors: w.errors };
}

export async function measureConnRate(ctx: MeasureContext): Promise<{ ok: number; rate: number; failed: number; errors: string[] }> {
  const { host, ports } = ctx.target;
  const st = ctx.settings;
  return execJson<{ ok: number; rate: number; failed: number; errors: string[] }>(ctx, 'connections',
    [process.execPath, '-e', CONN_CLIENT, host, String(ports.echo), String(st.connMs), String(st.connConcurrency)], st.connMs + 30_000);
}

interface Held { ok: number; failed: number; pending: number; errors: string[]; close(): Promise<void> }

/** Opens `n` idle connections through the path from the client pod and keeps them open. */
async function holdConnections(ctx: MeasureContext, n: number, deadlineMs: number): Promise<Held> {
  const { host, ports } = ctx.target;
  const holder = ctx.cluster.spawn(ctx.client, [process.execPath, '-e', HOLD_CLIENT, host, String(ports.echo), String(n), '50', String(deadlineMs)],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  const tail = new OutputTail(holder);
  const close = async () => {
    holder.stdin?.end();
    await waitExit(holder, 'memory: connection holder', 10_000).catch(() => undefined);
    await stopChild(holder, 1000);
  };
  try {
    const line = await waitForLine(holder, /^HELD /, 'connection holder', deadlineMs + 15_000);
    return { ...parseHeld(line), close };
  } catch (e) {
    await close();
    throw new BenchError('memory', `${messageOf(e)} ${tail.last(3)}`.trim(), { cause: e });
  }
}

/**
 * RSS growth of the path's proxies per extra idle connection. Both readings are taken with
 * connections already open (a base set first, which also creates any shared tunnel and warms the
 * code), so one-off costs are not spread over the extra ones. The holder proves every connection
 * end to end (1-byte echo) before a reading, so the proxies have done their per-connection work.
 */
export async function measureMemory(ctx: MeasureContext): Promise<{ kbPerConn: number; held: number; failed: number; pending: number; errors: string[] }> {
  const pids = ctx.memoryPids();
  if (pids.length === 0) throw new BenchError('memory', 'no proxy processes to measure');
  const rss = async () => {
    await ctx.beforeRss?.();
    return pids.reduce((a, p) => a + rssKb(p), 0);
  };
  const deadlineMs = 30_000;
  // Two rounds opened and closed unmeasured: the proxies' code paths for a connection get
  // optimized now. (JIT compiler memory comes from malloc and stays in the process heap after it
  // is freed; measured during the extra round it read as ~2 kB "per connection" in an agent.)
  for (let round = 0; round < 2; round++) {
    const warm = await holdConnections(ctx, ctx.settings.memConnections, deadlineMs);
    await warm.close();
  }
  const base = await holdConnections(ctx, ctx.settings.memBaseConnections, deadlineMs);
  try {
    if (base.ok === 0) throw new BenchError('memory', `no connection could be opened (${base.failed} failed, ${base.pending} stalled): ${base.errors.join(', ')}`);
    const before = await rss();
    const extra = await holdConnections(ctx, ctx.settings.memConnections, deadlineMs);
    try {
      if (extra.ok === 0) throw new BenchError('memory', `no extra connection could be opened (${extra.failed} failed, ${extra.pending} stalled): ${extra.errors.join(', ')}`);
      const after = await rss();
      return { kbPerConn: (after - before) / extra.ok, held: extra.ok, failed: extra.failed, pending: extra.pending, errors: extra.errors };
    } finally {
      await extra.close();
    }
  } finally {
    await base.close();
  }
}

/** A row with nothing measured yet. */
export function emptyMetrics(): PathMetrics {
  return { throughputGbps: null, rrP50Us: null, rrP90Us: null, rrP99Us: null, rps: null, connPerSec: null, memKbPerConn: null, notes: [] };
}

/**
 * Runs the path's own measurements (those in `ctx.only`, default all) in a fixed order, recording
 * into `m`; never throws. Latency is not one of them: index.ts runs it interleaved across the
 * paths (latency.ts).
 */
export async function measurePath(name: string, ctx: MeasureContext, m: PathMetrics = emptyMetrics()): Promise<PathMetrics> {
  const step = async (what: string, fn: () => Promise<void>, key: StepName) => {
    if (ctx.only && !ctx.only.has(key)) return;
    ctx.log(`${name}: ${what}`);
    try { await fn(); } catch (e) {
      m.notes.push(`${what}: ${messageOf(e)}`);
      ctx.log(`${name}: ${what} failed: ${messageOf(e)}`);
    }
  };
  // Memory first, on proxies that have carried nothing but the readiness probe: the other tests
  // leave garbage and grown buffers behind that would blur a difference of a few kB.
  if (ctx.memoryPids().length > 0) {
    await step('memory per connection', async () => {
      const r = await measureMemory(ctx);
      m.memKbPerConn = r.kbPerConn;
      if (r.failed + r.pending > 0) {
        m.notes.push(`memory: of ${ctx.settings.memConnections} connections ${r.held} held, ${r.failed} failed, ${r.pending} stalled`
          + ` after 30 s${r.errors.length ? ` (${r.errors.join(', ')})` : ''}; kB/conn is over the held ones`);
      }
    }, 'memory');
  }
  await step('throughput (iperf3)', async () => { m.throughputGbps = await measureThroughput(ctx); }, 'throughput');
  await step('requests/s (wrk)', async () => {
    const r = await measureRps(ctx);
    m.rps = r.rps;
    if (r.errors > 0) m.notes.push(`wrk: ${r.errors} errors`);
  }, 'rps');
  await step('new connections/s', async () => {
    const pids = ctx.memoryPids();
    const js = ctx.jsPids?.() ?? [];
    const cpu = () => ({ all: pids.reduce((a, p) => a + cpuSeconds(p), 0), js: js.reduce((a, p) => a + cpuSeconds(p, p), 0) });
    const before = cpu();
    const r = await measureConnRate(ctx);
    const after = cpu();
    m.connPerSec = r.rate;
    if (pids.length > 0 && r.ok > 0) {
      m.cpuUsPerConn = ((after.all - before.all) * 1e6) / r.ok;
      if (js.length > 0) m.jsUsPerConn = ((after.js - before.js) * 1e6) / r.ok;
    }
    if (r.failed > 0) m.notes.push(`connections: ${r.failed} failed (${r.errors.join(', ')})`);
  }, 'conn');
  return m;
}
