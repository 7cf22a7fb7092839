/** The netns scan's decision logic with fake probes (the kernel side is in test/netns/agent-scan). */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMeshError } from '../../../src/core/index.js';
import { findNetnsByIp, parseIpAddrJson, type ScanDeps } from '../../../src/node-agent/enrol/netns-scan.js';

/** Candidate paths must exist (the scan dedupes by inode); plain files do. */
function candidates(t: { teardown(fn: () => void): void }, names: string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-scan-'));
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }); });
  return names.map((n) => { const p = join(dir, n); writeFileSync(p, n); return p; });
}

/** Every bind succeeds (the bare-namespace case); addresses per path name, or an error. */
function deps(addrs: Record<string, string[] | Error>): ScanDeps & { binds: string[] } {
  const binds: string[] = [];
  return {
    binds,
    listenInNetns: (ns, o) => { binds.push(`${String(ns).split('/').pop()!} ${o.address}`); return 3; },
    closeFd: () => undefined,
    netnsAddresses: async (path) => {
      const a = addrs[path.split('/').pop()!];
      if (a instanceof Error) throw a;
      return a ?? [];
    },
  };
}

test('a bind hit is only a hit when the namespace really has the address', async (t) => {
  const [bare, pod] = candidates(t, ['bare', 'pod']);
  const d = deps({ bare: [], pod: ['127.0.0.1', '10.0.0.9'] });
  const r = await findNetnsByIp(d, '10.0.0.9', [bare!, pod!]);
  t.is(r?.path, pod);
  t.deepEqual(d.binds, ['bare 10.0.0.9', 'pod 10.0.0.9']);
});

test('the IP is compared in canonical form', async (t) => {
  const [pod] = candidates(t, ['pod']);
  const d = deps({ pod: ['fd00::9'] });
  t.is((await findNetnsByIp(d, 'FD00:0:0::9', [pod!]))?.path, pod);
  // the bind is asked for the canonical text too
  t.deepEqual(d.binds, ['pod fd00::9']);
  t.is(await findNetnsByIp(d, 'not-an-ip', [pod!]), undefined);
});

test('a candidate whose addresses cannot be read is skipped when another one confirms', async (t) => {
  const [gone, pod] = candidates(t, ['gone', 'pod']);
  const d = deps({ gone: new Error('nsenter: no such namespace'), pod: ['10.0.0.9'] });
  t.is((await findNetnsByIp(d, '10.0.0.9', [gone!, pod!]))?.path, pod);
});

test('nothing confirmed and some candidates unreadable: rejects with the cause (fail closed, not a guess)', async (t) => {
  const [a, b] = candidates(t, ['a', 'b']);
  const d = deps({ a: new Error('netns scan: ip not found'), b: [] });
  const e = await t.throwsAsync(findNetnsByIp(d, '10.0.0.9', [a!, b!]));
  t.true(isMeshError(e, 'AMBIT_NETNS'));
  t.regex(e?.message ?? '', /10\.0\.0\.9: 1 candidate namespace\(s\) could not be checked: netns scan: ip not found/);
});

test('parseIpAddrJson reads ip -j addr output and refuses anything else', (t) => {
  const out = JSON.stringify([
    { ifindex: 1, ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }, { family: 'inet6', local: '::1', prefixlen: 128 }] },
    { ifindex: 2, ifname: 'eth0', addr_info: [{ family: 'inet', local: '10.0.0.9', prefixlen: 24 }, { family: 'inet6', local: 'FD00:0::9', prefixlen: 64 }] },
    { ifindex: 3, ifname: 'down0', addr_info: [] },
    { ifindex: 4, ifname: 'odd' },
  ]);
  t.deepEqual(parseIpAddrJson(out, 'ns'), ['127.0.0.1', '::1', '10.0.0.9', 'fd00::9']);
  t.deepEqual(parseIpAddrJson('[]', 'ns'), []);
  t.throws(() => parseIpAddrJson('Object "addr" is unknown', 'ns /x'), { message: /ns \/x: ip -j addr did not print JSON/ });
  t.throws(() => parseIpAddrJson('{}', 'ns'), { message: /did not print a list/ });
});

test('two namespaces holding the IP: rejects as ambiguous instead of enrolling the first one', async (t) => {
  // Any pod with NET_ADMIN can add a neighbour's IP to its own interface; picking the first match
  // would hand that pod the neighbour's identity for its outbound traffic.
  const [impostor, pod, other] = candidates(t, ['impostor', 'pod', 'other']);
  const d = deps({ impostor: ['10.0.0.9'], pod: ['10.0.0.9'], other: ['10.0.0.7'] });
  const e = await t.throwsAsync(findNetnsByIp(d, '10.0.0.9', [impostor!, pod!, other!]));
  t.true(isMeshError(e, 'AMBIT_NETNS'));
  t.regex(e?.message ?? '', /10\.0\.0\.9.*held by more than one network namespace/);
  t.regex(e?.message ?? '', /impostor/);
  t.regex(e?.message ?? '', /pod/);
  // one holder among several candidates is still found
  t.is((await findNetnsByIp(d, '10.0.0.7', [impostor!, pod!, other!]))?.path, other);
});
