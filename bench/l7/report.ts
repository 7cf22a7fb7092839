/** The L7 table and issue 10's targets. Pure. */
import { formatTable, round } from '../common/stats.js';
import type { TargetCheck } from '../common/suite.js';

export type L7PathName = 'direct' | 'haproxy' | 'nginx' | 'node' | 'ambit' | 'waypoint';
/** `node`: a bare node:http reverse proxy (keep-alive agent), the floor of the runtime the waypoint is written on */
export const L7_PATHS: readonly L7PathName[] = ['direct', 'haproxy', 'nginx', 'node', 'ambit', 'waypoint'];

export interface L7Metrics {
  /** wrk at c=16, keep-alive */
  rps: number | null;
  /** open loop at a fixed rate, microseconds from each request's scheduled time */
  p50Us: number | null;
  p90Us: number | null;
  p99Us: number | null;
  /** CPU seconds of the path's proxy processes per 1,000 requests (during the wrk step) */
  cpuSecPer1k: number | null;
  /** the same of the mesh's other processes on the path (the waypoint's: both node agents) */
  meshCpuSecPer1k: number | null;
  /** busy CPU seconds of the whole machine per 1,000 requests during the wrk step (all processes and the kernel) */
  machineCpuSecPer1k: number | null;
  /** the machine's busy share during the wrk step, 0..1 (1: every CPU busy) */
  machineBusy: number | null;
  /** RSS of the proxy processes, idle, after start */
  idleRssKb: number | null;
  /** their RSS growth per 1,000 idle keep-alive connections */
  rssKbPer1kConn: number | null;
  notes: string[];
}

export interface L7Outcome { readonly metrics: L7Metrics | null; readonly error?: string }
export type L7Outcomes = Readonly<Record<L7PathName, L7Outcome>>;

export function emptyL7(): L7Metrics {
  return { rps: null, p50Us: null, p90Us: null, p99Us: null, cpuSecPer1k: null, meshCpuSecPer1k: null, machineCpuSecPer1k: null, machineBusy: null, idleRssKb: null, rssKbPer1kConn: null, notes: [] };
}

/**
 * The path each one's added latency is measured against: the L7 peers against direct; the
 * waypoint against the mesh without it (ambit, the same agents and pods), so the figure is the
 * waypoint hop's own; ambit against direct.
 */
export function baselineOf(p: L7PathName): L7PathName | null {
  if (p === 'direct') return null;
  return p === 'waypoint' ? 'ambit' : 'direct';
}

export function addedP99(o: L7Outcomes, p: L7PathName): number | null {
  const b = baselineOf(p);
  if (b === null) return null;
  const a = o[p].metrics?.p99Us;
  const base = o[b].metrics?.p99Us;
  return a == null || base == null ? null : a - base;
}

function cell(v: number | null | undefined, digits: number): string {
  const r = round(v, digits);
  return r === null ? '-' : r.toFixed(digits);
}

export function formatL7Table(o: L7Outcomes, rate: number): string {
  const rows = [['path', 'req/s c=16', `p50 us @${rate}/s`, 'p90 us', 'p99 us', 'added p99 us', 'CPU s/1k req', 'idle RSS MB', 'MB/1k idle conns']];
  const notRun: string[] = [];
  for (const p of L7_PATHS) {
    const m = o[p].metrics;
    if (!m) {
      rows.push([p, '-', '-', '-', '-', '-', '-', '-', '-']);
      notRun.push(`${p}: not run: ${o[p].error ?? 'unknown'}`);
      continue;
    }
    const mb = (kb: number | null) => (kb === null ? null : kb / 1024);
    rows.push([p, cell(m.rps, 0), cell(m.p50Us, 0), cell(m.p90Us, 0), cell(m.p99Us, 0), p === 'direct' ? '0' : cell(addedP99(o, p), 0),
      cell(m.cpuSecPer1k, 3), cell(mb(m.idleRssKb), 1), cell(mb(m.rssKbPer1kConn), 2)]);
  }
  const notes = L7_PATHS.flatMap((p) => (o[p].metrics?.notes ?? []).map((n) => `${p}: ${n}`));
  return formatTable(rows) + [...notRun, ...notes].map((l) => `  ${l}\n`).join('');
}

/**
 * Where the machine's CPU went during each path's wrk step, per 1,000 requests: the proxy, the
 * mesh's other processes on the path, and the rest (wrk, the server, the kernel). With the machine
 * saturated, requests/s is the CPUs divided by the whole per-request cost, so for the waypoint
 * this says what it would reach if its own cost were zero on this machine. Pure.
 */
export function cpuBudgetLines(o: L7Outcomes, cpus: number): string[] {
  const lines: string[] = [];
  for (const p of L7_PATHS) {
    const m = o[p].metrics;
    if (!m || m.machineCpuSecPer1k === null || m.machineBusy === null) continue;
    const own = m.cpuSecPer1k ?? 0;
    const mesh = m.meshCpuSecPer1k ?? 0;
    const rest = Math.max(0, m.machineCpuSecPer1k - own - mesh);
    const parts = [`machine ${m.machineCpuSecPer1k.toFixed(3)} (busy ${Math.round(m.machineBusy * 100)} %)`];
    if (m.cpuSecPer1k !== null) parts.push(`${p === 'ambit' ? 'agents' : p} ${own.toFixed(3)}`);
    if (m.meshCpuSecPer1k !== null) parts.push(`agents ${mesh.toFixed(3)}`);
    parts.push(`rest (client, server, kernel) ${rest.toFixed(3)}`);
    let line = `${p}: ${parts.join(', ')}`;
    if (p === 'waypoint' && rest + mesh > 0) {
      const ceiling = (cpus * 1000) / (rest + mesh);
      const h = o.haproxy.metrics?.rps;
      line += `; with a waypoint costing nothing: at most ${Math.round(ceiling)} req/s${h ? ` (${(ceiling / h).toFixed(2)}x haproxy)` : ''}`;
    }
    lines.push(line);
  }
  return lines.length === 0 ? [] : ['CPU s per 1,000 requests during wrk:', ...lines.map((l) => `  ${l}`)];
}

/** Issue 10: waypoint requests/s at least half of haproxy's; the p99 the waypoint hop adds at most twice haproxy's. */
export function l7Targets(o: L7Outcomes): TargetCheck[] {
  const w = o.waypoint.metrics;
  const h = o.haproxy.metrics;
  const ratio = w?.rps == null || h?.rps == null || h.rps === 0 ? null : w.rps / h.rps;
  const addW = addedP99(o, 'waypoint');
  const addH = addedP99(o, 'haproxy');
  return [
    { name: 'waypoint requests/s vs haproxy', value: round(ratio, 2), unit: 'x', goal: '>= 0.5x', met: ratio === null ? null : ratio >= 0.5 },
    {
      name: 'p99 added by the waypoint hop', value: round(addW, 0), unit: 'us', goal: `<= 2x haproxy's ${addH === null ? '?' : Math.round(addH)} us`,
      met: addW === null || addH === null ? null : addW <= 2 * Math.max(0, addH),
    },
  ];
}
