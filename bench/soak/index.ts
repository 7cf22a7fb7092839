/**
 * The soak step (issue 8): steady load through the mesh for a set time (`--soak-seconds`,
 * default 60 s; 30 minutes or more for a closing note) — 120 requests/s from the client pod
 * (node-1) to the server pod (node-2), half of them each on a new connection and half over
 * keep-alive connections — while both node agents' RSS and open fds are sampled every few
 * seconds. After a warm-up (a third of the run, 10 s to 5 min) it reports each agent's RSS slope
 * (kB/min) over the rest, over its first and last halves, the fd slope, and whether the growth
 * levels off (last half at most 100 kB/min and no fd growth). Writes bench/results/soak.json.
 */
import { messageOf } from '../common/errors.js';
import { startLoad } from '../common/load.js';
import { machineInfo, machineLine } from '../common/machine.js';
import { fdCount, rssKb } from '../common/proc.js';
import { writeResults } from '../common/results.js';
import { formatTable, round } from '../common/stats.js';
import type { BenchOptions, BenchSuite, SuiteReport, TargetCheck } from '../common/suite.js';
import { APP_PORTS } from '../l4/apps.js';
import { withAmbitPair } from '../l4/fixture.js';
import type { AgentMemory } from '../l4/mesh.js';
import { LEVEL_KB_PER_MIN, MIN_TREND_SECONDS, soakPlan, trend, type Sample, type Trend } from './analyze.js';

export const SOAK_RATE = 120;
export const KEEPALIVE_SHARE = 0.5;
export const DEFAULT_SOAK_SECONDS = 60;

export interface SoakOptions extends BenchOptions {
  readonly resultsDir?: string;
}

