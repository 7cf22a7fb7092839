import test from 'ava';
import { hboneFailureOf } from '../../../src/hbone/index.js';
import { FAIL } from '../../../src/native/index.js';
import type { ResponseFlag } from '../../../src/node-agent/admin/telemetry.js';
import { INBOUND_REFUSAL_STATUS, responseFlag, type InboundRefusalReason, type Outcome } from '../../../src/node-agent/proxy/outcome.js';

const table: Array<[Outcome, ResponseFlag]> = [
  [{ kind: 'inbound-refused', reason: 'policy-denied', via: 'hbone' }, 'DENY'],
  [{ kind: 'inbound-refused', reason: 'policy-denied', via: 'plain' }, 'DENY'],
  [{ kind: 'inbound-refused', reason: 'agent-port', via: 'plain' }, 'DENY'],
  [{ kind: 'inbound-refused', reason: 'agent-port', via: 'hbone' }, 'CONNECT'],
  [{ kind: 'inbound-refused', reason: 'draining', via: 'hbone' }, 'CONNECT'],
  [{ kind: 'outbound-refused', reason: 'no-healthy-upstream' }, 'NO_HEALTHY_UPSTREAM'],
  [{ kind: 'outbound-refused', reason: 'self-call' }, 'DENY'],
  [{ kind: 'outbound-refused', reason: 'pod-unknown' }, 'DENY'],
  [{ kind: 'outbound-refused', reason: 'no-certificate' }, 'TLS_FAILURE'],
  [{ kind: 'dial-failed' }, 'CONNECT'],
  [{ kind: 'flow-failed', failure: 'tls' }, 'TLS_FAILURE'],
  [{ kind: 'flow-failed', failure: 'connect' }, 'CONNECT'],
  [{ kind: 'flow-failed', failure: 'status' }, 'CONNECT'],
  [{ kind: 'flow-failed', failure: 'refused' }, 'CONNECT'],
  [{ kind: 'flow-failed', failure: undefined }, 'CONNECT'],
];

for (const [o, flag] of table) {
  test(`responseFlag: ${JSON.stringify(o)} is ${flag}`, (t) => {
    t.is(responseFlag(o), flag);
  });
}

test('engine failure codes map to failures by code, never by text', (t) => {
  t.is(hboneFailureOf(0), undefined);
  t.is(hboneFailureOf(undefined), undefined);
  t.is(hboneFailureOf(FAIL.TLS), 'tls');
  t.is(hboneFailureOf(FAIL.CONNECT), 'connect');
  t.is(hboneFailureOf(FAIL.STATUS), 'status');
  t.is(hboneFailureOf(FAIL.LOCAL), 'aborted');
  // a code this build does not know is still a failure
  t.is(hboneFailureOf(250), 'aborted');
  t.is(responseFlag({ kind: 'flow-failed', failure: hboneFailureOf(FAIL.TLS) }), 'TLS_FAILURE');
});

test('a refused HBONE stream is answered 400 for a bad request, 401 for policy, 503 when the agent cannot serve it', (t) => {
  const want: Record<InboundRefusalReason, number> = {
    'draining': 503, 'bad-authority': 400, 'authority-mismatch': 400, 'not-pod-address': 400, 'agent-port': 400,
    'pod-unknown': 503, 'bad-peer-identity': 400, 'policy-denied': 401,
  };
  t.deepEqual({ ...INBOUND_REFUSAL_STATUS }, want);
});
