/**
 * Bad input never crashes: argument mistakes are TypeErrors raised before any syscall; kernel
 * refusals are SyscallErrors that name the function, the syscall and the errno.
 */
import test from 'ava';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  closeFd, connectInNetns, isNetnsFd, isSyscallError, listenInNetns, netnsId, openNetns, originalDst,
  recvWithFds, sendWithFds, setMark, setTransparent, socketFd, unixConnect, unixSocketPair, type SyscallError,
} from '../../src/native/index.js';
import { rootTest } from '../helpers/root.js';


function tempFile(t: { teardown(fn: () => void): void }): { path: string; fd: number } {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-native-'));
  const path = join(dir, 'plain');
  writeFileSync(path, 'not a namespace');
  const fd = openSync(path, 'r');
  t.teardown(() => { closeSync(fd); rmSync(dir, { recursive: true, force: true }); });
  return { path, fd };
}

/** An fd number that is certainly closed: opened and closed right here (tests in a file run one at a time for sync code). */
function closedFd(): number {
  const [a, b] = unixSocketPair();
  closeFd(a);
  closeFd(b);
  return b;
}

function sys(e: unknown): SyscallError {
  return e as SyscallError;
}

test('openNetns: a missing path is AMBIT_NETNS / ENOENT naming the path', (t) => {
  const e = sys(t.throws(() => openNetns('/var/run/netns/ambit-does-not-exist')));
  t.is(e.name, 'SyscallError');
  t.is(e.code, 'AMBIT_NETNS');
  t.is(e.errno, 'ENOENT');
  t.is(e.syscall, 'open');
  t.regex(e.message, /^openNetns: open: ENOENT .*ambit-does-not-exist/);
});

test('openNetns: a regular file is not a network namespace (EINVAL)', (t) => {
  const { path } = tempFile(t);
  const e = sys(t.throws(() => openNetns(path)));
  t.is(e.code, 'AMBIT_NETNS');
  t.is(e.errno, 'EINVAL');
  t.regex(e.message, /not a network namespace/);
});

test('openNetns: another namespace type is refused (EINVAL)', (t) => {
  const e = sys(t.throws(() => openNetns('/proc/self/ns/mnt')));
  t.is(e.errno, 'EINVAL');
  t.regex(e.message, /another type/);
});

test('isNetnsFd and netnsId check what the fd is', (t) => {
  const { fd } = tempFile(t);
  const ns = openNetns('/proc/self/ns/net');
  t.teardown(() => closeFd(ns));
  t.true(isNetnsFd(ns));
  t.false(isNetnsFd(fd));
  t.false(isNetnsFd(closedFd()));
  t.is(sys(t.throws(() => netnsId(fd))).code, 'AMBIT_NETNS');
});

rootTest('listenInNetns / connectInNetns: a missing netns path or a non-netns fd fails before any socket', async (t) => {
  const { fd } = tempFile(t);
  const e1 = sys(t.throws(() => listenInNetns('/var/run/netns/ambit-missing', { address: '::', port: 0 })));
  t.is(e1.errno, 'ENOENT');
  t.regex(e1.message, /listenInNetns: .*ambit-missing/);
  const e2 = sys(await t.throwsAsync(connectInNetns('/var/run/netns/ambit-missing', { address: '10.0.0.1', port: 80 })));
  t.is(e2.errno, 'ENOENT');
  t.is(e2.code, 'AMBIT_NETNS');
  t.is(sys(t.throws(() => listenInNetns(fd, { address: '::', port: 0 }))).errno, 'EINVAL');
  t.is(sys(await t.throwsAsync(connectInNetns(closedFd(), { address: '10.0.0.1', port: 80 }))).errno, 'EBADF');
});

test('socket options on a regular file are ENOTSOCK, on a closed fd EBADF', (t) => {
  const { fd } = tempFile(t);
  for (const f of [() => originalDst(fd), () => setMark(fd, 0x539), () => setTransparent(fd)]) {
    const e = sys(t.throws(f));
    t.is(e.code, 'AMBIT_SYSCALL');
    t.is(e.errno, 'ENOTSOCK');
    t.regex(e.message, new RegExp(`fd ${fd}`));
  }
  const gone = closedFd();
  t.is(sys(t.throws(() => originalDst(gone))).errno, 'EBADF');
  t.is(sys(t.throws(() => setMark(gone, 1))).errno, 'EBADF');
  t.is(sys(t.throws(() => closeFd(gone))).errno, 'EBADF');
});

test('originalDst on a unix socket is refused (not IPv4/IPv6)', (t) => {
  const [a, b] = unixSocketPair();
  t.teardown(() => { closeFd(a); closeFd(b); });
  t.is(sys(t.throws(() => originalDst(a))).errno, 'EAFNOSUPPORT');
});

test('argument mistakes are TypeErrors naming the function and field', async (t) => {
  const cases: [() => unknown, RegExp][] = [
    [() => originalDst(-1), /^originalDst: fd must be an integer/],
    [() => originalDst(1.5), /^originalDst: fd/],
    [() => setMark(3, 2 ** 32), /^setMark: mark/],
    [() => listenInNetns('/x', { address: 'not-an-ip', port: 1 }), /^listenInNetns: opts\.address .*'not-an-ip'/],
    [() => listenInNetns('/x', { address: '::', port: 70000 }), /^listenInNetns: opts\.port/],
    [() => listenInNetns({} as unknown as string, { address: '::', port: 1 }), /^listenInNetns: netns/],
    [() => listenInNetns('/x', null as unknown as { address: string; port: number }), /^listenInNetns: opts must be an object/],
    [() => sendWithFds(3, Buffer.alloc(0), []), /^sendWithFds: data/],
    [() => sendWithFds(3, Buffer.from('x'), [-2]), /^sendWithFds: fds\[0\]/],
    [() => closeFd(1), /^closeFd: fd/],
    [() => unixConnect('x'.repeat(200)), /^unixConnect: path/],
    [() => socketFd(new Socket()), /^socketFd: socket has no open fd/],
  ];
  for (const [f, re] of cases) {
    const e = t.throws(f);
    t.true(e instanceof TypeError, String(re));
    t.regex(e!.message, re);
  }
  for (const [p, re] of [
    [connectInNetns('/x', { address: '10.0.0.1', port: 0 }), /^connectInNetns: opts\.port/],
    [connectInNetns('/x', { address: '10.0.0.1', port: 80, localAddress: '::1' }), /^connectInNetns: opts\.localAddress .*same IP family/],
    [connectInNetns('/x', { address: '10.0.0.1', port: 80, timeoutMs: 0 }), /^connectInNetns: opts\.timeoutMs/],
    [recvWithFds(3, 16, 300, 10), /^recvWithFds: maxFds/],
    [recvWithFds(3, 0, 1, 10), /^recvWithFds: maxBytes/],
  ] as const) {
    const e = await t.throwsAsync(p);
    t.true(e instanceof TypeError);
    t.regex(e!.message, re);
  }
});

test('unixConnect to a path with no listener fails with ENOENT', (t) => {
  const e = sys(t.throws(() => unixConnect('/tmp/ambit-no-such-socket')));
  t.true(isSyscallError(e, 'ENOENT'));
  t.is(e.syscall, 'connect');
});
