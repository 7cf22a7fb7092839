/**
 * The restart step (issue 8): a steady request loop, one request every 20 ms from the client pod
 * (node-1) to the server pod (node-2), each on a new connection through both agents, while first
 * the server's and then the client's node agent is replaced. Reports the success rate, the
 * longest time between two successful responses, and per replacement how long it took and the
 * failures sent during it. Writes bench/results/restart.json.
 *
 * How (bench/l4/mesh.ts ReplaceMode): where the agents have the handover (issue 8), each agent is
 * replaced twice, first by `restart` (SIGTERM and a new process at once; the old one serves until
 * the new one took over) and then by `overlap` (a rolling replacement: the new one first); without
 * it, once each by a plain restart (SIGTERM, wait until it is gone, start a new one).
 */
import { machineInfo, machineLine } from '../common/machine.js';
import { startLoad } from '../common/load.js';
import { writeResults } from '../common/results.js';
import type { BenchOptions, BenchSuite, SuiteReport } from '../common/suite.js';
import { APP_PORTS } from '../l4/apps.js';
import { withAmbitPair } from '../l4/fixture.js';
import { handoverAvailable, type Replacement, type ReplaceMode } from '../l4/mesh.js';
import { formatRestart, restartTargets, summarizeRestart } from './report.js';

/** one request every INTERVAL_MS */
export const INTERVAL_MS = 20;

export interface RestartOptions extends BenchOptions {
  /** the replacements, in order; default: see the file comment */
  readonly modes?: readonly ReplaceMode[];
  readonly resultsDir?: string;
}

export async function runRestart(opts: RestartOptions = {}): Promise<SuiteReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[bench restart] ${l}\n`));
  const handover = handoverAvailable();
  const modes = opts.modes ?? (handover ? ['restart', 'overlap'] as const : ['restart'] as const);
  // steady state before the first replacement and between/after them, ms
  const settleMs = opts.quick ? 1500 : 3000;
  const started = new Date();
  const result = await withAmbitPair('restart', log, async ({ cluster, client, server, mesh, dir }) => {
    const load = await startLoad({ cluster, client, host: server.ip, port: APP_PORTS.http, ratePerSec: 1000 / INTERVAL_MS, keepAliveShare: 0, dir });
    const replacements: Replacement[] = [];
    let loadResult;
    try {
      await delay(settleMs);
      for (const [mode, node] of modes.flatMap((m) => [[m, server.node], [m, client.node]] as const)) {
        log(`replacing the agent of ${node} (${handover ? mode : 'plain restart: this tree has no agent handover'})`);
        const r = await mesh.replaceAgent(node, mode);
        log(`${node}: old agent gone after ${r.oldGoneMs ?? '-'} ms, new one ready after ${r.newReadyMs} ms`);
        replacements.push(r);
        await delay(settleMs);
      }
    } finally {
      loadResult = await load.stop();
    }
    return summarizeRestart(loadResult, replacements);
  });
  const machine = machineInfo();
  const targets = restartTargets(result);
  const resultsPath = writeResults('restart', {
    suite: 'restart', started: started.toISOString(), finished: new Date().toISOString(), machine, handover, modes, intervalMs: INTERVAL_MS, settleMs, ...result, targets,
  }, opts.resultsDir);
  return { name: 'restart', table: `${machineLine(machine)}\n${formatRestart(result, INTERVAL_MS)}`, targets, resultsPath };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export const restartSuite: BenchSuite = {
  name: 'restart',
  description: 'success rate and longest gap of a request every 20 ms while each node agent is replaced',
  run: (opts) => runRestart(opts),
};

export default restartSuite;
