/**
 * Connection telemetry with Istio's names and labels, so existing dashboards keep working:
 * istio_tcp_connections_opened_total / _closed_total / istio_tcp_sent_bytes_total /
 * istio_tcp_received_bytes_total, istio_tcp_connections_failed_total, plus one JSON access-log line
 * per finished connection. A connection that failed before it was carried (refused by policy, no
 * certificate, upstream unreachable) counts as failed only: "opened" counts connections that
 * were established, so opened - closed is what is open.
 * Bytes are counted once, when the connection closes, from the socket's own counters.
 * Direction of bytes follows Istio: "received" = client to server, "sent" = server to client.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { logger } from '../../core/index.js';
import type { Service, Workload } from '../../model/index.js';
import { clusterOf } from '../proxy/headers.js';
import { spiffeIdOf } from '../proxy/route.js';
import type { ResponseFlag } from '../proxy/outcome.js';

export const CONNECTION_LABELS = [
  'reporter',
  'source_workload', 'source_canonical_service', 'source_canonical_revision', 'source_workload_namespace',
  'source_principal', 'source_app', 'source_version', 'source_cluster',
  'destination_service', 'destination_service_namespace', 'destination_service_name',
  'destination_workload', 'destination_canonical_service', 'destination_canonical_revision',
  'destination_workload_namespace', 'destination_principal', 'destination_app', 'destination_version',
  'destination_cluster',
  'request_protocol', 'response_flags', 'connection_security_policy',
] as const;

export type ConnectionLabelName = typeof CONNECTION_LABELS[number];
export type ConnectionLabels = Record<ConnectionLabelName, string>;

export type { ResponseFlag };

export interface ConnectionDescription {
  reporter: 'source' | 'destination';
  source?: Workload | undefined;
  /** verified or expected SPIFFE id of the source */
  sourcePrincipal?: string | undefined;
  destination?: Workload | undefined;
  destinationPrincipal?: string | undefined;
  service?: Pick<Service, 'hostname' | 'namespace' | 'name'> | undefined;
  /** the Service host when only its name is known (Forwarded host=) */
  serviceHost?: string | undefined;
  mtls: boolean;
  responseFlags?: ResponseFlag;
}

const U = 'unknown';

function principal(p: string | undefined, w: Workload | undefined): string {
  if (p) return p;
  return w ? spiffeIdOf(w) : U;
}

/** The per-peer part of a label name: `source_<field>` and `destination_<field>`. */
const PEER_FIELDS = [
  'workload', 'canonical_service', 'canonical_revision', 'workload_namespace', 'principal', 'app', 'version', 'cluster',
] as const;
type PeerField = typeof PEER_FIELDS[number];
type Side = 'source' | 'destination';

/**
 * One side's labels. Both sides follow the same rules (app/version are Istio's copies of the
 * canonical name/revision; a principal is only claimed for an mTLS peer), so they are derived in
 * one place.
 */
function peerLabels<S extends Side>(side: S, w: Workload | undefined, p: string | undefined, mtls: boolean): Record<`${S}_${PeerField}`, string> {
  const v: Record<PeerField, string> = {
    workload: w?.workloadName ?? U,
    canonical_service: w?.canonicalName ?? U,
    canonical_revision: w?.canonicalRevision ?? U,
    workload_namespace: w?.namespace ?? U,
    principal: principal(p, mtls ? w : undefined),
    app: w?.canonicalName ?? U,
    version: w?.canonicalRevision ?? U,
    cluster: (w && clusterOf(w)) ?? U,
  };
  const out: Partial<Record<`${S}_${PeerField}`, string>> = {};
  for (const f of PEER_FIELDS) out[`${side}_${f}`] = v[f];
  return out as Record<`${S}_${PeerField}`, string>;
}

/**
 * The last description's labels. Connections between the same pair of workloads come in runs,
 * and building the 23 labels was a few microseconds per connection on each agent; a hit needs
 * the same objects (workloads and service come from the snapshot and are never mutated), so a
 * new snapshot simply misses. The labels object is frozen: it is shared by those connections.
 */
