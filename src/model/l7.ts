/**
 * The L7 (waypoint) model: what a waypoint needs to route one request for a Service. It is built by the
 * control plane from Gateway API HTTPRoute/GRPCRoute and Istio VirtualService/DestinationRule, and is
 * independent of which of those it came from. Everything is plain data; the helpers below are pure.
 *
 * Routes are already in evaluation order: the first route whose match holds wins. Gateway API precedence
 * (exact path, longest prefix, method, header count ...) and VirtualService order are both resolved by the
 * translator, so a waypoint never re-sorts.
 */
import type { Cidr, StringMatch } from './types.js';

/** Where a route or policy came from, for logs, metrics and `ambit` status output. */
export interface L7Origin {
  readonly kind: 'HTTPRoute' | 'GRPCRoute' | 'VirtualService' | 'DestinationRule';
  readonly namespace: string;
  readonly name: string;
  /** index of the rule in the resource (`spec.rules[i]` / `spec.http[i]`) */
  readonly rule: number;
  /** Gateway API rule name (`rules[].name`) or VirtualService `http[].name`, when set */
  readonly ruleName?: string;
}

/** String comparison of a header, query parameter, authority or gRPC name. Regexes are RE2-style, full match. */
export type L7StringMatch =
  | { readonly exact: string }
  | { readonly prefix: string }
  | { readonly regex: string }
  | { readonly present: true };

export interface PathMatch {
  readonly type: 'exact' | 'prefix' | 'regex';
  readonly value: string;
  /**
   * Prefix only. true (Gateway API): element-wise on `/`, `/abc` matches `/abc/def` but not `/abcd`.
   * false (VirtualService): plain string prefix, `/abc` also matches `/abcd`.
   */
  readonly segmented: boolean;
  /** VirtualService `ignoreUriCase`: exact and prefix compare case-insensitively */
  readonly ignoreCase: boolean;
}

export interface HeaderMatch {
  /** lowercase; `:method` for a VirtualService method match that is not exact (prefix/regex) */
  readonly name: string;
  readonly match: L7StringMatch;
  /** VirtualService `withoutHeaders`: the request must NOT match */
  readonly invert: boolean;
}

export interface QueryParamMatch {
  /** exact, case-sensitive; the first value of a repeated parameter is compared */
  readonly name: string;
  readonly match: L7StringMatch;
}

/** All present fields must hold (AND). A match with no field matches every request. */
export interface HttpMatch {
  readonly path?: PathMatch;
  /** upper case, e.g. `GET` */
  readonly method?: string;
  readonly headers: readonly HeaderMatch[];
  readonly queryParams: readonly QueryParamMatch[];
  /** VirtualService `authority` */
  readonly authority?: L7StringMatch;
  /** VirtualService `scheme` */
  readonly scheme?: L7StringMatch;
  /** VirtualService `port`: the service port the request arrived on */
  readonly port?: number;
}

export interface HeaderModifier {
  /** [lowercase name, value]: overwrite */
  readonly set: readonly (readonly [string, string])[];
  /** [lowercase name, value]: append (comma-joined with an existing value) */
  readonly add: readonly (readonly [string, string])[];
  /** lowercase names */
  readonly remove: readonly string[];
}

export interface WeightedBackend {
  /** the destination as written, resolved to a FQDN (`reviews` -> `reviews.<ns>.svc.cluster.local`) */
  readonly host: string;
  /** key `<namespace>/<hostname>` of the Service; absent when `host` names no known Service (its share gets 500) */
  readonly service?: string;
  /** service port; absent means the port the request arrived on */
  readonly port?: number;
  /** DestinationRule subset name */
  readonly subset?: string;
  /** relative weight, >= 0; a backend with weight 0 gets no traffic */
  readonly weight: number;
  readonly requestHeaders?: HeaderModifier;
  readonly responseHeaders?: HeaderModifier;
}

export interface Redirect {
  readonly scheme?: string;
  readonly hostname?: string;
  readonly port?: number;
  /** `full` replaces the whole path; `prefix` replaces only the matched prefix */
  readonly path?: { readonly type: 'full' | 'prefix'; readonly value: string };
  /**
   * When `port` is absent: `protocol-default` omits the port (80/443 by scheme); `request-port` keeps the
   * port the request arrived on. Absent: the scheme's default port when `scheme` is set, else the request port.
   */
  readonly derivePort?: 'protocol-default' | 'request-port';
  /** 301, 302, 303, 307, 308 (VirtualService default 301, HTTPRoute default 302) */
  readonly statusCode: number;
}

