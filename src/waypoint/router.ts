/**
 * The waypoint's plan for one request: the L7 decision functions (src/waypoint/l7: normalization,
 * route selection, backend pick, rewrites, fault injection, timeouts and retries) composed with
 * the snapshot (which endpoints of the chosen Service, and subset, may take it). Pure.
 */
import type { Service, ServicePort, Snapshot, Workload } from '../model/index.js';
import { serviceKey } from '../model/index.js';
import type { HeaderModifier, L7Authorization, RetryPolicy, ServiceL7, TrafficPolicy } from '../model/index.js';
import type { Binding } from './bindings.js';
import type { HeaderList } from './headers.js';
import {
  authorizeL7, authorizeTcp, hashKeyOf, planRoute, prepareRequest, selectRoute, type BackendTarget, type PreparedRequest, type RequestFacts as L7Facts,
  type RequestPlan as L7Plan,
} from './l7/index.js';

export interface RequestFacts {
  readonly method: string;
  /** the raw request target (path and query) */
  readonly target: string;
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
  /** a gRPC request's status (the HTTP status is then 200) */
  readonly grpcStatus?: number;
  readonly delayMs?: number;
}

export interface ForwardPlan {
  readonly kind: 'forward';
  readonly service: Service;
  /** the port on the endpoints */
  readonly targetPort: number;
  readonly servicePort?: ServicePort;
  /** endpoints that may take it (healthy, subset applied); the executor picks one per attempt */
  readonly endpoints: readonly Workload[];
  /** `ns/host[/subset]`: load-balancer key, `upstream_cluster` in the access log */
  readonly cluster: string;
  /** the request target to send (normalized, rewritten, query kept) */
  readonly path: string;
  readonly authority: string;
  readonly timeoutMs?: number;
  readonly retries?: RetryPolicy;
  readonly requestHeaders: readonly HeaderModifier[];
  readonly responseHeaders: readonly HeaderModifier[];
  readonly routeName?: string;
  readonly delayMs?: number;
  /** the DestinationRule's policy for this backend (subset merged): load balancer, pool limits, outlier detection */
  readonly trafficPolicy?: TrafficPolicy;
  /** consistent-hash key of the request under the policy's `consistentHash` (header, cookie, source IP, query) */
  readonly hashKey?: string;
  /** copies to send and forget (RequestMirror, VirtualService mirror), already rolled by their percentage */
  readonly mirrors: readonly MirrorTarget[];
  /** mirrors the plan named but that have nowhere to go (unknown Service, port or subset; no healthy endpoint) */
  readonly mirrorsUnresolved?: number;
}

/** Where a mirrored copy goes: resolved like a backend. */
export interface MirrorTarget {
  readonly service: Service;
  readonly targetPort: number;
  readonly endpoints: readonly Workload[];
  readonly cluster: string;
  /** the request's authority with `-shadow` appended to the host */
  readonly authority: string;
  readonly trafficPolicy?: TrafficPolicy;
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

/** Header map for the decision functions: lowercase names, each value of a repeated header on its own. */
function headerValues(list: HeaderList): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of list) (out[k] ??= []).push(v);
  return out;
}

function routeName(o: { kind: string; namespace: string; name: string; rule: number; ruleName?: string } | undefined): string | undefined {
  return o ? `${o.kind}/${o.namespace}/${o.name}#${o.ruleName ?? o.rule}` : undefined;
}

/**
 * The plan for one request to `b`. Workload-addressed traffic without a Service port goes to the
 * pod itself; everything else through the Service's routes (none: to itself).
 */
