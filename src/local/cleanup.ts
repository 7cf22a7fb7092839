/**
 * Removing what a run left behind. A namespace `ambit-<pid36>-...` belongs to the process with
 * that pid; when the process is gone, nobody will ever delete it, so the next run does. A live
 * pid's namespaces are never touched (that is a concurrent test process or a running `ambit up`).
 */
import { execFileSync } from 'node:child_process';
import { logger } from '../core/index.js';
import { pidOfNetns } from './names.js';
import { deleteNetns, deleteNetnsSync, listNetns, pidAlive, runCommand } from './run.js';

const log = logger('local');

/**
 * Kills every process whose network namespace is `netns`. A namespace stays alive as long as a
 * process runs in it, so deleting only the name would leak it (and keep a server listening).
 */
export async function killNetnsProcesses(netns: string): Promise<void> {
  const r = await runCommand('ip', ['netns', 'pids', netns]);
  if (r.code !== 0) return;
  for (const pid of parsePids(r.stdout)) {
    if (pid === process.pid) continue;
    try { process.kill(pid, 'SIGKILL'); } catch { /* exited meanwhile */ }
  }
}

export function killNetnsProcessesSync(netns: string): void {
  let out = '';
  try { out = execFileSync('ip', ['netns', 'pids', netns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }); } catch { return; }
  for (const pid of parsePids(out)) {
    if (pid === process.pid) continue;
    try { process.kill(pid, 'SIGKILL'); } catch { /* exited meanwhile */ }
  }
}

function parsePids(out: string): number[] {
  return out.split('\n').map((l) => Number(l.trim())).filter((n) => Number.isSafeInteger(n) && n > 0);
}

/** Kills the processes inside a namespace, then deletes it. */
export async function removeNetns(netns: string): Promise<void> {
  await killNetnsProcesses(netns);
  await deleteNetns(netns);
}

export function removeNetnsSync(netns: string): void {
  killNetnsProcessesSync(netns);
  deleteNetnsSync(netns);
}

/**
 * Deletes every `ambit-<pid36>-*` namespace whose creating process is dead; returns the names
 * removed. Names without a parseable pid are not ours and stay.
 */
export async function cleanupStale(): Promise<string[]> {
  const stale = (await listNetns()).filter((name) => {
    const pid = pidOfNetns(name);
    return pid !== undefined && pid !== process.pid && !pidAlive(pid);
  });
  // Processes first, all namespaces together: one stale run usually left several namespaces.
  await Promise.all(stale.map((n) => killNetnsProcesses(n)));
  await Promise.all(stale.map((n) => deleteNetns(n)));
  if (stale.length > 0) log.info('removed namespaces of dead runs', { count: stale.length, names: stale });
  return stale;
}