export async function runSoak(opts: SoakOptions = {}): Promise<SuiteReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[bench soak] ${l}\n`));
  const seconds = opts.soakSeconds ?? (opts.quick ? 20 : DEFAULT_SOAK_SECONDS);
  const plan = soakPlan(seconds);
  const started = new Date();
  const out = await withAmbitPair('soak', log, async ({ cluster, client, server, mesh, dir }) => {
    const pids = mesh.agentsByNode();
    const samples = new Map<string, Sample[]>([...pids.keys()].map((n) => [n, []]));
    const errors: string[] = [];
    log(`soak: ${seconds} s at ${SOAK_RATE} requests/s (${KEEPALIVE_SHARE * 100} % keep-alive), warm-up ${plan.warmupSec} s, a sample every ${plan.sampleEverySec} s`);
    const load = await startLoad({ cluster, client, host: server.ip, port: APP_PORTS.http, ratePerSec: SOAK_RATE, keepAliveShare: KEEPALIVE_SHARE, dir });
    const t0 = Date.now();
    const sample = () => {
      const tSec = (Date.now() - t0) / 1000;
      for (const [node, pid] of pids) {
        try { samples.get(node)!.push({ tSec, rssKb: rssKb(pid), fds: fdCount(pid) }); } catch (e) {
          if (errors.length < 5) errors.push(`${node}: ${messageOf(e)}`);
        }
      }
    };
    sample();
    const timer = setInterval(sample, plan.sampleEverySec * 1000);
    // What a full GC leaves at the warm-up's end and at the run's end: the memory the agents
    // retain, apart from garbage V8 has not collected yet (its old space grows until its next
    // major collection, which on a quiet agent can be many minutes away).
    const gc = async (): Promise<Map<string, AgentMemory>> => {
      try {
        return new Map((await mesh.collectGarbage()).map(({ node, ...m }) => [node, m]));
      } catch (e) {
        if (errors.length < 5) errors.push(`gc: ${messageOf(e)}`);
        return new Map();
      }
    };
    let loadResult;
    let atWarm = new Map<string, AgentMemory>();
    let atEnd = new Map<string, AgentMemory>();
    try {
      await new Promise((r) => setTimeout(r, plan.warmupSec * 1000));
      atWarm = await gc();
      await new Promise((r) => setTimeout(r, Math.max(0, seconds * 1000 - (Date.now() - t0))));
      atEnd = await gc();
      sample();
    } finally {
      clearInterval(timer);
      loadResult = await load.stop();
    }
    return { samples, loadResult, errors, atWarm, atEnd, gcMinutes: (seconds - plan.warmupSec) / 60 };
  });
  const trends = new Map<string, Trend>([...out.samples].map(([n, s]) => [n, trend(s, plan.warmupSec)]));
  const rows = [['agent', 'RSS after warm-up kB', 'RSS at end kB', 'slope kB/min', 'first half', 'last half', 'fds start/end', 'fds/min', 'levels off']];
  for (const [node, t] of trends) {
    const f = (v: number | null) => (v === null ? '-' : String(round(v, 0)));
    rows.push([node, f(t.startRssKb), f(t.endRssKb), f(t.rssKbPerMin), f(t.firstHalfKbPerMin), f(t.lastHalfKbPerMin),
      `${t.startFds ?? '-'}/${t.endFds ?? '-'}`, t.fdsPerMin === null ? '-' : String(round(t.fdsPerMin, 1)), t.levelsOff === null ? 'n/a' : t.levelsOff ? 'yes' : 'no']);
  }
  const mb = (b: number | null | undefined) => (b == null ? '-' : (b / 1048576).toFixed(1));
  const retainedRows = [['agent', 'after a full GC: RSS MB warm-up/end', 'kB/min', 'JS heap used MB', 'external MB']];
  const retained = new Map<string, number | null>();
  for (const node of trends.keys()) {
    const a = out.atWarm.get(node);
    const b = out.atEnd.get(node);
    const perMin = a?.rss != null && b?.rss != null && out.gcMinutes > 0 ? (b.rss - a.rss) / 1024 / out.gcMinutes : null;
    retained.set(node, perMin);
    retainedRows.push([node, `${mb(a?.rss)}/${mb(b?.rss)}`, perMin === null ? '-' : String(round(perMin, 0)),
      `${mb(a?.heapUsed)}/${mb(b?.heapUsed)}`, `${mb(a?.external)}/${mb(b?.external)}`]);
  }
  const l = out.loadResult;
  const errs = Object.entries(l.errors).map(([k, v]) => `${k} x${v}`).join(', ');
  const machine = machineInfo();
  const table = `${machineLine(machine)}\n${formatTable(rows)}${formatTable(retainedRows)}`
    + `${seconds} s at ${SOAK_RATE} requests/s (${KEEPALIVE_SHARE * 100} % over keep-alive), warm-up ${plan.warmupSec} s: ${l.ok} of ${l.sent} requests succeeded${errs ? ` (failures: ${errs})` : ''}\n`
    + (seconds < MIN_TREND_SECONDS ? `  a short soak: slopes over ${seconds - plan.warmupSec} s are dominated by GC and allocator noise; run --soak-seconds 1800 for a trend\n` : '')
    + out.errors.map((e) => `  sampling: ${e}\n`).join('');
  const targets: TargetCheck[] = [...trends].map(([node, t]) => ({
    name: `${node} agent RSS levels off after warm-up (last half)`, value: round(t.lastHalfKbPerMin, 0), unit: 'kB/min',
    goal: `<= ${LEVEL_KB_PER_MIN} kB/min, no fd growth, over a soak of ${MIN_TREND_SECONDS / 60} min or more`,
    // a short soak shows the numbers but cannot tell a trend from GC noise
    met: seconds < MIN_TREND_SECONDS ? null : t.levelsOff,
  }));
  targets.push({ name: 'soak requests succeeding', value: l.sent === 0 ? null : round((100 * l.ok) / l.sent, 2), unit: '%', goal: '100 %', met: l.sent === 0 ? null : l.failed === 0 });
  const resultsPath = writeResults('soak', {
    suite: 'soak', started: started.toISOString(), finished: new Date().toISOString(), machine, seconds, ratePerSec: SOAK_RATE, keepAliveShare: KEEPALIVE_SHARE, ...plan,
    units: { rssKb: 'kB', slopes: 'kB/min (RSS), fds/min' },
    agents: Object.fromEntries([...trends].map(([n, t]) => [n, {
      trend: t, afterGc: { warmup: out.atWarm.get(n) ?? null, end: out.atEnd.get(n) ?? null, rssKbPerMin: retained.get(n) ?? null }, samples: out.samples.get(n),
    }])),
    load: { ...l, fails: l.fails.slice(0, 100) },
    targets,
  }, opts.resultsDir);
  return { name: 'soak', table, targets, resultsPath };
}

export const soakSuite: BenchSuite = {
  name: 'soak',
  description: 'both agents\' RSS and fds under steady new and keep-alive connections (--soak-seconds, default 60)',
  run: (opts) => runSoak(opts),
};

export default soakSuite;
