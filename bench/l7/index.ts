/**
 * The L7 bench (issue 10): HTTP/1.1 keep-alive requests for a 1 kB response, pod to pod across two
 * nodes, over five paths in one run:
 *
 *   direct    client pod -> server pod (not enrolled)
 *   haproxy   client pod -> haproxy, http mode (proxy pod, node-2) -> server pod
 *   nginx     client pod -> nginx proxy_pass, upstream keepalive (same proxy pod) -> server pod
 *   node      client pod -> a bare node:http proxy, keep-alive agent (same proxy pod) -> server pod
 *   ambit     ambient pods, no waypoint: client -> agent ==HBONE==> agent -> server (the mesh's L4 cost)
 *   waypoint  ambient pods, the server's Service bound to a waypoint (pod on node-2):
 *             client -> agent ==HBONE==> waypoint ==HBONE==> agent -> server
 *
 * The server is the same program everywhere (haproxy returning a fixed 1 kB body, bench/l4/apps).
 * Per path: RSS of the proxy processes idle and per 1,000 idle keep-alive connections; requests/s
 * with wrk at c=16 and the proxies' CPU seconds per 1,000 requests meanwhile; p50/p90/p99 at a
 * fixed 1,000 requests/s from an open-loop generator (latency from each request's scheduled
 * time), in rounds alternating between the paths like bench/l4's latency step. Writes
 * bench/results/l7.json. The waypoint path is left out, with the reason, when the tree has no
 * waypoint program or it does not start: never a number it did not measure.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, installExitCleanup, type Cluster, type Pod } from '../../src/local/index.js';
import { BenchError, messageOf } from '../common/errors.js';
import { machineInfo, machineLine } from '../common/machine.js';
import { OutputTail, cpuSeconds, machineCpu, processTree, rssKb, stopChild, waitExit, waitForLine } from '../common/proc.js';
import { writeResults } from '../common/results.js';
import type { BenchOptions, BenchSuite, SuiteReport } from '../common/suite.js';
import { ensureTools } from '../common/tools.js';
import { APP_PORTS, startApps, waitPort, type Apps } from '../l4/apps.js';
import { schedule, summarizeRounds } from '../l4/interleave.js';
import { startAmbit, type AmbitMesh } from '../l4/mesh.js';
import { parseHeld, parseScriptJson, parseWrk } from '../l4/parse.js';
import { PROXY_PORTS, startProxies } from './proxies.js';
import { cpuBudgetLines, emptyL7, formatL7Table, l7Targets, type L7Metrics, type L7PathName } from './report.js';
import { HTTP_HOLD, OPEN_LOOP } from './scripts.js';
import { addWaypointObjects, startWaypoint, waypointMissing, type RunningWaypoint } from './waypoint.js';

export const L7_TOOLS = { wrk: 'wrk', haproxy: 'haproxy', nginx: 'nginx', iperf3: 'iperf3' } as const;

export interface L7Settings {
  readonly wrkSeconds: number;
  readonly wrkConnections: number;
  /** the fixed rate of the latency step, requests/s */
  readonly rate: number;
  readonly rounds: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  /** keep-alive connections of the open-loop generator */
  readonly loopConnections: number;
  /** idle keep-alive connections of the memory step */
  readonly idleConnections: number;
}

export const L7_FULL: L7Settings = { wrkSeconds: 5, wrkConnections: 16, rate: 1000, rounds: 3, warmupMs: 500, measureMs: 3000, loopConnections: 16, idleConnections: 1000 };
export const L7_QUICK: L7Settings = { wrkSeconds: 1, wrkConnections: 16, rate: 1000, rounds: 1, warmupMs: 300, measureMs: 1000, loopConnections: 16, idleConnections: 200 };

