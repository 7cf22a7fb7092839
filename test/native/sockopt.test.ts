/**
 * Socket options on real sockets: SO_MARK is visible to the kernel (ss reports it), and
 * transparent listeners may bind addresses the namespace does not own.
 */
import test from 'ava';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { closeFd, isSyscallError, listenInNetns, setMark, setTransparent, socketFd } from '../../src/native/index.js';
import { addNetns, canUseNetns, cleanupStaleNetns, run, type TeardownHost } from '../helpers/netns-raw.js';

const root = canUseNetns();
const rootTest = root ? test : test.skip;

test.before(() => {
  if (root) cleanupStaleNetns();
});

async function listenLocal(t: TeardownHost, host: string): Promise<Server> {
  const server = createServer();
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.listen(0, host);
  await once(server, 'listening');
  return server;
}

/** The fwmark ss reports for the listener on `port` (inside `netns` when given), or undefined. */
function listenerMark(port: number, netns?: string): string | undefined {
  const args = ['-H', '-t', '-l', '-n', '-e', 'sport', '=', `:${port}`];
  const out = netns === undefined ? run('ss', args) : run('ip', ['netns', 'exec', netns, 'ss', ...args]);
  return /fwmark:(0x[0-9a-f]+)/.exec(out)?.[1];
}

rootTest('setMark sets SO_MARK on a Node listener', async (t) => {
  const server = await listenLocal(t, '127.0.0.1');
  const { port } = server.address() as AddressInfo;
  t.is(listenerMark(port), undefined);
  setMark(socketFd(server), 0x539);
  t.is(listenerMark(port), '0x539');
});

rootTest('setTransparent works on IPv4 and IPv6 sockets', async (t) => {
  for (const host of ['127.0.0.1', '::1']) {
    const server = await listenLocal(t, host);
    t.notThrows(() => setTransparent(socketFd(server)));
  }
});

rootTest('listenInNetns applies the mark, and binds non-local addresses only when transparent', (t) => {
  const ns = addNetns(t, 'opt');
  const marked = listenInNetns(ns.path, { address: '127.0.0.1', port: 15021, mark: 0x539 });
  t.teardown(() => closeFd(marked));
  t.is(listenerMark(15021, ns.name), '0x539');
  const e = t.throws(() => listenInNetns(ns.path, { address: '10.123.0.1', port: 15006 }));
  t.true(isSyscallError(e, 'EADDRNOTAVAIL'));
  t.regex(e!.message, /bind: EADDRNOTAVAIL .*10\.123\.0\.1 port 15006/);
  const fd = listenInNetns(ns.path, { address: '10.123.0.1', port: 15006, transparent: true });
  t.teardown(() => closeFd(fd));
  t.pass();
});

rootTest('two reusePort listeners share a port; without reusePort the second one is EADDRINUSE', (t) => {
  const ns = addNetns(t, 'opt');
  const a = listenInNetns(ns.path, { address: '::', port: 15008, reusePort: true });
  t.teardown(() => closeFd(a));
  const b = listenInNetns(ns.path, { address: '::', port: 15008, reusePort: true });
  t.teardown(() => closeFd(b));
  t.true(isSyscallError(t.throws(() => listenInNetns(ns.path, { address: '::', port: 15008 })), 'EADDRINUSE'));
});
