/** `ambit down`: remove what crashed runs left behind (namespaces, their processes, mesh programs, a stale state file). */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupStale, pidAlive } from '../local/index.js';
import { configDir, readState, removeState, type UpState } from './state-file.js';

export interface DownResult {
  readonly removedNetns: readonly string[];
  readonly removedStateFile: boolean;
  /** mesh programs of a dead `ambit up` that were still running and got SIGKILL ("agent node-1 (pid 123)") */
  readonly stoppedPrograms: readonly string[];
  /** pid of an `ambit up` that is still running (left alone) */
  readonly running?: number;
}

/**
 * True when `pid` still runs an `ambit` program: the pid of a dead run may have been reused by
 * an unrelated process, which must not be killed.
 */
function isAmbitProgram(pid: number, name: string): boolean {
  let cmdline: string;
  try { cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return false; }
  const args = cmdline.split('\0');
  // "agent node-1", "waypoint default/waypoint", "control plane": the subcommand each runs
  const sub = name.startsWith('agent') ? 'agent' : name.startsWith('waypoint') ? 'waypoint' : 'control';
  return args.some((a) => /[\\/]cli[\\/]main\.[jt]s$|[\\/]ambit$/.test(a)) && args.includes(sub);
}

function stopOrphans(state: UpState): string[] {
  const stopped: string[] = [];
  for (const p of state.programs ?? []) {
    if (!Number.isInteger(p.pid) || p.pid <= 1 || !isAmbitProgram(p.pid, p.name)) continue;
    try {
      // each program leads its own process group (spawned detached)
      process.kill(-p.pid, 'SIGKILL');
      stopped.push(`${p.name} (pid ${p.pid})`);
    } catch { /* gone meanwhile */ }
  }
  return stopped;
}

export async function runDown(dir: string): Promise<DownResult> {
  let state;
  try { state = readState(dir); } catch { state = undefined; removeState(dir); }
  if (state && pidAlive(state.pid)) {
    return { removedNetns: await cleanupStale(), removedStateFile: false, stoppedPrograms: [], running: state.pid };
  }
  const stoppedPrograms = state ? stopOrphans(state) : [];
  const removedNetns = await cleanupStale();
  const removedStateFile = state !== undefined;
  if (state) {
    removeState(dir);
    rmSync(join(configDir(dir), 'cluster.yaml'), { force: true });
  }
  return { removedNetns, removedStateFile, stoppedPrograms };
}
