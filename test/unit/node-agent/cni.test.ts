import test from 'ava';
import { runCni } from '../../../src/node-agent/enrol/cni.js';

const native = {
  sendWithFds: () => { throw new Error('no agent in unit tests'); },
  socketFd: () => -1,
  openNetns: (p: string) => { if (p === '/bad') throw new Error('ENOENT'); return 99; },
  closeFd: () => undefined,
};
const conf = (extra: object = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', type: 'ambit', agentSocket: '/nonexistent/agent.sock', prevResult: { ips: [{ address: '10.244.1.5/24' }] }, ...extra });

test('VERSION lists supported versions', async (t) => {
  const r = await runCni({ CNI_COMMAND: 'VERSION' }, '', { native });
  t.is(r.code, 0);
  t.true(JSON.parse(r.stdout).supportedVersions.includes('1.0.0'));
});

test('ADD for a non-Kubernetes sandbox passes prevResult through', async (t) => {
  const r = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: '/var/run/netns/x' }, conf(), { native });
  t.is(r.code, 0);
  t.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.0.0', ips: [{ address: '10.244.1.5/24' }] });
});

test('ADD fails closed when the agent is unreachable (CNI error JSON)', async (t) => {
  const r = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: '/var/run/netns/x', CNI_ARGS: 'K8S_POD_NAME=a;K8S_POD_NAMESPACE=default' }, conf(), { native, timeoutMs: 500 });
  t.is(r.code, 1);
  const e = JSON.parse(r.stdout);
  t.is(e.code, 11);
  t.regex(e.msg, /did not enrol pod default\/a/);
});

test('ADD with an unopenable netns and bad config are reported', async (t) => {
  const r = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: '/bad', CNI_ARGS: 'K8S_POD_NAME=a;K8S_POD_NAMESPACE=default' }, conf(), { native });
  t.is(JSON.parse(r.stdout).code, 7);
  const bad = await runCni({ CNI_COMMAND: 'ADD' }, '{nope', { native });
  t.is(JSON.parse(bad.stdout).code, 4);
  const chained = await runCni({ CNI_COMMAND: 'ADD' }, JSON.stringify({ cniVersion: '1.0.0' }), { native });
  t.regex(JSON.parse(chained.stdout).msg, /prevResult missing/);
});

test('DEL always succeeds', async (t) => {
  const r = await runCni({ CNI_COMMAND: 'DEL', CNI_ARGS: 'K8S_POD_NAME=a;K8S_POD_NAMESPACE=default' }, conf(), { native, timeoutMs: 500 });
  t.deepEqual(r, { code: 0, stdout: '' });
});

/** A native stand-in that records whether the plugin touched the pod's netns or the agent. */
function recording() {
  const calls: string[] = [];
  return {
    calls,
    native: {
      sendWithFds: () => { calls.push('send'); throw new Error('no agent'); },
      socketFd: () => -1,
      openNetns: (p: string) => { calls.push(`open ${p}`); return 99; },
      closeFd: () => undefined,
    },
  };
}
const args = (ns: string) => `K8S_POD_NAME=p;K8S_POD_NAMESPACE=${ns};K8S_POD_UID=u1`;

test('ADD for kube-system and ambit-system pods succeeds without the agent (unreachable) and without capture', async (t) => {
  for (const ns of ['kube-system', 'ambit-system']) {
    const r0 = recording();
    const r = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: '/var/run/netns/x', CNI_ARGS: args(ns) }, conf(), { native: r0.native, timeoutMs: 500, hostNetns: '/nonexistent' });
    t.is(r.code, 0, `${ns}: ${r.stdout}`);
    t.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.0.0', ips: [{ address: '10.244.1.5/24' }] }, 'prevResult passed through');
    t.deepEqual(r0.calls, [], `${ns}: neither the netns nor the agent was touched`);
  }
});

test('ADD: namespaces named in exemptNamespaces (ambit installed elsewhere) are exempt too; the defaults stay', async (t) => {
  const c = conf({ exemptNamespaces: ['mesh', 42] });
  for (const ns of ['mesh', 'kube-system']) {
    const r0 = recording();
    const r = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: '/var/run/netns/x', CNI_ARGS: args(ns) }, c, { native: r0.native, timeoutMs: 500, hostNetns: '/nonexistent' });
    t.is(r.code, 0, ns);
    t.deepEqual(r0.calls, []);
  }
  // any other namespace still fails closed when the agent is unreachable
  const r0 = recording();
  const r = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: '/var/run/netns/x', CNI_ARGS: args('shop') }, c, { native: r0.native, timeoutMs: 500, hostNetns: '/nonexistent' });
  t.is(r.code, 1);
  t.is(JSON.parse(r.stdout).code, 11);
  t.deepEqual(r0.calls, ['open /var/run/netns/x']);
});

test('ADD for a host-network pod (CNI_NETNS is the plugin\'s own network namespace) succeeds without the agent', async (t) => {
  // the real check: this process's netns named by another path, as a runtime would name it
  const r0 = recording();
  const r = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: `/proc/${process.pid}/ns/net`, CNI_ARGS: args('default') }, conf(), { native: r0.native, timeoutMs: 500 });
  t.is(r.code, 0, r.stdout);
  t.deepEqual(r0.calls, []);
  // a pod namespace that is not the host's is handed to the agent (and fails closed without one)
  const r1 = recording();
  const other = await runCni({ CNI_COMMAND: 'ADD', CNI_NETNS: '/proc/self/ns/net', CNI_ARGS: args('default') }, conf(), { native: r1.native, timeoutMs: 500, hostNetns: '/proc/self/ns/mnt' });
  t.is(other.code, 1);
  t.deepEqual(r1.calls, ['open /proc/self/ns/net']);
});
