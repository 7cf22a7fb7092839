/**
 * The outbound routing decision, pure: given the mesh snapshot, the local pod that opened the
 * connection and its original destination, say where the bytes go and how. The proxy then only
 * executes the plan (STYLE: decide, then do). No sockets here; randomness is injected.
 */
import type { Service, Snapshot, SpiffeId, Workload } from '../../model/index.js';
import { serviceKey } from '../../model/index.js';
import { AGENT_PORT, AGENT_PORTS } from '../../hbone/index.js';
import { spiffeUri } from '../../identity/index.js';
import type { OutboundRefusalReason } from './outcome.js';

export interface SocketAddr { readonly ip: string; readonly port: number }

export type OutboundKind = 'hbone' | 'passthrough' | 'deny';

interface OutboundRequestFields {
  /** where the agent dials: `<pod or waypoint IP>:15008` for HBONE, the real target for passthrough */
  readonly address: SocketAddr;
  /** HBONE `:authority` (`ip:port`, IPv6 in brackets); empty for passthrough/deny */
  readonly authority: string;
  /** SPIFFE ids the HBONE server may present; empty for passthrough/deny */
  readonly expectedIdentities: readonly SpiffeId[];
  /** the Service the client addressed (by VIP), for `Forwarded: host=` and telemetry */
  readonly service?: Service;
  /** the workload that ends up receiving the bytes (not the waypoint) when known */
  readonly destWorkload?: Workload;
  /** the waypoint workload when traffic goes through one */
  readonly waypoint?: Workload;
  /** why this plan (or the denial) was chosen; lowercase, for logs and errors (never parsed) */
  readonly reason: string;
}

/** The plan: carry the connection (hbone, passthrough), or refuse it with a typed `denial`. */
export type OutboundRequest =
  | (OutboundRequestFields & { readonly kind: Exclude<OutboundKind, 'deny'>; readonly denial?: undefined })
  | (OutboundRequestFields & { readonly kind: 'deny'; readonly denial: OutboundDenial });

/** What a plan may carry besides its kind and addresses (the service, the destination). */
type Extra = Partial<Pick<OutboundRequestFields, 'service' | 'destWorkload'>>;

/** The refusals the routing decision itself makes. */
export type OutboundDenial = Extract<OutboundRefusalReason, 'self-call' | 'no-healthy-upstream'>;


export interface RouteOptions {
  /** uniform [0,1) source for endpoint picking; default Math.random */
  random?: () => number;
  /** ports of the agent inside the pod netns; default 15001/15006/15008 */
  agentPorts?: readonly number[];
  /** HBONE port on mesh pods; default 15008 */
  hbonePort?: number;
}

/** SPIFFE ids of workloads (immutable model objects), built once each: asked on every connection. */
const spiffeIds = new WeakMap<object, SpiffeId>();

/** A workload's SPIFFE id (built by identity's spiffeUri, which also checks it). */
export function spiffeIdOf(w: Pick<Workload, 'trustDomain' | 'namespace' | 'serviceAccount'>): SpiffeId {
  let id = spiffeIds.get(w);
  if (id === undefined) {
    id = spiffeUri(w);
    spiffeIds.set(w, id);
  }
  return id;
}

/** `ip:port`, with brackets around IPv6. */
export function formatAddr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip === '::ffff:127.0.0.1';
}

function deny(dst: SocketAddr, denial: OutboundDenial, reason: string, extra: Extra = {}): OutboundRequest {
  return { kind: 'deny', address: dst, authority: '', expectedIdentities: [], reason, denial, ...extra };
}

function pick<T>(list: readonly T[], random: () => number): T | undefined {
  if (list.length === 0) return undefined;
  const i = Math.min(list.length - 1, Math.floor(random() * list.length));
  return list[i];
}

/** True when `src` is one of the pods behind the waypoint service (the waypoint sending onwards). */
function isWaypointItself(snapshot: Snapshot, waypointService: string, src: Workload): boolean {
  return src.services.includes(waypointService) || snapshot.endpoints(waypointService).some((w) => w.uid === src.uid);
}

