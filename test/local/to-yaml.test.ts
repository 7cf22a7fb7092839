import test from 'ava';
import { parseAllDocuments } from 'yaml';
import { clusterToYaml, pidOfNetns, type ClusterState } from '../../src/local/index.js';

const state: ClusterState = {
  name: 'Kubernetes',
  pid: 42,
  underlay: { netnsName: 'ambit-16-0-underlay', cidr: '172.30.0.0/24', hostIP: '172.30.0.254' },
  nodes: [{
    name: 'node-1', index: 1, netnsName: 'ambit-16-0-node-node-1', underlayIP: '172.30.0.1',
    podCidr: '10.244.1.0/24', bridgeIP: '10.244.1.1',
  }],
  namespaces: [{ name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } }],
  pods: [
    {
      name: 'web', namespace: 'shop', node: 'node-1', uid: 'u-web', ip: '10.244.1.3', ips: ['10.244.1.3', 'fd00:a4b1:1::3'],
      labels: { app: 'web', version: 'v1' }, serviceAccount: 'web-sa', netnsName: 'x', netnsPath: '/run/netns/x',
    },
    {
      name: 'client', namespace: 'default', node: 'node-1', uid: 'u-client', ip: '10.244.1.2', ips: ['10.244.1.2'],
      labels: {}, serviceAccount: 'default', netnsName: 'y', netnsPath: '/run/netns/y',
    },
  ],
  services: [{
    name: 'web', namespace: 'shop', uid: 'u-svc', selector: { app: 'web' }, labels: { 'istio.io/use-waypoint': 'wp' },
    clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }, { port: 9090, targetPort: 9090 }],
  }],
};

type Doc = {
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
};

function docs(text: string): Doc[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length > 0) throw d.errors[0];
    return d.toJS() as Doc;
  });
}

test('every object round-trips through the yaml parser with Kubernetes field names', (t) => {
  const all = docs(clusterToYaml(state));
  t.deepEqual(all.map((d) => `${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}`), [
    'Namespace//default', 'Namespace//shop', 'Node//node-1', 'Pod/default/client', 'Pod/shop/web', 'Service/shop/web',
  ]);

  const shop = all.find((d) => d.kind === 'Namespace' && d.metadata.name === 'shop')!;
  t.is(shop.metadata.labels?.['istio.io/dataplane-mode'], 'ambient');
  t.is(shop.metadata.labels?.['kubernetes.io/metadata.name'], 'shop');

  const web = all.find((d) => d.kind === 'Pod' && d.metadata.name === 'web')!;
  t.is(web.metadata.uid, 'u-web');
  t.deepEqual(web.metadata.labels, { app: 'web', version: 'v1' });
  t.deepEqual(web.spec, { nodeName: 'node-1', serviceAccountName: 'web-sa' });
  t.is(web.status?.podIP, '10.244.1.3');
  t.deepEqual(web.status?.podIPs, [{ ip: '10.244.1.3' }, { ip: 'fd00:a4b1:1::3' }]);
  t.is(web.status?.phase, 'Running');
  t.is(web.status?.hostIP, '172.30.0.1');
  t.deepEqual((web.status?.conditions as { type: string; status: string }[]).find((c) => c.type === 'Ready'), { type: 'Ready', status: 'True' });

  const svc = all.find((d) => d.kind === 'Service')!;
  t.is(svc.metadata.labels?.['istio.io/use-waypoint'], 'wp');
  t.deepEqual(svc.spec?.selector, { app: 'web' });
  t.is(svc.spec?.clusterIP, '10.96.0.10');
  t.deepEqual(svc.spec?.ports, [
    { name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, appProtocol: 'http' },
    { protocol: 'TCP', port: 9090, targetPort: 9090 },
  ]);

  const node = all.find((d) => d.kind === 'Node')!;
  t.is(node.spec?.podCIDR, '10.244.1.0/24');
});

test('the writer is deterministic and does not depend on insertion order', (t) => {
  const reversed: ClusterState = { ...state, pods: [...state.pods].reverse() };
  t.is(clusterToYaml(reversed), clusterToYaml(state));
});

test('a label value that looks like a number or boolean stays a string', (t) => {
  const s: ClusterState = { ...state, namespaces: [{ name: 'shop', labels: { 'x/on': 'true', 'x/n': '1' } }] };
  const shop = docs(clusterToYaml(s)).find((d) => d.metadata.name === 'shop')!;
  t.is(shop.metadata.labels?.['x/on'], 'true');
  t.is(shop.metadata.labels?.['x/n'], '1');
});

test('pidOfNetns reads the base-36 pid and ignores names that are not ours', (t) => {
  t.is(pidOfNetns(`ambit-${(12345).toString(36)}-0-pod-a`), 12345);
  t.is(pidOfNetns('ambit-'), undefined);
  t.is(pidOfNetns('cni-1234'), undefined);
  t.is(pidOfNetns('ambit-Q!-x'), undefined);
});
