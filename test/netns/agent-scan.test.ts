/**
 * The node agent's netns scan against real namespaces: a bare namespace (loopback down, no
 * address), where the kernel accepts a bind to any IP, must not be taken for the pod; the
 * namespace that really holds the IP is found, for IPv4 and IPv6.
 */
import test from 'ava';
import * as native from '../../src/native/index.js';
import { findNetnsByIp, netnsAddresses, netnsIdOfPath } from '../../src/node-agent/enrol/netns-scan.js';
import { addLocalAddrs, addNetns, cleanupStaleNetns, run, type TeardownHost } from '../helpers/netns-raw.js';
import { netnsOk, netnsTest } from '../helpers/root.js';

const root = netnsOk;

test.before(() => {
  if (root) cleanupStaleNetns();
});

const PID36 = process.pid.toString(36);
let seq = 0;

/** A namespace exactly as `ip netns add` leaves it: loopback down, no address. */
function bareNetns(t: TeardownHost): string {
  const name = `ambit-${PID36}-scanbare${++seq}`;
  run('ip', ['netns', 'add', name]);
  t.teardown(() => {
    try { run('ip', ['netns', 'del', name]); } catch { /* already gone */ }
  });
  return `/var/run/netns/${name}`;
}

netnsTest('a bare namespace accepts any bind, yet the scan picks the namespace that holds the IP', async (t) => {
  const bare = bareNetns(t);
  const pod = addNetns(t, 'scanpod');
  addLocalAddrs(pod, ['10.79.0.7/32', 'fd00:79::7/128']);

  // the trap is real: a bind alone would call the bare namespace a hit
  const fd = native.listenInNetns(bare, { address: '10.79.0.7', port: 0 });
  native.closeFd(fd);

  const found = await findNetnsByIp(native, '10.79.0.7', [bare, pod.path]);
  t.is(found?.path, pod.path);
  t.is(found?.id, await netnsIdOfPath(pod.path));
  const found6 = await findNetnsByIp(native, 'fd00:79::7', [bare, pod.path]);
  t.is(found6?.path, pod.path);
});

netnsTest('only a bare namespace among the candidates: nothing is found', async (t) => {
  const bare = bareNetns(t);
  const other = addNetns(t, 'scanother');
  addLocalAddrs(other, ['10.79.1.1/32']);
  t.is(await findNetnsByIp(native, '10.79.0.7', [bare, other.path]), undefined);
  t.is(await findNetnsByIp(native, 'fd00:79::7', [bare]), undefined);
});

netnsTest('an excluded namespace (already enrolled, the agent\'s own) is skipped even when it holds the IP', async (t) => {
  const pod = addNetns(t, 'scanpod');
  addLocalAddrs(pod, ['10.79.0.7/32']);
  const id = await netnsIdOfPath(pod.path);
  t.truthy(id);
  t.is(await findNetnsByIp(native, '10.79.0.7', [pod.path], new Set([id!])), undefined);
});

netnsTest('netnsAddresses lists a namespace\'s addresses in canonical form; none for a bare one', async (t) => {
  const bare = bareNetns(t);
  const pod = addNetns(t, 'scanpod');
  addLocalAddrs(pod, ['10.79.0.7/32', 'FD00:79:0::7/128']);
  const addrs = await netnsAddresses(pod.path);
  t.true(addrs.includes('127.0.0.1'));
  t.true(addrs.includes('10.79.0.7'));
  t.true(addrs.includes('fd00:79::7'));
  t.deepEqual(await netnsAddresses(bare), []);
  await t.throwsAsync(netnsAddresses(`/var/run/netns/ambit-${PID36}-missing`), { message: /reading the addresses of/ });
});
