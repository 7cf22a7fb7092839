/** Shared bits of the waypoint L7 tests: request facts, a seeded random, translating YAML to a ServiceL7. */
import type { RequestFacts, PreparedRequest } from '../../../src/waypoint/l7/index.js';
import { prepareRequest } from '../../../src/waypoint/l7/index.js';
import type { ServiceL7 } from '../../../src/model/l7.js';
import { translate } from '../l7/fixture.js';

export const REVIEWS = 'default/reviews.default.svc.cluster.local';
export const REVIEWS_HOST = 'reviews.default.svc.cluster.local';
export const ORDER = 'default/order-service.default.svc.cluster.local';
export const ORDER_HOST = 'order-service.default.svc.cluster.local';

export function facts(over: Partial<RequestFacts> = {}): RequestFacts {
  return {
    method: 'GET', path: '/', authority: 'reviews:9080', scheme: 'http', headers: {}, port: 9080,
    sourcePrincipal: 'spiffe://cluster.local/ns/default/sa/productpage', sourceIp: '10.0.0.5', isGrpc: false, ...over,
  };
}

export function prepared(over: Partial<RequestFacts> = {}): PreparedRequest {
  const p = prepareRequest(facts(over));
  if ('kind' in p) throw new Error(`refused: ${p.body ?? p.details}`);
  return p;
}

/** mulberry32: a small seeded generator, so weight tests are reproducible. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Translate YAML and return the config of one Service; fails loudly on any rejection. */
export function l7Of(yaml: string, service: string): ServiceL7 {
  const res = translate(yaml);
  if (res.rejected.length > 0) throw new Error(`rejected: ${JSON.stringify(res.rejected)}`);
  const l7 = res.l7.get(service);
  if (!l7) throw new Error(`no config for ${service}`);
  return l7;
}
