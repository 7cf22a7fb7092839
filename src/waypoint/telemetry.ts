/**
 * Request telemetry with Istio's names and labels (reporter="waypoint"): istio_requests_total,
 * istio_request_duration_milliseconds, istio_request_bytes, istio_response_bytes; TCP
 * connections on non-HTTP ports as istio_tcp_*; one JSON access-log line per request with
 * Envoy's field names. The four request metrics live in series.ts (one map lookup per request,
 * no label hashing); the rest are prom-client's own.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { logger } from '../core/index.js';
import { spiffeUri } from '../identity/index.js';
import type { Service, Workload } from '../model/index.js';
import { RequestSeriesSet } from './series.js';

export const REQUEST_LABELS = [
  'reporter',
  'source_workload', 'source_canonical_service', 'source_canonical_revision', 'source_workload_namespace',
  'source_principal', 'source_app', 'source_version', 'source_cluster',
  'destination_service', 'destination_service_namespace', 'destination_service_name',
  'destination_workload', 'destination_canonical_service', 'destination_canonical_revision',
  'destination_workload_namespace', 'destination_principal', 'destination_app', 'destination_version',
  'destination_cluster',
  'request_protocol', 'response_code', 'grpc_response_status', 'response_flags', 'connection_security_policy',
] as const;
export type RequestLabelName = typeof REQUEST_LABELS[number];
export type RequestLabels = Record<RequestLabelName, string>;

const TCP_LABELS = REQUEST_LABELS.filter((n) => n !== 'response_code' && n !== 'grpc_response_status');
type TcpLabelName = Exclude<RequestLabelName, 'response_code' | 'grpc_response_status'>;

const U = 'unknown';

export interface RequestDescription {
  source?: Workload | undefined;
  sourcePrincipal: string;
  destination?: Workload | undefined;
  service?: Pick<Service, 'hostname' | 'namespace' | 'name'> | undefined;
  /** `http`, `http2` (h2 or h2c), `grpc`, `tcp` */
  protocol: 'http' | 'http2' | 'grpc' | 'tcp';
  status: number;
  grpcStatus?: string | undefined;
  flags: string;
}

function spiffe(w: Workload): string {
  return spiffeUri(w);
}

function cluster(w: Workload | undefined): string {
  if (!w) return U;
  const i = w.uid.indexOf('//');
  return i > 0 ? w.uid.slice(0, i) : U;
}

export function requestLabels(d: RequestDescription): RequestLabels {
  const s = d.source;
  const t = d.destination;
  return {
    reporter: 'waypoint',
    source_workload: s?.workloadName ?? U,
    source_canonical_service: s?.canonicalName ?? U,
    source_canonical_revision: s?.canonicalRevision ?? U,
    source_workload_namespace: s?.namespace ?? U,
    source_principal: d.sourcePrincipal || U,
    source_app: s?.canonicalName ?? U,
    source_version: s?.canonicalRevision ?? U,
    source_cluster: cluster(s),
    destination_service: d.service?.hostname ?? U,
    destination_service_namespace: d.service?.namespace ?? U,
    destination_service_name: d.service?.name ?? U,
    destination_workload: t?.workloadName ?? U,
    destination_canonical_service: t?.canonicalName ?? U,
    destination_canonical_revision: t?.canonicalRevision ?? U,
    destination_workload_namespace: t?.namespace ?? U,
    destination_principal: t ? spiffe(t) : U,
    destination_app: t?.canonicalName ?? U,
    destination_version: t?.canonicalRevision ?? U,
    destination_cluster: cluster(t),
    request_protocol: d.protocol,
    response_code: String(d.status),
    grpc_response_status: d.grpcStatus ?? '',
    response_flags: d.flags || '-',
    connection_security_policy: 'mutual_tls',
  };
}

/** Istio's default buckets. */
const DURATION_BUCKETS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
const SIZE_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

export interface AccessEntry {
  start: number;
  method: string;
  path: string;
  protocol: string;
  status: number;
  flags: string;
  details: string;
  bytesReceived: number;
  bytesSent: number;
  durationMs: number;
  upstreamMs?: number | undefined;
  requestId: string;
  authority: string;
  userAgent?: string | undefined;
  xff?: string | undefined;
  upstreamHost?: string | undefined;
  upstreamCluster?: string | undefined;
  downstreamRemote: string;
  downstreamLocal?: string | undefined;
  routeName?: string | undefined;
  traceId?: string | undefined;
  grpcStatus?: string | undefined;
  attempts: number;
}

export class WaypointTelemetry {
  readonly registry = new Registry();
  readonly #series: RequestSeriesSet;
  readonly #tcpOpened: Counter<TcpLabelName>;
  readonly #tcpClosed: Counter<TcpLabelName>;
  readonly #tcpSent: Counter<TcpLabelName>;
  readonly #tcpRecv: Counter<TcpLabelName>;
  readonly #active: Gauge<'protocol'>;
  readonly #retryOverflow: Counter<'destination_service'>;
  readonly #mirrors: Counter<'result'>;
  readonly #log = logger('access');

