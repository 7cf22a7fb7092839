/**
 * ServerSession without a socket: frames in, frames out. Hostile peers get refusals, never an
 * exception, and nothing a peer sends grows without bound.
 */
import test from 'ava';
import { MeshError } from '../../../src/core/index.js';
import { Snapshot } from '../../../src/model/index.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, ResourceStore, ServerSession, buildResourceTables } from '../../../src/xds/index.js';
import type { ServerSessionOptions } from '../../../src/xds/index.js';
import { decodeControlMessage, encodeControlMessage } from '../../../src/xds/codec.js';
import type { CertificateResponse, ControlMessage } from '../../../src/xds/codec.js';

interface Rig {
  s: ServerSession;
  sent: ControlMessage[];
  closes: [number, string][];
  signed: string[];
  clock: { ms: number };
}

function rig(o: Partial<ServerSessionOptions> = {}): Rig {
  const store = new ResourceStore();
  store.update(buildResourceTables(Snapshot.build({ workloads: [], services: [], authorizations: [] })).tables);
  const sent: ControlMessage[] = [];
  const closes: [number, string][] = [];
  const signed: string[] = [];
  const clock = { ms: 0 };
  const s = new ServerSession({
    store, allowedTypes: [ADDRESS_TYPE, AUTHORIZATION_TYPE],
    send: (f) => sent.push(decodeControlMessage(f)),
    close: (code, reason) => closes.push([code, reason]),
    signCertificate: (r) => { signed.push(r.identity); return Promise.resolve({ chainPem: ['leaf'], rootsPem: 'root' }); },
    now: () => clock.ms,
    ...o,
  });
  return { s, sent, closes, signed, clock };
}

function csr(id: number): Uint8Array {
  return encodeControlMessage({ kind: 'certificateRequest', certificateRequest: { requestId: id, csrPem: 'csr', identity: `spiffe://cluster.local/ns/a/sa/s${id}`, ttlSeconds: 0 } });
}

function certResponses(r: Rig): CertificateResponse[] {
  return r.sent.flatMap((m) => (m.kind === 'certificateResponse' ? [m.certificateResponse] : []));
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

test('a flood of certificate requests is signed up to the burst, the rest refused with AMBIT_LIMIT; the budget refills', async (t) => {
  const r = rig({ certificateBurst: 5, certificateRatePerSecond: 2 });
  for (let i = 0; i < 20; i++) { r.s.receive(csr(i)); await settle(); }
  t.is(r.signed.length, 5);
  const refused = certResponses(r).filter((c) => c.errorCode === 'AMBIT_LIMIT');
  t.is(refused.length, 15);
  t.regex(refused[0]!.error, /too many certificate requests/);
  t.deepEqual(r.closes, []);
  r.clock.ms += 1000; // two more tokens
  for (let i = 20; i < 25; i++) { r.s.receive(csr(i)); await settle(); }
  t.is(r.signed.length, 7);
  r.clock.ms += 3_600_000; // refills only up to the burst
  for (let i = 25; i < 40; i++) { r.s.receive(csr(i)); await settle(); }
  t.is(r.signed.length, 12);
});

test('the default budget admits a node full of identities at once', async (t) => {
  const r = rig();
  for (let i = 0; i < 110; i++) { r.s.receive(csr(i)); await settle(); }
  t.is(r.signed.length, 110);
});

test('a refusal from the signer goes back with its code, and a non-MeshError becomes AMBIT_CSR_INVALID', async (t) => {
  let n = 0;
  const r = rig({
    signCertificate: () => {
      n++;
      return Promise.reject(n === 1 ? new MeshError('AMBIT_CSR_FORBIDDEN', 'not on your node') : new TypeError('boom'));
    },
  });
  r.s.receive(csr(1));
  r.s.receive(csr(2));
  await settle();
  t.deepEqual(certResponses(r).map((c) => [c.requestId, c.errorCode]), [[1, 'AMBIT_CSR_FORBIDDEN'], [2, 'AMBIT_CSR_INVALID']]);
});

test('a NACK naming resources the peer was never sent is not remembered (no growth from made-up names)', (t) => {
  const store = new ResourceStore();
  store.update(buildResourceTables(Snapshot.build({
    workloads: [], services: [{ name: 's', namespace: 'ns', hostname: 's.ns.svc.cluster.local', vips: ['10.96.0.1'], ports: [{ port: 80, targetPort: 80 }] }], authorizations: [],
  })).tables);
  const r = rig({ store });
  r.s.receive(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: ADDRESS_TYPE, responseNonce: '', initialResourceVersions: {}, subscribe: ['*'], unsubscribe: [] } }));
  const first = r.sent[0];
  if (first?.kind !== 'deltaResponse') { t.fail('no response'); return; }
  const real = first.deltaResponse.resources[0]!.name;
  const bogus = Array.from({ length: 50 }, (_, i) => ({ name: `made-up-${i}-${'x'.repeat(10_000)}`, message: 'bad' }));
  r.s.receive(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: {
    typeUrl: ADDRESS_TYPE, responseNonce: first.deltaResponse.nonce, initialResourceVersions: {}, subscribe: [], unsubscribe: [],
    errorDetail: { code: 3, message: 'nope', resources: [...bogus, { name: real, message: 'really bad' }] },
  } }));
  const sync = r.s.syncz.find((x) => x.typeUrl === ADDRESS_TYPE)!;
  t.deepEqual(sync.rejected.map((x) => [x.name.slice(0, 40), x.message]), [[real.slice(0, 40), 'really bad']]);
  t.deepEqual(r.closes, []);
});
