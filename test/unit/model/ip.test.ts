import test from 'ava';
import { canonicalIp, cidrContains, compileCidr, parseCidr, parseIp } from '../../../src/model/index.js';

const canon: [string, string | undefined][] = [
  ['10.1.2.3', '10.1.2.3'],
  ['0.0.0.0', '0.0.0.0'],
  ['255.255.255.255', '255.255.255.255'],
  ['256.1.1.1', undefined],
  ['01.2.3.4', undefined],
  ['1.2.3', undefined],
  ['1.2.3.4.5', undefined],
  ['', undefined],
  ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ['2001:0db8:0000:0000:0000:ff00:0042:8329', '2001:db8::ff00:42:8329'],
  ['::', '::'],
  ['::1', '::1'],
  ['fe80::', 'fe80::'],
  ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
  ['::ffff:10.0.0.1', '10.0.0.1'],
  ['::ffff:a00:1', '10.0.0.1'],
  ['1::2::3', undefined],
  ['1:2:3:4:5:6:7:8:9', undefined],
  ['12345::', undefined],
  ['::1.2.3.4.5', undefined],
  ['[::1]', undefined],
];
for (const [input, want] of canon) {
  test(`canonicalIp(${JSON.stringify(input)})`, (t) => { t.is(canonicalIp(input), want); });
}

test('parseCidr accepts addresses and prefixes, canonicalises, refuses host bits and bad lengths', (t) => {
  t.deepEqual(parseCidr('10.0.0.0/8'), { address: '10.0.0.0', prefixLen: 8 });
  t.deepEqual(parseCidr('10.1.2.3'), { address: '10.1.2.3', prefixLen: 32 });
  t.deepEqual(parseCidr('2001:DB8::/32'), { address: '2001:db8::', prefixLen: 32 });
  t.deepEqual(parseCidr('::/0'), { address: '::', prefixLen: 0 });
  t.true('error' in parseCidr('10.0.0.1/8'));
  t.true('error' in parseCidr('10.0.0.0/33'));
  t.true('error' in parseCidr('2001:db8::/129'));
  t.true('error' in parseCidr('10.0.0.0/'));
  t.true('error' in parseCidr('10.0.0.0/-1'));
  t.true('error' in parseCidr('nope/8'));
});

test('cidrContains for IPv4, IPv6, across families and at word boundaries', (t) => {
  const has = (c: string, ip: string): boolean => {
    const r = parseCidr(c);
    if ('error' in r) throw new Error(r.error);
    const a = parseIp(ip);
    if (!a) throw new Error(ip);
    return cidrContains(compileCidr(r), a);
  };
  t.true(has('10.0.0.0/8', '10.255.1.1'));
  t.false(has('10.0.0.0/8', '11.0.0.0'));
  t.true(has('0.0.0.0/0', '1.2.3.4'));
  t.false(has('0.0.0.0/0', '::1'));
  t.true(has('10.0.0.1', '10.0.0.1'));
  t.false(has('10.0.0.1', '10.0.0.2'));
  t.true(has('10.0.0.0/8', '::ffff:10.9.9.9'));
  t.true(has('2001:db8::/32', '2001:db8:ffff::1'));
  t.false(has('2001:db8::/32', '2001:db9::1'));
  t.true(has('2001:db8:0:0:8000::/65', '2001:db8::8000:0:0:1'));
  t.false(has('2001:db8:0:0:8000::/65', '2001:db8::7fff:0:0:1'));
  t.true(has('::/0', '2001:db8::1'));
  t.false(has('::/0', '10.0.0.1'));
  t.true(has('fd00::1/128', 'fd00:0:0:0:0:0:0:1'));
});
