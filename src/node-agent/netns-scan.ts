/**
 * Finding the network namespace of a pod that is already running when the agent starts (or
 * that was never handed over by CNI): list candidate namespaces, dedupe them by inode, and probe
 * each for the pod's IP with a bind to `ip:0` inside it (it only succeeds where the IP is local).
 */
import { readdir, stat } from 'node:fs/promises';
import type { NetnsHandle } from './deps.js';

export interface ScanDeps {
  listenInNetns(netns: NetnsHandle, o: { address: string; port: number }): number;
  closeFd(fd: number): void;
}

/** Candidate netns paths: named ones (`/var/run/netns/*`) and every process's (`/proc/<pid>/ns/net`). */
export async function defaultNetnsCandidates(): Promise<string[]> {
  const out: string[] = [];
  try {
    for (const n of await readdir('/var/run/netns')) out.push(`/var/run/netns/${n}`);
  } catch { /* no named namespaces */ }
  try {
    for (const p of await readdir('/proc')) if (/^\d+$/.test(p)) out.push(`/proc/${p}/ns/net`);
  } catch { /* no /proc */ }
  return out;
}

/** `dev:ino` of a namespace path, or undefined when it is gone or unreadable. */
async function nsId(path: string): Promise<string | undefined> {
  try {
    const s = await stat(path);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * The first candidate namespace in which `ip` is a local address, skipping `exclude` (ids of the
 * agent's own namespace and of namespaces already enrolled). Scans at most `limit` namespaces.
 */
export async function findNetnsByIp(deps: ScanDeps, ip: string, candidates: readonly string[],
  exclude: ReadonlySet<string> = new Set(), limit = 10_000): Promise<{ path: string; id: string } | undefined> {
  const seen = new Set<string>(exclude);
  let probed = 0;
  for (const path of candidates) {
    if (probed >= limit) break;
    const id = await nsId(path);
    if (!id || seen.has(id)) continue;
    seen.add(id);
    probed++;
    let fd: number;
    try {
      fd = deps.listenInNetns(path, { address: ip, port: 0 });
    } catch {
      continue; // EADDRNOTAVAIL: not here (or the namespace vanished meanwhile)
    }
    deps.closeFd(fd);
    return { path, id };
  }
  return undefined;
}

export { nsId as netnsIdOfPath };
