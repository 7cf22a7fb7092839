/**
 * A Kubernetes-like cluster on one machine, built from network namespaces:
 *
 *   underlay netns: bridge br0 (172.30.0.254) ── vn<i> ═══ eth0 (172.30.0.i) of node i
 *   node i netns:   router (ip_forward) with bridge br0 (10.244.i.1/24) ── vp<k> ═══ eth0 of a pod
 *   pod netns:      eth0 10.244.i.x/24, default route via 10.244.i.1
 *
 * Node i routes the other nodes' pod CIDRs via their underlay addresses, so pod IPs are reachable
 * from every pod without NAT (the Kubernetes network model). The underlay namespace also has an
 * address (hostIP) and routes to every pod CIDR, so a process started there (e.g. the control
 * plane) is reachable from nodes and pods.
 *
 * Every link is created inside a namespace; nothing is ever added to the root namespace, and
 * deleting the namespaces removes everything.
 */
import { randomUUID } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { ConfigError, MeshError, logger } from '../core/index.js';
import { cleanupStale, removeNetns, removeNetnsSync } from './cleanup.js';
import { checkDnsLabel, checkLabels, nextClusterPrefix } from './names.js';
import { cidrSize, intToIpv4, ipv4ToInt, parseCidr4 } from './ipv4.js';
import { ipBatch, mustRun, execInNetns, spawnInNetns, type RunOptions, type RunResult, type SpawnInNetnsOptions } from './run.js';
import type { ClusterState, NamespaceState, NodeState, PodState, ServicePortState, ServiceState } from './state.js';
import { clusterToYaml } from './to-yaml.js';

const log = logger('local');

/** Node count limit: one /24 per node in the pod /16, one address per node on the underlay /24. */
const MAX_NODES = 200;
/** Pods per node: a /24 minus network, bridge and broadcast addresses. */
const MAX_PODS_PER_NODE = 253;
const MAX_SERVICES = 10_000;
const ULA_PREFIX = 'fd00:a4b1';

export interface ClusterOptions {
  /** cluster id used in workload uids (`<name>//Pod/<ns>/<pod>`); default 'Kubernetes' */
  readonly name?: string;
  /** node count (named node-1..node-N) or explicit node names (DNS labels) */
  readonly nodes: number | readonly string[];
  /** a /16; node i (1-based) gets its i-th /24. Default 10.244.0.0/16 */
  readonly podCidrBase?: string;
  /** a /16 for Service cluster IPs; default 10.96.0.0/16 */
  readonly serviceCidr?: string;
  /** also give nodes and pods IPv6 ULA addresses; default false */
  readonly ipv6?: boolean;
  /** remove namespaces of dead runs first; default true */
  readonly cleanupStale?: boolean;
}

export interface AddPodOptions {
  readonly name: string;
  /** default 'default' */
  readonly namespace?: string;
  readonly node: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** default 'default' */
  readonly serviceAccount?: string;
}

export type Pod = PodState;
export type Node = NodeState;

export interface AddServiceOptions {
  readonly name: string;
  /** default 'default' */
  readonly namespace?: string;
  readonly selector: Readonly<Record<string, string>>;
  readonly labels?: Readonly<Record<string, string>>;
  readonly ports: readonly { name?: string; port: number; targetPort?: number; appProtocol?: string }[];
  /** default: the next free address of the service CIDR */
  readonly clusterIP?: string;
}

export type Service = ServiceState;

/** Where a command runs: a pod (object or name), a node, or the underlay (hostIP). */
export type Place = Pod | string | { readonly node: string } | { readonly underlay: true };

interface NodeRec {
  readonly state: NodeState;
  /** next host number to try for a pod address (monotonic, so a removed pod's IP is not reused at once) */
  nextHost: number;
  readonly used: Set<number>;
}

