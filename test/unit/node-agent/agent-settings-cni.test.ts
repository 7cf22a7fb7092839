/** The agent's CNI settings from its environment: both dirs or neither, absolute; extra exempt namespaces added to the defaults. */
import test from 'ava';
import { agentSettings, cniDirs, cniPluginSettings } from '../../../src/node-agent/main.js';

const base = { AMBIT_NODE_NAME: 'n1', AMBIT_CONTROL_URL: 'ws://127.0.0.1:1', AMBIT_TOKEN: 'x'.repeat(32) };

test('no CNI dirs: nothing is installed (ambit up, tests); both: installed; one alone or a relative path: refused, naming the variable', (t) => {
  t.is(agentSettings(base).cni, undefined);
  t.deepEqual(agentSettings({ ...base, AMBIT_CNI_BIN_DIR: '/host/opt/cni/bin', AMBIT_CNI_CONF_DIR: '/host/etc/cni/net.d' }).cni, { binDir: '/host/opt/cni/bin', confDir: '/host/etc/cni/net.d' });
  t.throws(() => agentSettings({ ...base, AMBIT_CNI_BIN_DIR: '/opt/cni/bin' }), { message: /AMBIT_CNI_BIN_DIR and AMBIT_CNI_CONF_DIR go together \(AMBIT_CNI_CONF_DIR is missing\)/ });
  t.throws(() => cniDirs({ AMBIT_CNI_BIN_DIR: 'opt/cni/bin', AMBIT_CNI_CONF_DIR: '/etc/cni/net.d' }), { message: /AMBIT_CNI_BIN_DIR: "opt\/cni\/bin" is not an absolute path/ });
  t.deepEqual(cniDirs({ AMBIT_CNI_BIN_DIR: '/a', AMBIT_CNI_CONF_DIR: '/b' }, { binDir: '/c' }), { binDir: '/c', confDir: '/b' }, 'a flag before the environment');
});

test('AMBIT_EXEMPT_NAMESPACES adds to kube-system and ambit-system, for the agent and for the plugin\'s conflist entry', (t) => {
  const s = agentSettings({ ...base, AMBIT_EXEMPT_NAMESPACES: 'mesh, monitoring', AMBIT_STATE_DIR: '/var/run/ambit' });
  t.deepEqual(s.exemptNamespaces, ['kube-system', 'ambit-system', 'mesh', 'monitoring']);
  t.deepEqual(cniPluginSettings(s), { agentSocket: '/var/run/ambit/agent.sock', exemptNamespaces: ['mesh', 'monitoring'] });
  t.deepEqual(cniPluginSettings(agentSettings({ ...base, AMBIT_EXEMPT_NAMESPACES: 'ambit-system' })), { agentSocket: '/var/run/ambit/agent.sock' }, 'the defaults are the plugin\'s own');
  t.is(agentSettings(base).exemptNamespaces, undefined);
  t.throws(() => agentSettings({ ...base, AMBIT_EXEMPT_NAMESPACES: 'Bad_Name' }), { message: /AMBIT_EXEMPT_NAMESPACES: "Bad_Name" is not a namespace name/ });
});
