/**
 * The agent's unix sockets (CNI, handover): root only, and never removed from under a live agent.
 *
 * A socket is bound under a temporary name and renamed into place: the path changes from one
 * live socket (or none) to the next in one step, and the name libuv remembers is the temporary
 * one, so closing the server never unlinks the path (libuv unlinks a bound pipe's name on close,
 * which after a handover would remove the successor's path). Removing the path is the owner's
 * explicit decision.
 */
import { chmodSync, renameSync, rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { MeshError } from '../core/index.js';

let seq = 0;

/** Sets the process umask, returning the old one; undefined where that is not allowed. */
function setUmask(mask: number): number | undefined {
  try { return process.umask(mask); } catch { return undefined; }
}

/**
 * Listens on a root-only unix socket: bound at `path` (mode 0600 from the start: a strict umask
 * around bind, and a chmod where the umask cannot be changed), or on a listening socket taken
 * over from the previous agent (`fd`).
 */
export async function listenUnix(server: Server, where: { path: string } | { fd: number }): Promise<void> {
  const tmp = 'path' in where ? `${where.path}.${process.pid}-${++seq}.tmp` : undefined;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const old = tmp !== undefined ? setUmask(0o177) : undefined;
    try {
      if (tmp !== undefined) server.listen(tmp, () => { server.off('error', reject); resolve(); });
      else server.listen({ fd: (where as { fd: number }).fd }, () => { server.off('error', reject); resolve(); });
    } finally {
      if (old !== undefined) setUmask(old);
    }
  });
  if (tmp === undefined || !('path' in where)) return;
  try {
    chmodSync(tmp, 0o600);
    renameSync(tmp, where.path);
  } catch (e) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(tmp, { force: true });
    throw new MeshError('AMBIT_CONFIG_INVALID', `socket ${where.path}: cannot put it in place with mode 0600: ${(e as Error).message}`, { cause: e });
  }
}

export interface UnixProbe {
  unixConnect(path: string, kind?: 'stream' | 'seqpacket'): number;
  closeFd(fd: number): void;
}

/** True when something accepts connections on the unix socket `path` (a live agent). */
export function unixSocketAlive(native: UnixProbe, path: string): boolean {
  try {
    native.closeFd(native.unixConnect(path, 'stream'));
    return true;
  } catch {
    return false;
  }
}

/**
 * Before binding `path` afresh: throws naming the path when a live process serves it (a running
 * agent that offered no handover: its socket must not be replaced); a stale file is left to the
 * rename, which replaces it.
 */
export function checkNotServed(native: UnixProbe | undefined, path: string, what: string): void {
  if (native && unixSocketAlive(native, path)) {
    throw new MeshError('AMBIT_HANDOVER', `${what} ${path} is served by another running agent that offered no handover; leaving it alone`);
  }
}