export class Cluster {
  readonly name: string;
  readonly #prefix: string;
  readonly #ipv6: boolean;
  readonly #underlay: ClusterState['underlay'];
  readonly #nodes = new Map<string, NodeRec>();
  readonly #pods = new Map<string, PodState>();
  readonly #services = new Map<string, ServiceState>();
  readonly #namespaces = new Map<string, NamespaceState>();
  readonly #serviceCidr: { base: number; size: number };
  #nextServiceHost = 10;
  readonly #usedClusterIPs = new Set<string>();
  /** every namespace we created and have not deleted yet, in creation order */
  readonly #netns = new Set<string>();
  readonly #children = new Map<ChildProcess, string>();
  #vethSeq = 0;
  /** addPod calls under way; destroy waits for them, or a namespace made late would outlive it */
  readonly #adding = new Set<Promise<unknown>>();
  #destroyed = false;
  #destroying: Promise<void> | undefined;

  /** @internal use createCluster */
  constructor(init: {
    name: string; prefix: string; ipv6: boolean; nodes: NodeState[]; serviceCidr: { base: number; size: number };
  }) {
    this.name = init.name;
    this.#prefix = init.prefix;
    this.#ipv6 = init.ipv6;
    this.#underlay = { netnsName: `${init.prefix}underlay`, cidr: '172.30.0.0/24', hostIP: '172.30.0.254' };
    this.#serviceCidr = init.serviceCidr;
    for (const n of init.nodes) this.#nodes.set(n.name, { state: n, nextHost: 2, used: new Set() });
  }

