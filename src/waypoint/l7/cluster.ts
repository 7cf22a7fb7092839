/**
 * Per-cluster state (one Service + subset + port): endpoint choice by load balancer, connection-pool limits,
 * retry budget and outlier detection. Deterministic: time is the caller's `now` (ms) and randomness the
 * caller's `rand`; nothing here starts a timer (an ejected endpoint comes back when a later call sees that its
 * ejection time has passed).
 */
import type { ConnectionPool, ConsistentHash, DestinationPolicy, LoadBalancer, OutlierDetection, TrafficPolicy } from '../../model/index.js';
import { DEFAULT_LOAD_BALANCER } from '../../model/index.js';
import type { HashTable } from './hash.js';
import { maglev, ringHash } from './hash.js';
import type { BackendTarget, Rand } from './plan.js';
import type { LocalResponse, PreparedRequest } from './request.js';
import { headerValues, parseQuery } from './request.js';
import type { AttemptOutcome } from './retry.js';

/** What the cluster needs of an endpoint; a model Workload fits as it is. */
export interface EndpointLike {
  /** stable id (Workload uid) */
  readonly uid: string;
  readonly labels: Readonly<Record<string, string>>;
  /** false: never picked; default true */
  readonly healthy?: boolean;
}

/** Endpoints of a Service narrowed to a DestinationRule subset's labels (all must be equal). */
export function subsetEndpoints<E extends EndpointLike>(endpoints: readonly E[], labels: Readonly<Record<string, string>> | undefined): E[] {
  if (!labels) return [...endpoints];
  const want = Object.entries(labels);
  return endpoints.filter((e) => want.every(([k, v]) => e.labels[k] === v));
}

/** The policy of a subset (already merged with the rule's policy by the translator), else the rule's. */
export function policyFor(destination: DestinationPolicy | undefined, subset: string | undefined): { policy: TrafficPolicy; labels?: Readonly<Record<string, string>>; missingSubset: boolean } {
  if (!destination) return { policy: {}, missingSubset: subset !== undefined };
  if (subset === undefined) return { policy: destination.trafficPolicy, missingSubset: false };
  const s = destination.subsets.find((x) => x.name === subset);
  if (!s) return { policy: destination.trafficPolicy, missingSubset: true };
  return { policy: s.trafficPolicy, labels: s.labels, missingSubset: false };
}

/**
 * The consistent-hash key of a request, or undefined when the request does not carry it (the pick is then
 * random, as Envoy does): a header's first value, a cookie's value, the source IP, a query parameter's first value.
 */