let lastLabels: { d: ConnectionDescription; labels: ConnectionLabels } | undefined;

function sameDescription(a: ConnectionDescription, b: ConnectionDescription): boolean {
  return a.reporter === b.reporter && a.source === b.source && a.sourcePrincipal === b.sourcePrincipal
    && a.destination === b.destination && a.destinationPrincipal === b.destinationPrincipal && a.service === b.service
    && a.serviceHost === b.serviceHost && a.mtls === b.mtls && a.responseFlags === b.responseFlags;
}

export function connectionLabels(d: ConnectionDescription): ConnectionLabels {
  const last = lastLabels;
  if (last !== undefined && sameDescription(last.d, d)) return last.labels;
  const labels = Object.freeze(buildLabels(d));
  lastLabels = {
    d: {
      reporter: d.reporter, source: d.source, sourcePrincipal: d.sourcePrincipal, destination: d.destination,
      destinationPrincipal: d.destinationPrincipal, service: d.service, serviceHost: d.serviceHost, mtls: d.mtls,
      ...(d.responseFlags !== undefined ? { responseFlags: d.responseFlags } : {}),
    },
    labels,
  };
  return labels;
}

function buildLabels(d: ConnectionDescription): ConnectionLabels {
  const svcHost = d.service?.hostname ?? d.serviceHost;
  return {
    reporter: d.reporter,
    ...peerLabels('source', d.source, d.sourcePrincipal, d.mtls),
    // key order is CONNECTION_LABELS order (what the access log and tests see)
    destination_service: svcHost ?? U,
    destination_service_namespace: d.service?.namespace ?? (svcHost?.split('.')[1]) ?? U,
    destination_service_name: d.service?.name ?? (svcHost?.split('.')[0]) ?? U,
    ...peerLabels('destination', d.destination, d.destinationPrincipal, d.mtls),
    request_protocol: 'tcp',
    response_flags: d.responseFlags ?? '-',
    connection_security_policy: d.mtls ? 'mutual_tls' : 'unknown',
  };
}

export interface AccessRecord {
  direction: 'inbound' | 'outbound';
  srcAddr: string;
  dstAddr: string;
  hboneAddr?: string | undefined;
  labels: ConnectionLabels;
  bytesSent: number;
  bytesRecv: number;
  durationMs: number;
  error?: string | undefined;
}

/** Counts of one label set not yet handed to prom-client. */
interface Pending { labels: ConnectionLabels; opened: number; closed: number; failed: number; sent: number; received: number }

type PendingField = 'opened' | 'closed' | 'failed' | 'sent' | 'received';

/**
 * The agent's metrics: one Registry per agent (several agents can share a process in tests).
 *
 * The four connection counters are fed at scrape time (each metric's `collect`), not per
 * connection: a prom-client increment with 23 labels validates every name and builds a ~1 kB
 * hash string, several times per connection. Here a connection costs one map lookup per label
 * set (joined values) and a few additions; the exposition is the same.
 */
export class AgentTelemetry {
  readonly registry = new Registry();
  /** per label set (values joined): counts since the last collect */
  readonly #pending = new Map<string, Pending>();
  /** the pending entry of a connection's labels object, so close does not join them again */
  readonly #byLabels = new WeakMap<ConnectionLabels, Pending>();
  readonly #open: Gauge<'reporter'>;
  readonly #pods: Gauge;
  readonly #log = logger('access');

