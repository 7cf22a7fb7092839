/**
 * Namespaces, Pods and Services: read into plain records. Context (which Service selects which
 * pod, waypoints, policies) is applied later in build.ts; these readers only look at one object.
 */
import type { WorkloadType } from '../../model/index.js';
import { canonicalIp } from '../../model/index.js';
import type { KubeObject } from '../config/types.js';
import type { Check, Obj } from './check.js';
import { isObj } from './check.js';
import { labelsOf } from './kinds.js';

export interface NamespaceInfo {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface PodInfo {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly serviceAccount: string;
  readonly node: string;
  readonly addresses: readonly string[];
  readonly healthy: boolean;
  readonly workloadName: string;
  readonly workloadType: WorkloadType;
  readonly hostNetwork: boolean;
  /** container port by port name, for named Service targetPorts */
  readonly namedPorts: ReadonlyMap<string, number>;
}

export interface ServicePortInfo {
  readonly port: number;
  /** a number, or a container port name resolved per pod */
  readonly targetPort: number | string;
  readonly name?: string;
  readonly appProtocol?: string;
}

export interface ServiceInfo {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  /** undefined: the Service selects no pods (endpoints managed elsewhere) */
  readonly selector?: Readonly<Record<string, string>>;
  readonly vips: readonly string[];
  readonly ports: readonly ServicePortInfo[];
}

export function readNamespace(o: KubeObject): NamespaceInfo {
  return { name: o.metadata.name, labels: labelsOf(o) };
}

/** ReplicaSet hashes use this alphabet (no vowels, no confusable digits). */
const RS_HASH = /-[bcdfghjklmnpqrstvwxz2456789]{5,10}$/;

function ownerOf(meta: KubeObject['metadata']): { kind: string; name: string } | undefined {
  const refs = meta['ownerReferences'];
  if (!Array.isArray(refs)) return undefined;
  let first: { kind: string; name: string } | undefined;
  for (const r of refs) {
    if (!isObj(r) || typeof r['kind'] !== 'string' || typeof r['name'] !== 'string') continue;
    const ref = { kind: r['kind'], name: r['name'] };
    if (r['controller'] === true) return ref;
    first ??= ref;
  }
  return first;
}

function workloadIdentity(o: KubeObject, labels: Readonly<Record<string, string>>): { name: string; type: WorkloadType } {
  const meta = o.metadata;
  const hash = labels['pod-template-hash'];
  const stripHash = (n: string): string | undefined => {
    if (hash && n.endsWith(`-${hash}`)) return n.slice(0, -hash.length - 1);
    return RS_HASH.test(n) ? n.replace(RS_HASH, '') : undefined;
  };
  const owner = ownerOf(meta);
  if (owner) {
    if (owner.kind === 'ReplicaSet') {
      const d = stripHash(owner.name);
      return d ? { name: d, type: 'deployment' } : { name: owner.name, type: 'pod' };
    }
    if (owner.kind === 'Job') {
      // CronJob-created jobs are named <cronjob>-<scheduled time in minutes>
      const m = /^(.+)-\d{8,}$/.exec(owner.name);
      return m ? { name: m[1] as string, type: 'cronjob' } : { name: owner.name, type: 'job' };
    }
    return { name: owner.name, type: 'pod' };
  }
  const gen = meta['generateName'];
  if (typeof gen === 'string' && gen.endsWith('-') && gen.length > 1) {
    const base = gen.slice(0, -1);
    const d = stripHash(base);
    return d ? { name: d, type: 'deployment' } : { name: base, type: 'pod' };
  }
  // hand-written pod YAML often copies a Deployment pod's name and labels: <deploy>-<hash>-<suffix>
  if (hash) {
    const at = meta.name.lastIndexOf(`-${hash}-`);
    if (at > 0) return { name: meta.name.slice(0, at), type: 'deployment' };
  }
  return { name: meta.name, type: 'pod' };
}

/** undefined: not a workload (not running, no IP yet). Records errors on `c`. */
export function readPod(o: KubeObject, namespace: string, c: Check): PodInfo | undefined {
  const spec = c.obj(o.spec, 'spec') ?? {};
  const status = c.obj(o.status, 'status') ?? {};
  const phase = c.str(status['phase'], 'status.phase');
  const labels = labelsOf(o);
  const ips: string[] = [];
  const addIp = (v: unknown, field: string): void => {
    const s = c.str(v, field);
    if (s === undefined || s === '') return;
    const ip = canonicalIp(s);
    if (!ip) { c.reject(field, `"${s}" is not an IP address`); return; }
    if (!ips.includes(ip)) ips.push(ip);
  };
  const podIPs = c.list(status['podIPs'], 'status.podIPs', (x, f) => c.obj(x, f));
  if (podIPs) podIPs.forEach((x, i) => addIp(x['ip'], `status.podIPs[${i}].ip`));
  addIp(status['podIP'], 'status.podIP');
  const sa = c.str(spec['serviceAccountName'], 'spec.serviceAccountName') ?? c.str(spec['serviceAccount'], 'spec.serviceAccount') ?? 'default';
  const node = c.str(spec['nodeName'], 'spec.nodeName') ?? '';
  const hostNetwork = c.bool(spec['hostNetwork'], 'spec.hostNetwork') ?? false;
  let healthy = true;
  const conds = c.list(status['conditions'], 'status.conditions', (x, f) => c.obj(x, f));
  for (const cond of conds ?? []) {
    if (cond['type'] === 'Ready') healthy = cond['status'] === 'True';
  }
  if (o.metadata['deletionTimestamp']) healthy = false;
  const namedPorts = new Map<string, number>();
  const containers = c.list(spec['containers'], 'spec.containers', (x, f) => c.obj(x, f));
  containers?.forEach((ct, i) => {
    const ports = c.list(ct['ports'], `spec.containers[${i}].ports`, (x, f) => c.obj(x, f));
    ports?.forEach((p: Obj, j) => {
      const f = `spec.containers[${i}].ports[${j}]`;
      const name = c.str(p['name'], `${f}.name`);
      const port = c.port(p['containerPort'], `${f}.containerPort`);
      if (name && port !== undefined && !namedPorts.has(name)) namedPorts.set(name, port);
    });
  });
  if (!c.ok || phase !== 'Running' || ips.length === 0) return undefined;
  const wl = workloadIdentity(o, labels);
  return {
    name: o.metadata.name, namespace, labels, serviceAccount: sa, node, addresses: ips, healthy,
    workloadName: wl.name, workloadType: wl.type, hostNetwork, namedPorts,
  };
}

const KNOWN_PROTOCOLS = new Set(['http', 'http2', 'https', 'grpc', 'grpc-web', 'tcp', 'tls', 'mongo', 'mysql', 'redis', 'udp']);

/** Protocol of a Service port: explicit appProtocol, else Istio's port-name convention `<proto>[-suffix]`. */
export function appProtocolOf(name: string | undefined, appProtocol: string | undefined): string | undefined {
  if (appProtocol) {
    const a = appProtocol.toLowerCase();
    if (a === 'kubernetes.io/h2c') return 'http2';
    if (a === 'kubernetes.io/ws' || a === 'kubernetes.io/wss') return 'http';
    return a;
  }
  if (!name) return undefined;
  const n = name.toLowerCase();
  if (n === 'grpc-web' || n.startsWith('grpc-web-')) return 'grpc-web';
  const prefix = n.split('-')[0] as string;
  return KNOWN_PROTOCOLS.has(prefix) ? prefix : undefined;
}

export function readService(o: KubeObject, namespace: string, c: Check): ServiceInfo | undefined {
  const spec = c.obj(o.spec, 'spec') ?? {};
  const selectorRaw = c.stringMap(spec['selector'], 'spec.selector');
  const selector = selectorRaw && Object.keys(selectorRaw).length > 0 ? selectorRaw : undefined;
  const vips: string[] = [];
  const addVip = (v: unknown, field: string): void => {
    const s = c.str(v, field);
    if (s === undefined || s === '' || s === 'None') return;
    const ip = canonicalIp(s);
    if (!ip) { c.reject(field, `"${s}" is not an IP address`); return; }
    if (!vips.includes(ip)) vips.push(ip);
  };
  addVip(spec['clusterIP'], 'spec.clusterIP');
  c.list(spec['clusterIPs'], 'spec.clusterIPs', (x, f) => { addVip(x, f); return undefined; });
  const ports: ServicePortInfo[] = [];
  const rawPorts = c.list(spec['ports'], 'spec.ports', (x, f) => c.obj(x, f)) ?? [];
  rawPorts.forEach((p, i) => {
    const f = `spec.ports[${i}]`;
    const protocol = c.str(p['protocol'], `${f}.protocol`) ?? 'TCP';
    const port = c.port(p['port'], `${f}.port`);
    const name = c.str(p['name'], `${f}.name`);
    const appProtocol = c.str(p['appProtocol'], `${f}.appProtocol`);
    let targetPort: number | string | undefined = port;
    const tp = p['targetPort'];
    if (typeof tp === 'string' && !/^[0-9]+$/.test(tp)) {
      if (!/^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/.test(tp)) c.reject(`${f}.targetPort`, `"${tp}" is neither a port number nor a port name`);
      else targetPort = tp;
    } else if (tp !== undefined && tp !== null) {
      targetPort = c.port(tp, `${f}.targetPort`);
    }
    // the mesh carries TCP only; UDP/SCTP ports keep working outside it
    if (port === undefined || targetPort === undefined || protocol.toUpperCase() !== 'TCP') return;
    const proto = appProtocolOf(name, appProtocol);
    ports.push({ port, targetPort, ...(name ? { name } : {}), ...(proto ? { appProtocol: proto } : {}) });
  });
  if (!c.ok) return undefined;
  return { name: o.metadata.name, namespace, labels: labelsOf(o), ...(selector ? { selector } : {}), vips, ports };
}