interface LivePath {
  readonly name: L7PathName;
  readonly client: Pod;
  readonly host: string;
  readonly port: number;
  /** the processes whose CPU and memory are the path's cost (none for direct) */
  readonly pids: () => number[];
  /** the mesh's other processes the path goes through (the waypoint's: the agents), for the CPU budget */
  readonly meshPids?: () => number[];
  /** run before each RSS reading (a full GC in the agents) */
  readonly beforeRss?: () => Promise<unknown>;
}

export interface L7Options extends BenchOptions {
  readonly settings?: L7Settings;
  readonly resultsDir?: string;
}

async function holdIdle(cluster: Cluster, p: LivePath, n: number): Promise<{ ok: number; failed: number; pending: number; errors: string[]; close: () => Promise<void> }> {
  const child = cluster.spawn(p.client, [process.execPath, '-e', HTTP_HOLD, p.host, String(p.port), String(n), '50', '30000'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const tail = new OutputTail(child);
  const close = async () => {
    child.stdin?.end();
    await waitExit(child, 'idle connections', 10_000).catch(() => undefined);
    await stopChild(child, 1000);
  };
  try {
    return { ...parseHeld(await waitForLine(child, /^HELD /, 'idle connections', 45_000)), close };
  } catch (e) {
    await close();
    throw new BenchError('idle connections', `${messageOf(e)} ${tail.last(3)}`.trim(), { cause: e });
  }
}

const sumRss = (pids: readonly number[]) => pids.reduce((a, p) => a + rssKb(p), 0);
const sumCpu = (pids: readonly number[]) => pids.reduce((a, p) => a + cpuSeconds(p), 0);

async function measureOwn(cluster: Cluster, p: LivePath, st: L7Settings, tools: Readonly<Record<string, string>>, m: L7Metrics, log: (l: string) => void): Promise<void> {
  const step = async (what: string, fn: () => Promise<void>) => {
    log(`${p.name}: ${what}`);
    try { await fn(); } catch (e) {
      m.notes.push(`${what}: ${messageOf(e)}`);
      log(`${p.name}: ${what} failed: ${messageOf(e)}`);
    }
  };
  if (p.pids().length > 0) {
    await step('memory', async () => {
      const rss = async () => { await p.beforeRss?.(); return sumRss(p.pids()); };
      m.idleRssKb = await rss();
      // one unmeasured round first: code paths compiled, pools and buffers grown once (bench/l4/README.md)
      await (await holdIdle(cluster, p, st.idleConnections)).close();
      const before = await rss();
      const held = await holdIdle(cluster, p, st.idleConnections);
      try {
        if (held.ok === 0) throw new BenchError('memory', `no connection held (${held.failed} failed, ${held.pending} stalled): ${held.errors.join(', ')}`);
        m.rssKbPer1kConn = (((await rss()) - before) * 1000) / held.ok;
        if (held.ok < st.idleConnections) m.notes.push(`memory: ${held.ok} of ${st.idleConnections} idle connections held (${held.errors.join(', ')})`);
      } finally {
        await held.close();
      }
    });
  }
  await step('requests/s (wrk)', async () => {
    // one unmeasured second first: a JIT-compiled proxy (node, the waypoint) is measured warm, like the native ones
    await cluster.exec(p.client, [tools.wrk!, `-c${st.wrkConnections}`, '-t2', '-d1s', `http://${p.host}:${p.port}/`], { timeoutMs: 31_000 });
    const pids = p.pids();
    const meshPids = p.meshPids?.() ?? [];
    const c0 = sumCpu(pids);
    const mesh0 = sumCpu(meshPids);
    const machine0 = machineCpu();
    const t0 = Date.now();
    const r = await cluster.exec(p.client, [tools.wrk!, `-c${st.wrkConnections}`, '-t2', `-d${st.wrkSeconds}s`, `http://${p.host}:${p.port}/`], { timeoutMs: (st.wrkSeconds + 30) * 1000 });
    const w = parseWrk(r.stdout);
    m.rps = w.requestsPerSec;
    if (w.errors > 0) m.notes.push(`wrk: ${w.errors} errors`);
    const machine1 = machineCpu();
    const reqs = w.requestsPerSec * Math.min(st.wrkSeconds, (Date.now() - t0) / 1000);
    if (reqs > 0) {
      if (pids.length > 0) m.cpuSecPer1k = ((sumCpu(pids) - c0) * 1000) / reqs;
      if (meshPids.length > 0) m.meshCpuSecPer1k = ((sumCpu(meshPids) - mesh0) * 1000) / reqs;
      m.machineCpuSecPer1k = ((machine1.busy - machine0.busy) * 1000) / reqs;
      const total = machine1.total - machine0.total;
      m.machineBusy = total > 0 ? (machine1.busy - machine0.busy) / total : null;
    }
  });
}

export async function runL7(opts: L7Options = {}): Promise<SuiteReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[bench l7] ${l}\n`));
  const st = opts.settings ?? (opts.quick ? L7_QUICK : L7_FULL);
  if (process.getuid?.() !== 0) throw new Error('bench l7: needs root (network namespaces, nftables)');
  const tools = await ensureTools(L7_TOOLS, log);
  const started = new Date();
  const outcomes: Record<L7PathName, { metrics: L7Metrics | null; error?: string }> = {
    direct: { metrics: null, error: 'not set up' }, haproxy: { metrics: null, error: 'not set up' }, nginx: { metrics: null, error: 'not set up' }, node: { metrics: null, error: 'not set up' },
    ambit: { metrics: null, error: 'not set up' }, waypoint: { metrics: null, error: 'not set up' },
  };
  const dir = mkdtempSync(join(tmpdir(), 'ambit-bench-l7-'));
  let cluster: Cluster | undefined;
  let uninstall: (() => void) | undefined;
  const stops: (() => Promise<void>)[] = [];
  let waypointRequests: { before: number; after?: number | undefined } | undefined;
  try {
    log('building a 2-node cluster');
    cluster = await createCluster({ nodes: 2 });
    uninstall = installExitCleanup(cluster);
    const c = cluster;
    const plainNs = 'bench-l7-plain';
    const meshNs = 'bench-l7-mesh';
    const pc = await c.addPod({ name: 'client-plain', namespace: plainNs, node: 'node-1', labels: { app: 'client' }, serviceAccount: 'client' });
    const ps = await c.addPod({ name: 'server-plain', namespace: plainNs, node: 'node-2', labels: { app: 'server' }, serviceAccount: 'server' });
    // the L7 peers run where the waypoint runs: their own pod on node-2
    const proxyPod = await c.addPod({ name: 'proxy', namespace: plainNs, node: 'node-2', labels: { app: 'proxy' }, serviceAccount: 'proxy' });
    const mc = await c.addPod({ name: 'client-mesh', namespace: meshNs, node: 'node-1', labels: { app: 'client' }, serviceAccount: 'client' });
    const msv = await c.addPod({ name: 'server-mesh', namespace: meshNs, node: 'node-2', labels: { app: 'server' }, serviceAccount: 'server' });
    c.setNamespaceLabels(meshNs, { 'istio.io/dataplane-mode': 'ambient' });
    const missing = waypointMissing();
    const wpObjects = missing === undefined ? await addWaypointObjects(c, { namespace: meshNs, node: 'node-2', server: msv, port: APP_PORTS.http }) : undefined;
    if (missing !== undefined) outcomes.waypoint = { metrics: null, error: `${missing}: the waypoint path needs the waypoint program (issue 10)` };

    const apps: Apps[] = [await startApps(c, ps, dir, tools), await startApps(c, msv, dir, tools)];
    stops.push(async () => { await Promise.all(apps.map((a) => a.stop())); });
    const live: LivePath[] = [];
    outcomes.direct = { metrics: emptyL7() };
    live.push({ name: 'direct', client: pc, host: ps.ip, port: APP_PORTS.http, pids: () => [] });
    try {
      const px = await startProxies({ cluster: c, pod: proxyPod, dir, tools, upstream: `${ps.ip}:${APP_PORTS.http}` });
      stops.push(() => px.stop());
      outcomes.haproxy = { metrics: emptyL7() };
      outcomes.nginx = { metrics: emptyL7() };
      outcomes.node = { metrics: emptyL7() };
      live.push({ name: 'haproxy', client: pc, host: proxyPod.ip, port: PROXY_PORTS.haproxy, pids: () => [px.pids.haproxy] });
      live.push({ name: 'nginx', client: pc, host: proxyPod.ip, port: PROXY_PORTS.nginx, pids: () => processTree(px.pids.nginx) });
      live.push({ name: 'node', client: pc, host: proxyPod.ip, port: PROXY_PORTS.node, pids: () => [px.pids.node] });
    } catch (e) {
      outcomes.haproxy = outcomes.nginx = outcomes.node = { metrics: null, error: messageOf(e) };
    }
    let mesh: AmbitMesh | undefined;
    try {
      mesh = await startAmbit({ cluster: c, client: mc, server: msv, dir, log, ...(wpObjects ? { extraYaml: wpObjects.yaml } : {}) });
      stops.push(() => mesh!.stop());
      outcomes.ambit = { metrics: emptyL7() };
      const m = mesh;
      live.push({ name: 'ambit', client: mc, host: msv.ip, port: APP_PORTS.http, pids: () => m.agentPids(), beforeRss: () => m.collectGarbage() });
    } catch (e) {
      outcomes.ambit = { metrics: null, error: messageOf(e) };
      if (wpObjects) outcomes.waypoint = { metrics: null, error: `no mesh: ${messageOf(e)}` };
    }
    if (mesh && wpObjects) {
      let wp: RunningWaypoint | undefined;
      try {
        wp = await startWaypoint({ cluster: c, mesh, pod: wpObjects.pod, log, ...(opts.profileDir ? { profileDir: opts.profileDir } : {}) });
        stops.push(() => wp!.stop());
        await waitPort(c, mc, wpObjects.service.clusterIP, APP_PORTS.http, 'waypoint path', 30_000);
        waypointRequests = { before: await wp.requests() };
        outcomes.waypoint = { metrics: emptyL7() };
        const pid = wp.pid;
        const agents = mesh;
        live.push({ name: 'waypoint', client: mc, host: wpObjects.service.clusterIP, port: APP_PORTS.http, pids: () => [pid], meshPids: () => agents.agentPids() });
      } catch (e) {
        outcomes.waypoint = { metrics: null, error: messageOf(e) };
        log(`waypoint path failed: ${messageOf(e)}`);
      }
      // proof the waypoint carried the path's requests, checked after the measurements
      if (wp) {
        const w = wp;
        stops.unshift(async () => { if (waypointRequests) waypointRequests.after = await w.requests().catch(() => undefined); });
      }
    }

    for (const p of live) await measureOwn(c, p, st, tools, outcomes[p.name].metrics!, log);

    // latency at a fixed rate, alternating between the paths
    const rounds = new Map<L7PathName, number[][]>(live.map((p) => [p.name, []]));
    log(`latency: ${st.rounds} rounds of ${st.measureMs} ms at ${st.rate}/s over ${live.map((p) => p.name).join(', ')}`);
    for (const order of schedule(live, st.rounds)) {
      for (const p of order) {
        const m = outcomes[p.name].metrics!;
        try {
          const r = await c.exec(p.client, [process.execPath, '-e', OPEN_LOOP, p.host, String(p.port), String(st.rate), String(st.warmupMs), String(st.measureMs), String(st.loopConnections)],
            { timeoutMs: st.warmupMs + st.measureMs + 40_000 });
          const line = r.stdout.split('\n').find((l) => l.startsWith('OPEN '));
          if (!line) throw new BenchError('latency', `no result (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`);
          const res = parseScriptJson<{ samples: number[]; failed: number; errors: Record<string, number>; lateSends: number }>('latency', line.slice(5));
          rounds.get(p.name)!.push(res.samples);
          // the generator itself fell behind its schedule: the machine, not the path, set the pace
          if (res.lateSends > (st.rate * (st.warmupMs + st.measureMs)) / 1000 / 100) m.notes.push(`latency: the generator sent ${res.lateSends} requests late (client-bound round)`);
          if (res.failed > 0) m.notes.push(`latency: ${res.failed} failed (${JSON.stringify(res.errors)})`);
        } catch (e) {
          m.notes.push(`latency: ${messageOf(e)}`);
        }
      }
    }
    for (const [name, rs] of rounds) {
      const s = summarizeRounds(rs);
      const m = outcomes[name].metrics!;
      if (s.n === 0) continue;
      m.p50Us = s.p50; m.p90Us = s.p90; m.p99Us = s.p99;
      log(`latency: ${name} p50 ${s.p50} p90 ${s.p90} p99 ${s.p99} us over ${s.n}`);
    }
    if (mesh && outcomes.ambit.metrics) {
      const n = await mesh.tunnelled().catch(() => 0);
      if (n < 1) outcomes.ambit = { metrics: null, error: 'the server\'s agent counted no mutual_tls connection: traffic did not go over HBONE' };
    }
  } finally {
    for (const s of stops) await s().catch((e: unknown) => log(`cleanup: ${messageOf(e)}`));
    if (cluster) await cluster.destroy().catch((e: unknown) => { log(`cleanup: ${messageOf(e)}`); cluster?.destroySync(); });
    uninstall?.();
    rmSync(dir, { recursive: true, force: true });
  }
  if (outcomes.waypoint.metrics && waypointRequests) {
    const carried = (waypointRequests.after ?? 0) - waypointRequests.before;
    const expected = (outcomes.waypoint.metrics.rps ?? 0) * st.wrkSeconds * 0.9;
    if (!(carried >= expected && carried > 0)) {
      outcomes.waypoint = { metrics: null, error: `the waypoint counted ${carried} requests, fewer than the path carried: traffic bypassed it` };
    } else {
      outcomes.waypoint.metrics.notes.push(`${carried} requests counted by the waypoint (istio_requests_total)`);
    }
  }
  const machine = machineInfo();
  const table = `${machineLine(machine)}\n${formatL7Table(outcomes, st.rate)}${cpuBudgetLines(outcomes, machine.cpus).map((l) => `${l}\n`).join('')}`;
  const targets = l7Targets(outcomes);
  const resultsPath = writeResults('l7', {
    suite: 'l7', started: started.toISOString(), finished: new Date().toISOString(), machine, settings: st,
    units: {
      rps: 'requests/s (wrk, c=16, keep-alive)', p50Us: 'microseconds at a fixed rate, open loop', cpuSecPer1k: 'CPU seconds of the proxy processes per 1,000 requests',
      meshCpuSecPer1k: 'CPU seconds of the mesh\'s other processes on the path (the waypoint\'s: the agents) per 1,000 requests',
      machineCpuSecPer1k: 'busy CPU seconds of the whole machine per 1,000 requests', machineBusy: 'busy share of all CPUs during wrk, 0..1',
      idleRssKb: 'kB', rssKbPer1kConn: 'kB per 1,000 idle keep-alive connections',
    },
    paths: outcomes, targets,
  }, opts.resultsDir);
  return { name: 'l7', table, targets, resultsPath };
}

export const l7Suite: BenchSuite = {
  name: 'l7',
  description: 'HTTP keep-alive, 1 kB responses: direct vs haproxy (http mode) vs nginx vs a bare node:http proxy vs ambit L4 vs the waypoint',
  run: (opts) => runL7(opts),
};

export default l7Suite;
