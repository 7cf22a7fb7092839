import type { Authorization, Service, Workload } from '../../../src/model/index.js';

export function wl(name: string, ip: string, o: Partial<Workload> = {}): Workload {
  const namespace = o.namespace ?? 'default';
  return {
    uid: `Kubernetes//Pod/${namespace}/${name}`, name, namespace, serviceAccount: o.serviceAccount ?? name,
    trustDomain: 'cluster.local', node: 'node-a', addresses: [ip], labels: {}, canonicalName: name,
    canonicalRevision: 'v1', workloadName: name, workloadType: 'deployment', tunnel: 'hbone', healthy: true,
    services: [], authorizationPolicies: [], ...o,
  };
}

export function svc(name: string, vip: string, ports: Array<[number, number]>, o: Partial<Service> = {}): Service {
  const namespace = o.namespace ?? 'default';
  return {
    name, namespace, hostname: `${name}.${namespace}.svc.cluster.local`, vips: [vip],
    ports: ports.map(([port, targetPort]) => ({ port, targetPort })), ...o,
  };
}

export function authz(name: string, a: Partial<Authorization>): Authorization {
  return { name, namespace: 'default', scope: 'namespace', action: 'allow', dryRun: false, rules: [], ...a };
}
