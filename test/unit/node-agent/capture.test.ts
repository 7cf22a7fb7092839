import test from 'ava';
import { captureRules, returnRouteCommands, uncaptureRules } from '../../../src/node-agent/enrol/capture.js';

const GOLDEN = `add table inet ambit-nat
delete table inet ambit-nat
add table inet ambit-nat
add chain inet ambit-nat prerouting { type nat hook prerouting priority -100 ; }
add chain inet ambit-nat output { type nat hook output priority -100 ; }
add rule inet ambit-nat prerouting meta l4proto tcp ip saddr 169.254.7.127 accept
add rule inet ambit-nat output meta l4proto tcp ip daddr 169.254.7.127 accept
add rule inet ambit-nat prerouting meta l4proto tcp ip daddr != 127.0.0.0/8 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
add rule inet ambit-nat prerouting meta l4proto tcp ip6 daddr != ::1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
add rule inet ambit-nat output meta l4proto tcp meta mark & 0xfff == 0x111 accept
add rule inet ambit-nat output oifname "lo" ip daddr != 127.0.0.0/8 accept
add rule inet ambit-nat output oifname "lo" ip6 daddr != ::1 accept
add rule inet ambit-nat output meta l4proto tcp ip daddr != 127.0.0.0/8 meta mark & 0xfff != 0x539 redirect to :15001
add rule inet ambit-nat output meta l4proto tcp ip6 daddr != ::1 meta mark & 0xfff != 0x539 redirect to :15001
add table inet ambit-mangle
delete table inet ambit-mangle
add table inet ambit-mangle
add chain inet ambit-mangle prerouting { type filter hook prerouting priority -150 ; }
add chain inet ambit-mangle output { type route hook output priority -150 ; }
add rule inet ambit-mangle prerouting meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111
add rule inet ambit-mangle output ct mark & 0xfff == 0x111 meta mark set ct mark
add chain inet ambit-mangle raw_prerouting { type filter hook prerouting priority -300 ; }
add chain inet ambit-mangle raw_output { type filter hook output priority -300 ; }
add rule inet ambit-mangle raw_prerouting tcp dport 15008 notrack
add rule inet ambit-mangle raw_prerouting tcp sport 15008 notrack
add rule inet ambit-mangle raw_output tcp sport 15008 notrack
add rule inet ambit-mangle raw_output meta mark & 0xfff == 0x539 tcp dport 15008 notrack
`;

test('capture rule set (golden)', (t) => {
  t.is(captureRules(), GOLDEN);
});

test('ports are configurable and validated', (t) => {
  const r = captureRules({ outbound: 25001, inboundPlain: 25006, hbone: 25008 });
  t.true(r.includes('tcp dport != 25008'));
  t.true(r.includes('redirect to :25006'));
  t.true(r.includes('redirect to :25001'));
  t.throws(() => captureRules({ outbound: 0, inboundPlain: 1, hbone: 2 }), { message: /ports\.outbound/ });
});

test('removal is tolerant of absent tables', (t) => {
  t.is(uncaptureRules(), 'add table inet ambit-nat\ndelete table inet ambit-nat\nadd table inet ambit-mangle\ndelete table inet ambit-mangle\n');
});

test('return path: fwmark rule to table 100 and a local default route, both families', (t) => {
  const c = returnRouteCommands();
  t.deepEqual(c.v4[1], ['-4', 'rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', '100']);
  t.deepEqual(c.v6[2], ['-6', 'route', 'replace', 'local', '::/0', 'dev', 'lo', 'table', '100']);
});
