/**
 * Runs the L4 bench alone:
 *   node --import tsx bench/l4/main.ts [--quick] [--paths direct,stunnel,haproxy,ambit] [--profile <dir>]
 *     [--only memory,throughput,latency,rps,conn]
 * (or `node dist/bench/l4/main.js` after the build). Exit code 0 even when a target is missed:
 * the numbers are the result; 1 when the bench itself could not run.
 */
import { resolve } from 'node:path';
import { messageOf } from '../common/errors.js';
import { runL4 } from './index.js';
import { STEPS, type StepName } from './measure.js';
import { PATHS, type PathName } from './report.js';

function parsePaths(v: string | undefined): PathName[] | undefined {
  if (v === undefined) return undefined;
  const names = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!(PATHS as readonly string[]).includes(n)) throw new Error(`--paths: "${n}" is not one of ${PATHS.join(', ')}`);
  }
  return names as PathName[];
}

function parseOnly(v: string | undefined): StepName[] | undefined {
  if (v === undefined) return undefined;
  const names = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!(STEPS as readonly string[]).includes(n)) throw new Error(`--only: "${n}" is not one of ${STEPS.join(', ')}`);
  }
  return names as StepName[];
}

async function main(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const i = argv.indexOf('--paths');
  const paths = parsePaths(i >= 0 ? argv[i + 1] : undefined);
  const j = argv.indexOf('--profile');
  const profileDir = j >= 0 ? argv[j + 1] : undefined;
  if (j >= 0 && (!profileDir || profileDir.startsWith('--'))) throw new Error('--profile needs a directory');
  const k = argv.indexOf('--only');
  const only = parseOnly(k >= 0 ? argv[k + 1] : undefined);
  const r = await runL4({ quick, ...(only ? { only } : {}), ...(paths ? { paths } : {}), ...(profileDir ? { profileDir: resolve(profileDir) } : {}) });
  process.stdout.write(`\nL4 data plane, pod to pod across two nodes\n\n${r.table}\nresults: ${r.resultsPath}\n`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`bench l4: ${messageOf(e)}\n`);
  process.exitCode = 1;
});
