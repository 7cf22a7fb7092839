import test from 'ava';
import { resolve } from 'node:path';
import yargs from 'yargs';
import { meshPorts, sumMetric } from '../../src/cli/mesh.js';
import { agentFlags, checkPort, controlFlags, controlOptions, prefixedNetnsCandidates } from '../../src/cli/programs.js';
import { controlSettings } from '../../src/control/main.js';

test('controlFlags: directories follow --dir; only given values are set, so the environment still counts', (t) => {
  const f = controlFlags({ dir: '/tmp/x' });
  t.deepEqual(f, { configDir: '/tmp/x/config', stateDir: '/tmp/x/control' });
  // AMBIT_CONFIG_DIR / AMBIT_STATE_DIR in the environment win over the --dir default
  t.deepEqual(controlFlags({ dir: '/tmp/x' }, { AMBIT_CONFIG_DIR: '/etc/ambit', AMBIT_STATE_DIR: '/var/lib/ambit' }), {});
  const all = controlFlags({
    dir: '/tmp/x', 'config-dir': 'cfg', 'ws-port': 0, 'wss-port': 1, 'status-port': 2, 'debounce-ms': 0, kube: true, listen: '0.0.0.0',
    'trust-domain': 'example.org',
  });
  t.is(all.configDir, resolve('cfg'));
  t.is(all.source, 'kubernetes');
  t.deepEqual([all.wsPort, all.wssPort, all.statusPort, all.debounceMs, all.host, all.trustDomain], [0, 1, 2, 0, '0.0.0.0', 'example.org']);
});

test('controlFlags and agentFlags name the flag of a bad value', (t) => {
  t.throws(() => controlFlags({ 'ws-port': 65536 }), { message: /--ws-port: 65536 is not a port number/ });
  t.throws(() => controlFlags({ 'status-port': 1.5 }), { message: /--status-port/ });
  t.throws(() => controlFlags({ 'debounce-ms': -1 }), { message: /--debounce-ms/ });
  t.throws(() => controlFlags({ 'trust-domain': 'Not A Domain' }), { message: /--trust-domain/ });
  t.throws(() => agentFlags({ 'metrics-port': -1 }), { message: /--metrics-port/ });
  t.throws(() => agentFlags({ 'drain-ms': Number.NaN }), { message: /--drain-ms/ });
  t.throws(() => agentFlags({ 'control-url': 'http://127.0.0.1:15010' }), { message: /--control-url/ });
  t.throws(() => agentFlags({ 'netns-prefix': '../etc' }), { message: /--netns-prefix/ });
  t.is(checkPort('x', undefined), undefined);
});

test('agentFlags maps ports and directories and leaves unset values to the environment', (t) => {
  t.deepEqual(agentFlags({}), {});
  const f = agentFlags({ node: 'node-1', 'control-url': 'ws://127.0.0.1:15010', 'state-dir': 'st', 'admin-port': 15100, 'readiness-port': 15121 });
  t.is(f.node, 'node-1');
  t.is(f.stateDir, resolve('st'));
  t.deepEqual(f.ports, { admin: 15100, readiness: 15121 });
});

test('netns prefix: only the named namespaces of this cluster are scanned', async (t) => {
  const list = await prefixedNetnsCandidates('ambit-zzzz-no-such-cluster-')();
  t.deepEqual(list, []);
});

test('meshPorts: control on base+10/12/14, agent i on base+100*i; a base that overflows is refused', (t) => {
  const p = meshPorts(15000);
  t.deepEqual([p.ws, p.wss, p.status], [15010, 15012, 15014]);
  t.deepEqual(p.agent(1), { admin: 15100, metrics: 15120, readiness: 15121 });
  t.deepEqual(p.agent(2), { admin: 15200, metrics: 15220, readiness: 15221 });
  t.throws(() => meshPorts(50000), { message: /--port-base/ });
  t.throws(() => meshPorts(80), { message: /--port-base/ });
});

