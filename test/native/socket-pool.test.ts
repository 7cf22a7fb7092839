/**
 * The per-netns socket pool behind connectInNetns (native/src/connect.c): a helper thread parked
 * in the pod netns keeps fresh sockets ready. Sequential connects through it must still leave from
 * the pod with exactly the mark each call asked for, and once the pool has been idle its thread,
 * its netns fd and its spare sockets must all be gone, so a deleted pod's netns is really freed.
 * Everything is observed from outside: /proc/self (tasks and fds), nftables counters in the pod,
 * the peer's view of the source address, and the veth peer vanishing when the pod netns dies.
 */
import test from 'ava';
import { once } from 'node:events';
import { readdirSync, statSync } from 'node:fs';
import { Socket, type Server } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectInNetns, Engine, listenInNetns, netnsId } from '../../src/native/index.js';
import { engineOptions } from '../../src/hbone/index.js';
import { NFT, canUseNetns, cleanupStaleNetns, linkVeth, podPair, run, serve, type RawNetns } from '../helpers/netns-raw.js';

const root = canUseNetns();
const rootTest = root ? test : test.skip;

test.before(() => {
  if (root) cleanupStaleNetns();
});

/** Polls `cond` every 50 ms for up to `limitMs`; true as soon as it holds. Not a timing assertion. */
async function waitFor(cond: () => boolean, limitMs = 15_000): Promise<boolean> {
  const end = Date.now() + limitMs;
  for (;;) {
    if (cond()) return true;
    if (Date.now() > end) return false;
    await sleep(50);
  }
}

/** `dev:ino` of whatever `path` resolves to, in the format of netnsId; null if it cannot be stat'ed. */
function statId(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return null; // the fd or thread went away while we looked
  }
}

/** What in this process still refers to the netns `id`: open fds and threads living in it. */
function holders(id: string): { fds: number; tasks: number } {
  let fds = 0;
  let tasks = 0;
  for (const fd of readdirSync('/proc/self/fd')) if (statId(`/proc/self/fd/${fd}`) === id) fds++;
  for (const tid of readdirSync('/proc/self/task')) if (statId(`/proc/self/task/${tid}/ns/net`) === id) tasks++;
  return { fds, tasks };
}



/**
 * Connects from `pod` to `server` and returns the accepted socket's remote address (undefined if
 * the server saw nothing: a socket from the wrong netns can reach some other host); closes both ends.
 */
async function connectOnce(pod: RawNetns, server: Server, address: string, mark?: number): Promise<string | undefined> {
  const ac = new AbortController();
  const accepted = once(server, 'connection', { signal: ac.signal }) as Promise<[Socket]>;
  accepted.catch(() => undefined);
  const fd = await connectInNetns(pod.path, { address, port: 8080, ...(mark === undefined ? {} : { mark }) });
  const client = new Socket({ fd, readable: true, writable: true });
  client.on('error', () => undefined); // a reset racing destroy() is not what these tests look at
  const guard = setTimeout(() => ac.abort(), 10_000);
  try {
    const [sock] = await accepted;
    sock.on('error', () => undefined);
    const remote = sock.remoteAddress;
    sock.destroy();
    return remote;
  } catch {
    return undefined;
  } finally {
    clearTimeout(guard);
    client.destroy();
  }
}

const COUNTERS = ['v4mark', 'v4none', 'v6mark', 'v6none'] as const;

function readCounter(pod: RawNetns, name: string): number {
  const out = pod.exec(NFT, 'list', 'counter', 'inet', 'ambit-mangle', name);
  const m = /packets (\d+)/.exec(out);
  if (!m) throw new Error(`no packet count in: ${out}`);
  return Number(m[1]);
}

rootTest('sequential connects through the pool leave from the pod\'s address with the mark each call asked for', async (t) => {
  const { pod, peer } = podPair(t);
  // Count the pod's outgoing SYNs by family and by mark (0x539 exactly, or none at all).
  pod.nft(`
table inet ambit-mangle {
  ${COUNTERS.map((c) => `counter ${c} { }`).join('\n  ')}
  chain output {
    type filter hook output priority 0;
    tcp dport 8080 tcp flags & (syn | ack) == syn meta nfproto ipv4 meta mark 0x539 counter name v4mark
    tcp dport 8080 tcp flags & (syn | ack) == syn meta nfproto ipv4 meta mark 0 counter name v4none
    tcp dport 8080 tcp flags & (syn | ack) == syn meta nfproto ipv6 meta mark 0x539 counter name v6mark
    tcp dport 8080 tcp flags & (syn | ack) == syn meta nfproto ipv6 meta mark 0 counter name v6none
  }
}
`);
  const v4 = await serve(t, listenInNetns(peer.path, { address: '10.78.0.3', port: 8080 }));
  const v6 = await serve(t, listenInNetns(peer.path, { address: 'fd00:78::3', port: 8080 }));
  const id = netnsId(pod.path);

  // More calls than the pool holds (8 per family), so refills are exercised as well as takes;
  // marks alternate so a pooled socket that kept a previous caller's mark would be counted wrong.
  const N = 48;
  let sawHelper = false;
  const remotes: Array<string | undefined> = [];
  for (let i = 0; i < N; i++) {
    const six = i % 2 === 1;
    const mark = i % 4 < 2 ? 0x539 : undefined;
    remotes.push(await connectOnce(pod, six ? v6 : v4, six ? 'fd00:78::3' : '10.78.0.3', mark));
    if (!sawHelper && holders(id).tasks > 0) sawHelper = true;
  }
  t.deepEqual(remotes, Array.from({ length: N }, (_, i) => (i % 2 === 1 ? 'fd00:78::2' : '10.78.0.2')));
  t.deepEqual(COUNTERS.map((c) => readCounter(pod, c)), [N / 4, N / 4, N / 4, N / 4]);
  // The pool really served these calls: a thread of this process lives in the pod netns (the
  // per-call fallback threads are joined before connectInNetns returns, so they never linger).
  t.true(sawHelper || await waitFor(() => holders(id).tasks > 0), 'a pool helper thread entered the pod netns');
});