  constructor() {
    const registers = [this.registry];
    this.#series = new RequestSeriesSet(this.registry, { name: 'istio_requests_total', help: 'Requests handled by the waypoint' }, [
      { name: 'istio_request_duration_milliseconds', help: 'Request duration, ms', buckets: DURATION_BUCKETS },
      { name: 'istio_request_bytes', help: 'Request size (headers and body), bytes', buckets: SIZE_BUCKETS },
      { name: 'istio_response_bytes', help: 'Response size (headers and body), bytes', buckets: SIZE_BUCKETS },
    ]);
    const tcp = [...TCP_LABELS] as TcpLabelName[];
    this.#tcpOpened = new Counter({ name: 'istio_tcp_connections_opened_total', help: 'TCP connections opened', labelNames: tcp, registers });
    this.#tcpClosed = new Counter({ name: 'istio_tcp_connections_closed_total', help: 'TCP connections closed', labelNames: tcp, registers });
    this.#tcpSent = new Counter({ name: 'istio_tcp_sent_bytes_total', help: 'Bytes sent towards the client', labelNames: tcp, registers });
    this.#tcpRecv = new Counter({ name: 'istio_tcp_received_bytes_total', help: 'Bytes received from the client', labelNames: tcp, registers });
    this.#active = new Gauge({ name: 'ambit_waypoint_active_requests', help: 'Requests in flight', labelNames: ['protocol'], registers });
    this.#retryOverflow = new Counter({ name: 'ambit_waypoint_retry_overflow_total', help: 'Retries not attempted: the cluster\'s maxRetries were in progress (Envoy upstream_rq_retry_overflow)', labelNames: ['destination_service'], registers });
    this.#mirrors = new Counter({
      name: 'ambit_waypoint_mirror_requests_total', labelNames: ['result'], registers,
      help: 'Mirrored (shadow) requests by result: sent (a response came back; it is discarded), failed (no response: connect failure, reset, timeout), skipped_body (body over the mirror bound), skipped_busy (too many mirrors in flight, or the mirror cluster\'s pool limits), skipped_no_endpoint',
    });
  }

  /** the in-flight gauge per protocol label (labels() hashes its argument on every call) */
  readonly #activeOf = new Map<string, { inc(): void; dec(): void }>();

  #activeChild(protocol: string): { inc(): void; dec(): void } {
    let g = this.#activeOf.get(protocol);
    if (!g) { g = this.#active.labels({ protocol }); this.#activeOf.set(protocol, g); }
    return g;
  }

  started(protocol: string): void { this.#activeChild(protocol).inc(); }

  /** One finished request: metrics and the access-log line. */
  request(labels: RequestLabels, a: AccessEntry): void {
    this.#activeChild(labels.request_protocol).dec();
    let key = '';
    for (const n of REQUEST_LABELS) key += `${labels[n]}\u0000`;
    this.#series.observe(this.#series.series(key, () => ({ ...labels })), [a.durationMs, a.bytesReceived, a.bytesSent]);
    if (!this.#log.enabled('info')) return;
    this.#log.info('request', {
      start_time: new Date(a.start).toISOString(),
      method: a.method,
      path: a.path.length > 1024 ? a.path.slice(0, 1024) : a.path,
      protocol: a.protocol,
      response_code: a.status,
      response_flags: a.flags || '-',
      response_code_details: a.details,
      bytes_received: a.bytesReceived,
      bytes_sent: a.bytesSent,
      duration: Math.round(a.durationMs),
      upstream_service_time: a.upstreamMs !== undefined ? Math.round(a.upstreamMs) : null,
      x_forwarded_for: a.xff ?? null,
      user_agent: a.userAgent ?? null,
      request_id: a.requestId,
      authority: a.authority,
      upstream_host: a.upstreamHost ?? null,
      upstream_cluster: a.upstreamCluster ?? null,
      downstream_remote_address: a.downstreamRemote,
      downstream_local_address: a.downstreamLocal ?? null,
      route_name: a.routeName ?? null,
      trace_id: a.traceId ?? null,
      grpc_status: a.grpcStatus ?? null,
      upstream_request_attempt_count: a.attempts,
      source_principal: labels.source_principal,
      destination_principal: labels.destination_principal,
    });
  }

  /** A retry the cluster's `maxRetries` refused (the request ends with the attempt it had). */
  retryOverflow(destinationService: string): void { this.#retryOverflow.inc({ destination_service: destinationService }); }

  /** One mirror copy's fate. */
  mirror(result: 'sent' | 'failed' | 'skipped_body' | 'skipped_busy' | 'skipped_no_endpoint'): void { this.#mirrors.inc({ result }); }

  tcpOpened(labels: RequestLabels): void {
    this.#tcpOpened.inc(tcpOnly(labels));
  }

  tcpClosed(labels: RequestLabels, sent: number, received: number, a: { durationMs: number; error?: string | undefined; downstreamRemote: string; upstreamHost?: string | undefined }): void {
    const l = tcpOnly(labels);
    this.#tcpClosed.inc(l);
    if (sent > 0) this.#tcpSent.inc(l, sent);
    if (received > 0) this.#tcpRecv.inc(l, received);
    if (!this.#log.enabled('info')) return;
    this.#log.info('connection complete', {
      protocol: 'tcp', response_flags: labels.response_flags, bytes_received: received, bytes_sent: sent,
      duration: Math.round(a.durationMs), downstream_remote_address: a.downstreamRemote, upstream_host: a.upstreamHost ?? null,
      source_principal: labels.source_principal, destination_principal: labels.destination_principal,
      destination_service: labels.destination_service, ...(a.error ? { error: a.error } : {}),
    });
  }

  metrics(): Promise<string> { return this.registry.metrics(); }
}

function tcpOnly(l: RequestLabels): Record<TcpLabelName, string> {
  const out: Partial<Record<TcpLabelName, string>> = {};
  for (const n of TCP_LABELS) out[n as TcpLabelName] = l[n];
  return out as Record<TcpLabelName, string>;
}
