/**
 * Cluster state -> Kubernetes-shaped multi-document YAML (Namespaces, Nodes, Pods, Services), the
 * same objects a real API server would hand the control plane. Pure: same input, same text.
 */
import { stringify } from 'yaml';
import type { ClusterState, NodeState, PodState, ServiceState } from './state.js';

type Obj = Record<string, unknown>;

/** Every namespace mentioned anywhere, with labels when set; `default` always exists. */
function namespaceObjects(state: ClusterState): Obj[] {
  const labels = new Map<string, Readonly<Record<string, string>>>();
  labels.set('default', {});
  for (const p of state.pods) if (!labels.has(p.namespace)) labels.set(p.namespace, {});
  for (const s of state.services) if (!labels.has(s.namespace)) labels.set(s.namespace, {});
  for (const n of state.namespaces) labels.set(n.name, n.labels);
  return [...labels.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, l]) => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...l } },
  }));
}

function nodeObject(n: NodeState): Obj {
  const addresses = [{ type: 'InternalIP', address: n.underlayIP }];
  if (n.underlayIPv6) addresses.push({ type: 'InternalIP', address: n.underlayIPv6 });
  addresses.push({ type: 'Hostname', address: n.name });
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name } },
    spec: { podCIDR: n.podCidr, podCIDRs: n.podCidrV6 ? [n.podCidr, n.podCidrV6] : [n.podCidr] },
    status: { addresses, conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

function podObject(p: PodState, node: NodeState | undefined): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace, uid: p.uid, labels: { ...p.labels } },
    spec: { nodeName: p.node, serviceAccountName: p.serviceAccount },
    status: {
      phase: 'Running',
      ...(node ? { hostIP: node.underlayIP } : {}),
      podIP: p.ip,
      podIPs: p.ips.map((ip) => ({ ip })),
      conditions: [{ type: 'Ready', status: 'True' }, { type: 'ContainersReady', status: 'True' }],
    },
  };
}

function serviceObject(s: ServiceState): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: s.name, namespace: s.namespace, uid: s.uid, labels: { ...s.labels } },
    spec: {
      type: 'ClusterIP',
      selector: { ...s.selector },
      clusterIP: s.clusterIP,
      clusterIPs: [s.clusterIP],
      ports: s.ports.map((p) => ({
        ...(p.name !== undefined ? { name: p.name } : {}),
        protocol: 'TCP',
        port: p.port,
        targetPort: p.targetPort,
        ...(p.appProtocol !== undefined ? { appProtocol: p.appProtocol } : {}),
      })),
    },
  };
}

/** The whole cluster as `---`-separated YAML documents, in a stable order. */
export function clusterToYaml(state: ClusterState): string {
  const nodes = new Map(state.nodes.map((n) => [n.name, n]));
  const byKey = <T extends { namespace: string; name: string }>(a: T, b: T): number =>
    a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name);
  const docs: Obj[] = [
    ...namespaceObjects(state),
    ...state.nodes.map(nodeObject),
    ...[...state.pods].sort(byKey).map((p) => podObject(p, nodes.get(p.node))),
    ...[...state.services].sort(byKey).map(serviceObject),
  ];
  return docs.map((d) => stringify(d)).join('---\n');
}
