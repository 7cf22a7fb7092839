/**
 * The L4 data-plane bench: pod to pod across two nodes, over four paths side by side.
 *
 *   direct   client pod -> server pod IP (namespace not enrolled)
 *   stunnel  client -> stunnel4 (client pod) ==mTLS 1.3==> stunnel4 (server pod) -> 127.0.0.1
 *   haproxy  client -> haproxy, TCP mode (client pod) ==mTLS 1.3==> haproxy (server pod) -> 127.0.0.1
 *   ambit    both pods ambient: captured in the client pod, HBONE between the two node agents
 *
 * The selected paths are started one after the other, each followed at once by the RSS of its
 * proxies per extra idle connection (on fresh proxies), and then stay up together. Per path, one
 * path at a time: single-stream throughput (iperf3), requests/s at c=16 (wrk against haproxy's
 * fixed 1 kB body), new connections/s. Last, 1 kB request/response latency at c=1 (p50/p90),
 * alternating between all the paths in rounds so they are compared under the same background
 * load (latency.ts). The servers are the same processes for every path of a pod pair; stunnel and
 * haproxy present the same certificates. Prints the table (with the CPU model) and writes
 * bench/results/l4.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, installExitCleanup, type Cluster, type Pod } from '../../src/local/index.js';
import { messageOf } from '../common/errors.js';
import { machineInfo, machineLine } from '../common/machine.js';
import { writeResults } from '../common/results.js';
import type { BenchOptions, BenchSuite, SuiteReport } from '../common/suite.js';
import { ensureTools } from '../common/tools.js';
import { APP_PORTS, startApps, type Apps } from './apps.js';
import { issuePairFiles, type PairFiles } from './certs.js';
import { startHaproxyPair } from './haproxy-pair.js';
import { measureLatencyInterleaved } from './latency.js';
import { FULL, QUICK, emptyMetrics, measurePath, type MeasureSettings, type PathTarget, type StepName } from './measure.js';
import { startAmbit, type AmbitMesh } from './mesh.js';
import { PATHS, formatL4Table, formatTargets, l4Targets, type Outcomes, type PathName, type PathOutcome } from './report.js';
import { startStunnelPair } from './stunnel.js';

export const L4_TOOLS = { iperf3: 'iperf3', wrk: 'wrk', stunnel4: 'stunnel4', haproxy: 'haproxy' } as const;
const AMBIENT = 'istio.io/dataplane-mode';

export interface L4Options extends BenchOptions {
  /** override the measurement settings (tests, experiments) */
  readonly settings?: MeasureSettings;
  /** only these paths; default all four */
  readonly paths?: readonly PathName[];
  /** where l4.json goes; default bench/results */
  readonly resultsDir?: string;
  /** run only these measurements (experiments); default all five */
  readonly only?: readonly StepName[];
}

export interface L4Report extends SuiteReport {
  readonly outcomes: Outcomes;
}

interface Pair { client: Pod; server: Pod }

/** A path that started, with what its measurements need. */
interface LivePath {
  readonly name: PathName;
  readonly client: Pod;
  readonly target: PathTarget;
  readonly memoryPids: () => readonly number[];
  readonly jsPids?: () => readonly number[];
  readonly beforeRss?: () => Promise<unknown>;
}