test('sumMetric adds the series whose labels match, and only those', (t) => {
  const text = [
    '# HELP istio_tcp_connections_opened_total TCP connections opened',
    '# TYPE istio_tcp_connections_opened_total counter',
    'istio_tcp_connections_opened_total{reporter="source",source_workload="client",connection_security_policy="mutual_tls"} 2',
    'istio_tcp_connections_opened_total{reporter="source",source_workload="client",connection_security_policy="unknown"} 5',
    'istio_tcp_connections_opened_total{reporter="destination",source_workload="client",connection_security_policy="mutual_tls"} 7',
    'istio_tcp_connections_opened_total_other{reporter="source",source_workload="client",connection_security_policy="mutual_tls"} 11',
    'istio_tcp_connections_opened_total{reporter="source",source_workload="client2",connection_security_policy="mutual_tls"} 13',
  ].join('\n');
  t.is(sumMetric(text, 'istio_tcp_connections_opened_total', { reporter: 'source', source_workload: 'client', connection_security_policy: 'mutual_tls' }), 2);
  t.is(sumMetric(text, 'istio_tcp_connections_opened_total', { connection_security_policy: 'mutual_tls', source_workload: 'client' }), 9);
  t.is(sumMetric('', 'istio_tcp_connections_opened_total', {}), 0);
  // a label whose name ends like another's is not mistaken for it
  t.is(sumMetric('m{destination_workload="client"} 3', 'm', { workload: 'client' }), 0);
});

test('controlFlags: --max-connections maps to maxConnections and wins over AMBIT_MAX_CONNECTIONS; bad values name the flag', (t) => {
  t.is(controlFlags({ 'max-connections': 64 }).maxConnections, 64);
  t.false('maxConnections' in controlFlags({}));
  t.is(controlSettings({ AMBIT_MAX_CONNECTIONS: '32' }, controlFlags({ 'max-connections': 64 })).maxConnections, 64);
  t.is(controlSettings({ AMBIT_MAX_CONNECTIONS: '32' }, controlFlags({})).maxConnections, 32);
  for (const bad of [0, -1, 1.5, Number.NaN, 1_000_001, [2, 3]]) {
    t.throws(() => controlFlags({ 'max-connections': bad }), { message: /^--max-connections: .* is not an integer 1\.\.1000000$/ }, JSON.stringify(bad));
  }
});

test('controlFlags: --token-audiences is a comma list that replaces AMBIT_TOKEN_AUDIENCES, checked by parseAudiences under the flag name', (t) => {
  t.deepEqual(controlFlags({ 'token-audiences': 'ambit, istio-ca,,' }).tokenAudiences, ['ambit', 'istio-ca']);
  t.false('tokenAudiences' in controlFlags({}));
  // a repeated flag: both lists
  t.deepEqual(controlFlags({ 'token-audiences': ['a', 'b,c'] }).tokenAudiences, ['a', 'b', 'c']);
  const env = { AMBIT_TOKEN_AUDIENCES: 'from-env' };
  t.deepEqual(controlSettings(env, controlFlags({ 'token-audiences': 'ambit' })).tokenAudiences, ['ambit']);
  t.deepEqual(controlSettings(env, controlFlags({})).tokenAudiences, ['from-env']);
  // an explicit empty list means none, whatever the environment says
  t.deepEqual(controlSettings(env, controlFlags({ 'token-audiences': '' })).tokenAudiences, []);
  for (const bad of ['has space', 'x'.repeat(257), Array.from({ length: 17 }, (_, i) => `a${i}`).join(',')]) {
    t.throws(() => controlSettings({}, controlFlags({ 'token-audiences': bad })), { message: /^--token-audiences: / }, bad.slice(0, 20));
  }
});

test('ambit control parses --max-connections and --token-audiences from the command line', async (t) => {
  const a = await controlOptions(yargs(['--max-connections', '5', '--token-audiences', 'ambit,other'])).strict().parseAsync();
  t.deepEqual([controlFlags(a).maxConnections, controlFlags(a).tokenAudiences], [5, ['ambit', 'other']]);
  const bad = await controlOptions(yargs(['--max-connections', 'lots'])).parseAsync();
  t.throws(() => controlFlags(bad), { message: /--max-connections/ });
});
