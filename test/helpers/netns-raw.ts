/**
 * Minimal network-namespace helpers for tests that must not depend on src/local (the native
 * addon's tests). Names follow docs/DEVELOPING.md: `ambit-<pid base36>-<name>`, so a later run can
 * remove what a crashed run left behind without touching namespaces of live processes.
 * Everything shells out to `ip`/`nft` synchronously: set-up is a handful of commands per test.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';

const PID36 = process.pid.toString(36);
const NAME = /^ambit-([0-9a-z]+)-/;
let seq = 0;

/**
 * The system nft binary by absolute path: under npm/npx, node_modules/.bin comes first in PATH and
 * holds an unrelated `nft` (@vercel/nft, a file tracer) that happily ignores a ruleset.
 */
export const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p)) ?? '/usr/sbin/nft';

export interface TeardownHost { teardown(fn: () => void | Promise<void>): void }

/** Runs a command; throws with its stderr on failure. */
export function run(file: string, args: readonly string[], input?: string): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${file} ${args.join(' ')}: ${err.stderr?.trim() || err.message}`);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function listNetns(): string[] {
  return run('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.length > 0);
}

/** Deletes `ambit-<pid36>-*` namespaces whose pid is dead (leftovers of crashed runs). */
export function cleanupStaleNetns(): string[] {
  const removed: string[] = [];
  for (const name of listNetns()) {
    const m = NAME.exec(name);
    if (!m) continue;
    const pid = parseInt(m[1]!, 36);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pidAlive(pid)) continue;
    try {
      run('ip', ['netns', 'del', name]);
      removed.push(name);
    } catch { /* raced with another cleaner */ }
  }
  return removed;
}

export interface RawNetns {
  /** the netns name (global) */
  name: string;
  /** /var/run/netns/<name> */
  path: string;
  /** `ip -n <name> <args...>` */
  ip(...args: string[]): string;
  /** run a command inside the netns */
  exec(file: string, ...args: string[]): string;
  /** load an nftables ruleset (nft -f -) inside the netns */
  nft(ruleset: string): void;
}

/** A fresh netns with loopback up; deleted in teardown. `label`: [a-z0-9-], short. */
export function addNetns(t: TeardownHost, label: string): RawNetns {
  const name = `ambit-${PID36}-${label}${++seq}`;
  run('ip', ['netns', 'add', name]);
  t.teardown(() => {
    try { run('ip', ['netns', 'del', name]); } catch { /* already gone */ }
  });
  const ns: RawNetns = {
    name,
    path: `/var/run/netns/${name}`,
    ip: (...args) => run('ip', ['-n', name, ...args]),
    exec: (file, ...args) => run('ip', ['netns', 'exec', name, file, ...args]),
    nft: (ruleset) => { run('ip', ['netns', 'exec', name, NFT, '-f', '-'], ruleset); },
  };
  ns.ip('link', 'set', 'lo', 'up');
  return ns;
}

/** Joins two namespaces with a veth pair (created inside `a`, never in the root netns). */
export function linkVeth(a: RawNetns, aIf: string, aAddrs: string[], b: RawNetns, bIf: string, bAddrs: string[]): void {
  a.ip('link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name);
  for (const addr of aAddrs) a.ip('addr', 'add', addr, 'dev', aIf, ...(addr.includes(':') ? ['nodad'] : []));
  for (const addr of bAddrs) b.ip('addr', 'add', addr, 'dev', bIf, ...(addr.includes(':') ? ['nodad'] : []));
  a.ip('link', 'set', aIf, 'up');
  b.ip('link', 'set', bIf, 'up');
}

/** Extra local addresses on the loopback device (/32 or /128; the kernel may lack dummy links). */
export function addLocalAddrs(ns: RawNetns, addrs: string[]): void {
  for (const addr of addrs) ns.ip('addr', 'add', addr, 'dev', 'lo', ...(addr.includes(':') ? ['nodad'] : []));
}

/**
 * Makes `target` (IPv4) a silent blackhole from inside `ns`: a veth to an empty sink netns, a
 * route to it, and a static neighbour entry so no ARP failure ever answers. SYNs just vanish.
 */
export function addBlackhole(t: TeardownHost, ns: RawNetns, ifname: string, localCidr: string, target: string): void {
  const sink = addNetns(t, 'sink');
  ns.ip('link', 'add', ifname, 'type', 'veth', 'peer', 'name', 'sink0', 'netns', sink.name);
  ns.ip('addr', 'add', localCidr, 'dev', ifname);
  ns.ip('link', 'set', ifname, 'up');
  sink.ip('link', 'set', 'sink0', 'up');
  ns.ip('neigh', 'replace', target, 'lladdr', '02:00:00:00:be:ef', 'dev', ifname, 'nud', 'permanent');
}

/** True when running as root with `ip` and `nft` available (the netns tests need all three). */
export function canUseNetns(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    run('ip', ['-V']);
    run(NFT, ['--version']);
    return true;
  } catch {
    return false;
  }
}

/** A Node server on a listening fd (from listenInNetns), closed at teardown. */
export async function serve(t: TeardownHost, fd: number): Promise<Server> {
  const server = createServer();
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.listen({ fd });
  await once(server, 'listening');
  return server;
}

/** A pod and a peer joined by a veth created in the pod (10.78.0.2/.3, fd00:78::2/::3): the peer's eth0 dies with the pod netns. */
export function podPair(t: TeardownHost): { pod: RawNetns; peer: RawNetns } {
  const pod = addNetns(t, 'pod');
  const peer = addNetns(t, 'peer');
  linkVeth(pod, 'eth0', ['10.78.0.2/24', 'fd00:78::2/64'], peer, 'eth0', ['10.78.0.3/24', 'fd00:78::3/64']);
  return { pod, peer };
}