export async function runL4(opts: L4Options = {}): Promise<L4Report> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[bench l4] ${l}\n`));
  const settings = opts.settings ?? (opts.quick ? QUICK : FULL);
  const wanted = new Set<PathName>(opts.paths ?? PATHS);
  if (process.getuid?.() !== 0) throw new Error('bench l4: needs root (network namespaces, nftables)');
  const tools = await ensureTools(L4_TOOLS, log);
  const started = new Date();
  const outcomes: Record<PathName, PathOutcome> = {
    direct: { metrics: null, error: 'not selected' },
    stunnel: { metrics: null, error: 'not selected' },
    haproxy: { metrics: null, error: 'not selected' },
    ambit: { metrics: null, error: 'not selected' },
  };

  const only = opts.only ? new Set<StepName>(opts.only) : undefined;
  const dir = mkdtempSync(join(tmpdir(), 'ambit-bench-l4-'));
  let cluster: Cluster | undefined;
  let uninstall: (() => void) | undefined;
  const apps: Apps[] = [];
  // stop functions of the started paths, run in reverse order in the finally block
  const stops: (() => Promise<void>)[] = [];
  try {
    log('building a 2-node cluster');
    cluster = await createCluster({ nodes: 2 });
    uninstall = installExitCleanup(cluster);
    const c = cluster;
    // Two pod pairs on the same two nodes: one namespace stays out of the mesh (direct, stunnel),
    // the other is ambient (ambit). Same node placement, same server programs.
    const pair = async (ns: string): Promise<Pair> => ({
      client: await c.addPod({ name: `client-${ns}`, namespace: `bench-${ns}`, node: 'node-1', labels: { app: 'client' }, serviceAccount: 'client' }),
      server: await c.addPod({ name: `server-${ns}`, namespace: `bench-${ns}`, node: 'node-2', labels: { app: 'server' }, serviceAccount: 'server' }),
    });
    const plain = await pair('plain');
    const mesh = await pair('mesh');
    c.setNamespaceLabels('bench-mesh', { [AMBIENT]: 'ambient' });
    apps.push(await startApps(c, plain.server, dir, tools));
    if (wanted.has('ambit')) apps.push(await startApps(c, mesh.server, dir, tools));

    // 1. Every selected path up, one after the other, and each proxied path's memory measured
    //    right after its start, on proxies that have carried only their probe (the other tests
    //    leave garbage behind; and read after the other paths' steps, with the agents idle for
    //    ~10 s, ambit gave negative kB per connection in two of three runs). The paths
    //    then stay up together: direct and stunnel use the bench-plain pods, ambit the bench-mesh
    //    pods, so they do not interfere, and a memory reading covers only its path's processes.
    //    A path that cannot start gets its error; the others go on.
    const live: LivePath[] = [];
    const measure = async (p: LivePath, steps: readonly StepName[]) => {
      const picked = new Set(steps.filter((s) => !only || only.has(s)));
      if (picked.size === 0) return;
      await measurePath(p.name, {
        only: picked, cluster: c, client: p.client, target: p.target, tools, settings, memoryPids: p.memoryPids, log,
        ...(p.beforeRss ? { beforeRss: p.beforeRss } : {}), ...(p.jsPids ? { jsPids: p.jsPids } : {}),
      }, outcomes[p.name].metrics!);
    };
    const add = async (p: LivePath) => {
      live.push(p);
      outcomes[p.name] = { metrics: emptyMetrics() };
      await measure(p, ['memory']);
    };
    let am: AmbitMesh | undefined;
    if (wanted.has('direct')) {
      await add({ name: 'direct', client: plain.client, target: { host: plain.server.ip, ports: APP_PORTS }, memoryPids: () => [] });
    }
    let files: PairFiles | undefined;
    if (wanted.has('stunnel') || wanted.has('haproxy')) files = await issuePairFiles({ client: plain.client, server: plain.server, dir });
    if (wanted.has('stunnel') && files) {
      try {
        const st = await startStunnelPair({ cluster: c, client: plain.client, server: plain.server, dir, stunnel: tools.stunnel4!, files });
        stops.push(() => st.stop());
        await add({ name: 'stunnel', client: plain.client, target: st.target, memoryPids: st.pids });
      } catch (e) {
        outcomes.stunnel = { metrics: null, error: messageOf(e) };
        log(`stunnel path failed: ${messageOf(e)}`);
      }
    }
    if (wanted.has('haproxy') && files) {
      try {
        const hp = await startHaproxyPair({ cluster: c, client: plain.client, server: plain.server, dir, haproxy: tools.haproxy!, files });
        stops.push(() => hp.stop());
        await add({ name: 'haproxy', client: plain.client, target: hp.target, memoryPids: hp.pids });
      } catch (e) {
        outcomes.haproxy = { metrics: null, error: messageOf(e) };
        log(`haproxy path failed: ${messageOf(e)}`);
      }
    }
    let hboneBefore = 0;
    if (wanted.has('ambit')) {
      try {
        const up = await startAmbit({
          cluster: c, client: mesh.client, server: mesh.server, dir, log, ...(opts.profileDir ? { profileDir: opts.profileDir } : {}),
        });
        stops.push(() => up.stop());
        hboneBefore = await up.tunnelled();
        am = up;
        await add({ name: 'ambit', client: mesh.client, target: up.target, memoryPids: up.agentPids, jsPids: up.agentPids, beforeRss: up.collectGarbage });
      } catch (e) {
        outcomes.ambit = { metrics: null, error: messageOf(e) };
        log(`ambit path failed: ${messageOf(e)}`);
      }
    }

    // 2. The rest of each path's own measurements, one path at a time.
    for (const p of live) await measure(p, ['throughput', 'rps', 'conn']);

    // 3. Latency, alternating between all the paths in rounds, so they share the conditions.
    let hboneBeforeLatency: number | undefined;
    let ambitLatencyOk = false;
    if (!only || only.has('latency')) {
      if (am) {
        try { hboneBeforeLatency = await am.tunnelled(); } catch (e) { log(`ambit: metrics before latency: ${messageOf(e)}`); }
      }
      const lat = await measureLatencyInterleaved({ cluster: c, paths: live, settings, log });
      for (const [name, r] of lat) {
        const m = outcomes[name].metrics;
        if (!m) continue;
        if (r.ok) {
          m.rrP50Us = r.summary.p50;
          m.rrP90Us = r.summary.p90;
          m.rrP99Us = r.summary.p99;
          m.rrRoundP50Us = r.summary.roundP50s;
          if (name === 'ambit') ambitLatencyOk = true;
        } else {
          m.notes.push(`latency (1 kB rr, c=1): ${r.error}`);
        }
      }
    }

    // 4. Every ambit measurement's connections must have gone through the tunnel, not around it,
    //    the latency connection included.
    if (am && outcomes.ambit.metrics) {
      try {
        const now = await am.tunnelled();
        const carried = now - hboneBefore;
        outcomes.ambit.metrics.notes.push(`${carried} connections carried over HBONE (mutual_tls) during the measurements`);
        if (carried === 0) throw new Error('no connection of the measurements went over HBONE');
        if (ambitLatencyOk && hboneBeforeLatency !== undefined && now - hboneBeforeLatency < 1) {
          throw new Error('the latency connection did not go over HBONE');
        }
      } catch (e) {
        outcomes.ambit = { metrics: null, error: messageOf(e) };
        log(`ambit path failed: ${messageOf(e)}`);
      }
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch((e: unknown) => { log(`cleanup: ${messageOf(e)}`); });
    await Promise.all(apps.map((a) => a.stop().catch(() => undefined)));
    if (cluster) await cluster.destroy().catch((e: unknown) => { log(`cleanup: ${messageOf(e)}`); cluster?.destroySync(); });
    uninstall?.();
    rmSync(dir, { recursive: true, force: true });
  }

  const machine = machineInfo();
  const table = `${machineLine(machine)}\n${formatL4Table(outcomes)}`;
  const targets = l4Targets(outcomes);
  const resultsPath = writeResults('l4', {
    suite: 'l4',
    started: started.toISOString(),
    finished: new Date().toISOString(),
    machine,
    settings,
    units: {
      throughputGbps: 'Gbit/s', rrP50Us: 'microseconds', rrP90Us: 'microseconds', rrP99Us: 'microseconds', rps: 'requests/s', connPerSec: 'connections/s',
      cpuUsPerConn: 'CPU microseconds of the proxy processes per new connection (all threads)', jsUsPerConn: 'of that, the JS threads of Node processes',
      memKbPerConn: 'kB RSS of the proxy processes per extra idle connection',
    },
    paths: outcomes,
    targets,
  }, opts.resultsDir);
  return { name: 'l4', table: `${table}\n${formatTargets(targets)}`, targets, resultsPath, outcomes };
}

export const l4Suite: BenchSuite = {
  name: 'l4',
  description: 'L4 data plane pod to pod across two nodes: direct TCP vs stunnel4 mTLS vs haproxy mTLS (TCP mode) vs ambit HBONE',
  run: (opts) => runL4(opts),
};

export default l4Suite;
