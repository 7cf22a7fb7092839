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
