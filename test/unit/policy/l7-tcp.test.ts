/**
 * targetRefs AuthorizationPolicies on a port the waypoint proxies as opaque TCP (evaluateTcp): Envoy's TCP-chain
 * semantics. Principals, namespaces, ipBlocks, ports and source/destination `when` keys apply; an ALLOW rule
 * naming an HTTP attribute never matches (allows less), a DENY rule ignores it (denies more).
 */
import test from 'ava';
import type { L7Authorization, L7Rule } from '../../../src/model/l7.js';
import { evaluateTcp, type TcpConnectionFacts } from '../../../src/policy/index.js';

const CLIENT = 'spiffe://cluster.local/ns/default/sa/client';
const OTHER = 'spiffe://cluster.local/ns/other/sa/x';
const conn = (o: Partial<TcpConnectionFacts> = {}): TcpConnectionFacts => ({ port: 9000, sourcePrincipal: CLIENT, sourceIp: '10.244.1.9', destinationIp: '10.96.0.10', ...o });
const pol = (action: 'allow' | 'deny', rules: L7Rule[], name = 'p'): L7Authorization => ({ name, namespace: 'default', action, dryRun: false, rules });
const principal = (p: string) => ({ exact: p.slice('spiffe://'.length) });

const cases: Array<[string, L7Authorization[], TcpConnectionFacts, boolean]> = [
  ['no policies', [], conn(), true],
  ['ALLOW with no rules denies all', [pol('allow', [])], conn(), false],
  ['ALLOW rules: [{}] allows all', [pol('allow', [{}])], conn(), true],
  ['ALLOW by principal', [pol('allow', [{ from: [{ principals: [principal(CLIENT)] }] }])], conn(), true],
  ['ALLOW by principal, other client', [pol('allow', [{ from: [{ principals: [principal(CLIENT)] }] }])], conn({ sourcePrincipal: OTHER }), false],
  ['ALLOW by principal, no identity', [pol('allow', [{ from: [{ principals: [principal(CLIENT)] }] }])], conn({ sourcePrincipal: undefined }), false],
  ['ALLOW by namespace', [pol('allow', [{ from: [{ namespaces: [{ exact: 'default' }] }] }])], conn(), true],
  ['ALLOW notNamespaces', [pol('allow', [{ from: [{ notNamespaces: [{ exact: 'default' }] }] }])], conn(), false],
  ['ALLOW by ipBlock', [pol('allow', [{ from: [{ ipBlocks: [{ address: '10.244.1.0', prefixLen: 24 }] }] }])], conn(), true],
  ['ALLOW by ipBlock, outside', [pol('allow', [{ from: [{ ipBlocks: [{ address: '10.244.2.0', prefixLen: 24 }] }] }])], conn(), false],
  ['ALLOW by port', [pol('allow', [{ to: [{ ports: [9000] }] }])], conn(), true],
  ['ALLOW by other port', [pol('allow', [{ to: [{ ports: [80] }] }])], conn(), false],
  ['ALLOW notPorts', [pol('allow', [{ to: [{ notPorts: [9000] }] }])], conn(), false],
  ['ALLOW with methods (HTTP only): the rule never matches', [pol('allow', [{ from: [{ principals: [principal(CLIENT)] }], to: [{ methods: [{ exact: 'GET' }] }] }])], conn(), false],
  ['ALLOW with notPaths (HTTP only): the rule never matches', [pol('allow', [{ to: [{ notPaths: [{ exact: '/admin' }] }] }])], conn(), false],
  ['ALLOW with an HTTP rule and an L4 rule: the L4 rule still allows', [pol('allow', [{ to: [{ hosts: [{ exact: 'echo' }] }] }, { from: [{ principals: [principal(CLIENT)] }] }])], conn(), true],
  ['ALLOW with request.headers: never', [pol('allow', [{ when: [{ key: 'request.headers[x-user]', values: ['a'] }] }])], conn(), false],
  ['ALLOW with requestPrincipals: never', [pol('allow', [{ from: [{ requestPrincipals: [{ presence: true }] }] }])], conn(), false],
  ['ALLOW when source.namespace', [pol('allow', [{ when: [{ key: 'source.namespace', values: ['default'] }] }])], conn(), true],
  ['ALLOW when destination.port', [pol('allow', [{ when: [{ key: 'destination.port', values: ['9000'] }] }])], conn(), true],
  ['DENY by principal', [pol('deny', [{ from: [{ principals: [principal(CLIENT)] }] }])], conn(), false],
  ['DENY by principal, other client passes', [pol('deny', [{ from: [{ principals: [principal(CLIENT)] }] }])], conn({ sourcePrincipal: OTHER }), true],
  ['DENY with only methods (HTTP only) denies every connection of the source', [pol('deny', [{ from: [{ principals: [principal(CLIENT)] }], to: [{ methods: [{ exact: 'POST' }] }] }])], conn(), false],
  ['DENY with only paths denies all', [pol('deny', [{ to: [{ paths: [{ exact: '/admin' }] }] }])], conn({ sourcePrincipal: OTHER }), false],
  ['DENY with request.headers: holds', [pol('deny', [{ when: [{ key: 'request.headers[x-user]', values: ['a'] }] }])], conn(), false],
  ['DENY by other port: passes', [pol('deny', [{ to: [{ ports: [80], methods: [{ exact: 'GET' }] }] }])], conn(), true],
  ['DENY before ALLOW', [pol('allow', [{}], 'a'), pol('deny', [{ from: [{ ipBlocks: [{ address: '10.244.1.9', prefixLen: 32 }] }] }], 'd')], conn(), false],
  ['dry-run DENY is not enforced', [{ ...pol('deny', [{}]), dryRun: true }], conn(), true],
];

for (const [name, policies, c, allowed] of cases) {
  test(`TCP at the waypoint: ${name}`, (t) => {
    const d = evaluateTcp(policies, c);
    t.is(d.allowed, allowed, d.reason);
  });
}

test('TCP at the waypoint: a policy of the wrong shape denies (fail closed)', (t) => {
  const broken = { name: 'b', namespace: 'default', action: 'allow', dryRun: false, rules: [{ from: [{ ipBlocks: [{ address: 'not-an-ip', prefixLen: 99 }] }] }] } as unknown as L7Authorization;
  t.false(evaluateTcp([broken], conn()).allowed);
  t.false(evaluateTcp([{ name: 'x', namespace: 'd', action: 'allow', dryRun: false, rules: null } as unknown as L7Authorization], conn()).allowed);
});
