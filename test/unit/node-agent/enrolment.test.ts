import test from 'ava';
import { Snapshot, type Workload } from '../../../src/model/index.js';
import { Enrolment, type EnrolmentDeps } from '../../../src/node-agent/enrol/enrolment.js';
import type { PodInfo } from '../../../src/node-agent/proxy/context.js';
import { wl } from './fixtures.js';

function harness(workloads: Workload[]) {
  let snap = Snapshot.build({ workloads, services: [], authorizations: [] });
  const events: string[] = [];
  const tracked = new Map<string, number>();
  const closed: number[] = [];
  const deps: EnrolmentDeps = {
    node: 'node-a',
    snapshot: () => snap,
    applyCapture: async (ns) => { events.push(`capture ${ns}`); return { returnPath: true }; },
    removeCapture: async (ns) => { events.push(`uncapture ${ns}`); },
    findNetns: async (ip) => (ip === '10.0.0.9' ? '/scan/found' : undefined),
    createProxy: (pod: PodInfo) => {
      let listening = false;
      return {
        get listening() { return listening; },
        openConnections: 0,
        start: async () => { listening = true; events.push(`start ${pod.name} ${String(pod.netns)} spoof=${pod.spoof}`); },
        stop: async () => { listening = false; events.push(`stop ${pod.name}`); },
      };
    },
    trackIdentity: (id) => { tracked.set(id.serviceAccount, (tracked.get(id.serviceAccount) ?? 0) + 1); },
    untrackIdentity: (id) => { tracked.delete(id.serviceAccount); },
    closeFd: (fd) => { closed.push(fd); },
  };
  return { e: new Enrolment(deps), events, tracked, closed, set: (ws: Workload[]) => { snap = Snapshot.build({ workloads: ws, services: [], authorizations: [] }); } };
}

test('CNI add of an ambient pod enrols it with the handed-over netns', async (t) => {
  const a = wl('a', '10.0.0.2', { node: 'node-a' });
  const h = harness([a]);
  await h.e.add({ name: 'a', namespace: 'default', netns: 42, ownedFd: 42 });
  t.deepEqual(h.events, ['capture 42', 'start a 42 spoof=true']);
  t.true(h.e.enrolled.has(a.uid));
  t.true(h.tracked.has('a'));
});

test('pods of other nodes and non-ambient pods are not enrolled; the netns is remembered', async (t) => {
  const h = harness([wl('b', '10.0.0.3', { node: 'node-b' }), wl('c', '10.0.0.4', { tunnel: 'none' })]);
  await h.e.add({ name: 'c', namespace: 'default', netns: 7, ownedFd: 7 });
  t.deepEqual(h.events, []);
  t.is(h.e.known.size, 1);
  // the namespace gets labelled: enrolled without a restart
  h.set([wl('c', '10.0.0.4')]);
  await h.e.reconcile();
  t.deepEqual(h.events, ['capture 7', 'start c 7 spoof=true']);
});

test('a running pod never handed over is found by IP', async (t) => {
  const h = harness([wl('d', '10.0.0.9')]);
  await h.e.reconcile();
  t.deepEqual(h.events, ['capture /scan/found', 'start d /scan/found spoof=true']);
});

test('a pod nowhere to be found is reported, not enrolled', async (t) => {
  const w = wl('e', '10.0.0.10');
  const h = harness([w]);
  await h.e.reconcile();
  t.regex(h.e.failures.get(w.uid) ?? '', /no network namespace holds 10\.0\.0\.10/);
});

test('removing the label unenrols: proxy stopped, rules removed, identity untracked', async (t) => {
  const a = wl('a', '10.0.0.2');
  const h = harness([a]);
  await h.e.add({ name: 'a', namespace: 'default', netns: 42, ownedFd: 42 });
  h.set([{ ...a, tunnel: 'none' }]);
  await h.e.reconcile();
  t.deepEqual(h.events.slice(2), ['stop a', 'uncapture 42']);
  t.false(h.tracked.has('a'));
  t.is(h.e.enrolled.size, 0);
});

test('agent stop leaves the rules in place and closes held fds', async (t) => {
  const h = harness([wl('a', '10.0.0.2')]);
  await h.e.add({ name: 'a', namespace: 'default', netns: 42, ownedFd: 42 });
  await h.e.stop(100);
  t.deepEqual(h.events, ['capture 42', 'start a 42 spoof=true', 'stop a']);
  t.deepEqual(h.closed, [42]);
});

test('CNI del removes the pod from the mesh and closes its fd', async (t) => {
  const h = harness([wl('a', '10.0.0.2')]);
  await h.e.add({ name: 'a', namespace: 'default', netns: 42, ownedFd: 42 });
  await h.e.del('default', 'a');
  t.deepEqual(h.events.slice(2), ['stop a', 'uncapture 42']);
  t.deepEqual(h.closed, [42]);
});
