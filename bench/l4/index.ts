/**
 * The L4 data-plane bench: pod to pod across two nodes, over three paths side by side.
 *
 *   direct   client pod -> server pod IP (namespace not enrolled)
 *   stunnel  client -> stunnel4 (client pod) ==mTLS 1.3==> stunnel4 (server pod) -> 127.0.0.1
 *   ambit    both pods ambient: captured in the client pod, HBONE between the two node agents
 *
 * Per path: single-stream throughput (iperf3), 1 kB request/response latency at c=1 (p50/p90),
 * requests/s at c=16 (wrk against haproxy's fixed 1 kB body), new connections/s, and RSS of the
 * path's proxies per extra idle connection. The servers are the same processes for every path
 * of a pod pair. Prints the table and writes bench/results/l4.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, installExitCleanup, type Cluster, type Pod } from '../../src/local/index.js';
import { messageOf } from '../common/errors.js';
import { writeResults } from '../common/results.js';
import type { BenchOptions, BenchSuite, SuiteReport } from '../common/suite.js';
import { ensureTools } from '../common/tools.js';
import { startApps, type Apps } from './apps.js';
import { FULL, QUICK, measurePath, type MeasureSettings, type PathTarget, type StepName } from './measure.js';
import { startAmbit } from './mesh.js';
import { formatL4Table, formatTargets, l4Targets, type Outcomes, type PathName, type PathOutcome } from './report.js';
import { startStunnelPair } from './stunnel.js';

export const L4_TOOLS = { iperf3: 'iperf3', wrk: 'wrk', stunnel4: 'stunnel4', haproxy: 'haproxy' } as const;
const AMBIENT = 'istio.io/dataplane-mode';

export interface L4Options extends BenchOptions {
  /** override the measurement settings (tests, experiments) */
  readonly settings?: MeasureSettings;
  /** only these paths; default all three */
  readonly paths?: readonly PathName[];
  /** where l4.json goes; default bench/results */
  readonly resultsDir?: string;
  /** run only these measurements (experiments); default all five */
  readonly only?: readonly StepName[];
  /** V8 CPU profiles of the agents go here (one .cpuprofile per agent); default none */
  readonly profileDir?: string;
}

export interface L4Report extends SuiteReport {
  readonly outcomes: Outcomes;
}

interface Pair { client: Pod; server: Pod }

export async function runL4(opts: L4Options = {}): Promise<L4Report> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[bench l4] ${l}\n`));
  const settings = opts.settings ?? (opts.quick ? QUICK : FULL);
  const wanted = new Set<PathName>(opts.paths ?? ['direct', 'stunnel', 'ambit']);
  if (process.getuid?.() !== 0) throw new Error('bench l4: needs root (network namespaces, nftables)');
  const tools = await ensureTools(L4_TOOLS, log);
  const started = new Date();
  const outcomes: Record<PathName, PathOutcome> = {
    direct: { metrics: null, error: 'not selected' },
    stunnel: { metrics: null, error: 'not selected' },
    ambit: { metrics: null, error: 'not selected' },
  };

  const dir = mkdtempSync(join(tmpdir(), 'ambit-bench-l4-'));
  let cluster: Cluster | undefined;
  let uninstall: (() => void) | undefined;
  const apps: Apps[] = [];
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

    const run = async (name: PathName, client: Pod, target: PathTarget, memoryPids: () => readonly number[], beforeRss?: () => Promise<unknown>) => {
      outcomes[name] = {
        metrics: await measurePath(name, { ...(opts.only ? { only: new Set(opts.only) } : {}), cluster: c, client, target, tools, settings, memoryPids, log, ...(beforeRss ? { beforeRss } : {}) }),
      };
    };

    if (wanted.has('direct')) {
      await run('direct', plain.client, { host: plain.server.ip, ports: { iperf: 5201, echo: 7000, http: 8080 } }, () => []);
    }
    if (wanted.has('stunnel')) {
      try {
        const st = await startStunnelPair({ cluster: c, client: plain.client, server: plain.server, dir, stunnel: tools.stunnel4! });
        try { await run('stunnel', plain.client, st.target, st.pids); } finally { await st.stop(); }
      } catch (e) {
        outcomes.stunnel = { metrics: null, error: messageOf(e) };
        log(`stunnel path failed: ${messageOf(e)}`);
      }
    }
    if (wanted.has('ambit')) {
      try {
        const am = await startAmbit({
          cluster: c, client: mesh.client, server: mesh.server, dir, log, ...(opts.profileDir ? { profileDir: opts.profileDir } : {}),
        });
        try {
          const before = await am.tunnelled();
          await run('ambit', mesh.client, am.target, am.agentPids, am.collectGarbage);
          // Every measurement's connections must have gone through the tunnel, not around it.
          const carried = (await am.tunnelled()) - before;
          outcomes.ambit.metrics?.notes.push(`${carried} connections carried over HBONE (mutual_tls) during the measurements`);
          if (carried === 0) throw new Error('no connection of the measurements went over HBONE');
        } finally { await am.stop(); }
      } catch (e) {
        outcomes.ambit = { metrics: null, error: messageOf(e) };
        log(`ambit path failed: ${messageOf(e)}`);
      }
    }
  } finally {
    await Promise.all(apps.map((a) => a.stop().catch(() => undefined)));
    if (cluster) await cluster.destroy().catch((e: unknown) => { log(`cleanup: ${messageOf(e)}`); cluster?.destroySync(); });
    uninstall?.();
    rmSync(dir, { recursive: true, force: true });
  }

  const table = formatL4Table(outcomes);
  const targets = l4Targets(outcomes);
  const resultsPath = writeResults('l4', {
    suite: 'l4',
    started: started.toISOString(),
    finished: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', kernel: release(), node: process.version },
    settings,
    units: {
      throughputGbps: 'Gbit/s', rrP50Us: 'microseconds', rrP90Us: 'microseconds', rps: 'requests/s', connPerSec: 'connections/s',
      memKbPerConn: 'kB RSS of the proxy processes per extra idle connection',
    },
    paths: outcomes,
    targets,
  }, opts.resultsDir);
  return { name: 'l4', table: `${table}\n${formatTargets(targets)}`, targets, resultsPath, outcomes };
}

export const l4Suite: BenchSuite = {
  name: 'l4',
  description: 'L4 data plane pod to pod across two nodes: direct TCP vs stunnel4 mTLS vs ambit HBONE',
  run: (opts) => runL4(opts),
};

export default l4Suite;
