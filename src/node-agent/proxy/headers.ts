/**
 * Headers the outbound side puts on the HBONE CONNECT. They are telemetry only: the server never
 * derives identity or a destination from them (security reference, invariant 3).
 */
import { randomFillSync } from 'node:crypto';
import type { Service, Workload } from '../../model/index.js';
import { formatAddr } from './route.js';

const TOKEN = /^[A-Za-z0-9._\-/]+$/;

/** Baggage values are kept to a safe token set so a label can never inject another member. */
function safe(v: string): string {
  return TOKEN.test(v) && v.length <= 253 ? v : encodeURIComponent(v).slice(0, 253);
}

/** The cluster part of a workload uid `<cluster>//Pod/<ns>/<name>`, if any. */
export function clusterOf(w: Pick<Workload, 'uid'>): string | undefined {
  const i = w.uid.indexOf('//');
  return i > 0 ? w.uid.slice(0, i) : undefined;
}

/** W3C baggage describing the source workload (k8s.*, service.name, service.version). */
export function baggageFor(w: Workload): string {
  const parts: string[] = [];
  const cluster = clusterOf(w);
  if (cluster) parts.push(`k8s.cluster.name=${safe(cluster)}`);
  parts.push(`k8s.namespace.name=${safe(w.namespace)}`);
  parts.push(`k8s.${w.workloadType}.name=${safe(w.workloadName)}`);
  if (w.workloadType !== 'pod') parts.push(`k8s.pod.name=${safe(w.name)}`);
  parts.push(`service.name=${safe(w.canonicalName)}`);
  parts.push(`service.version=${safe(w.canonicalRevision)}`);
  return parts.join(',');
}

/** `Forwarded: for="<client ip:port>"` plus `;host=<service fqdn>` when a Service was addressed. */
export function forwardedFor(clientIp: string, clientPort: number, service?: Pick<Service, 'hostname'>): string {
  const base = `for="${formatAddr(clientIp, clientPort)}"`;
  return service ? `${base};host=${service.hostname}` : base;
}

/**
 * Random ids for traceparent, cut from one CSPRNG buffer refilled every 170 connections: a
 * randomBytes() call per id (two per connection) cost ~15 us of the client agent's JS thread per
 * new connection, more than the hex formatting. The ids are telemetry, never secrets.
 */
const ID_POOL = Buffer.alloc(4080);
let idPoolUsed = ID_POOL.length;

function pooledRandom(n: number): Buffer {
  if (idPoolUsed + n > ID_POOL.length) {
    randomFillSync(ID_POOL);
    idPoolUsed = 0;
  }
  const out = ID_POOL.subarray(idPoolUsed, idPoolUsed + n);
  idPoolUsed += n;
  return out;
}

const ZERO_TRACE = '0'.repeat(32);
const ZERO_PARENT = '0'.repeat(16);

/** A fresh W3C traceparent per connection: `00-<32 hex trace>-<16 hex parent>-00`. */
export function traceparent(rand: (n: number) => Buffer = pooledRandom): string {
  let trace = rand(16).toString('hex');
  let parent = rand(8).toString('hex');
  // all-zero ids are invalid per W3C; astronomically unlikely, but cheap to rule out
  if (trace === ZERO_TRACE) trace = '0'.repeat(31) + '1';
  if (parent === ZERO_PARENT) parent = '0'.repeat(15) + '1';
  return `00-${trace}-${parent}-00`;
}

/** Parse the `host=` of a Forwarded header (server side, telemetry only). Bounded, never throws. */
export function forwardedHost(value: string | undefined): string | undefined {
  if (!value || value.length > 1024) return undefined;
  const m = /(?:^|;)\s*host=("?)([A-Za-z0-9.\-:[\]]{1,253})\1(?:;|,|$)/.exec(value);
  return m ? m[2] : undefined;
}

/** All CONNECT request headers for one outbound connection. */
export function connectHeaders(source: Workload, clientIp: string, clientPort: number, service?: Service): Record<string, string> {
  return {
    forwarded: forwardedFor(clientIp, clientPort, service),
    baggage: baggageFor(source),
    traceparent: traceparent(),
  };
}