export function planRequest(snap: Snapshot, b: Binding, l7: (key: string) => ServiceL7 | undefined, r: RequestFacts, rand: () => number, waypointService?: string): RequestPlan {
  const svc = b.service;
  const port = b.port;
  if (!svc || !port) {
    if (b.kind !== 'workload') return reply(500, '', 'no_service_port');
    const w = b.workload;
    return {
      kind: 'forward', service: { name: w.name, namespace: w.namespace, hostname: w.name, vips: [], ports: [] }, targetPort: b.targetPort,
      endpoints: [w], cluster: `${w.namespace}/${w.name}`, path: r.target, authority: r.authority, requestHeaders: [], responseHeaders: [], mirrors: [],
    };
  }
  const key = serviceKey(svc);
  const destIp = b.kind === 'workload' ? b.workload.addresses[0] : svc.vips[0];
  const facts: L7Facts = {
    method: r.method, path: r.target, authority: r.authority, scheme: 'http', headers: headerValues(r.headers), port: port.port,
    sourcePrincipal: r.sourcePrincipal || undefined, sourceIp: r.sourceIp, destinationIp: destIp, isGrpc: r.grpc,
  };
  const prep = prepareRequest(facts);
  let plan: L7Plan;
  let prepared: PreparedRequest | undefined;
  if ('kind' in prep) plan = prep;
  else {
    prepared = prep;
    // L7 authorization on the normalized request, before routing: DENY before ALLOW, 403 when refused
    const cfg = l7(key);
    const authz = authorizeL7(policiesFor(b, l7, waypointService), prepared);
    if (authz.deny) plan = authz.deny;
    else {
      const choice = selectRoute(cfg, prepared, key, svc.hostname);
      plan = choice.kind === 'respond' ? choice : planRoute(choice, prepared, rand);
    }
  }
  if (plan.kind === 'respond') {
    return {
      kind: 'respond', status: plan.status, flags: plan.flag === '-' ? '' : plan.flag, details: plan.details,
      headers: plan.headers.map(([k, v]) => [k, v] as [string, string]), ...(plan.body !== undefined ? { body: plan.body } : {}),
      ...(plan.grpcStatus !== undefined ? { grpcStatus: plan.grpcStatus } : {}), ...(plan.delayMs !== undefined ? { delayMs: plan.delayMs } : {}),
      ...(plan.origin ? { routeName: routeName(plan.origin)! } : {}),
    };
  }
  const res = resolveBackend(snap, l7, plan.backend);
  if (res.kind === 'respond') return res;
  const { service: backend, port: bport, trafficPolicy } = res;
  // workload-addressed traffic stays on the addressed pod when the route keeps the same Service
  const endpoints = b.kind === 'workload' && plan.backend.service === key ? [b.workload] : res.endpoints;
  if (endpoints.length === 0) return reply(503, 'UH', 'no_healthy_upstream', 'no healthy upstream');
  const rn = routeName(plan.origin);
  const hashKey = prepared ? hashKeyOf(trafficPolicy?.consistentHash, prepared) : undefined;
  const mirrors: MirrorTarget[] = [];
  for (const m of plan.mirrors) {
    const mr = resolveBackend(snap, l7, m);
    if (mr.kind === 'respond' || mr.endpoints.length === 0) continue;
    mirrors.push({
      service: mr.service, targetPort: mr.port.targetPort, endpoints: mr.endpoints, cluster: mr.cluster, authority: m.authority,
      ...(mr.trafficPolicy ? { trafficPolicy: mr.trafficPolicy } : {}),
    });
  }
  const unresolved = plan.mirrors.length - mirrors.length;
  return {
    kind: 'forward', service: backend, targetPort: bport.targetPort, servicePort: bport, endpoints, cluster: res.cluster,
    mirrors, ...(unresolved > 0 ? { mirrorsUnresolved: unresolved } : {}),
    path: plan.path, authority: plan.authority, requestHeaders: plan.requestHeaders, responseHeaders: plan.responseHeaders,
    ...(plan.timeoutMs !== undefined ? { timeoutMs: plan.timeoutMs } : {}), ...(plan.retry ? { retries: plan.retry } : {}),
    ...(rn ? { routeName: rn } : {}), ...(plan.delayMs !== undefined ? { delayMs: plan.delayMs } : {}),
    ...(trafficPolicy ? { trafficPolicy } : {}), ...(hashKey !== undefined ? { hashKey } : {}),
  };
}