rootTest('an idle pool lets go of the netns: no fd, no thread, no socket keeps a deleted pod alive', async (t) => {
  const { pod, peer } = podPair(t);
  const server = await serve(t, listenInNetns(peer.path, { address: '10.78.0.3', port: 8080 }));
  const id = netnsId(pod.path);
  t.is(await connectOnce(pod, server, '10.78.0.3', 0x539), '10.78.0.2');
  t.true(await waitFor(() => holders(id).tasks === 1), 'one pool helper thread lives in the pod netns');

  // Idle for longer than the pool's timeout: its thread exits and its netns fd is closed.
  t.true(await waitFor(() => { const h = holders(id); return h.fds === 0 && h.tasks === 0; }),
    `still held after 15 s: ${JSON.stringify(holders(id))}`);

  // The spare sockets are not visible in /proc/self/fd as the netns, but each holds a reference
  // to it: only if they were closed too does deleting the pod destroy the netns, and with it the
  // veth, whose peer end then disappears from the peer netns.
  run('ip', ['netns', 'del', pod.name]);
  t.true(await waitFor(() => !peer.ip('-o', 'link', 'show').includes('eth0')), 'the pod netns was freed (its veth is gone)');

  // A new netns under the same name works, and gets a pool of its own.
  run('ip', ['netns', 'add', pod.name]);
  pod.ip('link', 'set', 'lo', 'up');
  linkVeth(pod, 'eth0', ['10.78.0.12/24'], peer, 'eth0', ['10.78.0.3/24']);
  const id2 = netnsId(pod.path);
  t.is(await connectOnce(pod, server, '10.78.0.3', 0x539), '10.78.0.12');
  t.true(await waitFor(() => holders(id2).tasks === 1), 'a helper thread for the new netns');
  t.is(await connectOnce(pod, server, '10.78.0.3'), '10.78.0.12');
});

// The engine's pinned pools: the engine thread never makes a thread, so a pod's pool must be there
// before the first connection, a miss must be answered by the pool's helper, and the pool must let
// the netns go once the pod's listeners are gone.
const REDIRECT = `
table inet ambit-nat {
  chain output {
    type nat hook output priority -100;
    tcp dport 9999 mark and 0xfff != 0x539 redirect to :15001
  }
}
`;

rootTest('engine listeners pin the pod\'s pool: ready when listen returns, a miss waits for the helper, released after unlisten', async (t) => {
  const { pod, peer } = podPair(t);
  pod.nft(REDIRECT);
  const id = netnsId(pod.path);
  // the passthrough target, reached over IPv6: the listener is IPv4, so its pool keeps only IPv4
  // sockets ready and the first IPv6 dial is a miss, answered by the helper thread
  const upstream = await serve(t, listenInNetns(peer.path, { address: 'fd00:78::3', port: 8080 }));
  upstream.on('connection', (s: Socket) => { s.on('error', () => undefined); s.end('from upstream'); });
  const events: Array<{ kind: number; error: string | undefined }> = [];
  const engine = new Engine({
    outbound: () => ({ t: 1, ip: 'fd00:78::3', port: 8080 }),
    inbound: () => 500,
    verify: () => { throw new Error('no TLS here'); },
    context: () => null,
    event: (kind, _flow, _from, _to, error) => { events.push({ kind, error }); },
  }, engineOptions());
  t.teardown(() => { engine.destroy(); });
  const listenFd = listenInNetns(pod.path, { address: '0.0.0.0', port: 15001 });
  t.is(holders(id).tasks, 0, 'no thread in the pod netns before the engine listens');
  const lid = engine.listen(listenFd, pod.path, { kind: 'outbound', mark: 0x539 });
  t.is(holders(id).tasks, 1, 'the pool helper is in the pod netns when listen returns');

  const N = 12;
  const got = await Promise.all(Array.from({ length: N }, async () => {
    const fd = await connectInNetns(pod.path, { address: '10.78.0.3', port: 9999 });
    const s = new Socket({ fd, readable: true, writable: true });
    s.on('error', () => undefined);
    t.teardown(() => { s.destroy(); });
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    await once(s, 'end');
    return Buffer.concat(parts).toString();
  }));
  t.deepEqual(got, Array.from({ length: N }, () => 'from upstream'), 'every connection reached the IPv6 upstream');
  t.true(engine.stats().poolWaits >= 1, 'the first IPv6 dial waited for the pool helper');
  t.true(await waitFor(() => events.filter((e) => e.kind === 2).length === N));
  t.deepEqual(events.filter((e) => e.error !== undefined), []);

  // unpinned: idle like any pool, the helper exits and the netns is no longer held
  engine.unlisten(lid);
  t.true(await waitFor(() => { const h = holders(id); return h.fds === 0 && h.tasks === 0; }),
    `still held after unlisten: ${JSON.stringify(holders(id))}`);
});
