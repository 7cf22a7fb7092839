/**
 * Finding the network namespace of a pod that is already running when the agent starts (or
 * that was never handed over by CNI): list candidate namespaces, dedupe them by inode, and probe
 * each for the pod's IP.
 *
 * The probe has two steps. A bind to `ip:0` inside the namespace is cheap and rules out most
 * candidates, but it is not proof: in a namespace whose loopback is down and which has no
 * address at all, the kernel accepts a bind to any address, so a bare namespace (a sandbox being
 * set up, a test's) would be taken for the pod. A hit is therefore confirmed by reading the
 * namespace's addresses (`ip -j addr` run inside it) and finding the IP among them.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { MeshError, errorMessage } from '../../core/index.js';
import { canonicalIp } from '../../model/index.js';
import type { NetnsHandle } from '../deps.js';

export interface ScanDeps {
  listenInNetns(netns: NetnsHandle, o: { address: string; port: number }): number;
  closeFd(fd: number): void;
  /**
   * The addresses configured in the namespace at `path`, canonical text. Rejects when they cannot
   * be read. Default: netnsAddresses() below.
   */
  netnsAddresses?(path: string): Promise<string[]>;
}

/**
 * Tools by absolute path: PATH is not to be trusted (under npm, node_modules/.bin comes first and
 * may hold unrelated programs of the same name).
 */
const NSENTER = ['/usr/bin/nsenter', '/bin/nsenter', '/usr/sbin/nsenter'];
const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];
/** `ip -j addr` of one namespace; a pod has a few interfaces, a big host a few hundred */
const MAX_ADDR_OUTPUT = 4 * 1024 * 1024;
const ADDR_TIMEOUT_MS = 5_000;

function tool(candidates: readonly string[], name: string): string {
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new MeshError('AMBIT_NETNS', `netns scan: ${name} not found (looked in ${candidates.join(', ')}); cannot confirm a pod's network namespace`);
  return found;
}

/** The local addresses of a namespace, read with `nsenter --net=<path> ip -j addr show`. */
export async function netnsAddresses(path: string): Promise<string[]> {
  const nsenter = tool(NSENTER, 'nsenter');
  const ip = tool(IP, 'ip');
  const out = await new Promise<string>((resolve, reject) => {
    execFile(nsenter, [`--net=${path}`, ip, '-j', 'addr', 'show'],
      { encoding: 'utf8', timeout: ADDR_TIMEOUT_MS, maxBuffer: MAX_ADDR_OUTPUT, env: {} },
      (err, stdout, stderr) => {
        if (err) reject(new MeshError('AMBIT_NETNS', `netns scan: reading the addresses of ${path}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      });
  });
  return parseIpAddrJson(out, path);
}

/** Addresses in `ip -j addr` output; throws on output that is not the expected shape. */
export function parseIpAddrJson(text: string, what: string): string[] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new MeshError('AMBIT_NETNS', `netns scan: addresses of ${what}: ip -j addr did not print JSON`);
  }
  if (!Array.isArray(v)) throw new MeshError('AMBIT_NETNS', `netns scan: addresses of ${what}: ip -j addr did not print a list`);
  const out: string[] = [];
  for (const link of v) {
    const infos: unknown = typeof link === 'object' && link !== null ? (link as Record<string, unknown>)['addr_info'] : undefined;
    if (!Array.isArray(infos)) continue;
    for (const a of infos) {
      const local: unknown = typeof a === 'object' && a !== null ? (a as Record<string, unknown>)['local'] : undefined;
      const c = typeof local === 'string' ? canonicalIp(local) : undefined;
      if (c !== undefined) out.push(c);
    }
  }
  return out;
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
 * When no namespace is confirmed but some bind hits could not be checked (tools missing, `ip`
 * failing), rejects with the reason: better no pod, with a cause, than the wrong namespace. For
 * the same reason a second namespace holding the IP is an error, never "the first one wins".
 */
export async function findNetnsByIp(deps: ScanDeps, ip: string, candidates: readonly string[],
  exclude: ReadonlySet<string> = new Set(), limit = 10_000): Promise<{ path: string; id: string } | undefined> {
  const seen = new Set<string>(exclude);
  const want = canonicalIp(ip);
  if (want === undefined) return undefined;
  const addresses = deps.netnsAddresses ?? netnsAddresses;
  let probed = 0;
  let unconfirmed = 0;
  let firstError: unknown;
  let found: { path: string; id: string } | undefined;
  for (const path of candidates) {
    if (probed >= limit) break;
    const id = await nsId(path);
    if (!id || seen.has(id)) continue;
    seen.add(id);
    probed++;
    let fd: number;
    try {
      fd = deps.listenInNetns(path, { address: want, port: 0 });
    } catch {
      continue; // EADDRNOTAVAIL: not here (or the namespace vanished meanwhile)
    }
    deps.closeFd(fd);
    let local: string[];
    try {
      local = await addresses(path);
    } catch (e) {
      // the namespace may simply have gone since the bind; keep looking, report if nothing is found
      unconfirmed++;
      firstError ??= e;
      continue;
    }
    if (!local.includes(want)) continue;
    // Keep scanning: a second holder makes the answer ambiguous. Any pod with NET_ADMIN can put
    // a neighbour's IP on its own interface, and enrolling it would hand it that neighbour's
    // identity for its outbound traffic. Refuse rather than guess.
    if (found !== undefined) {
      throw new MeshError('AMBIT_NETNS', `netns scan: ${want} is held by more than one network namespace (${found.path}, ${path}): refusing to guess`);
    }
    found = { path, id };
  }
  if (found !== undefined) return found;
  if (unconfirmed > 0) {
    throw new MeshError('AMBIT_NETNS', `netns scan for ${want}: ${unconfirmed} candidate namespace(s) could not be checked: ${errorMessage(firstError)}`, { cause: firstError });
  }
  return undefined;
}

export { nsId as netnsIdOfPath };