export interface Rewrite {
  readonly hostname?: string;
  /**
   * `full` replaces the whole path; `prefix` replaces only the matched prefix (see `replacePrefix`);
   * `regex` replaces every match of `pattern` with `value` (`\\1` style groups).
   */
  readonly path?:
    | { readonly type: 'full' | 'prefix'; readonly value: string }
    | { readonly type: 'regex'; readonly pattern: string; readonly value: string };
}

export interface RetryPolicy {
  /** retries after the first attempt (total requests = 1 + attempts); 0 disables */
  readonly attempts: number;
  /** per attempt, ms; absent = bounded only by the route timeout */
  readonly perTryTimeoutMs?: number;
  /** Envoy `x-envoy-retry-on` tokens (`5xx`, `gateway-error`, `reset`, `connect-failure`, `retriable-4xx`, ...) */
  readonly retryOn: readonly string[];
  /** numeric codes that are retried (from `retryOn` numbers or HTTPRoute `retry.codes`) */
  readonly retriableStatusCodes: readonly number[];
  /** base of the exponential backoff between attempts, ms; default 25 */
  readonly backoffBaseMs: number;
}

export interface FaultPolicy {
  /** percent 0..100 of requests delayed by `ms` */
  readonly delay?: { readonly percent: number; readonly ms: number };
  /** percent 0..100 of requests answered with `httpStatus` (or gRPC status `grpcStatus`) without forwarding */
  readonly abort?: { readonly percent: number; readonly httpStatus?: number; readonly grpcStatus?: number };
}

export interface Mirror {
  readonly host: string;
  readonly service?: string;
  readonly port?: number;
  readonly subset?: string;
  /** 0..100 */
  readonly percent: number;
}

/** What happens to a request once a route is chosen. Exactly one of backends / redirect / directResponse decides. */
export interface HttpAction {
  /** empty with no redirect/directResponse: 500 (nothing valid to send to) */
  readonly backends: readonly WeightedBackend[];
  readonly redirect?: Redirect;
  readonly directResponse?: { readonly status: number; readonly body?: string };
  readonly rewrite?: Rewrite;
  readonly requestHeaders?: HeaderModifier;
  readonly responseHeaders?: HeaderModifier;
  /** whole request including retries, ms; absent = no timeout */
  readonly timeoutMs?: number;
  readonly retries?: RetryPolicy;
  readonly fault?: FaultPolicy;
  readonly mirrors: readonly Mirror[];
}

/** One match and its action; a rule with several matches becomes several routes (same action, same origin). */
export interface HttpRoute {
  readonly origin: L7Origin;
  /** absent: matches every request (Gateway API default `PathPrefix /`, VirtualService rule without match) */
  readonly match?: HttpMatch;
  readonly action: HttpAction;
}

export interface GrpcMethodMatch {
  readonly type: 'exact' | 'regex';
  /** fully qualified service, e.g. `helloworld.Greeter`; absent = any */
  readonly service?: string;
  /** method, e.g. `SayHello`; absent = any */
  readonly method?: string;
}

export interface GrpcMatch {
  readonly method?: GrpcMethodMatch;
  readonly headers: readonly HeaderMatch[];
}

export interface GrpcRoute {
  readonly origin: L7Origin;
  readonly match?: GrpcMatch;
  readonly action: HttpAction;
}

export type LoadBalancer = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';

export interface ConnectionPool {
  readonly maxConnections?: number;
  /** ms */
  readonly connectTimeoutMs?: number;
  readonly http1MaxPendingRequests?: number;
  readonly http2MaxRequests?: number;
  /** 0 = unlimited; 1 disables keep-alive */
  readonly maxRequestsPerConnection?: number;
  readonly maxRetries?: number;
  /** ms */
  readonly idleTimeoutMs?: number;
}

export interface OutlierDetection {
  /** 0 disables; default 5 */
  readonly consecutive5xxErrors: number;
  /** counts 502/503/504; absent = off */
  readonly consecutiveGatewayErrors?: number;
  /** ms; default 10 000 */
  readonly intervalMs: number;
  /** ms; ejection lasts base x times ejected; default 30 000 */
  readonly baseEjectionTimeMs: number;
  /** default 10 */
  readonly maxEjectionPercent: number;
  /** below this share of healthy hosts detection is off; default 0 */
  readonly minHealthPercent: number;
}

