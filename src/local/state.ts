/**
 * The cluster as plain data: what `ambit up` writes to its state file and what the YAML writer
 * turns into Kubernetes objects. No I/O here.
 */

export interface NodeState {
  readonly name: string;
  /** 1-based; picks the node's pod CIDR and underlay address */
  readonly index: number;
  readonly netnsName: string;
  /** the node's address on the underlay (its "InternalIP") */
  readonly underlayIP: string;
  readonly underlayIPv6?: string;
  /** e.g. 10.244.1.0/24 */
  readonly podCidr: string;
  readonly podCidrV6?: string;
  /** address of the node's pod bridge: the pods' default gateway */
  readonly bridgeIP: string;
  readonly bridgeIPv6?: string;
}

export interface PodState {
  readonly name: string;
  readonly namespace: string;
  readonly node: string;
  readonly uid: string;
  /** primary (IPv4) address */
  readonly ip: string;
  /** all addresses, IPv4 first */
  readonly ips: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly serviceAccount: string;
  readonly netnsName: string;
  readonly netnsPath: string;
}

export interface ServicePortState {
  readonly name?: string;
  readonly port: number;
  readonly targetPort: number;
  readonly appProtocol?: string;
}

export interface ServiceState {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly selector: Readonly<Record<string, string>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly ports: readonly ServicePortState[];
  readonly clusterIP: string;
}

export interface NamespaceState {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface ClusterState {
  /** cluster id (the `<cluster>` of workload uids) */
  readonly name: string;
  /** pid of the process that owns the namespaces */
  readonly pid: number;
  readonly underlay: { readonly netnsName: string; readonly cidr: string; readonly hostIP: string };
  readonly nodes: readonly NodeState[];
  readonly namespaces: readonly NamespaceState[];
  readonly pods: readonly PodState[];
  readonly services: readonly ServiceState[];
}
