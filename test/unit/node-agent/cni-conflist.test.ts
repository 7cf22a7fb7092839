import test from 'ava';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AMBIT_CNI_TYPE, chainInDir, chainPlugin, primaryConfFile, unchainInDir, unchainPlugin } from '../../../src/node-agent/enrol/cni-conflist.js';

const ours = { type: AMBIT_CNI_TYPE, agentSocket: '/var/run/ambit/agent.sock' };
const calico = {
  name: 'k8s-pod-network', cniVersion: '0.3.1',
  plugins: [{ type: 'calico', ipam: { type: 'calico-ipam' }, kubernetes: { kubeconfig: '/etc/cni/net.d/calico-kubeconfig' } }, { type: 'portmap', capabilities: { portMappings: true }, snat: true }],
};

test('the runtime\'s file is the lexically first .conf/.conflist/.json', (t) => {
  t.is(primaryConfFile(['99-loopback.conf', '10-flannel.conflist', 'calico-kubeconfig', '.hidden.conf']), '10-flannel.conflist');
  t.is(primaryConfFile(['README']), undefined);
});

test('chain appends ambit last and keeps every other field and plugin as it was; chaining again replaces ambit\'s entry', (t) => {
  const once = JSON.parse(chainPlugin('10-calico.conflist', JSON.stringify(calico), ours)) as typeof calico;
  t.deepEqual(once, { ...calico, plugins: [...calico.plugins, ours] });
  const upgraded = JSON.parse(chainPlugin('10-calico.conflist', JSON.stringify(once), { ...ours, agentSocket: '/run/ambit/agent.sock' })) as typeof calico;
  t.is(upgraded.plugins.length, 3, 'one ambit entry, never two');
  t.is((upgraded.plugins[2] as { agentSocket?: string }).agentSocket, '/run/ambit/agent.sock');
  t.deepEqual(JSON.parse(unchainPlugin('x', JSON.stringify(upgraded))!), calico);
  t.is(unchainPlugin('x', JSON.stringify(calico)), undefined, 'nothing to take out: nothing to write');
});

test('a single-plugin .conf becomes a list of it and ambit; bad files are named, never rewritten', (t) => {
  const flannel = { cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true } };
  t.deepEqual(JSON.parse(chainPlugin('10-flannel.conf', JSON.stringify(flannel), ours)), {
    cniVersion: '0.3.1', name: 'cbr0', plugins: [{ type: 'flannel', delegate: { hairpinMode: true } }, ours],
  });
  t.throws(() => chainPlugin('a.conflist', '{oops', ours), { message: /cni config a\.conflist: not JSON/ });
  t.throws(() => chainPlugin('a.conflist', '{"name":"x"}', ours), { message: /neither a plugin list \(plugins\) nor a single plugin \(type\)/ });
  t.throws(() => chainPlugin('a.conflist', JSON.stringify({ name: 'x', plugins: [ours] }), ours), { message: /no main plugin to chain after/ });
});

test('in a directory: the file is replaced whole (no temporary left), a .conf turns into a .conflist, unchain undoes it', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-cni-conf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, '10-flannel.conf'), JSON.stringify({ cniVersion: '0.3.1', name: 'cbr0', type: 'flannel' }));
  writeFileSync(join(dir, '99-other.conflist'), JSON.stringify(calico));
  t.is(chainInDir(dir, ours), join(dir, '10-flannel.conflist'));
  t.deepEqual(readdirSync(dir).sort(), ['10-flannel.conflist', '99-other.conflist']);
  t.is((JSON.parse(readFileSync(join(dir, '10-flannel.conflist'), 'utf8')) as typeof calico).plugins.at(-1)!.type, AMBIT_CNI_TYPE);
  t.deepEqual(JSON.parse(readFileSync(join(dir, '99-other.conflist'), 'utf8')), calico, 'other files untouched');
  t.is(unchainInDir(dir), join(dir, '10-flannel.conflist'));
  t.deepEqual(JSON.parse(readFileSync(join(dir, '10-flannel.conflist'), 'utf8')), { cniVersion: '0.3.1', name: 'cbr0', plugins: [{ type: 'flannel' }] });
  t.is(unchainInDir(dir), undefined);
  const empty = mkdtempSync(join(tmpdir(), 'ambit-cni-conf-'));
  t.teardown(() => rmSync(empty, { recursive: true, force: true }));
  t.throws(() => chainInDir(empty, ours), { message: /no network configuration yet/ });
});
