/**
 * The waypoint's routing plan for one request, pure: which backend Service (and subset), which
 * endpoints may take it, and how (timeouts, retries, header changes), or a local answer (404
 * NR, 503 UH ...). Route matching, backend weights, load balancing and retry decisions belong
 * to src/waypoint/l7 (pure decision functions); this module composes them with the snapshot.
 */
import type { Service, ServicePort, Snapshot, Workload } from '../model/index.js';
import { serviceKey } from '../model/index.js';
import type { HeaderModifier, RetryPolicy, ServiceL7 } from '../model/l7.js';
import type { Binding } from './bindings.js';
import type { HeaderList } from './headers.js';

export interface RequestFacts {
  readonly method: string;
  /** path without the query */
  readonly path: string;
  /** the query string after `?` (without it), '' when none */
  readonly query: string;
  readonly authority: string;
  readonly headers: HeaderList;
  readonly grpc: boolean;
  readonly sourcePrincipal: string;
  readonly sourceIp: string;
}

export interface LocalReply {
  readonly kind: 'respond';
  readonly status: number;
  readonly body?: string;
  readonly headers?: HeaderList;
  /** Envoy response flag (`NR`, `UH`, `FI` ...) or '' */
  readonly flags: string;
  /** response_code_details */
  readonly details: string;
  readonly routeName?: string;
}

export interface ForwardPlan {
  readonly kind: 'forward';
  readonly service: Service;
  /** the port on the endpoints */
  readonly targetPort: number;
  readonly servicePort?: ServicePort;
  /** endpoints that may take it (healthy, subset applied); the executor picks one per attempt */
  readonly endpoints: readonly Workload[];
  /** `ns/host[/subset]`: load-balancer and pool key, `upstream_cluster` in the access log */
  readonly cluster: string;
  readonly timeoutMs?: number;
  readonly retries?: RetryPolicy;
  readonly requestHeaders?: readonly HeaderModifier[];
  readonly responseHeaders?: readonly HeaderModifier[];
  readonly rewrite?: { readonly path?: string; readonly authority?: string };
  readonly routeName?: string;
  readonly delayMs?: number;
}

export type RequestPlan = LocalReply | ForwardPlan;

export function reply(status: number, flags: string, details: string, body?: string): LocalReply {
  return { kind: 'respond', status, flags, details, ...(body !== undefined ? { body } : {}) };
}

/** Healthy endpoints with an address, optionally with all of `labels`. */
export function endpointsOf(snap: Snapshot, svc: Service, labels?: Readonly<Record<string, string>>): Workload[] {
  return snap.endpoints(serviceKey(svc)).filter((w) => w.healthy && w.addresses.length > 0
    && (!labels || Object.entries(labels).every(([k, v]) => w.labels[k] === v)));
}

/** A service without routes routes to itself (same port). */
export function planToSelf(snap: Snapshot, b: Binding): RequestPlan {
  if (b.kind === 'workload') {
    return { kind: 'forward', service: b.service ?? pseudoService(b.workload), targetPort: b.targetPort, ...(b.port ? { servicePort: b.port } : {}), endpoints: [b.workload], cluster: `${b.workload.namespace}/${b.workload.name}` };
  }
  const eps = endpointsOf(snap, b.service);
  if (eps.length === 0) return reply(503, 'UH', 'no_healthy_upstream', 'no healthy upstream');
  return { kind: 'forward', service: b.service, targetPort: b.port.targetPort, servicePort: b.port, endpoints: eps, cluster: serviceKey(b.service) };
}

function pseudoService(w: Workload): Service {
  return { name: w.name, namespace: w.namespace, hostname: w.name, vips: [], ports: [] };
}

/**
 * The plan for one request. Until the L7 decision functions are wired, a Service routes to
 * itself whatever its routes say.
 */
export function planRequest(snap: Snapshot, b: Binding, _l7: ServiceL7 | undefined, _r: RequestFacts): RequestPlan {
  return planToSelf(snap, b);
}