function viaWaypoint(snapshot: Snapshot, waypointKey: string, waypointPort: number, authority: string,
  random: () => number, extra: Extra, dst: SocketAddr): OutboundRequest {
  const healthy = snapshot.endpoints(waypointKey).filter((w) => w.healthy && w.addresses.length > 0);
  const wp = pick(healthy, random);
  if (!wp) return deny(dst, 'no-healthy-upstream', `no healthy upstream: waypoint ${waypointKey} has no ready endpoint`, extra);
  return {
    kind: 'hbone',
    address: { ip: wp.addresses[0]!, port: waypointPort },
    authority,
    expectedIdentities: [spiffeIdOf(wp)],
    waypoint: wp,
    reason: `via waypoint ${waypointKey}`,
    ...extra,
  };
}

function toWorkload(w: Workload, ip: string, port: number, hbonePort: number, extra: Extra): OutboundRequest {
  if (w.tunnel === 'hbone') {
    return {
      kind: 'hbone', address: { ip, port: hbonePort }, authority: formatAddr(ip, port),
      expectedIdentities: [spiffeIdOf(w)], destWorkload: w, reason: 'mesh workload', ...extra,
    };
  }
  return { kind: 'passthrough', address: { ip, port }, authority: '', expectedIdentities: [], destWorkload: w, reason: 'workload not in the mesh', ...extra };
}

/**
 * Decide how to carry a connection the local pod `source` opened towards `dst` (its original
 * destination). Order follows the anchor: self-call, service waypoint, endpoint pick, workload
 * waypoint, HBONE to mesh pods, plain passthrough for everything else.
 */
export function buildOutboundRequest(snapshot: Snapshot, source: Workload, dst: SocketAddr, o: RouteOptions = {}): OutboundRequest {
  const random = o.random ?? Math.random;
  const agentPorts = o.agentPorts ?? AGENT_PORTS;
  const hbonePort = o.hbonePort ?? AGENT_PORT.hbone;

  if (agentPorts.includes(dst.port) && (isLoopback(dst.ip) || source.addresses.includes(dst.ip))) {
    return deny(dst, 'self-call', `self call to agent port ${dst.port} refused`);
  }

  const svc = snapshot.serviceByVip(dst.ip);
  if (svc) {
    const key = serviceKey(svc);
    const sp = svc.ports.find((p) => p.port === dst.port);
    const extra: Extra = { service: svc };
    if (svc.waypoint && !isWaypointItself(snapshot, svc.waypoint.service, source)) {
      return viaWaypoint(snapshot, svc.waypoint.service, svc.waypoint.port, formatAddr(dst.ip, dst.port), random, extra, dst);
    }
    const healthy = snapshot.endpoints(key).filter((w) => w.healthy && w.addresses.length > 0);
    const ep = pick(healthy, random);
    if (!ep) return deny(dst, 'no-healthy-upstream', `no healthy upstream for service ${svc.hostname}`, extra);
    // the endpoint's own IP of the same family as the VIP when it has one
    const v6 = dst.ip.includes(':');
    const ip = ep.addresses.find((a) => a.includes(':') === v6) ?? ep.addresses[0]!;
    return toWorkload(ep, ip, sp ? sp.targetPort : dst.port, hbonePort, extra);
  }

  const w = snapshot.workloadByIp(dst.ip);
  if (w) {
    if (w.waypoint && !isWaypointItself(snapshot, w.waypoint.service, source)) {
      return viaWaypoint(snapshot, w.waypoint.service, w.waypoint.port, formatAddr(dst.ip, dst.port), random, { destWorkload: w }, dst);
    }
    return toWorkload(w, dst.ip, dst.port, hbonePort, {});
  }
  return { kind: 'passthrough', address: dst, authority: '', expectedIdentities: [], reason: 'destination unknown to the mesh' };
}