/**
 * DestinationRule `loadBalancer.consistentHash`: requests with the same key go to the same endpoint, and most
 * keys stay put when endpoints come and go. A request without the key is load balanced at random.
 */
export interface ConsistentHash {
  readonly key:
    | { readonly header: string }
    /** `ttlMs`/`path` are kept for a later cookie-issuing step; today a missing cookie means a random pick */
    | { readonly cookie: string; readonly ttlMs?: number; readonly path?: string }
    | { readonly sourceIp: true }
    | { readonly queryParameter: string };
  /** `ring` (ringHash, the default) or `maglev` */
  readonly algorithm: 'ring' | 'maglev';
  /** ring hash only: points on the ring, at least this many; default 1024 */
  readonly minimumRingSize?: number;
}

/** Fields left out mean the defaults of the reference (LEAST_REQUEST, unlimited pools, no outlier detection). */
export interface TrafficPolicy {
  readonly loadBalancer?: LoadBalancer;
  /** when set, replaces `loadBalancer` (they are one-of in the DestinationRule) */
  readonly consistentHash?: ConsistentHash;
  readonly connectionPool?: ConnectionPool;
  readonly outlierDetection?: OutlierDetection;
}

export interface Subset {
  readonly name: string;
  /** endpoints carrying all of these labels */
  readonly labels: Readonly<Record<string, string>>;
  /** already merged with the DestinationRule-level policy (field by field) */
  readonly trafficPolicy: TrafficPolicy;
}

export interface DestinationPolicy {
  readonly origin: L7Origin;
  readonly trafficPolicy: TrafficPolicy;
  readonly subsets: readonly Subset[];
}

/** L7 config of one Service (key `<namespace>/<hostname>`). A Service without any routes routes to itself. */
export interface ServiceL7 {
  readonly service: string;
  /** in evaluation order: first match wins; no match -> 404 */
  readonly http: readonly HttpRoute[];
  /** in evaluation order; consulted for gRPC requests (content-type application/grpc*) before `http` */
  readonly grpc: readonly GrpcRoute[];
  /** from the DestinationRule whose host is this Service */
  readonly destination?: DestinationPolicy;
  /**
   * AuthorizationPolicies with targetRefs that apply to this Service at its waypoint (targeting the waypoint's
   * Gateway, or the Service). Absent or empty: no L7 policy, every request is allowed by L7 policy.
   * In the config of a waypoint's own Service: the policies targeting the whole waypoint, which apply to
   * workload-addressed traffic through it.
   */
  readonly authorization?: readonly L7Authorization[];
}

export const DEFAULT_LOAD_BALANCER: LoadBalancer = 'LEAST_REQUEST';

// === pure helpers ===

const DURATION_UNITS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, 'µs': 0.001, ns: 0.000001 };
const DURATION_PART = /(\d+(?:\.\d+)?|\.\d+)(h|ms|m|s|us|µs|ns)/y;

/**
 * Go/Istio/Gateway API duration (`10s`, `500ms`, `1m30s`, `1.5s`) in milliseconds, or undefined when the
 * text is not a duration. A non-zero value below 1 ms rounds up to 1 ms, so it never silently turns into
 * "disabled". The bare `0` is accepted as zero.
 */
export function parseDurationMs(text: string): number | undefined {
  if (text === '0') return 0;
  if (text.length === 0 || text.length > 64) return undefined;
  let total = 0;
  DURATION_PART.lastIndex = 0;
  let pos = 0;
  while (pos < text.length) {
    DURATION_PART.lastIndex = pos;
    const m = DURATION_PART.exec(text);
    if (!m) return undefined;
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = DURATION_PART.lastIndex;
  }
  if (!Number.isFinite(total)) return undefined;
  return total > 0 && total < 1 ? 1 : Math.round(total);
}

/**
 * Does `path` (without query) start with `prefix`? Segmented (Gateway API): element by element on `/`,
 * a trailing `/` of the prefix ignored, so `/abc` matches `/abc`, `/abc/` and `/abc/d` but not `/abcd`.
 * Plain (VirtualService): a string prefix.
 */
export function pathHasPrefix(path: string, prefix: string, segmented: boolean, ignoreCase = false): boolean {
  if (ignoreCase) { path = path.toLowerCase(); prefix = prefix.toLowerCase(); }
  if (!segmented) return path.startsWith(prefix);
  const p = prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (p === '/') return path.startsWith('/');
  return path === p || path.startsWith(p + '/');
}

