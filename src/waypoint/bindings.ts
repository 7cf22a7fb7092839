/**
 * Which destination an inbound HBONE stream is for, and whether this waypoint serves it. Pure:
 * decided from the snapshot, this waypoint's identity (its Gateway) and the CONNECT authority.
 * A waypoint serves only what is bound to it (the Service's or the pod's `waypoint` reference
 * names its Service); anything else is refused, never proxied.
 */
import { canonicalIp, serviceKey, type Service, type ServicePort, type Snapshot, type Waypoint, type Workload } from '../model/index.js';

/** How a port's bytes are handled: an HTTP codec (HTTP/1.1 or h2c, sniffed) or opaque TCP. */
export type PortProtocol = 'http' | 'http2' | 'grpc' | 'tcp';

export type Binding =
  | {
    readonly kind: 'service';
    readonly service: Service;
    readonly port: ServicePort;
    readonly protocol: PortProtocol;
  }
  | {
    readonly kind: 'workload';
    readonly workload: Workload;
    /** the port the client dialled on the pod */
    readonly targetPort: number;
    /** the Service port that maps to it, when one of the pod's Services has one (its protocol) */
    readonly service?: Service;
    readonly port?: ServicePort;
    readonly protocol: PortProtocol;
  };

export type BindingVerdict = { readonly ok: true; readonly binding: Binding } | { readonly ok: false; readonly status: 400 | 403 | 404; readonly reason: string };

/**
 * The port's protocol from `appProtocol` (or the port name prefix the control plane folded into
 * it): Istio's "name your port" convention. `http`, `http2`, `grpc`, `grpc-web`, `h2c` and
 * Kubernetes' `kubernetes.io/h2c` are L7; everything else (tcp, unknown, unnamed) is TCP.
 */
export function portProtocol(p: Pick<ServicePort, 'appProtocol' | 'name'> | undefined): PortProtocol {
  let a = (p?.appProtocol ?? '').toLowerCase();
  if (a === '' && p?.name) a = p.name.toLowerCase().split('-')[0]!;
  if (a === 'http' || a === 'https-plain') return 'http';
  if (a === 'http2' || a === 'h2c' || a === 'kubernetes.io/h2c') return 'http2';
  if (a === 'grpc' || a === 'grpc-web') return 'grpc';
  return 'tcp';
}

/** `ip:port` or `[v6]:port` -> parts; undefined when it is not an IP authority. */
export function parseIpAuthority(authority: string): { ip: string; port: number } | undefined {
  if (authority.length > 64) return undefined;
  let host: string;
  let portText: string;
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']:');
    if (end < 0) return undefined;
    host = authority.slice(1, end);
    portText = authority.slice(end + 2);
  } else {
    const i = authority.lastIndexOf(':');
    if (i <= 0 || authority.indexOf(':') !== i) return undefined;
    host = authority.slice(0, i);
    portText = authority.slice(i + 1);
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  const ip = canonicalIp(host);
  if (ip === undefined || port < 1 || port > 65535) return undefined;
  return { ip, port };
}

function boundTo(ref: { service: string } | undefined, me: Waypoint): boolean {
  return ref !== undefined && ref.service === me.service;
}

/**
 * Resolve the CONNECT authority against the snapshot. A Service VIP must be bound to `me` (for
 * service traffic), a pod IP must be bound to `me` for workload traffic; the port must exist.
 */
export function resolveBinding(snap: Snapshot, me: Waypoint, authority: string): BindingVerdict {
  const a = parseIpAuthority(authority);
  if (!a) return { ok: false, status: 400, reason: `authority ${JSON.stringify(authority.slice(0, 80))} is not ip:port` };
  const svc = snap.serviceByVip(a.ip);
  if (svc) {
    if (!boundTo(svc.waypoint, me)) return { ok: false, status: 403, reason: `service ${serviceKey(svc)} is not bound to waypoint ${me.namespace}/${me.name}` };
    if (me.for !== 'service' && me.for !== 'all') return { ok: false, status: 403, reason: `waypoint ${me.namespace}/${me.name} does not take service traffic (for=${me.for})` };
    const port = svc.ports.find((p) => p.port === a.port);
    if (!port) return { ok: false, status: 404, reason: `service ${serviceKey(svc)} has no port ${a.port}` };
    return { ok: true, binding: { kind: 'service', service: svc, port, protocol: portProtocol(port) } };
  }
  const w = snap.workloadByIp(a.ip);
  if (w) {
    if (!boundTo(w.waypoint, me)) return { ok: false, status: 403, reason: `workload ${w.namespace}/${w.name} is not bound to waypoint ${me.namespace}/${me.name}` };
    if (me.for !== 'workload' && me.for !== 'all') return { ok: false, status: 403, reason: `waypoint ${me.namespace}/${me.name} does not take workload traffic (for=${me.for})` };
    for (const key of w.services) {
      const s = snap.service(key);
      const port = s?.ports.find((p) => p.targetPort === a.port);
      if (s && port) return { ok: true, binding: { kind: 'workload', workload: w, targetPort: a.port, service: s, port, protocol: portProtocol(port) } };
    }
    return { ok: true, binding: { kind: 'workload', workload: w, targetPort: a.port, protocol: 'tcp' } };
  }
  return { ok: false, status: 404, reason: `no service or workload has address ${a.ip}` };
}

/** The Service key whose L7 config applies to a binding (workload traffic: the Service of its port, if any). */
export function bindingServiceKey(b: Binding): string | undefined {
  return b.service ? serviceKey(b.service) : undefined;
}
