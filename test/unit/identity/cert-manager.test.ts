import test from 'ava';
import { CertManager, CertificateAuthority, generateKeyAndCsr, refreshAt } from '../../../src/identity/index.js';
import type { CertBundle, CertClock, CertRequest, Identity } from '../../../src/identity/index.js';
import { isMeshError, MeshError } from '../../../src/core/index.js';
import { makeTestPki } from '../../helpers/pki.js';

const TD = 'cluster.local';
const web: Identity = { trustDomain: TD, namespace: 'shop', serviceAccount: 'web' };
const db: Identity = { trustDomain: TD, namespace: 'shop', serviceAccount: 'db' };

/** Virtual time: timers run only when the test advances the clock. */
class FakeClock {
  now = Math.floor(Date.now() / 1000) * 1000;
  #seq = 0;
  readonly timers = new Map<number, { at: number; fn: () => void }>();
  readonly api: CertClock = {
    now: () => this.now,
    setTimeout: ((fn: () => void, ms: number) => {
      const id = ++this.#seq;
      this.timers.set(id, { at: this.now + ms, fn });
      return id;
    }) as unknown as typeof setTimeout,
    clearTimeout: ((id: number) => { this.timers.delete(id); }) as unknown as typeof clearTimeout,
  };
  /** due times of pending timers, sorted */
  pending(): number[] {
    return [...this.timers.values()].map((x) => x.at).sort((a, b) => a - b);
  }
  /** jump to `to`, firing due timers in order */
  advanceTo(to: number): void {
    for (;;) {
      const due = [...this.timers.entries()].filter(([, x]) => x.at <= to).sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].at);
      due[1].fn();
    }
    this.now = to;
  }
}

/**
 * Resolve once `cond` holds, re-checking after each turn of the event loop (no fixed sleeps; key
 * generation runs on the thread pool, so progress arrives as ordinary I/O events).
 */
async function until(cond: () => boolean): Promise<void> {
  const giveUp = Date.now() + 60_000;
  while (!cond() && Date.now() < giveUp) await new Promise((r) => setImmediate(r));
  if (!cond()) throw new Error('condition never held');
}

function nextRotation(mgr: CertManager): Promise<CertBundle> {
  return new Promise((resolve) => {
    const f = (b: CertBundle): void => { mgr.off('rotated', f); resolve(b); };
    mgr.on('rotated', f);
  });
}

function setup(ttlSeconds = 3600) {
  const clock = new FakeClock();
  const ca = CertificateAuthority.generate({ trustDomain: TD, clock: () => clock.now });
  const calls: Identity[] = [];
  let fail: Error | undefined;
  const request: CertRequest = async (csr, id) => {
    calls.push(id);
    if (fail !== undefined) throw fail;
    return { chainPem: ca.sign(csr, id, ttlSeconds), rootsPem: ca.rootsPem };
  };
  const mgr = new CertManager({ request, clock: clock.api, backoff: { random: () => 0 } /* no jitter taken off: the delays are the curve's */ });
  return { clock, ca, calls, mgr, setFail: (e: Error | undefined) => { fail = e; } };
}

test('concurrent gets for one identity share a single fetch', async (t) => {
  const { mgr, calls } = setup();
  t.teardown(() => mgr.close());
  const bundles = await Promise.all([mgr.get(web), mgr.get(web), mgr.get({ ...web }), mgr.get(web)]);
  t.is(calls.length, 1);
  for (const b of bundles) t.is(b, bundles[0]);
  t.deepEqual(bundles[0]!.identity, web);
  t.is(mgr.peek(web), bundles[0]);
  t.is(await mgr.get(web), bundles[0], 'a valid cached bundle is served without fetching');
  t.is(calls.length, 1);
  t.is(mgr.peek(db), undefined);
});