/** A backend (or mirror) target against the snapshot: its Service, port, subset's endpoints and traffic policy. */
function resolveBackend(snap: Snapshot, l7: (key: string) => ServiceL7 | undefined, t: BackendTarget):
  | { kind: 'ok'; service: Service; port: ServicePort; endpoints: Workload[]; cluster: string; trafficPolicy: TrafficPolicy | undefined }
  | LocalReply {
  const service = snap.service(t.service);
  if (!service) return reply(500, '', 'backend_service_unknown', `no service ${t.host}\n`);
  const port = service.ports.find((p) => p.port === t.port);
  if (!port) return reply(500, '', 'backend_port_unknown', `service ${t.host} has no port ${t.port}\n`);
  let labels: Readonly<Record<string, string>> | undefined;
  const destination = l7(t.service)?.destination;
  let trafficPolicy = destination?.trafficPolicy;
  if (t.subset !== undefined) {
    const subset = destination?.subsets.find((s) => s.name === t.subset);
    if (!subset) return reply(503, 'UH', 'subset_not_found', `no subset ${t.subset} of ${t.host}\n`);
    labels = subset.labels;
    trafficPolicy = subset.trafficPolicy;
  }
  return { kind: 'ok', service, port, endpoints: endpointsOf(snap, service, labels), cluster: `${t.service}${t.subset !== undefined ? `/${t.subset}` : ''}`, trafficPolicy };
}

/**
 * The authorization policies the waypoint enforces on traffic of a binding: the Service's (targetRefs to the
 * Service, or to the waypoint Gateway / GatewayClass, attached by the control plane); workload-addressed traffic
 * also gets the waypoint-wide ones (the waypoint's own Service config), and only those when it has no Service.
 */
export function policiesFor(b: Binding, l7: (key: string) => ServiceL7 | undefined, waypointService: string | undefined): readonly L7Authorization[] | undefined {
  const own = b.service ? l7(serviceKey(b.service))?.authorization : undefined;
  if (b.kind !== 'workload' || !waypointService) return own;
  return [...(l7(waypointService)?.authorization ?? []), ...(own ?? [])];
}

/** The client of an opaque TCP connection, for authorization. */
export interface TcpFacts {
  readonly sourcePrincipal: string;
  readonly sourceIp: string;
}

/**
 * Opaque TCP: authorized under the binding's policies with TCP semantics (a refusal closes the connection:
 * LocalReply 403 with the policy in `details`), then to the bound Service's endpoints (or the bound pod),
 * same target port.
 */
export function planTcp(snap: Snapshot, b: Binding, l7: (key: string) => ServiceL7 | undefined, r: TcpFacts, waypointService?: string): RequestPlan {
  const port = b.kind === 'service' ? b.port.port : b.port?.port ?? b.targetPort;
  const destinationIp = b.kind === 'workload' ? b.workload.addresses[0] : b.service.vips[0];
  const authz = authorizeTcp(policiesFor(b, l7, waypointService), { port, sourcePrincipal: r.sourcePrincipal || undefined, sourceIp: r.sourceIp, destinationIp });
  if (authz.deny) return reply(403, '', authz.deny.details);
  const base = { path: '', authority: '', requestHeaders: [], responseHeaders: [], mirrors: [] };
  if (b.kind === 'workload') {
    const w = b.workload;
    return { kind: 'forward', service: b.service ?? { name: w.name, namespace: w.namespace, hostname: w.name, vips: [], ports: [] }, targetPort: b.targetPort, endpoints: [w], cluster: `${w.namespace}/${w.name}`, ...base };
  }
  const eps = endpointsOf(snap, b.service);
  if (eps.length === 0) return reply(503, 'UH', 'no_healthy_upstream');
  // the DestinationRule's load balancer, pool limits and outlier detection apply to TCP too; of the hash keys
  // only the source IP exists on a connection (the others give a random pick, as in Envoy)
  const key = serviceKey(b.service);
  const trafficPolicy = l7(key)?.destination?.trafficPolicy;
  const ch = trafficPolicy?.consistentHash;
  const hashKey = ch && 'sourceIp' in ch.key ? r.sourceIp : undefined;
  return {
    kind: 'forward', service: b.service, targetPort: b.port.targetPort, servicePort: b.port, endpoints: eps, cluster: key, ...base,
    ...(trafficPolicy ? { trafficPolicy } : {}), ...(hashKey !== undefined ? { hashKey } : {}),
  };
}
