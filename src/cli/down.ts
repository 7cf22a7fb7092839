/** `ambit down`: remove what crashed runs left behind (namespaces, their processes, a stale state file). */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupStale, pidAlive } from '../local/index.js';
import { configDir, readState, removeState } from './state-file.js';

export interface DownResult {
  readonly removedNetns: readonly string[];
  readonly removedStateFile: boolean;
  /** pid of an `ambit up` that is still running (left alone) */
  readonly running?: number;
}

export async function runDown(dir: string): Promise<DownResult> {
  const removedNetns = await cleanupStale();
  let state;
  try { state = readState(dir); } catch { state = undefined; removeState(dir); }
  if (state && pidAlive(state.pid)) return { removedNetns, removedStateFile: false, running: state.pid };
  const removedStateFile = state !== undefined;
  if (state) {
    removeState(dir);
    rmSync(join(configDir(dir), 'cluster.yaml'), { force: true });
  }
  return { removedNetns, removedStateFile };
}
