/**
 * fd passing over unix sockets: a netns fd sent with sendWithFds arrives through recvWithFds as
 * the same namespace (netnsId), CLOEXEC; EOF, truncation and timeouts are reported, not crashes,
 * and fds of a refused (truncated) message are closed rather than leaked.
 */
import test from 'ava';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  closeFd, isSyscallError, netnsId, openNetns, recvWithFds, sendWithFds, socketFd, unixConnect, unixSocketPair,
} from '../../src/native/index.js';
import { addNetns, canUseNetns, cleanupStaleNetns, type TeardownHost } from '../helpers/netns-raw.js';

const root = canUseNetns();
const rootTest = root ? test : test.skip;

test.before(() => {
  if (root) cleanupStaleNetns();
});

function socketPair(t: TeardownHost, kind: 'stream' | 'seqpacket'): [number, number] {
  const [a, b] = unixSocketPair(kind);
  t.teardown(() => { closeFd(a); closeFd(b); });
  return [a, b];
}

function owned(t: TeardownHost, fds: number[]): number[] {
  t.teardown(() => { for (const fd of fds) closeFd(fd); });
  return fds;
}

function isCloexec(fd: number): boolean {
  const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
  return flags !== undefined && (parseInt(flags, 8) & 0o2000000) !== 0;
}

/** How many fds of this process refer to the namespace with inode `ino` (fds opened by path read
 * back as that path with readlink, so compare inodes). */
function fdsOfNamespace(ino: number): number {
  let n = 0;
  for (const e of readdirSync('/proc/self/fd')) {
    try {
      if (statSync(`/proc/self/fd/${e}`).ino === ino) n++;
    } catch { /* fd closed meanwhile */ }
  }
  return n;
}

for (const kind of ['seqpacket', 'stream'] as const) {
  rootTest(`a netns fd crosses a ${kind} socket pair and keeps its identity`, async (t) => {
    const ns = addNetns(t, 'fdp');
    const [a, b] = socketPair(t, kind);
    const nsfd = openNetns(ns.path);
    t.teardown(() => closeFd(nsfd));
    sendWithFds(a, Buffer.from('{"op":"ADD"}'), [nsfd]);
    const msg = await recvWithFds(b, 1024, 1, 5000);
    t.truthy(msg);
    const [got] = owned(t, msg!.fds);
    t.is(msg!.data.toString(), '{"op":"ADD"}');
    t.is(msg!.fds.length, 1);
    t.not(got, nsfd);
    t.is(netnsId(got!), netnsId(ns.path));
    t.true(isCloexec(got!));
  });
}

rootTest('an fd owned by a paused net.Socket of a unix server can be read by recvWithFds', async (t) => {
  const ns = addNetns(t, 'fdp');
  const dir = mkdtempSync(join(tmpdir(), 'ambit-native-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'agent.sock');
  const server = createServer({ pauseOnConnect: true });
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.listen(path);
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = unixConnect(path);
  t.teardown(() => closeFd(client));
  const [conn] = await accepted;
  t.teardown(() => { conn.destroy(); });
  const nsfd = openNetns(ns.path);
  t.teardown(() => closeFd(nsfd));
  sendWithFds(client, Buffer.from('hello'), [nsfd]);
  const msg = await recvWithFds(socketFd(conn), 64, 1, 5000);
  owned(t, msg?.fds ?? []);
  t.is(msg?.data.toString(), 'hello');
  t.is(netnsId(msg!.fds[0]!), netnsId(nsfd));
});

test('a message without fds comes back with an empty fd list; EOF resolves null', async (t) => {
  const [a, b] = unixSocketPair('seqpacket');
  t.teardown(() => closeFd(b));
  sendWithFds(a, Buffer.from('x'), []);
  t.deepEqual(await recvWithFds(b, 16, 4, 5000), { data: Buffer.from('x'), fds: [] });
  closeFd(a);
  t.is(await recvWithFds(b, 16, 4, 5000), null);
});

rootTest('more fds than maxFds: rejected with EMSGSIZE and the fds that arrived are closed', async (t) => {
  const ns = addNetns(t, 'fdp');
  const ino = statSync(ns.path).ino;
  const [a, b] = socketPair(t, 'seqpacket');
  const nsfd = openNetns(ns.path);
  t.teardown(() => closeFd(nsfd));
  t.is(fdsOfNamespace(ino), 1);
  sendWithFds(a, Buffer.from('two'), [nsfd, nsfd]);
  const err = await t.throwsAsync(recvWithFds(b, 64, 1, 5000));
  t.true(isSyscallError(err, 'EMSGSIZE'));
  t.regex(err!.message, /MSG_CTRUNC/);
  t.is(fdsOfNamespace(ino), 1, 'only our own fd refers to the namespace: none leaked');
});

test('a datagram larger than maxBytes is rejected with EMSGSIZE (MSG_TRUNC)', async (t) => {
  const [a, b] = socketPair(t, 'seqpacket');
  sendWithFds(a, Buffer.from('0123456789'), []);
  const err = await t.throwsAsync(recvWithFds(b, 4, 0, 5000));
  t.true(isSyscallError(err, 'EMSGSIZE'));
  t.regex(err!.message, /MSG_TRUNC/);
});

test('no message within timeoutMs rejects with ETIMEDOUT; the event loop keeps running meanwhile', async (t) => {
  const [, b] = socketPair(t, 'seqpacket');
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 5);
  t.teardown(() => clearInterval(timer));
  const err = await t.throwsAsync(recvWithFds(b, 16, 1, 200));
  t.true(isSyscallError(err, 'ETIMEDOUT'));
  t.is(err?.name, 'SyscallError');
  t.true(ticks > 0);
});

test('recvWithFds on a closed fd or a non-socket rejects with EBADF / ENOTSOCK', async (t) => {
  const [a, b] = unixSocketPair('stream');
  closeFd(a);
  closeFd(b);
  t.true(isSyscallError(await t.throwsAsync(recvWithFds(b, 16, 1, 100)), 'EBADF'));
  const nsfd = openNetns('/proc/self/ns/net');
  t.teardown(() => closeFd(nsfd));
  t.true(isSyscallError(await t.throwsAsync(recvWithFds(nsfd, 16, 1, 100)), 'ENOTSOCK'));
  t.true(isSyscallError(t.throws(() => sendWithFds(nsfd, Buffer.from('x'), [])), 'ENOTSOCK'));
});

rootTest('netnsId tells namespaces apart and is the same for a path and an fd of it', (t) => {
  const one = addNetns(t, 'ida');
  const two = addNetns(t, 'idb');
  const fd = openNetns(one.path);
  t.teardown(() => closeFd(fd));
  t.is(netnsId(fd), netnsId(one.path));
  t.not(netnsId(one.path), netnsId(two.path));
  t.regex(netnsId(fd), /^\d+:\d+$/);
});
