/**
 * The mesh model: what the data plane needs to know, independent of where it came from
 * (Kubernetes, YAML files) and of how it travelled (protobuf over WebSocket). Every object is
 * immutable; a config change produces a new Snapshot (see snapshot.ts).
 */

/** `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>` */
export type SpiffeId = string;

export type WorkloadType = 'deployment' | 'pod' | 'job' | 'cronjob';

/** A waypoint a workload or service sends its traffic through: the waypoint's Service. */
export interface WaypointRef {
  /** key of the waypoint's Service, `<namespace>/<hostname>` */
  readonly service: string;
  /** HBONE port on the waypoint pods; 15008 */
  readonly port: number;
}

export interface Workload {
  /** `<cluster>//Pod/<namespace>/<name>`: stable across IP changes */
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly trustDomain: string;
  readonly node: string;
  /** canonical textual IPs (IPv4 dotted, IPv6 compressed lowercase) */
  readonly addresses: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** telemetry: `app.kubernetes.io/name` | `app` | pod name */
  readonly canonicalName: string;
  /** telemetry: `app.kubernetes.io/version` | `version` | 'latest' */
  readonly canonicalRevision: string;
  /** owning controller's name (deployment name when derivable), else the pod name */
  readonly workloadName: string;
  readonly workloadType: WorkloadType;
  /** 'hbone' when enrolled in ambient mode (captured, reachable on :15008), else 'none' */
  readonly tunnel: 'hbone' | 'none';
  /** workload-addressed traffic goes through this waypoint (istio.io/use-waypoint on pod/ns, for=workload|all) */
  readonly waypoint?: WaypointRef;
  readonly healthy: boolean;
  /** Services this workload is an endpoint of: keys `<namespace>/<hostname>` */
  readonly services: readonly string[];
  /** keys `<namespace>/<name>` of selector (scope 'workload') authorizations that apply to it */
  readonly authorizationPolicies: readonly string[];
}

export interface ServicePort {
  readonly port: number;
  /** port on the endpoints; equals `port` when the Service does not say */
  readonly targetPort: number;
  readonly name?: string;
  /** 'http' | 'http2' | 'grpc' | 'tcp' ... from appProtocol or the port name prefix */
  readonly appProtocol?: string;
}

export interface Service {
  readonly name: string;
  readonly namespace: string;
  /** `<name>.<namespace>.svc.cluster.local` */
  readonly hostname: string;
  /** cluster IPs */
  readonly vips: readonly string[];
  readonly ports: readonly ServicePort[];
  /** service-addressed traffic goes through this waypoint */
  readonly waypoint?: WaypointRef;
}

/** Key of a Service in maps and on the wire. */
export function serviceKey(s: { namespace: string; hostname: string }): string {
  return `${s.namespace}/${s.hostname}`;
}

// === L4 authorization ===

export type StringMatch =
  | { readonly exact: string }
  | { readonly prefix: string }
  | { readonly suffix: string }
  | { readonly presence: true };

export interface Cidr {
  readonly address: string;
  readonly prefixLen: number;
}

/**
 * One alternative of a clause. Fields are ANDed; values of one field are ORed; a `not*` field holds
 * when no value matches. A match with no field set matches nothing (see reference 3.4).
 * Principals are compared without the `spiffe://` prefix: `<td>/ns/<ns>/sa/<sa>`.
 */
export interface AuthzMatch {
  readonly namespaces?: readonly StringMatch[];
  readonly notNamespaces?: readonly StringMatch[];
  readonly principals?: readonly StringMatch[];
  readonly notPrincipals?: readonly StringMatch[];
  readonly sourceIps?: readonly Cidr[];
  readonly notSourceIps?: readonly Cidr[];
  readonly destinationIps?: readonly Cidr[];
  readonly notDestinationIps?: readonly Cidr[];
  readonly destinationPorts?: readonly number[];
  readonly notDestinationPorts?: readonly number[];
}

/** A clause (one of from / to / when): matches ORed. */
export interface AuthzClause {
  readonly matches: readonly AuthzMatch[];
}

/** A rule: clauses ANDed. A rule with no clause always matches. */
export interface AuthzRule {
  readonly clauses: readonly AuthzClause[];
}

/** An L4 authorization policy as the node agent enforces it. Rules are ORed. */
export interface Authorization {
  readonly name: string;
  readonly namespace: string;
  /** global: mesh-wide (root namespace); namespace: every workload of `namespace`; workload: listed on Workload.authorizationPolicies */
  readonly scope: 'global' | 'namespace' | 'workload';
  readonly action: 'allow' | 'deny';
  readonly dryRun: boolean;
  readonly rules: readonly AuthzRule[];
}

export function authorizationKey(a: { namespace: string; name: string }): string {
  return `${a.namespace}/${a.name}`;
}

// === waypoints ===

/** Which traffic a waypoint accepts (`istio.io/waypoint-for`). */
export type WaypointFor = 'service' | 'workload' | 'all' | 'none';

/** A waypoint: a Gateway of a waypoint class, reached through the Service of the same name. */
export interface Waypoint {
  /** the Gateway's name */
  readonly name: string;
  readonly namespace: string;
  /** key of the waypoint's Service, `<namespace>/<name>.<namespace>.svc.cluster.local` */
  readonly service: string;
  readonly for: WaypointFor;
  /** `ambit-waypoint` or `istio-waypoint` */
  readonly gatewayClass: string;
}

export function waypointKey(w: { namespace: string; name: string }): string {
  return `${w.namespace}/${w.name}`;
}

/** Name of the static DENY policy that every STRICT workload references (in the root namespace). */
export const STATIC_STRICT_POLICY = 'istio_converted_static_strict';
