/** Shared bits of the L7 translation tests: services, YAML loading, a translate shorthand. */
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import type { Service } from '../../../src/model/types.js';
import type { KubeObject } from '../../../src/control/config/types.js';
import { translateL7 } from '../../../src/control/translate/l7.js';
import type { L7Result } from '../../../src/control/translate/l7.js';

export function svc(namespace: string, name: string, ports: number[] = [80]): Service {
  return { name, namespace, hostname: `${name}.${namespace}.svc.cluster.local`, vips: ['10.96.0.10'], ports: ports.map((p) => ({ port: p, targetPort: p })) };
}

export const SERVICES: Service[] = [
  svc('default', 'order-service'), svc('default', 'product-service'), svc('default', 'recommendations'),
  svc('default', 'reviews', [9080]), svc('default', 'ratings', [9080]), svc('prod', 'reviews', [9080]), svc('default', 'greeter', [50051]),
];

export function servicesMap(list: Service[] = SERVICES): Map<string, Service> {
  return new Map(list.map((s) => [`${s.namespace}/${s.hostname}`, s]));
}

/** Objects of a YAML text; namespaced objects without a namespace land in `default`, like kubectl. */
export function parseYaml(text: string): KubeObject[] {
  return parseAllDocuments(text).map((d) => d.toJS() as KubeObject | null).filter((o): o is KubeObject => o !== null)
    .map((o) => ({ ...o, metadata: { namespace: 'default', ...o.metadata } }));
}

export function fixture(name: string): string {
  return readFileSync(new URL(`../../fixtures/l7/${name}`, import.meta.url), 'utf8');
}

export function translate(objs: KubeObject[] | string, services: Service[] = SERVICES): L7Result {
  return translateL7(typeof objs === 'string' ? parseYaml(objs) : objs, { services: servicesMap(services), rootNamespace: 'istio-system' });
}

export const ORDER = 'default/order-service.default.svc.cluster.local';
export const REVIEWS = 'default/reviews.default.svc.cluster.local';
export const RATINGS = 'default/ratings.default.svc.cluster.local';
export const GREETER = 'default/greeter.default.svc.cluster.local';