  constructor() {
    const labelNames = [...CONNECTION_LABELS];
    const registers = [this.registry];
    const flush = (field: PendingField) => (c: Counter<ConnectionLabelName>): void => {
      for (const p of this.#pending.values()) {
        if (p[field] > 0) { c.inc(p.labels, p[field]); p[field] = 0; }
      }
    };
    const counter = (name: string, help: string, field: PendingField): void => {
      const f = flush(field);
      new Counter({ name, help, labelNames, registers, collect() { f(this); } });
    };
    counter('istio_tcp_connections_opened_total', 'TCP connections opened', 'opened');
    counter('istio_tcp_connections_closed_total', 'TCP connections closed', 'closed');
    counter('istio_tcp_connections_failed_total', 'TCP connections that failed before they were established (refused, no certificate, upstream unreachable)', 'failed');
    counter('istio_tcp_sent_bytes_total', 'Bytes sent towards the client (response direction)', 'sent');
    counter('istio_tcp_received_bytes_total', 'Bytes received from the client (request direction)', 'received');
    this.#open = new Gauge({ name: 'istio_tcp_sockets_open', help: 'Open proxied connections', labelNames: ['reporter'], registers });
    this.#pods = new Gauge({ name: 'workload_manager_active_proxy_count', help: 'Pods with running proxies', registers });
  }

  /**
   * The pending counts of `labels`' label set. Label sets are as many as prom-client keeps
   * series for (its own map is never pruned either), so this map has the same bound.
   */
  #entry(labels: ConnectionLabels): Pending {
    let p = this.#byLabels.get(labels);
    if (p !== undefined) return p;
    let key = '';
    for (const n of CONNECTION_LABELS) key += `${labels[n]}\u0000`;
    p = this.#pending.get(key);
    if (p === undefined) {
      // prom-client would throw on a bad value at increment time; keep that failure here.
      for (const n of CONNECTION_LABELS) if (typeof labels[n] !== 'string') throw new TypeError(`connection label ${n} must be a string`);
      p = { labels, opened: 0, closed: 0, failed: 0, sent: 0, received: 0 };
      this.#pending.set(key, p);
    }
    this.#byLabels.set(labels, p);
    return p;
  }

  opened(labels: ConnectionLabels): void {
    this.#entry(labels).opened++;
    this.#open.inc({ reporter: labels.reporter });
  }

  /**
   * Counts the end of a connection and its bytes, and writes the access-log line. One that was
   * opened (`wasOpened`) counts as closed; one refused or failed before it was carried counts as
   * failed only (never as opened), with its response flag, so dashboards see denials.
   */
  closed(r: AccessRecord, wasOpened: boolean): void {
    const p = this.#entry(r.labels);
    if (wasOpened) {
      this.#open.dec({ reporter: r.labels.reporter });
      p.closed++;
    } else {
      p.failed++;
    }
    if (r.bytesSent > 0 && Number.isFinite(r.bytesSent)) p.sent += r.bytesSent;
    if (r.bytesRecv > 0 && Number.isFinite(r.bytesRecv)) p.received += r.bytesRecv;
    // one access-log line per connection; its record is built only when it will be written
    if (!this.#log.enabled('info')) return;
    const l = r.labels;
    this.#log.info('connection complete', {
      'src.addr': r.srcAddr,
      'src.workload': l.source_workload,
      'src.namespace': l.source_workload_namespace,
      'src.identity': l.source_principal,
      'dst.addr': r.dstAddr,
      ...(r.hboneAddr ? { 'dst.hbone_addr': r.hboneAddr } : {}),
      'dst.service': l.destination_service,
      'dst.workload': l.destination_workload,
      'dst.namespace': l.destination_workload_namespace,
      'dst.identity': l.destination_principal,
      direction: r.direction,
      bytes_sent: r.bytesSent,
      bytes_recv: r.bytesRecv,
      duration: `${Math.round(r.durationMs)}ms`,
      ...(r.error ? { error: r.error } : {}),
    });
  }

  setActivePods(n: number): void { this.#pods.set(n); }

  /** Run before every scrape (the agent: the engine's waiting connection events are delivered first). */
  beforeScrape: (() => Promise<void>) | undefined;

  /** The registry's text, counting every connection event that happened before the call. */
  async metrics(): Promise<string> {
    await this.beforeScrape?.();
    return this.registry.metrics();
  }
}