/**
 * Replaces the matched `prefix` of `path` with `replacement` (Gateway API ReplacePrefixMatch, VirtualService
 * `rewrite.uri` after a prefix match): `/foo/bar` with `/foo` -> `/xyz` gives `/xyz/bar`, -> `` gives `/bar`;
 * `/foo` with `/foo` -> `` gives `/`.
 */
export function replacePrefix(path: string, prefix: string, replacement: string, segmented: boolean): string {
  const strip = (x: string): string => (x.endsWith('/') ? x.slice(0, -1) : x);
  if (segmented) {
    const p = prefix === '/' ? '' : strip(prefix);
    const out = strip(replacement) + path.slice(p.length);
    return out === '' ? '/' : out.startsWith('/') ? out : '/' + out;
  }
  const rest = path.slice(prefix.length);
  const out = replacement + rest;
  return out.startsWith('/') ? out : '/' + out;
}

/** Share of each backend, 0..1, from relative weights; all zero -> all zero (the caller answers 500). */
export function backendShares(weights: readonly number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => (sum > 0 ? w / sum : 0));
}

// === L7 authorization (AuthorizationPolicy with targetRefs, enforced by the waypoint) ===

/**
 * A path pattern of an L7 policy: Istio's string forms (`/a` exact, `/a*` prefix, `*.jpg` suffix, `*` any
 * non-empty path) or a template with `{*}` (one segment) and `{**}` (zero or more segments, last operator).
 */
export type L7PathPattern = StringMatch | { readonly template: string };

/**
 * One `from.source`. Fields are ANDed, the values of one field ORed; a `not*` field holds when no value matches.
 * Principals are compared without `spiffe://` (`<td>/ns/<ns>/sa/<sa>`; serviceAccounts arrive here as exact
 * principals). An empty source matches every request.
 */
export interface L7Source {
  readonly principals?: readonly StringMatch[];
  readonly notPrincipals?: readonly StringMatch[];
  readonly namespaces?: readonly StringMatch[];
  readonly notNamespaces?: readonly StringMatch[];
  readonly trustDomains?: readonly StringMatch[];
  readonly notTrustDomains?: readonly StringMatch[];
  /** the client IP (the original source, from the HBONE tunnel) */
  readonly ipBlocks?: readonly Cidr[];
  readonly notIpBlocks?: readonly Cidr[];
  /** the waypoint trusts no X-Forwarded-For hop: the remote IP is the client IP */
  readonly remoteIpBlocks?: readonly Cidr[];
  readonly notRemoteIpBlocks?: readonly Cidr[];
  /** JWT principals: the waypoint validates no JWT, so these can never be evaluated (fail closed) */
  readonly requestPrincipals?: readonly StringMatch[];
  readonly notRequestPrincipals?: readonly StringMatch[];
}

/** One `to.operation`; same AND/OR rules as L7Source. An empty operation matches every request. */
export interface L7Operation {
  /** lowercase; compared with the request authority lowercased, port included (use `h:*` for any port) */
  readonly hosts?: readonly StringMatch[];
  readonly notHosts?: readonly StringMatch[];
  /** the service port the request was sent to */
  readonly ports?: readonly number[];
  readonly notPorts?: readonly number[];
  readonly methods?: readonly StringMatch[];
  readonly notMethods?: readonly StringMatch[];
  /** matched against the normalized path (no query) */
  readonly paths?: readonly L7PathPattern[];
  readonly notPaths?: readonly L7PathPattern[];
}

/**
 * A `when` condition as written (key checked by the translator); values in Istio's string forms (CIDRs for
 * ip keys, numbers for `destination.port`). Holds when some value matches and no notValue does.
 */
export interface L7Condition {
  readonly key: string;
  readonly values?: readonly string[];
  readonly notValues?: readonly string[];
}

/** A rule: from AND to AND every when. An absent list does not constrain. */
export interface L7Rule {
  readonly from?: readonly L7Source[];
  readonly to?: readonly L7Operation[];
  readonly when?: readonly L7Condition[];
}

/** An AuthorizationPolicy as a waypoint enforces it on one Service. Rules are ORed; no rules: never matches. */
export interface L7Authorization {
  readonly name: string;
  readonly namespace: string;
  readonly action: 'allow' | 'deny';
  /** `istio.io/dry-run: "true"`: evaluated and reported, never enforced */
  readonly dryRun: boolean;
  readonly rules: readonly L7Rule[];
}
