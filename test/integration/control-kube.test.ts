/**
 * `ambit control --kube` end to end against the in-test API server: the control plane creates its
 * CA into a Secret on the first start and reads it on the next, publishes the root, and through
 * its config source (list + watch), as the holder of the leader Lease, deploys a waypoint for a
 * Gateway, writes its status, and follows a change of it.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { controlSettings, startControl } from '../../src/control/main.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';

const GATEWAYS = '/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways';
const GW = `${GATEWAYS}/waypoint`;
const DEP = '/apis/apps/v1/namespaces/shop/deployments/waypoint';

test('the control plane keeps its CA in a Secret across restarts and runs a waypoint for a Gateway it watches', async (t) => {
  const fake = new FakeKubeApi();
  const server = await fake.listen();
  t.teardown(() => fake.close());
  const dir = mkdtempSync(join(tmpdir(), 'ambit-control-kube-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server, skipTLSVerify: true }], users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }], currentContext: 'c',
  });
  const s = controlSettings({
    AMBIT_CONFIG_SOURCE: 'kubernetes', AMBIT_STATE_DIR: dir, AMBIT_WS_PORT: '0', AMBIT_WSS_PORT: '0', AMBIT_STATUS_PORT: 'off',
    AMBIT_LISTEN_HOST: '127.0.0.1', AMBIT_DEBOUNCE_MS: '5', AMBIT_NAMESPACE: 'mesh', AMBIT_POD_NAME: 'control-0', AMBIT_WAYPOINT_IMAGE: 'reg.example/ambit:2', AMBIT_TOKEN_AUDIENCES: 'ambit',
  });
  fake.put(GATEWAYS, {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'shop' },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  });
  const status = fake.request((r) => r.method === 'PATCH' && r.path === `${GW}/status`);

  const first = await startControl(s, { kubeConfig: kc });
  t.teardown(() => first.plane.stop());
  const secret = fake.get('/api/v1/namespaces/mesh/secrets/ambit-ca');
  t.truthy(secret, 'the CA Secret is in the control plane\'s namespace');
  const root = (fake.get('/api/v1/namespaces/mesh/configmaps/ambit-ca-root')!.data as Record<string, string>)['root-cert.pem']!;
  t.regex(root, /BEGIN CERTIFICATE/);

  // the Gateway listed at start: its waypoint and its status
  await status;
  const dep = fake.get(DEP)!;
  const c = (dep.spec as { template: { spec: { containers: Array<{ image: string; env: Array<{ name: string; value?: string }> }> } } }).template.spec.containers[0]!;
  t.is(c.image, 'reg.example/ambit:2');
  t.is(c.env.find((e) => e.name === 'AMBIT_CONTROL_URL')!.value, 'wss://ambit-control.mesh.svc:15012');
  t.is((fake.get('/api/v1/namespaces/shop/configmaps/waypoint-ambit-ca-root')!.data as Record<string, string>)['root-cert.pem'], root);
  const conds = (fake.get(GW)!.status as { conditions: Array<{ type: string; status: string }> }).conditions;
  t.deepEqual(conds.map((x) => [x.type, x.status]), [['Accepted', 'True'], ['Programmed', 'True']]);

  // it wrote as the holder of the Lease
  t.is((fake.get('/apis/coordination.k8s.io/v1/namespaces/mesh/leases/ambit-control')!.spec as { holderIdentity: string }).holderIdentity, 'control-0');

  // a change arrives by the watch and reaches the Deployment
  const mark = fake.seen.length;
  const updated = fake.request((r) => r.method === 'PATCH' && r.path === DEP && r.status === 200, mark);
  fake.put(GATEWAYS, { ...fake.get(GW)!, spec: { ...(fake.get(GW)!.spec as object), infrastructure: { labels: { team: 'shop' } } } });
  await updated;
  t.is(fake.get(DEP)!.metadata!.labels!.team, 'shop');

  // a restart (or a second replica) signs with the same CA: nothing created
  await first.plane.stop();
  t.is((fake.get('/apis/coordination.k8s.io/v1/namespaces/mesh/leases/ambit-control')!.spec as { holderIdentity: string }).holderIdentity, '', 'released on stop');
  const posts = fake.seen.filter((r) => r.method === 'POST').length;
  const second = await startControl(s, { kubeConfig: kc });
  t.teardown(() => second.plane.stop());
  t.is(fake.seen.filter((r) => r.method === 'POST').length, posts);
  t.is((fake.get('/api/v1/namespaces/mesh/configmaps/ambit-ca-root')!.data as Record<string, string>)['root-cert.pem'], root);
});