test('a tracked identity renews at half-life', async (t) => {
  const { mgr, calls, clock } = setup(3600);
  t.teardown(() => mgr.close());
  const rotated: CertBundle[] = [];
  mgr.on('rotated', (b) => rotated.push(b));
  mgr.track(web);
  await until(() => rotated.length === 1);
  const b1 = rotated[0]!;
  t.is(b1.notAfter - b1.notBefore, 3600_000 + 60_000);
  t.deepEqual(clock.pending(), [refreshAt(b1)], 'one renewal timer, at half-life');
  clock.advanceTo(refreshAt(b1) - 1);
  t.is(calls.length, 1, 'nothing before half-life');
  clock.advanceTo(refreshAt(b1));
  await until(() => rotated.length === 2);
  const b2 = rotated[1]!;
  t.is(calls.length, 2);
  t.not(b2.chainPem[0], b1.chainPem[0]);
  t.not(b2.keyPem, b1.keyPem, 'a fresh key per certificate');
  t.is(mgr.peek(web), b2);
  t.deepEqual(clock.pending(), [refreshAt(b2)]);
  mgr.untrack(web);
  t.deepEqual(clock.pending(), [], 'untrack stops renewal');
  t.is(mgr.peek(web), undefined, 'untrack forgets the key');
});

test('while the CA fails, the valid cert stays in use and retries back off; then it recovers', async (t) => {
  const { mgr, calls, clock, setFail } = setup(3600);
  t.teardown(() => mgr.close());
  const b1 = await mgr.get(web);
  mgr.track(web);
  t.deepEqual(clock.pending(), [refreshAt(b1)]);
  setFail(new MeshError('AMBIT_CONNECT_REFUSED', 'ca unreachable'));
  clock.advanceTo(refreshAt(b1));
  await until(() => clock.pending().length === 1);
  t.is(calls.length, 2);
  t.deepEqual(clock.pending(), [clock.now + 1000], 'first retry after 1 s');
  t.is(mgr.peek(web), b1, 'still serving the valid certificate');
  t.is(await mgr.get(web), b1);
  clock.advanceTo(clock.now + 1000);
  await until(() => calls.length === 3 && clock.pending().length === 1);
  t.deepEqual(clock.pending(), [clock.now + 2000], 'then 2 s');
  clock.advanceTo(clock.now + 2000);
  await until(() => calls.length === 4 && clock.pending().length === 1);
  t.deepEqual(clock.pending(), [clock.now + 4000], 'then 4 s');
  setFail(undefined);
  const next = nextRotation(mgr);
  clock.advanceTo(clock.now + 4000);
  const b2 = await next;
  t.is(mgr.peek(web), b2);
  t.deepEqual(clock.pending(), [refreshAt(b2)], 'back to half-life scheduling; backoff reset');
});

test('once the cert expires during an outage, peek fails closed and get rejects', async (t) => {
  const { mgr, clock, setFail } = setup(600);
  t.teardown(() => mgr.close());
  const b1 = await mgr.get(web);
  setFail(new MeshError('AMBIT_CONNECT_REFUSED', 'ca unreachable'));
  clock.advanceTo(b1.notAfter);
  t.is(mgr.peek(web), undefined);
  const e = await t.throwsAsync(mgr.get(web));
  t.true(isMeshError(e, 'AMBIT_CONNECT_REFUSED'));
});

test('setRoots updates every bundle without refetching', async (t) => {
  const { mgr, calls, ca } = setup();
  t.teardown(() => mgr.close());
  const a = await mgr.get(web);
  const b = await mgr.get(db);
  const next = makeTestPki({ trustDomain: TD }).ca.rootsPem;
  const rotated: CertBundle[] = [];
  mgr.on('rotated', (x) => rotated.push(x));
  mgr.setRoots(ca.rootsPem + next);
  t.is(calls.length, 2);
  t.is(mgr.peek(web)!.rootsPem, ca.rootsPem + next);
  t.is(mgr.peek(db)!.rootsPem, ca.rootsPem + next);
  t.is(mgr.peek(web)!.chainPem[0], a.chainPem[0], 'same certificate');
  t.is(mgr.peek(db)!.keyPem, b.keyPem);
  t.is(rotated.length, 2);
  const e = t.throws(() => mgr.setRoots('garbage'));
  t.true(isMeshError(e, 'AMBIT_CERT_INVALID'));
  t.is(mgr.peek(web)!.rootsPem, ca.rootsPem + next, 'bad roots change nothing');
});

