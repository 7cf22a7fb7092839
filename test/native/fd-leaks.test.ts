/**
 * Error paths of the addon must not leak fds: every failing call is repeated and the number of
 * open fds of this process (/proc/self/fd) compared before and after. Serial, so no other test of
 * this file opens or closes fds meanwhile. The runtime may open or close an fd of its own at any
 * time, so the check is "grew by less than half the rounds": a leak per call grows by all of them.
 */
import test from 'ava';
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  closeFd, connectInNetns, isSyscallError, listenInNetns, netnsId, openNetns, recvWithFds, sendWithFds, unixConnect, unixSocketPair,
} from '../../src/native/index.js';
import { rootSerial } from '../helpers/root.js';

const rootTest = rootSerial;
const ROUNDS = 50;

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function noLeak(t: import('ava').ExecutionContext, before: number, name?: string): void {
  const grew = openFds() - before;
  t.true(grew < ROUNDS / 2, `${name ?? ''}: ${grew} more fds after ${ROUNDS} failed calls`);
}

function plainFile(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-native-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'plain');
  writeFileSync(path, 'not a namespace');
  return path;
}

test.serial('failing synchronous calls leave the fd count unchanged', (t) => {
  const path = plainFile(t);
  const [a, b] = unixSocketPair('seqpacket');
  t.teardown(() => { closeFd(a); closeFd(b); });
  const gone = openSync(path, 'r');
  closeSync(gone);
  const failing: [string, () => unknown][] = [
    ['openNetns(regular file)', () => openNetns(path)],
    ['openNetns(mnt ns)', () => openNetns('/proc/self/ns/mnt')],
    ['openNetns(missing)', () => openNetns('/nonexistent/ambit-netns')],
    ['netnsId(regular file)', () => netnsId(path)],
    ['netnsId(mnt ns)', () => netnsId('/proc/self/ns/mnt')],
    ['unixConnect(missing)', () => unixConnect('/tmp/ambit-no-such-socket')],
    ['unixConnect(regular file)', () => unixConnect(path)],
    ['sendWithFds(closed fd attached)', () => sendWithFds(a, Buffer.from('x'), [gone])],
  ];
  for (const [name, f] of failing) {
    const before = openFds();
    for (let i = 0; i < ROUNDS; i++) t.throws(f, undefined, name);
    noLeak(t, before, name);
  }
});

rootTest('failing listenInNetns (non-local address, port in use, not a netns) leaves the fd count unchanged', async (t) => {
  const path = plainFile(t);
  const busy = createServer();
  busy.listen(0, '127.0.0.1');
  await once(busy, 'listening');
  t.teardown(() => new Promise<void>((resolve) => busy.close(() => resolve())));
  const port = (busy.address() as AddressInfo).port;
  const failing: [string, () => unknown, string][] = [
    ['non-local address', () => listenInNetns('/proc/self/ns/net', { address: '192.0.2.77', port: 0 }), 'EADDRNOTAVAIL'],
    ['port in use', () => listenInNetns('/proc/self/ns/net', { address: '127.0.0.1', port }), 'EADDRINUSE'],
    ['regular file as netns', () => listenInNetns(path, { address: '127.0.0.1', port: 0 }), 'EINVAL'],
  ];
  for (const [name, f, errno] of failing) {
    const before = openFds();
    for (let i = 0; i < ROUNDS; i++) t.true(isSyscallError(t.throws(f, undefined, name), errno), name);
    noLeak(t, before, name);
  }
});

rootTest('failing connectInNetns (refused, non-local source) does not leak: growth stays within the socket pool', async (t) => {
  // a port that was just free: nothing listens there
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const before = openFds();
  for (let i = 0; i < 100; i++) {
    const e = await t.throwsAsync(connectInNetns('/proc/self/ns/net', { address: '127.0.0.1', port }));
    t.true(isSyscallError(e, 'ECONNREFUSED') || (e as { code?: string }).code === 'AMBIT_CONNECT_REFUSED');
    const e2 = await t.throwsAsync(connectInNetns('/proc/self/ns/net', { address: '127.0.0.1', port, localAddress: '192.0.2.77' }));
    t.truthy(e2);
  }
  // the per-netns pool may hold its netns fd and up to 16 spare sockets per family; 200 leaked
  // sockets would be far beyond that
  t.true(openFds() - before <= 40, `${openFds() - before} more fds after 200 failed connects`);
});

test.serial('recvWithFds refusing a message (too many fds, truncated data) closes the fds that arrived', async (t) => {
  const [a, b] = unixSocketPair('seqpacket');
  t.teardown(() => { closeFd(a); closeFd(b); });
  const [x, y] = unixSocketPair('stream');
  t.teardown(() => { closeFd(x); closeFd(y); });
  const before = openFds();
  for (let i = 0; i < ROUNDS; i++) {
    sendWithFds(a, Buffer.from('three'), [x, y, x]);
    t.true(isSyscallError(await t.throwsAsync(recvWithFds(b, 64, 1, 5000)), 'EMSGSIZE'));
    sendWithFds(a, Buffer.from('0123456789'), [x, y]);
    t.true(isSyscallError(await t.throwsAsync(recvWithFds(b, 4, 4, 5000)), 'EMSGSIZE'));
  }
  noLeak(t, before);
});
