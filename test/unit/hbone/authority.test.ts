import test from 'ava';
import { isMeshError } from '../../../src/core/index.js';
import { canonicalIp } from '../../../src/core/index.js';
import { AGENT_PORTS, formatAuthority, parseAuthority, validateTarget } from '../../../src/hbone/index.js';

test('parseAuthority: IPv4, bracketed IPv6 (canonical), hostnames (lowercase)', (t) => {
  t.deepEqual(parseAuthority('10.0.0.1:8080'), { address: '10.0.0.1', port: 8080 });
  t.deepEqual(parseAuthority('[2001:DB8:0:0::1]:443'), { address: '2001:db8::1', port: 443 });
  t.deepEqual(parseAuthority('[::ffff:10.1.2.3]:80'), { address: '10.1.2.3', port: 80 });
  t.deepEqual(parseAuthority('Reviews.Default.svc.cluster.local:9080'), { host: 'reviews.default.svc.cluster.local', port: 9080 });
  t.deepEqual(parseAuthority('a:1'), { host: 'a', port: 1 });
  t.deepEqual(parseAuthority('x:65535'), { host: 'x', port: 65535 });
});

test('parseAuthority refuses malformed input with AMBIT_HBONE_BAD_REQUEST naming the problem', (t) => {
  const cases: Record<string, RegExp> = {
    '': /empty/,
    '10.0.0.1': /missing port/,
    '10.0.0.1:': /port must be decimal/,
    '10.0.0.1:0': /1\.\.65535/,
    '10.0.0.1:65536': /1\.\.65535/,
    '10.0.0.1:-1': /decimal/,
    '10.0.0.1:+80': /decimal/,
    '10.0.0.1:8 0': /decimal/,
    '10.0.0.1:000080': /decimal/,
    '::1:80': /brackets/,
    '[::1]80': /\[ipv6\]:port/,
    '[::1': /\[ipv6\]:port/,
    '[fe80::1%eth0]:80': /not an IPv6/,
    '[10.0.0.1]:80': /not an IPv6/,
    '1.2.3:80': /neither/,
    '999.1.1.1:80': /neither/,
    '-a.example:80': /neither/,
    'a..b:80': /neither/,
    'a_b:80': /neither/,
    'a b:80': /neither/,
    'user@host:80': /neither/,
  };
  for (const [input, re] of Object.entries(cases)) {
    const e = t.throws(() => parseAuthority(input), undefined, input);
    t.true(isMeshError(e, 'AMBIT_HBONE_BAD_REQUEST'), input);
    t.regex(e!.message, re, input);
  }
  t.throws(() => parseAuthority(`${'a'.repeat(300)}:80`), { message: /longer than/ });
  t.throws(() => parseAuthority(`${'a'.repeat(64)}.b:80`));
  t.throws(() => parseAuthority(undefined as unknown as string));
});

test('formatAuthority round-trips', (t) => {
  for (const a of ['10.0.0.1:80', '[2001:db8::1]:443', 'svc.ns.svc.cluster.local:9080']) {
    t.is(formatAuthority(parseAuthority(a)), a);
  }
});

test('canonicalIp', (t) => {
  t.is(canonicalIp('10.0.0.1'), '10.0.0.1');
  t.is(canonicalIp('0:0:0:0:0:0:0:1'), '::1');
  t.is(canonicalIp('::FFFF:192.168.0.1'), '192.168.0.1');
  t.is(canonicalIp('fe80::1%eth0'), undefined);
  t.is(canonicalIp('1.2.3'), undefined);
  t.is(canonicalIp('example.com'), undefined);
  t.is(canonicalIp(''), undefined);
});

test('validateTarget: only this pod, never an agent port', (t) => {
  const policy = { localAddresses: ['10.0.0.5', 'fd00::5'] };
  t.deepEqual(validateTarget({ address: '10.0.0.5', port: 8080 }, policy), { ok: true });
  t.deepEqual(validateTarget({ address: 'fd00:0::5', port: 8080 }, policy), { ok: true });
  t.deepEqual(validateTarget({ address: '::ffff:10.0.0.5', port: 8080 }, policy), { ok: true });
  const mismatch = validateTarget({ address: '10.0.0.6', port: 8080 }, policy);
  t.like(mismatch, { ok: false, status: 400 });
  t.regex((mismatch as { reason: string }).reason, /ip mismatch/);
  for (const port of AGENT_PORTS) t.like(validateTarget({ address: '10.0.0.5', port }, policy), { ok: false, status: 400 });
  t.like(validateTarget({ address: '10.0.0.5', port: 15020 }, { ...policy, forbiddenPorts: [15020] }), { ok: false });
  t.like(validateTarget({ address: '10.0.0.5', port: 15008 }, { ...policy, forbiddenPorts: [] }), { ok: true });
  t.like(validateTarget({ host: 'svc.ns', port: 80 }, policy), { ok: false, status: 400 });
  t.like(validateTarget({ host: 'svc.ns', port: 80 }, { ...policy, allowHostnames: true }), { ok: true });
  t.like(validateTarget({ host: 'svc.ns', port: 15001 }, { ...policy, allowHostnames: true }), { ok: false });
  t.like(validateTarget({ address: 'garbage', port: 80 }, policy), { ok: false });
});
