import test from 'ava';
import type { Authorization, AuthzMatch, AuthzRule } from '../../../src/model/index.js';
import { evaluateL4 } from '../../../src/policy/index.js';
import type { L4Connection } from '../../../src/policy/index.js';

const id = (ns: string, sa: string) => ({ trustDomain: 'cluster.local', namespace: ns, serviceAccount: sa });
const mtls = (ns: string, sa: string, extra: Partial<L4Connection> = {}): L4Connection =>
  ({ srcIdentity: id(ns, sa), srcIp: '10.0.0.1', dstIp: '10.0.1.1', dstPort: 8080, ...extra });
const plain = (extra: Partial<L4Connection> = {}): L4Connection => ({ srcIp: '10.0.0.1', dstIp: '10.0.1.1', dstPort: 8080, ...extra });

const rule = (...clauses: AuthzMatch[][]): AuthzRule => ({ clauses: clauses.map((matches) => ({ matches })) });
const pol = (name: string, action: 'allow' | 'deny', rules: AuthzRule[], dryRun = false): Authorization =>
  ({ name, namespace: 'ns', scope: 'namespace', action, dryRun, rules });

const ALLOW_ALL = pol('allow-all', 'allow', [rule()]);
const DENY_ALL = pol('deny-all', 'deny', [rule()]);
const ALLOW_NOTHING = pol('allow-nothing', 'allow', []);
const DENY_NOTHING = pol('deny-nothing', 'deny', []);
const ALLOW_FOO = pol('allow-foo', 'allow', [rule([{ principals: [{ exact: 'cluster.local/ns/a/sa/foo' }] }])]);
const DENY_NS_B = pol('deny-b', 'deny', [rule([{ namespaces: [{ exact: 'b' }] }])]);
const STRICT = pol('strict', 'deny', [rule([{ notPrincipals: [{ presence: true }] }])]);

