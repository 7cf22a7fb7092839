/**
 * connectInNetns between two pod-like namespaces joined by a veth: the connection leaves from the
 * pod netns with the pod's address, can carry a spoofed (transparent) source, times out cleanly on
 * a blackhole, and never blocks the event loop while it waits.
 */
import test from 'ava';
import { once } from 'node:events';
import { Socket } from 'node:net';
import { connectInNetns, isSyscallError, listenInNetns, openNetns, closeFd } from '../../src/native/index.js';
import { addBlackhole, addNetns, canUseNetns, cleanupStaleNetns, podPair, serve, type TeardownHost } from '../helpers/netns-raw.js';

const root = canUseNetns();
const rootTest = root ? test : test.skip;

test.before(() => {
  if (root) cleanupStaleNetns();
});


function wrap(t: TeardownHost, fd: number): Socket {
  const s = new Socket({ fd, readable: true, writable: true });
  t.teardown(() => { s.destroy(); });
  return s;
}


rootTest('a connection from the pod netns reaches its peer with the pod\'s source address', async (t) => {
  const { pod, peer } = podPair(t);
  const server = await serve(t, listenInNetns(peer.path, { address: '10.78.0.3', port: 8080 }));
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = wrap(t, await connectInNetns(pod.path, { address: '10.78.0.3', port: 8080, mark: 0x539 }));
  const [sock] = await accepted;
  t.is(sock.remoteAddress, '10.78.0.2');
  t.is(client.remotePort, 8080);
  sock.write('pong');
  const [d] = (await once(client, 'data')) as [Buffer];
  t.is(d.toString(), 'pong');
});

rootTest('IPv6 works the same, and an open netns fd can stand in for the path', async (t) => {
  const { pod, peer } = podPair(t);
  const server = await serve(t, listenInNetns(peer.path, { address: '::', port: 8080 }));
  const nsfd = openNetns(pod.path);
  t.teardown(() => closeFd(nsfd));
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  wrap(t, await connectInNetns(nsfd, { address: 'fd00:78::3', port: 8080 }));
  const [sock] = await accepted;
  t.is(sock.remoteAddress, 'fd00:78::2');
});

rootTest('localAddress + transparent connects with a non-local source address', async (t) => {
  const { pod, peer } = podPair(t);
  // The peer routes the spoofed client address back through the pod. In the pod, connections of
  // marked (0x539) sockets get conntrack mark 0x111, and returning packets with that mark are
  // delivered locally through table 100: the agent's mangle rules do the same. (A rule on 0x539
  // itself would also catch the outgoing SYN and loop it back through lo.)
  peer.ip('route', 'add', '10.99.0.7/32', 'via', '10.78.0.2');
  pod.ip('rule', 'add', 'fwmark', '0x111/0xfff', 'lookup', '100');
  pod.ip('route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100');
  pod.nft(`
table inet ambit-mangle {
  chain prerouting {
    type filter hook prerouting priority -150;
    ct mark and 0xfff == 0x111 meta mark set ct mark
  }
  chain output {
    type route hook output priority -150;
    meta mark and 0xfff == 0x539 ct mark set ct mark and 0xfffff000 or 0x111
  }
}
`);
  const server = await serve(t, listenInNetns(peer.path, { address: '10.78.0.3', port: 8080 }));
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = wrap(t, await connectInNetns(pod.path, {
    address: '10.78.0.3', port: 8080, mark: 0x539, localAddress: '10.99.0.7', transparent: true,
  }));
  const [sock] = await accepted;
  t.is(sock.remoteAddress, '10.99.0.7');
  t.is(client.localAddress, '10.99.0.7');
  client.write('spoofed');
  const [d] = (await once(sock, 'data')) as [Buffer];
  t.is(d.toString(), 'spoofed');
});

rootTest('without transparent, a non-local localAddress is refused by bind', async (t) => {
  const { pod } = podPair(t);
  const err = await t.throwsAsync(connectInNetns(pod.path, { address: '10.78.0.3', port: 8080, localAddress: '10.99.0.7' }));
  t.true(isSyscallError(err, 'EADDRNOTAVAIL'));
  t.is((err as unknown as { syscall: string }).syscall, 'bind');
});

rootTest('a refused connection rejects with AMBIT_CONNECT_REFUSED / ECONNREFUSED', async (t) => {
  const { pod } = podPair(t);
  const err = await t.throwsAsync(connectInNetns(pod.path, { address: '10.78.0.3', port: 8081 }));
  t.is(err?.name, 'SyscallError');
  t.is((err as unknown as { code: string }).code, 'AMBIT_CONNECT_REFUSED');
  t.true(isSyscallError(err, 'ECONNREFUSED'));
  t.regex(err!.message, /connectInNetns: connect: ECONNREFUSED .*10\.78\.0\.3 port 8081/);
});

rootTest('a blackholed destination times out with ETIMEDOUT while the event loop keeps ticking', async (t) => {
  const pod = addNetns(t, 'pod');
  addBlackhole(t, pod, 'bh0', '10.79.0.1/24', '10.79.0.2');
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 5);
  t.teardown(() => clearInterval(timer));
  const err = await t.throwsAsync(connectInNetns(pod.path, { address: '10.79.0.2', port: 80, timeoutMs: 300 }));
  clearInterval(timer);
  t.is((err as unknown as { code: string }).code, 'AMBIT_CONNECT_TIMEOUT');
  t.true(isSyscallError(err, 'ETIMEDOUT'));
  t.true(ticks > 0, 'setInterval ran while the connect was pending');
});

rootTest('many concurrent slow connects do not hold the libuv thread pool', async (t) => {
  const pod = addNetns(t, 'pod');
  addBlackhole(t, pod, 'bh0', '10.79.0.1/24', '10.79.0.2');
  // More pending connects than pool threads: a pool-based design would queue the fs call below
  // behind them until they time out; here it completes while they are all still pending.
  const pending = Array.from({ length: 8 }, () => connectInNetns(pod.path, { address: '10.79.0.2', port: 80, timeoutMs: 5000 }));
  let settled = 0;
  for (const p of pending) p.then(() => settled++, () => settled++);
  const { readFile } = await import('node:fs/promises');
  await readFile('/proc/self/stat');
  t.is(settled, 0);
  const results = await Promise.allSettled(pending);
  t.true(results.every((r) => r.status === 'rejected' && isSyscallError(r.reason, 'ETIMEDOUT')));
});