export function hashKeyOf(ch: ConsistentHash | undefined, req: PreparedRequest): string | undefined {
  if (!ch) return undefined;
  const k = ch.key;
  if ('header' in k) return headerValues(req.facts.headers, k.header)[0];
  if ('sourceIp' in k) return req.facts.sourceIp;
  if ('queryParameter' in k) return parseQuery(req.query).get(k.queryParameter)?.[0];
  for (const line of headerValues(req.facts.headers, 'cookie')) {
    for (const part of line.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === k.cookie) return part.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** One request admitted under the cluster's connection-pool limits; `release()` when it is over (idempotent). */
export interface Admission {
  /** over `maxConnections` (HTTP/1.1): the request waits for a connection (counted against http1MaxPendingRequests) */
  readonly pending: boolean;
  release(): void;
}

interface EndpointState<E> {
  endpoint: E;
  active: number;
  consecutive5xx: number;
  consecutiveGateway: number;
  /** ejected until this time (ms); undefined when not ejected */
  ejectedUntil: number | undefined;
  timesEjected: number;
  /** when the last ejection ended (for the decay of timesEjected) */
  returnedAt: number | undefined;
}

const UNLIMITED = Number.MAX_SAFE_INTEGER;

function overflow(what: string): LocalResponse {
  return { kind: 'respond', status: 503, flag: 'UO', headers: [], body: 'upstream connect error or disconnect/reset before headers. reset reason: overflow\n', details: `upstream_overflow_${what}` };
}
const NO_HEALTHY: LocalResponse = { kind: 'respond', status: 503, flag: 'UH', headers: [], body: 'no healthy upstream\n', details: 'no_healthy_upstream' };

/** Per-endpoint counters of a cluster, for the admin/config dump and tests. */
export interface EndpointStatus {
  readonly uid: string;
  readonly active: number;
  readonly ejected: boolean;
  readonly ejectedUntil?: number;
  readonly timesEjected: number;
}

export class Cluster<E extends EndpointLike = EndpointLike> {
  #policy: TrafficPolicy = {};
  #endpointsRef: readonly E[] | undefined;
  #states = new Map<string, EndpointState<E>>();
  /** endpoints sorted by uid: round robin and hashing see a stable order */
  #order: EndpointState<E>[] = [];
  #active = 0;
  #activeRetries = 0;
  #tcpActive = 0;
  #rr = 0;
  #hash: { sig: string; table: HashTable; members: EndpointState<E>[] } | undefined;

  constructor(policy: TrafficPolicy | undefined, endpoints: readonly E[]) {
    this.update(policy, endpoints);
  }

  /**
   * New policy and/or endpoint list. State (active counts, ejections) stays with endpoints whose uid is kept;
   * cheap when both are the same objects as last time.
   */
  update(policy: TrafficPolicy | undefined, endpoints: readonly E[]): void {
    this.#policy = policy ?? {};
    if (endpoints === this.#endpointsRef) return;
    this.#endpointsRef = endpoints;
    const next = new Map<string, EndpointState<E>>();
    for (const e of endpoints) {
      const old = this.#states.get(e.uid);
      next.set(e.uid, old ? { ...old, endpoint: e } : { endpoint: e, active: 0, consecutive5xx: 0, consecutiveGateway: 0, ejectedUntil: undefined, timesEjected: 0, returnedAt: undefined });
    }
    // an endpoint that left and comes back later starts fresh; requests still running on a removed one are
    // released against nothing (their count no longer matters)
    this.#states = next;
    this.#order = [...next.values()].sort((a, b) => (a.endpoint.uid < b.endpoint.uid ? -1 : a.endpoint.uid > b.endpoint.uid ? 1 : 0));
    this.#hash = undefined;
  }

  get policy(): TrafficPolicy { return this.#policy; }
  get loadBalancer(): LoadBalancer { return this.#policy.loadBalancer ?? DEFAULT_LOAD_BALANCER; }
  get #pool(): ConnectionPool { return this.#policy.connectionPool ?? {}; }
  /** requests admitted and not yet released */
  get activeRequests(): number { return this.#active; }
  /** 0 = unlimited; 1 disables keep-alive (the connection pool closes a connection after this many requests) */
  get maxRequestsPerConnection(): number { return this.#pool.maxRequestsPerConnection ?? 0; }

  /**
   * Admits a request under the connection-pool limits, or answers 503 `UO`:
   * - every protocol: at most `http2MaxRequests` requests at once (Istio: it applies to HTTP/1.1 too);
   * - HTTP/1.1: at most `maxConnections` in progress plus `http1MaxPendingRequests` waiting for a connection.
   */
  admit(protocol: 'http1' | 'http2'): Admission | LocalResponse {
    const pool = this.#pool;
    const maxRequests = pool.http2MaxRequests ?? UNLIMITED;
    if (this.#active >= maxRequests) return overflow('max_requests');
    let pending = false;
    if (protocol === 'http1') {
      const conns = pool.maxConnections ?? UNLIMITED;
      const queue = pool.http1MaxPendingRequests ?? UNLIMITED;
      if (this.#active >= conns) {
        if (this.#active - conns >= queue) return overflow('pending_requests');
        pending = true;
      }
    }
    this.#active++;
    let done = false;
    return { pending, release: () => { if (!done) { done = true; this.#active--; } } };
  }

  /**
   * Admits an opaque TCP connection under `maxConnections` (Envoy's connection circuit breaker on a TCP
   * proxy), or refuses it: 503 `UO` in the telemetry, the downstream stream closed.
   */
  admitTcp(): Admission | LocalResponse {
    if (this.#tcpActive >= (this.#pool.maxConnections ?? UNLIMITED)) return overflow('max_connections');
    this.#tcpActive++;
    let done = false;
    return { pending: false, release: () => { if (!done) { done = true; this.#tcpActive--; } } };
  }

  /** TCP connections admitted and not yet released */
  get activeConnections(): number { return this.#tcpActive; }

  /**
   * Reserves one retry under `maxRetries` (concurrent retries of the cluster); false: budget exhausted, do not
   * retry. Call `retryDone()` when the retry attempt has ended. `maxRetries: 0` is unset (Istio sets the circuit
   * breaker only for a value above 0; the default is 2^32-1).
   */
  tryRetry(): boolean {
    const max = this.#pool.maxRetries || UNLIMITED;
    if (this.#activeRetries >= max) return false;
    this.#activeRetries++;
    return true;
  }
  retryDone(): void { if (this.#activeRetries > 0) this.#activeRetries--; }

  /** Is the endpoint ejected at `now`? Ends an ejection whose time has passed. */
  #ejected(s: EndpointState<E>, now: number): boolean {
    if (s.ejectedUntil === undefined) return false;
    if (now >= s.ejectedUntil) { s.returnedAt = s.ejectedUntil; s.ejectedUntil = undefined; return false; }
    return true;
  }

  /** Healthy endpoints that may take traffic at `now` (ejections ignored below minHealthPercent). */
  #available(now: number): EndpointState<E>[] {
    const healthy = this.#order.filter((s) => s.endpoint.healthy !== false);
    const od = this.#policy.outlierDetection;
    const notEjected = healthy.filter((s) => !this.#ejected(s, now));
    if (!od || healthy.length === 0) return notEjected;
    // Below minHealthPercent, outlier detection steps aside and every healthy endpoint takes traffic.
    if (notEjected.length * 100 < od.minHealthPercent * healthy.length) return healthy;
    return notEjected;
  }

  /**
   * The endpoint for one attempt, by the cluster's load balancer, or 503 `UH` when no endpoint may take it.
   * @param exclude uids to avoid (endpoints already tried by this request); ignored when nothing else is left
   * @param hashKey consistent-hash key of the request (see hashKeyOf); absent: random pick
   */
  pick(now: number, rand: Rand, opts: { readonly exclude?: ReadonlySet<string>; readonly hashKey?: string | undefined } = {}): E | LocalResponse {
    let avail = this.#available(now);
    if (avail.length === 0) return NO_HEALTHY;
    const ch = this.#policy.consistentHash;
    if (ch) {
      if (opts.hashKey !== undefined) {
        // the hash is taken over all available endpoints so the same key keeps its endpoint; a retry that must
        // avoid it walks to the next one in the stable order
        const s = this.#hashPick(avail, ch, opts.hashKey);
        if (!opts.exclude?.has(s.endpoint.uid)) return s.endpoint;
        const rest = avail.filter((x) => !opts.exclude!.has(x.endpoint.uid));
        if (rest.length === 0) return s.endpoint;
        return rest[(rest.indexOf(s) + 1 + rest.length) % rest.length]?.endpoint ?? rest[0]!.endpoint;
      }
      return avail[Math.floor(rand() * avail.length) % avail.length]!.endpoint;
    }
    if (opts.exclude && opts.exclude.size > 0) {
      const rest = avail.filter((s) => !opts.exclude!.has(s.endpoint.uid));
      if (rest.length > 0) avail = rest;
    }
    const n = avail.length;
    if (n === 1) return avail[0]!.endpoint;
    switch (this.loadBalancer) {
      case 'ROUND_ROBIN': {
        const s = avail[this.#rr % n]!;
        this.#rr = (this.#rr + 1) % 1_000_000_007;
        return s.endpoint;
      }
      case 'RANDOM':
        return avail[Math.floor(rand() * n) % n]!.endpoint;
      case 'LEAST_REQUEST':
      default: {
        // power of two choices: two distinct random endpoints, the one with fewer active requests
        const i = Math.floor(rand() * n) % n;
        let j = Math.floor(rand() * (n - 1)) % (n - 1);
        if (j >= i) j++;
        const a = avail[i]!, b = avail[j]!;
        return (b.active < a.active ? b : a).endpoint;
      }
    }
  }

  #hashPick(avail: EndpointState<E>[], ch: ConsistentHash, key: string): EndpointState<E> {
    const sig = `${ch.algorithm}:${ch.minimumRingSize ?? ''}:${avail.map((s) => s.endpoint.uid).join('\n')}`;
    if (!this.#hash || this.#hash.sig !== sig) {
      const keys = avail.map((s) => s.endpoint.uid);
      this.#hash = { sig, members: avail, table: ch.algorithm === 'maglev' ? maglev(keys) : ringHash(keys, ch.minimumRingSize) };
    }
    const i = this.#hash.table.lookup(key);
    return this.#hash.members[i < 0 ? 0 : i]!;
  }

  /** An attempt to `endpoint` starts (least-request counts it). */
  started(endpoint: E): void {
    const s = this.#states.get(endpoint.uid);
    if (s) s.active++;
  }

  /**
   * An attempt to `endpoint` ended: least-request count and outlier detection. 5xx responses and failures
   * without a response (connect failure, reset, refused stream, timeout) count as errors; 502/503/504 and
   * those failures also as gateway errors; any other response resets both counts.
   */
  finished(endpoint: E, outcome: AttemptOutcome, now: number): void {
    const s = this.#states.get(endpoint.uid);
    if (!s) return;
    if (s.active > 0) s.active--;
    const od = this.#policy.outlierDetection;
    const status = outcome.kind === 'response' ? outcome.status : undefined;
    const is5xx = status === undefined || status >= 500;
    const isGateway = status === undefined || status === 502 || status === 503 || status === 504;
    if (!is5xx) { s.consecutive5xx = 0; s.consecutiveGateway = 0; return; }
    s.consecutive5xx++;
    if (isGateway) s.consecutiveGateway++; else s.consecutiveGateway = 0;
    if (!od || this.#ejected(s, now)) return;
    const by5xx = od.consecutive5xxErrors > 0 && s.consecutive5xx >= od.consecutive5xxErrors;
    const byGateway = od.consecutiveGatewayErrors !== undefined && od.consecutiveGatewayErrors > 0 && s.consecutiveGateway >= od.consecutiveGatewayErrors;
    if (by5xx || byGateway) this.#eject(s, od, now);
  }

  /**
   * Ejects for baseEjectionTime x times ejected, unless that would put more than maxEjectionPercent of the
   * endpoints out. timesEjected decays by one per `interval` spent back in service.
   */
  #eject(s: EndpointState<E>, od: OutlierDetection, now: number): void {
    const total = this.#order.length;
    const ejected = this.#order.filter((x) => this.#ejected(x, now)).length;
    if ((ejected + 1) * 100 > od.maxEjectionPercent * total) return;
    if (s.returnedAt !== undefined && od.intervalMs > 0) {
      s.timesEjected = Math.max(0, s.timesEjected - Math.floor((now - s.returnedAt) / od.intervalMs));
    }
    s.timesEjected++;
    s.ejectedUntil = now + od.baseEjectionTimeMs * s.timesEjected;
    s.consecutive5xx = 0;
    s.consecutiveGateway = 0;
  }

  /** Endpoint counters at `now`, in uid order. */
  status(now: number): EndpointStatus[] {
    return this.#order.map((s) => {
      const ejected = this.#ejected(s, now);
      return { uid: s.endpoint.uid, active: s.active, ejected, ...(ejected ? { ejectedUntil: s.ejectedUntil! } : {}), timesEjected: s.timesEjected };
    });
  }
}

/**
 * Clusters by (Service, subset, port), kept across requests and config updates so that load-balancer,
 * pool and outlier state survive. The waypoint holds one table.
 */
export class ClusterTable<E extends EndpointLike = EndpointLike> {
  readonly #clusters = new Map<string, Cluster<E>>();

  /** `<service>|<subset>|<port>`: the cluster name for logs (`upstream_cluster`) */
  static keyOf(target: Pick<BackendTarget, 'service' | 'subset' | 'port'>): string {
    return `${target.service}|${target.subset ?? ''}|${target.port}`;
  }

  /**
   * The cluster of a backend: the Service's endpoints narrowed to the subset's labels, with the subset's
   * (or the DestinationRule's) traffic policy. A subset no DestinationRule defines has no endpoints (503 UH).
   * @param serviceEndpoints every endpoint of the Service (the caller filters nothing)
   */
  cluster(target: BackendTarget, destination: DestinationPolicy | undefined, serviceEndpoints: readonly E[]): Cluster<E> {
    const key = ClusterTable.keyOf(target);
    const { policy, labels, missingSubset } = policyFor(destination, target.subset);
    let c = this.#clusters.get(key);
    const memo = this.#members.get(key);
    let members: readonly E[];
    if (memo && memo.from === serviceEndpoints && memo.labels === labels && memo.missing === missingSubset) members = memo.members;
    else {
      members = missingSubset ? [] : subsetEndpoints(serviceEndpoints, labels);
      this.#members.set(key, { from: serviceEndpoints, labels, missing: missingSubset, members });
    }
    if (!c) { c = new Cluster<E>(policy, members); this.#clusters.set(key, c); } else c.update(policy, members);
    return c;
  }

  readonly #members = new Map<string, { from: readonly E[]; labels: Readonly<Record<string, string>> | undefined; missing: boolean; members: readonly E[] }>();

  /** Drops clusters whose Service is no longer served (keys from keyOf; `keep` gets the service key). */
  prune(keep: (service: string) => boolean): void {
    for (const k of [...this.#clusters.keys()]) {
      const svc = k.slice(0, k.indexOf('|'));
      if (!keep(svc)) { this.#clusters.delete(k); this.#members.delete(k); }
    }
  }

  get size(): number { return this.#clusters.size; }
}