const table: [string, Authorization[], L4Connection, boolean, string | undefined][] = [
  ['no policies: allow', [], plain(), true, undefined],
  ['ALLOW with no rules: deny all', [ALLOW_NOTHING], mtls('a', 'foo'), false, undefined],
  ['ALLOW rules [{}]: allow all', [ALLOW_ALL], plain(), true, 'ns/allow-all'],
  ['DENY rules [{}]: deny all', [DENY_ALL], mtls('a', 'foo'), false, 'ns/deny-all'],
  ['DENY with no rules: no effect', [DENY_NOTHING], plain(), true, undefined],
  ['DENY beats ALLOW', [ALLOW_ALL, DENY_ALL], mtls('a', 'foo'), false, 'ns/deny-all'],
  ['DENY beats ALLOW whatever the order', [DENY_ALL, ALLOW_ALL], mtls('a', 'foo'), false, 'ns/deny-all'],
  ['ALLOW principal matches', [ALLOW_FOO], mtls('a', 'foo'), true, 'ns/allow-foo'],
  ['ALLOW principal other sa', [ALLOW_FOO], mtls('a', 'bar'), false, undefined],
  ['ALLOW principal without identity', [ALLOW_FOO], plain(), false, undefined],
  ['DENY namespace matches', [DENY_NS_B], mtls('b', 'x'), false, 'ns/deny-b'],
  ['DENY namespace other', [DENY_NS_B], mtls('c', 'x'), true, undefined],
  ['DENY namespace without identity does not match', [DENY_NS_B], plain(), true, undefined],
  ['STRICT denies plaintext', [STRICT], plain(), false, 'ns/strict'],
  ['STRICT allows mTLS', [STRICT], mtls('a', 'foo'), true, undefined],
  ['empty match never matches (DENY stripped to nothing)', [pol('d', 'deny', [rule([{}])])], mtls('a', 'foo'), true, undefined],
  ['empty match never matches (ALLOW)', [pol('a', 'allow', [rule([{}])])], mtls('a', 'foo'), false, undefined],
  ['clauses AND: both hold', [pol('p', 'allow', [rule([{ namespaces: [{ exact: 'a' }] }], [{ destinationPorts: [8080] }])])], mtls('a', 'x'), true, 'ns/p'],
  ['clauses AND: one fails', [pol('p', 'allow', [rule([{ namespaces: [{ exact: 'a' }] }], [{ destinationPorts: [9090] }])])], mtls('a', 'x'), false, undefined],
  ['matches OR', [pol('p', 'allow', [rule([{ namespaces: [{ exact: 'z' }] }, { destinationPorts: [8080] }])])], mtls('a', 'x'), true, 'ns/p'],
  ['rules OR', [pol('p', 'allow', [rule([{ namespaces: [{ exact: 'z' }] }]), rule([{ destinationPorts: [8080] }])])], mtls('a', 'x'), true, 'ns/p'],
  ['fields in a match AND', [pol('p', 'allow', [rule([{ namespaces: [{ exact: 'a' }], destinationPorts: [9090] }])])], mtls('a', 'x'), false, undefined],
  ['not* holds when nothing matches', [pol('p', 'allow', [rule([{ notNamespaces: [{ exact: 'b' }] }])])], mtls('a', 'x'), true, 'ns/p'],
  ['not* fails when a value matches', [pol('p', 'allow', [rule([{ notNamespaces: [{ exact: 'a' }] }])])], mtls('a', 'x'), false, undefined],
  ['X and notX both must hold', [pol('p', 'allow', [rule([{ namespaces: [{ prefix: 'a' }], notNamespaces: [{ exact: 'ab' }] }])])], mtls('ab', 'x'), false, undefined],
  ['prefix', [pol('p', 'allow', [rule([{ principals: [{ prefix: 'cluster.local/ns/a/' }] }])])], mtls('a', 'any'), true, 'ns/p'],
  ['suffix', [pol('p', 'allow', [rule([{ principals: [{ suffix: '/sa/foo' }] }])])], mtls('q', 'foo'), true, 'ns/p'],
  ['presence needs an identity', [pol('p', 'allow', [rule([{ principals: [{ presence: true }] }])])], plain(), false, undefined],
  ['source CIDR v4', [pol('p', 'allow', [rule([{ sourceIps: [{ address: '10.0.0.0', prefixLen: 24 }] }])])], plain(), true, 'ns/p'],
  ['source CIDR v4 miss', [pol('p', 'allow', [rule([{ sourceIps: [{ address: '10.0.9.0', prefixLen: 24 }] }])])], plain(), false, undefined],
  ['source CIDR v6', [pol('p', 'allow', [rule([{ sourceIps: [{ address: 'fd00::', prefixLen: 64 }] }])])], plain({ srcIp: 'fd00::5', dstIp: 'fd00:1::1' }), true, 'ns/p'],
  ['v4 CIDR does not match v6 source', [pol('p', 'allow', [rule([{ sourceIps: [{ address: '0.0.0.0', prefixLen: 0 }] }])])], plain({ srcIp: 'fd00::5' }), false, undefined],
  ['v4-mapped source matches v4 CIDR', [pol('p', 'allow', [rule([{ sourceIps: [{ address: '10.0.0.0', prefixLen: 8 }] }])])], plain({ srcIp: '::ffff:10.1.1.1' }), true, 'ns/p'],
  ['notSourceIps', [pol('p', 'deny', [rule([{ notSourceIps: [{ address: '10.0.0.0', prefixLen: 8 }] }])])], plain({ srcIp: '192.168.0.1' }), false, 'ns/p'],
  ['destination ip', [pol('p', 'allow', [rule([{ destinationIps: [{ address: '10.0.1.1', prefixLen: 32 }] }])])], plain(), true, 'ns/p'],
  ['notDestinationPorts carve-out', [pol('p', 'deny', [rule([{ notPrincipals: [{ presence: true }] }], [{ notDestinationPorts: [8080, 9090] }])])], plain({ dstPort: 9090 }), true, undefined],
  ['notDestinationPorts other port denied', [pol('p', 'deny', [rule([{ notPrincipals: [{ presence: true }] }], [{ notDestinationPorts: [8080, 9090] }])])], plain({ dstPort: 7070 }), false, 'ns/p'],
  ['dry-run DENY does not deny', [pol('d', 'deny', [rule()], true)], plain(), true, undefined],
  ['dry-run ALLOW does not create an allow requirement', [pol('a', 'allow', [], true)], plain(), true, undefined],
  ['unparseable address fails closed', [ALLOW_ALL], plain({ srcIp: 'garbage' }), false, undefined],
];

for (const [name, policies, conn, allowed, by] of table) {
  test(`evaluateL4: ${name}`, (t) => {
    const d = evaluateL4(policies, conn);
    t.is(d.allowed, allowed, d.reason);
    t.is(d.policy, by);
    t.true(d.reason.length > 0);
  });
}

test('dry-run policies are reported, with whether they matched', (t) => {
  const d = evaluateL4([pol('d', 'deny', [rule()], true), pol('a', 'allow', [rule([{ namespaces: [{ exact: 'zz' }] }])], true), DENY_ALL], plain());
  t.false(d.allowed);
  t.deepEqual(d.dryRun, [
    { policy: 'ns/d', action: 'deny', matched: true },
    { policy: 'ns/a', action: 'allow', matched: false },
  ]);
  t.is(evaluateL4([ALLOW_ALL], plain()).dryRun, undefined);
});

test('compiled policies are reused across calls and results stay stable', (t) => {
  const p = pol('p', 'allow', [rule([{ sourceIps: [{ address: '10.0.0.0', prefixLen: 8 }] }])]);
  for (let i = 0; i < 1000; i++) {
    t.is(evaluateL4([p], plain({ srcIp: `10.0.${i % 256}.1` })).allowed, true);
  }
  t.false(evaluateL4([p], plain({ srcIp: '11.0.0.1' })).allowed);
});