test('responses are checked: wrong identity, untrusted chain, mismatched key', async (t) => {
  const clock = new FakeClock();
  const ca = CertificateAuthority.generate({ trustDomain: TD, clock: () => clock.now });
  const other = CertificateAuthority.generate({ trustDomain: TD, clock: () => clock.now });
  const cases: Array<[string, CertRequest, string, RegExp]> = [
    ['wrong identity', async (csr) => ({ chainPem: ca.sign(csr, db), rootsPem: ca.rootsPem }), 'AMBIT_IDENTITY_MISMATCH', /not the expected/],
    ['untrusted chain', async (csr, id) => ({ chainPem: other.sign(csr, id), rootsPem: ca.rootsPem }), 'AMBIT_CERT_INVALID', /trusted root/],
    ['empty chain', async () => ({ chainPem: [], rootsPem: ca.rootsPem }), 'AMBIT_CERT_INVALID', /1\.\.8/],
    ['not a response', async () => (null as unknown as { chainPem: string[]; rootsPem: string }), 'AMBIT_CERT_INVALID', /expected/],
  ];
  for (const [name, request, code, re] of cases) {
    const mgr = new CertManager({ request, clock: clock.api });
    const e = await t.throwsAsync(mgr.get(web));
    t.true(isMeshError(e, code as 'AMBIT_CERT_INVALID'), `${name}: ${String(e)}`);
    t.regex(e!.message, re, name);
    t.is(mgr.peek(web), undefined);
    mgr.close();
  }
  // a certificate for the right identity but someone else's key
  const pki = makeTestPki({ trustDomain: TD, clock: () => clock.now });
  const stolen = await pki.issue(web);
  const mgr = new CertManager({ request: async () => ({ chainPem: stolen.chainPem, rootsPem: stolen.rootsPem }), clock: clock.api });
  const e = await t.throwsAsync(mgr.get(web));
  t.regex(e!.message, /does not match the requested key/);
  mgr.close();
});

test('the CA root may come back in the chain; it is not served', async (t) => {
  const clock = new FakeClock();
  const ca = CertificateAuthority.generate({ trustDomain: TD, clock: () => clock.now });
  const mgr = new CertManager({ request: async (csr, id) => ({ chainPem: [...ca.sign(csr, id), ca.rootsPem], rootsPem: ca.rootsPem }), clock: clock.api });
  t.teardown(() => mgr.close());
  const b = await mgr.get(web);
  t.is(b.chainPem.length, 1);
});

test('maxConcurrent bounds fetches in flight', async (t) => {
  const clock = new FakeClock();
  const ca = CertificateAuthority.generate({ trustDomain: TD, clock: () => clock.now });
  // One pre-made key keeps every step on the event loop, so "nothing else started" is observable.
  const material = await generateKeyAndCsr(web);
  let started = 0;
  let inFlight = 0;
  let peak = 0;
  let open!: () => void;
  const gate = new Promise<void>((r) => { open = r; });
  const mgr = new CertManager({
    maxConcurrent: 2,
    clock: clock.api,
    generate: async () => material,
    request: async (csr, id) => {
      started++;
      inFlight++;
      peak = Math.max(peak, inFlight);
      await gate;
      inFlight--;
      return { chainPem: ca.sign(csr, id), rootsPem: ca.rootsPem };
    },
  });
  t.teardown(() => mgr.close());
  const ids = ['a', 'b', 'c', 'd', 'e'].map((sa) => ({ trustDomain: TD, namespace: 'n', serviceAccount: sa }));
  const all = Promise.all(ids.map((id) => mgr.get(id)));
  await until(() => started === 2);
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  t.is(started, 2, 'the other three wait for a slot');
  open();
  const got = await all;
  t.is(got.length, 5);
  t.is(started, 5);
  t.is(peak, 2);
});

test('limits and lifecycle: bad ids, too many identities, closed manager', async (t) => {
  const { mgr } = setup();
  t.true(isMeshError(t.throws(() => mgr.peek({ ...web, namespace: '' })), 'AMBIT_CERT_INVALID'));
  await t.throwsAsync(mgr.get({ ...web, serviceAccount: 'a/b' }));
  const small = new CertManager({ request: async () => { throw new Error('down'); }, maxIdentities: 1 });
  small.track(web); // holds the only slot
  const e = await t.throwsAsync(small.get(db));
  t.true(isMeshError(e, 'AMBIT_LIMIT'));
  small.close();
  mgr.close();
  t.true(isMeshError(await t.throwsAsync(mgr.get(web)), 'AMBIT_DRAINING'));
  t.true(isMeshError(t.throws(() => new CertManager({ request: undefined as unknown as CertRequest })), 'AMBIT_CONFIG_INVALID'));
});
