import test from 'ava';
import { Snapshot } from '../../../src/model/index.js';
import { admitCniAdd, decideCniAdd, type AdmissionDeps, type CniAddFacts } from '../../../src/node-agent/enrol/cni-admission.js';
import { wl } from './fixtures.js';

const snap = Snapshot.build({
  workloads: [wl('web', '10.0.0.5'), wl('legacy', '10.0.0.6', { tunnel: 'none' }), wl('far', '10.0.1.5', { node: 'node-b' })],
  services: [], authorizations: [],
}, 3);
const facts = (o: Partial<CniAddFacts> = {}): CniAddFacts => ({
  namespace: 'default', name: 'web', ip: '10.0.0.5', node: 'node-a', snapshot: snap, synced: true, current: true,
  exemptNamespaces: new Set(['kube-system']), ...o,
});

test('an ambient pod is enrolled; a pod the config says is not ambient starts at once', (t) => {
  t.like(decideCniAdd(facts()), { kind: 'enrol', workload: { name: 'web' } });
  t.like(decideCniAdd(facts({ name: 'legacy', ip: '10.0.0.6' })), { kind: 'outside' });
});

test('an agent that never had config cannot tell, so the pod waits (fail closed); exempt namespaces never wait', (t) => {
  const d = decideCniAdd(facts({ synced: false, snapshot: Snapshot.empty(), current: false }));
  t.is(d.kind, 'wait');
  t.regex(d.kind === 'wait' ? d.reason : '', /no config from the control plane/);
  t.like(decideCniAdd(facts({ synced: false, namespace: 'kube-system', name: 'coredns' })), { kind: 'outside' });
});

test('a pod the config does not know: held captured while the config is current, waits while the control plane is away', (t) => {
  t.like(decideCniAdd(facts({ name: 'new' })), { kind: 'hold' });
  const d = decideCniAdd(facts({ name: 'new', current: false }));
  t.is(d.kind, 'wait');
  t.regex(d.kind === 'wait' ? d.reason : '', /control plane is unreachable/);
  // a stale config still knows the pods it knew
  t.like(decideCniAdd(facts({ current: false })), { kind: 'enrol' });
});

test('a workload of another node, or an earlier pod of the same name at another address, is not this pod', (t) => {
  t.like(decideCniAdd(facts({ name: 'far', ip: '10.0.1.5' })), { kind: 'hold' });
  t.like(decideCniAdd(facts({ ip: '10.0.0.99', current: false })), { kind: 'wait' });
});

function deps(o: { facts: () => CniAddFacts; state?: AdmissionDeps['state'] }, log: string[]): AdmissionDeps {
  let now = 0;
  return {
    facts: o.facts,
    remember: async () => { log.push('remember'); },
    hold: async () => { log.push('hold'); },
    forget: () => { log.push('forget'); },
    state: o.state ?? (() => ({ enrolled: true, listening: true, hasCert: true })),
    fetchCert: () => { log.push('fetch'); },
    // each wake moves the clock on by 100 ms
    changed: async () => { now += 100; },
    now: () => now,
  };
}

test('an ambient pod is admitted only once enrolled, listening and holding its certificate', async (t) => {
  const log: string[] = [];
  let polls = 0;
  const how = await admitCniAdd(deps({
    facts,
    state: () => { polls++; return { enrolled: polls > 1, listening: polls > 2, hasCert: polls > 3 }; },
  }, log), 10_000);
  t.is(how, 'enrol');
  t.is(polls, 4);
  t.is(log[0], 'remember');
  t.true(log.includes('fetch'), 'the certificate was asked for');
});

test('a pod that cannot be admitted is refused at the deadline with the reason, and forgotten when nothing holds it', async (t) => {
  const log: string[] = [];
  await t.throwsAsync(admitCniAdd(deps({ facts: () => facts({ name: 'new', current: false }) }, log), 1_000),
    { message: /pod not started \(it would run outside the mesh\): the control plane is unreachable/ });
  t.is(log.at(-1), 'forget');
  const noCert: string[] = [];
  await t.throwsAsync(admitCniAdd(deps({ facts, state: () => ({ enrolled: true, listening: true, hasCert: false }) }, noCert), 1_000),
    { message: /no certificate yet for spiffe:\/\/cluster.local\/ns\/default\/sa\/web/ });
  t.false(noCert.includes('forget'), 'an enrolled pod stays captured until its DEL');
});

test('a waiting pod is admitted as soon as the config arrives', async (t) => {
  const log: string[] = [];
  let synced = false;
  const d = deps({ facts: () => facts(synced ? {} : { synced: false, current: false, snapshot: Snapshot.empty() }) }, log);
  const changed = d.changed;
  d.changed = async () => { await changed(); synced = true; };
  t.is(await admitCniAdd(d, 10_000), 'enrol');
  t.like(decideCniAdd(facts({ name: 'new' })), { kind: 'hold' });
  t.is(await admitCniAdd(deps({ facts: () => facts({ name: 'new' }) }, log), 10_000), 'hold');
  t.true(log.includes('hold'));
});
