/**
 * Kernel redirection inside a pod-like netns: an nftables REDIRECT sends unmarked client traffic to
 * a listener opened with listenInNetns, originalDst recovers where the client was going, and a
 * socket carrying the agent mark 0x539 is left alone.
 */
import test from 'ava';
import { once } from 'node:events';
import { Socket, type Server } from 'node:net';
import { connectInNetns, listenInNetns, originalDst, socketFd } from '../../src/native/index.js';
import { addLocalAddrs, addNetns, canUseNetns, cleanupStaleNetns, type RawNetns, type TeardownHost, serve } from '../helpers/netns-raw.js';

const root = canUseNetns();
const rootTest = root ? test : test.skip;

test.before(() => {
  if (root) cleanupStaleNetns();
});

const RULES = `
table inet ambit-nat {
  chain output {
    type nat hook output priority -100;
    tcp dport 9999 mark and 0xfff != 0x539 redirect to :15001
  }
}
`;

function podNetns(t: TeardownHost): RawNetns {
  const ns = addNetns(t, 'redir');
  addLocalAddrs(ns, ['10.77.0.1/32', 'fd00:77::1/128']);
  ns.nft(RULES);
  return ns;
}


async function dial(t: TeardownHost, ns: RawNetns, address: string, port: number, mark?: number): Promise<Socket> {
  const fd = await connectInNetns(ns.path, { address, port, ...(mark === undefined ? {} : { mark }) });
  const s = new Socket({ fd, readable: true, writable: true });
  t.teardown(() => { s.destroy(); });
  return s;
}

/** Accepts one connection and proves the byte path by echoing one line back. */
async function acceptAndEcho(server: Server): Promise<Socket> {
  const [sock] = (await once(server, 'connection')) as [Socket];
  sock.on('data', (d) => sock.write(d));
  return sock;
}

async function roundTrip(s: Socket, text: string): Promise<string> {
  s.write(text);
  const [d] = (await once(s, 'data')) as [Buffer];
  return d.toString();
}

rootTest('an unmarked IPv4 connection is redirected to the capture listener and originalDst is the dialled address', async (t) => {
  const ns = podNetns(t);
  const capture = await serve(t, listenInNetns(ns.path, { address: '::', port: 15001, mark: 0x539 }));
  const accepted = acceptAndEcho(capture);
  const client = await dial(t, ns, '10.77.0.1', 9999);
  const sock = await accepted;
  const { peer, ...dst } = originalDst(socketFd(sock));
  t.deepEqual(dst, { address: '10.77.0.1', port: 9999, family: 4 });
  // the peer comes in the same call (the client, as seen from the dual-stack listener: plain IPv4)
  t.deepEqual(peer, { address: client.localAddress, port: client.localPort, family: 4 });
  t.is(await roundTrip(client, 'hello'), 'hello');
});

rootTest('an unmarked IPv6 connection is redirected too and originalDst reports family 6', async (t) => {
  const ns = podNetns(t);
  const capture = await serve(t, listenInNetns(ns.path, { address: '::', port: 15001, mark: 0x539 }));
  const accepted = acceptAndEcho(capture);
  const client = await dial(t, ns, 'fd00:77::1', 9999);
  const sock = await accepted;
  const { peer, ...dst } = originalDst(socketFd(sock));
  t.deepEqual(dst, { address: 'fd00:77::1', port: 9999, family: 6 });
  t.deepEqual(peer, { address: client.localAddress, port: client.localPort, family: 6 });
  t.is(await roundTrip(client, 'hello6'), 'hello6');
});

rootTest('an IPv4-only capture listener works as well', async (t) => {
  const ns = podNetns(t);
  const capture = await serve(t, listenInNetns(ns.path, { address: '0.0.0.0', port: 15001, reusePort: true }));
  const accepted = acceptAndEcho(capture);
  const client = await dial(t, ns, '10.77.0.1', 9999);
  const { peer, ...dst } = originalDst(socketFd(await accepted));
  t.deepEqual(dst, { address: '10.77.0.1', port: 9999, family: 4 });
  t.deepEqual(peer, { address: client.localAddress, port: client.localPort, family: 4 });
});

rootTest('a socket marked 0x539 is not redirected and reaches the real destination', async (t) => {
  const ns = podNetns(t);
  const capture = await serve(t, listenInNetns(ns.path, { address: '::', port: 15001 }));
  const real = await serve(t, listenInNetns(ns.path, { address: '10.77.0.1', port: 9999 }));
  let captured = 0;
  capture.on('connection', (s: Socket) => { captured++; s.destroy(); });
  const accepted = acceptAndEcho(real);
  const client = await dial(t, ns, '10.77.0.1', 9999, 0x539);
  const sock = await accepted;
  t.is(sock.localAddress, '10.77.0.1');
  t.is(sock.localPort, 9999);
  t.is(await roundTrip(client, 'direct'), 'direct');
  // The same destination without the mark goes to the capture listener instead.
  const viaCapture = once(capture, 'connection');
  await dial(t, ns, '10.77.0.1', 9999);
  await viaCapture;
  t.is(captured, 1);
});

rootTest('listenInNetns binds in the pod netns, not in the caller\'s', async (t) => {
  const ns = podNetns(t);
  // 10.77.0.1 exists only inside the pod netns: binding it elsewhere would fail with EADDRNOTAVAIL.
  const server = await serve(t, listenInNetns(ns.path, { address: '10.77.0.1', port: 0 }));
  const addr = server.address();
  t.truthy(addr && typeof addr === 'object' && addr.address === '10.77.0.1' && addr.port > 0);
});