  get prefix(): string { return this.#prefix; }
  get destroyed(): boolean { return this.#destroyed; }
  get underlay(): ClusterState['underlay'] { return this.#underlay; }
  get nodes(): readonly Node[] { return [...this.#nodes.values()].map((n) => n.state); }
  get pods(): readonly Pod[] { return [...this.#pods.values()]; }
  get services(): readonly Service[] { return [...this.#services.values()]; }
  /** names of the namespaces this cluster currently owns */
  get netnsNames(): readonly string[] { return [...this.#netns]; }

  node(name: string): Node {
    const n = this.#nodes.get(name);
    if (!n) throw new ConfigError(`node ${name}`, 'name', `unknown node; nodes are ${[...this.#nodes.keys()].join(', ')}`);
    return n.state;
  }

  pod(name: string): Pod {
    const p = this.#pods.get(name);
    if (!p) throw new ConfigError(`pod ${name}`, 'name', 'no such pod in this cluster');
    return p;
  }

  // === building ===

  /** @internal first half of createCluster: namespaces, links and routes of underlay and nodes */
  async build(): Promise<void> {
    const ul = this.#underlay;
    await this.#addNetns(ul.netnsName);
    for (const n of this.#nodes.values()) await this.#addNetns(n.state.netnsName);

    const nodes = [...this.#nodes.values()].map((n) => n.state);
    const ulLines = ['link set lo up', 'link add br0 type bridge', 'link set br0 up', `addr add ${ul.hostIP}/24 dev br0`];
    if (this.#ipv6) ulLines.push(`addr add ${ULA_PREFIX}::fe/64 dev br0 nodad`);
    for (const n of nodes) {
      ulLines.push(
        `link add vn${n.index} type veth peer name eth0 netns ${n.netnsName}`,
        `link set vn${n.index} master br0`,
        `link set vn${n.index} up`);
    }
    await ipBatch(ul.netnsName, ulLines);

    await Promise.all(nodes.map(async (n) => {
      const lines = [
        'link set lo up', 'link set eth0 up', `addr add ${n.underlayIP}/24 dev eth0`,
        'link add br0 type bridge', 'link set br0 up', `addr add ${n.bridgeIP}/24 dev br0`,
      ];
      if (this.#ipv6) lines.push(`addr add ${n.underlayIPv6}/64 dev eth0 nodad`, `addr add ${n.bridgeIPv6}/64 dev br0 nodad`);
      for (const o of nodes) {
        if (o === n) continue;
        lines.push(`route add ${o.podCidr} via ${o.underlayIP} dev eth0`);
        if (this.#ipv6) lines.push(`route add ${o.podCidrV6} via ${o.underlayIPv6} dev eth0`);
      }
      await ipBatch(n.netnsName, lines);
      const sysctls = ['net.ipv4.ip_forward=1'];
      if (this.#ipv6) sysctls.push('net.ipv6.conf.all.forwarding=1');
      await mustRun('ip', ['netns', 'exec', n.netnsName, 'sysctl', '-q', '-w', ...sysctls]);
    }));

    // The underlay's own address reaches pods through their node (replies from pods come back
    // the same way, since nodes have 172.30.0.0/24 connected).
    const routes: string[] = [];
    for (const n of nodes) {
      routes.push(`route add ${n.podCidr} via ${n.underlayIP} dev br0`);
      if (this.#ipv6) routes.push(`route add ${n.podCidrV6} via ${n.underlayIPv6} dev br0`);
    }
    await ipBatch(ul.netnsName, routes);
  }

  async #addNetns(name: string): Promise<void> {
    await mustRun('ip', ['netns', 'add', name]);
    this.#netns.add(name);
  }

  /**
   * Adds a pod: its own namespace, a veth to its node's bridge, an address from the node's pod
   * CIDR and a default route via the bridge.
   */
  addPod(opts: AddPodOptions): Promise<Pod> {
    const p = this.#addPod(opts);
    this.#adding.add(p);
    const done = (): void => { this.#adding.delete(p); };
    p.then(done, done);
    return p;
  }

  async #addPod(opts: AddPodOptions): Promise<Pod> {
    this.#checkAlive();
    const resource = `pod ${typeof opts?.name === 'string' ? opts.name : '?'}`;
    if (opts === null || typeof opts !== 'object') throw new ConfigError('pod', 'options', 'must be an object');
    const name = checkDnsLabel(resource, 'name', opts.name);
    const namespace = checkDnsLabel(resource, 'namespace', opts.namespace ?? 'default');
    const serviceAccount = checkDnsLabel(resource, 'serviceAccount', opts.serviceAccount ?? 'default');
    const labels = checkLabels(resource, 'labels', opts.labels);
    if (typeof opts.node !== 'string') throw new ConfigError(resource, 'node', 'must be a node name');
    const rec = this.#nodes.get(opts.node);
    if (!rec) {
      throw new ConfigError(resource, 'node', `unknown node "${opts.node}"; nodes are ${[...this.#nodes.keys()].join(', ')}`);
    }
    // Pod names are unique in the whole cluster (not only per namespace): they name the netns.
    if (this.#pods.has(name)) throw new ConfigError(resource, 'name', 'a pod with this name already exists');

    const host = this.#allocHost(rec, resource);
    const node = rec.state;
    const [a, b, c] = node.podCidr.split('.');
    const ip = `${a}.${b}.${c}.${host}`;
    const ip6 = this.#ipv6 ? `${ULA_PREFIX}:${node.index.toString(16)}::${host.toString(16)}` : undefined;
    const netnsName = `${this.#prefix}pod-${name}`;
    const veth = `vp${this.#vethSeq++}`;
    // Reserve the name before the first await, so a concurrent addPod of the same name fails.
    const pod: PodState = Object.freeze({
      name, namespace, node: node.name, uid: randomUUID(), ip, ips: Object.freeze(ip6 ? [ip, ip6] : [ip]),
      labels, serviceAccount, netnsName, netnsPath: `/run/netns/${netnsName}`,
    });
    this.#pods.set(name, pod);
    try {
      await this.#addNetns(netnsName);
      // destroy() may have started during any await; stop, and the catch removes what was made
      this.#checkAlive();
      await ipBatch(node.netnsName, [
        `link add ${veth} type veth peer name eth0 netns ${netnsName}`,
        `link set ${veth} master br0`,
        `link set ${veth} up`,
      ]);
      const lines = ['link set lo up', 'link set eth0 up', `addr add ${ip}/24 dev eth0`, `route add default via ${node.bridgeIP}`];
      if (ip6) lines.push(`addr add ${ip6}/64 dev eth0 nodad`, `route add default via ${node.bridgeIPv6}`);
      await ipBatch(netnsName, lines);
      this.#checkAlive();
    } catch (e) {
      this.#pods.delete(name);
      rec.used.delete(host);
      if (this.#netns.delete(netnsName)) await removeNetns(netnsName).catch(() => {});
      throw e;
    }
    log.debug('pod added', { pod: name, node: node.name, ip });
    return pod;
  }

  #allocHost(rec: NodeRec, resource: string): number {
    for (let i = 0; i < MAX_PODS_PER_NODE; i++) {
      const h = ((rec.nextHost - 2 + i) % MAX_PODS_PER_NODE) + 2;
      if (!rec.used.has(h)) {
        rec.used.add(h);
        rec.nextHost = h + 1;
        return h;
      }
    }
    throw new MeshError('AMBIT_LIMIT', `${resource}: node ${rec.state.name} has no free pod address (${MAX_PODS_PER_NODE} pods)`);
  }

  /** Removes a pod: kills what runs in it and deletes its namespace (the veth goes with it). */
  async removePod(name: string): Promise<void> {
    this.#checkAlive();
    const pod = this.pod(name);
    this.#pods.delete(name);
    for (const [child, ns] of this.#children) if (ns === pod.netnsName) killGroup(child);
    await removeNetns(pod.netnsName);
    this.#netns.delete(pod.netnsName);
    const rec = this.#nodes.get(pod.node);
    const host = Number(pod.ip.split('.')[3]);
    rec?.used.delete(host);
  }

  /** Adds a ClusterIP Service (model only: nothing in the kernel implements it without the mesh). */
  addService(opts: AddServiceOptions): Service {
    this.#checkAlive();
    if (opts === null || typeof opts !== 'object') throw new ConfigError('service', 'options', 'must be an object');
    const resource = `service ${typeof opts.name === 'string' ? opts.name : '?'}`;
    const name = checkDnsLabel(resource, 'name', opts.name);
    const namespace = checkDnsLabel(resource, 'namespace', opts.namespace ?? 'default');
    const key = `${namespace}/${name}`;
    if (this.#services.has(key)) throw new ConfigError(`service ${key}`, 'name', 'a service with this name already exists');
    if (this.#services.size >= MAX_SERVICES) throw new MeshError('AMBIT_LIMIT', `${resource}: too many services`);
    const selector = checkLabels(resource, 'selector', opts.selector);
    const labels = checkLabels(resource, 'labels', opts.labels);
    if (!Array.isArray(opts.ports) || opts.ports.length === 0 || opts.ports.length > 100) {
      throw new ConfigError(resource, 'ports', 'must list 1..100 ports');
    }
    const seenPorts = new Set<number>();
    const ports: ServicePortState[] = opts.ports.map((p, i) => {
      const f = `ports[${i}]`;
      if (!isPort(p?.port)) throw new ConfigError(resource, `${f}.port`, 'must be an integer 1..65535');
      if (seenPorts.has(p.port)) throw new ConfigError(resource, `${f}.port`, `port ${p.port} listed twice`);
      seenPorts.add(p.port);
      const targetPort = p.targetPort ?? p.port;
      if (!isPort(targetPort)) throw new ConfigError(resource, `${f}.targetPort`, 'must be an integer 1..65535');
      if (p.name !== undefined) checkDnsLabel(resource, `${f}.name`, p.name);
      if (p.appProtocol !== undefined && (typeof p.appProtocol !== 'string' || !/^[A-Za-z0-9][-A-Za-z0-9_./]{0,62}$/.test(p.appProtocol))) {
        throw new ConfigError(resource, `${f}.appProtocol`, 'must be a short token like http, http2, grpc, tcp');
      }
      return Object.freeze({
        port: p.port, targetPort,
        ...(p.name !== undefined ? { name: p.name } : {}),
        ...(p.appProtocol !== undefined ? { appProtocol: p.appProtocol } : {}),
      });
    });
    let clusterIP: string;
    if (opts.clusterIP !== undefined) {
      const n = typeof opts.clusterIP === 'string' ? ipv4ToInt(opts.clusterIP) : undefined;
      if (n === undefined) throw new ConfigError(resource, 'clusterIP', `"${String(opts.clusterIP)}" is not an IPv4 address`);
      clusterIP = intToIpv4(n);
      if (this.#usedClusterIPs.has(clusterIP)) throw new ConfigError(resource, 'clusterIP', `${clusterIP} is already used by another service`);
    } else {
      clusterIP = this.#allocClusterIP(resource);
    }
    this.#usedClusterIPs.add(clusterIP);
    const svc: ServiceState = Object.freeze({ name, namespace, uid: randomUUID(), selector, labels, ports: Object.freeze(ports), clusterIP });
    this.#services.set(key, svc);
    return svc;
  }

  #allocClusterIP(resource: string): string {
    const { base, size } = this.#serviceCidr;
    for (let i = 0; i < size - 11; i++) {
      const host = this.#nextServiceHost;
      this.#nextServiceHost = host + 1 >= size - 1 ? 10 : host + 1;
      const ip = intToIpv4(base + host);
      if (!this.#usedClusterIPs.has(ip)) return ip;
    }
    throw new MeshError('AMBIT_LIMIT', `${resource}: service CIDR is full`);
  }

  removeService(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const svc = this.#services.get(key);
    if (!svc) throw new ConfigError(`service ${key}`, 'name', 'no such service');
    this.#services.delete(key);
    this.#usedClusterIPs.delete(svc.clusterIP);
  }

  /** Sets (replaces) the labels of a namespace, e.g. `istio.io/dataplane-mode: ambient`. */
  setNamespaceLabels(namespace: string, labels: Readonly<Record<string, string>>): void {
    const name = checkDnsLabel(`namespace ${namespace}`, 'name', namespace);
    this.#namespaces.set(name, Object.freeze({ name, labels: checkLabels(`namespace ${name}`, 'labels', labels) }));
  }

  /** Sets (replaces) the labels of a pod. */
  setPodLabels(name: string, labels: Readonly<Record<string, string>>): Pod {
    const pod = this.pod(name);
    const next = Object.freeze({ ...pod, labels: checkLabels(`pod ${name}`, 'labels', labels) });
    this.#pods.set(name, next);
    return next;
  }

  // === running things ===

  /** The namespace name of a place. */
  netnsOf(place: Place): string {
    if (typeof place === 'string') return this.pod(place).netnsName;
    if ('underlay' in place) return this.#underlay.netnsName;
    if ('netnsName' in place) return this.pod(place.name).netnsName;
    return this.node(place.node).netnsName;
  }

  /** Runs a command inside a pod (or node / underlay) and collects its output. */
  async exec(place: Place, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    this.#checkAlive();
    return execInNetns(this.netnsOf(place), argv, opts);
  }

  /**
   * Starts a long-running process (a server) inside a pod (or node / underlay). It is killed with
   * its process group when the pod is removed or the cluster destroyed.
   */
  spawn(place: Place, argv: readonly string[], opts?: SpawnInNetnsOptions): ChildProcess {
    this.#checkAlive();
    const netns = this.netnsOf(place);
    const child = spawnInNetns(netns, argv, opts);
    this.#children.set(child, netns);
    child.once('exit', () => this.#children.delete(child));
    child.once('error', () => this.#children.delete(child));
    return child;
  }

  // === views ===

  /** The cluster as plain data (what `ambit up` stores in its state file). */
  state(): ClusterState {
    return {
      name: this.name,
      pid: process.pid,
      underlay: this.#underlay,
      nodes: this.nodes,
      namespaces: [...this.#namespaces.values()],
      pods: this.pods,
      services: this.services,
    };
  }

  /** Kubernetes-shaped YAML of namespaces, nodes, pods and services. */
  toYaml(): string {
    return clusterToYaml(this.state());
  }

  // === teardown ===

  /**
   * Kills everything started in the cluster and deletes all its namespaces. Idempotent; after a
   * failure, the next call tries again what is left.
   */
  destroy(): Promise<void> {
    this.#destroying ??= this.#destroy().catch((e: unknown) => {
      this.#destroying = undefined;
      throw e;
    });
    return this.#destroying;
  }

  async #destroy(): Promise<void> {
    this.#destroyed = true;
    const exits = [...this.#children.keys()].map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) { resolve(); return; }
      c.once('exit', () => resolve());
      killGroup(c);
    }));
    await Promise.all(exits);
    // pods being added see #destroyed and remove their namespace themselves; wait for that
    await Promise.allSettled([...this.#adding]);
    // Pods before nodes before the underlay: the reverse of creation.
    const names = [...this.#netns].reverse();
    const errors: unknown[] = [];
    await Promise.all(names.map(async (n) => {
      try { await removeNetns(n); this.#netns.delete(n); } catch (e) { errors.push(e); }
    }));
    if (errors.length > 0) {
      throw new MeshError('AMBIT_NETNS', `destroy: ${errors.length} namespace(s) could not be removed`, { cause: errors[0] });
    }
    log.debug('cluster destroyed', { prefix: this.#prefix });
  }

  /**
   * For 'exit' handlers, where nothing asynchronous runs any more: removes whatever is still
   * there, also when an asynchronous destroy was interrupted halfway. Never throws.
   */
  destroySync(): void {
    this.#destroyed = true;
    for (const c of this.#children.keys()) killGroup(c);
    for (const n of [...this.#netns].reverse()) { removeNetnsSync(n); this.#netns.delete(n); }
  }

  #checkAlive(): void {
    if (this.#destroyed) throw new MeshError('AMBIT_NETNS', `cluster ${this.#prefix}: already destroyed`);
  }
}

function isPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
}

function killGroup(c: ChildProcess): void {
  if (c.pid === undefined) return;
  try { process.kill(-c.pid, 'SIGKILL'); } catch {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
}

/**
 * Builds a cluster. On any failure, everything created so far is removed before the error is
 * rethrown.
 */
export async function createCluster(opts: ClusterOptions): Promise<Cluster> {
  if (opts === null || typeof opts !== 'object') throw new ConfigError('cluster', 'options', 'must be an object');
  const clusterName = opts.name ?? 'Kubernetes';
  if (typeof clusterName !== 'string' || !/^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$/.test(clusterName)) {
    throw new ConfigError('cluster', 'name', `"${String(clusterName)}" must be 1..63 letters, digits, '-', '_' or '.'`);
  }
  let nodeNames: string[];
  if (typeof opts.nodes === 'number') {
    if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > MAX_NODES) {
      throw new ConfigError(`cluster ${clusterName}`, 'nodes', `must be 1..${MAX_NODES}`);
    }
    nodeNames = Array.from({ length: opts.nodes }, (_, i) => `node-${i + 1}`);
  } else if (Array.isArray(opts.nodes)) {
    if (opts.nodes.length < 1 || opts.nodes.length > MAX_NODES) {
      throw new ConfigError(`cluster ${clusterName}`, 'nodes', `must list 1..${MAX_NODES} node names`);
    }
    nodeNames = opts.nodes.map((n, i) => checkDnsLabel(`cluster ${clusterName}`, `nodes[${i}]`, n));
    const dup = nodeNames.find((n, i) => nodeNames.indexOf(n) !== i);
    if (dup) throw new ConfigError(`cluster ${clusterName}`, 'nodes', `node "${dup}" listed twice`);
  } else {
    throw new ConfigError(`cluster ${clusterName}`, 'nodes', 'must be a count or a list of names');
  }
  const podBase = parseCidr4(`cluster ${clusterName}`, 'podCidrBase', opts.podCidrBase ?? '10.244.0.0/16', 16, 16);
  const svc = parseCidr4(`cluster ${clusterName}`, 'serviceCidr', opts.serviceCidr ?? '10.96.0.0/16', 16, 24);
  const ipv6 = opts.ipv6 === true;

  if (opts.cleanupStale !== false) await cleanupStale();

  const prefix = nextClusterPrefix();
  const nodes: NodeState[] = nodeNames.map((name, i) => {
    const index = i + 1;
    const net = podBase.base + index * 256;
    return {
      name, index,
      netnsName: `${prefix}node-${name}`,
      underlayIP: `172.30.0.${index}`,
      podCidr: `${intToIpv4(net)}/24`,
      bridgeIP: intToIpv4(net + 1),
      ...(ipv6 ? {
        underlayIPv6: `${ULA_PREFIX}::${index.toString(16)}`,
        podCidrV6: `${ULA_PREFIX}:${index.toString(16)}::/64`,
        bridgeIPv6: `${ULA_PREFIX}:${index.toString(16)}::1`,
      } : {}),
    };
  });
  const cluster = new Cluster({ name: clusterName, prefix, ipv6, nodes, serviceCidr: { base: svc.base, size: cidrSize(svc) } });
  try {
    await cluster.build();
  } catch (e) {
    await cluster.destroy().catch(() => {});
    throw e;
  }
  log.debug('cluster created', { prefix, nodes: nodeNames });
  return cluster;
}
