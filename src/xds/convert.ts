/**
 * Model <-> wire. Encoding takes model objects and returns payload bytes; decoding takes the
 * resources of a response and returns model objects plus the resources it refused, each with a
 * message naming the field, so the client can apply the good ones and NACK the rest.
 */
import type {
  Waypoint, WaypointFor, Authorization, AuthzClause, AuthzMatch, AuthzRule, Cidr, Service, ServicePort, StringMatch, WaypointRef, Workload, WorkloadType,
} from '../model/index.js';
import { authorizationKey, serviceKey, waypointKey } from '../model/index.js';
import type { ServiceL7 } from '../model/index.js';
import { MeshError, errorMessage } from '../core/index.js';
import type { WireResource } from './codec.js';
import { bytesToIp, ipToBytes } from './ip.js';
import { schema } from './schema.js';

export type AddressValue =
  | { kind: 'workload'; workload: Workload }
  | { kind: 'service'; service: Service }
  | { kind: 'waypoint'; waypoint: Waypoint };

/** Resource name of a waypoint in the Address type. */
export function waypointResourceName(w: { namespace: string; name: string }): string {
  return `Gateway/${waypointKey(w)}`;
}

export interface Decoded<T> {
  resources: { name: string; version: string; value: T }[];
  rejected: { name: string; message: string }[];
}

const WORKLOAD_TYPES: readonly WorkloadType[] = ['deployment', 'pod', 'job', 'cronjob'];
const WAYPOINT_FOR: readonly WaypointFor[] = ['service', 'workload', 'all', 'none'];
const SCOPES = ['global', 'namespace', 'workload'] as const;
const ACTIONS = ['allow', 'deny'] as const;

// === encode ===

function waypointToWire(w: WaypointRef | undefined): { service: string; port: number } | undefined {
  return w ? { service: w.service, port: w.port } : undefined;
}

export function encodeWorkload(w: Workload): Uint8Array {
  return schema().Address.encode({
    workload: {
      uid: w.uid, name: w.name, namespace: w.namespace, serviceAccount: w.serviceAccount, trustDomain: w.trustDomain,
      // the encoder only reads: model arrays and maps are passed as they are, no copies
      node: w.node, addresses: w.addresses.map(ipToBytes), labels: w.labels,
      canonicalName: w.canonicalName, canonicalRevision: w.canonicalRevision, workloadName: w.workloadName,
      workloadType: WORKLOAD_TYPES.indexOf(w.workloadType), tunnel: w.tunnel === 'hbone' ? 1 : 0,
      waypoint: waypointToWire(w.waypoint), status: w.healthy ? 0 : 1,
      services: w.services, authorizationPolicies: w.authorizationPolicies,
    },
  }).finish();
}

export function encodeService(s: Service): Uint8Array {
  return schema().Address.encode({
    service: {
      name: s.name, namespace: s.namespace, hostname: s.hostname, vips: s.vips.map(ipToBytes),
      ports: s.ports.map((p) => ({ port: p.port, targetPort: p.targetPort, name: p.name ?? '', appProtocol: p.appProtocol ?? '' })),
      waypoint: waypointToWire(s.waypoint),
    },
  }).finish();
}

export function encodeWaypoint(w: Waypoint): Uint8Array {
  return schema().Address.encode({
    waypoint: { name: w.name, namespace: w.namespace, service: w.service, for: WAYPOINT_FOR.indexOf(w.for), gatewayClass: w.gatewayClass },
  }).finish();
}

function stringMatchToWire(m: StringMatch): Record<string, unknown> {
  if ('exact' in m) return { exact: m.exact };
  if ('prefix' in m) return { prefix: m.prefix };
  if ('suffix' in m) return { suffix: m.suffix };
  return { presence: {} };
}

function cidrToWire(c: Cidr): { address: Uint8Array; length: number } {
  return { address: ipToBytes(c.address), length: c.prefixLen };
}

function matchToWire(m: AuthzMatch): Record<string, unknown> {
  return {
    namespaces: (m.namespaces ?? []).map(stringMatchToWire),
    notNamespaces: (m.notNamespaces ?? []).map(stringMatchToWire),
    principals: (m.principals ?? []).map(stringMatchToWire),
    notPrincipals: (m.notPrincipals ?? []).map(stringMatchToWire),
    sourceIps: (m.sourceIps ?? []).map(cidrToWire),
    notSourceIps: (m.notSourceIps ?? []).map(cidrToWire),
    destinationIps: (m.destinationIps ?? []).map(cidrToWire),
    notDestinationIps: (m.notDestinationIps ?? []).map(cidrToWire),
    destinationPorts: [...(m.destinationPorts ?? [])],
    notDestinationPorts: [...(m.notDestinationPorts ?? [])],
  };
}

export function encodeAuthorization(a: Authorization): Uint8Array {
  return schema().Authorization.encode({
    name: a.name, namespace: a.namespace, scope: SCOPES.indexOf(a.scope), action: ACTIONS.indexOf(a.action), dryRun: a.dryRun,
    rules: a.rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: c.matches.map(matchToWire) })) })),
  }).finish();
}

/** L7 config of one service (any JSON-serialisable model) for waypoints. */
export function encodeWaypointConfig(serviceKeyName: string, l7: ServiceL7): Uint8Array {
  return schema().WaypointConfig.encode({ service: serviceKeyName, json: Buffer.from(JSON.stringify(l7), 'utf8') }).finish();
}

// === decode ===

/** A rejected field: thrown inside one resource's decoding, caught per resource. */
class FieldError extends Error {}

function req(v: string, field: string): string {
  if (!v) throw new FieldError(`${field}: required`);
  return v;
}

function port(v: number, field: string, allowZero = false): number {
  if (!Number.isInteger(v) || v > 65535 || (!allowZero && v < 1)) throw new FieldError(`${field}: port ${v} out of range 1..65535`);
  return v;
}

function ip(b: Uint8Array, field: string): string {
  const s = bytesToIp(b);
  if (s === undefined) throw new FieldError(`${field}: IP address must be 4 or 16 bytes, got ${b.length}`);
  return s;
}

function enumOf<T>(values: readonly T[], v: number, field: string): T {
  const x = values[v];
  if (x === undefined) throw new FieldError(`${field}: unknown enum value ${v}`);
  return x;
}

interface WireWaypoint { service: string; port: number }
function waypointFromWire(w: WireWaypoint | null | undefined, field: string): WaypointRef | undefined {
  if (!w) return undefined;
  return { service: req(w.service, `${field}.service`), port: port(w.port, `${field}.port`) };
}

interface WireWorkload {
  uid: string; name: string; namespace: string; serviceAccount: string; trustDomain: string; node: string;
  addresses: Uint8Array[]; labels: Record<string, string>; canonicalName: string; canonicalRevision: string;
  workloadName: string; workloadType: number; tunnel: number; waypoint: WireWaypoint | null; status: number;
  services: string[]; authorizationPolicies: string[];
}
interface WirePort { port: number; targetPort: number; name: string; appProtocol: string }
interface WireService { name: string; namespace: string; hostname: string; vips: Uint8Array[]; ports: WirePort[]; waypoint: WireWaypoint | null }

function workloadFromWire(w: WireWorkload): Workload {
  const out: Workload = {
    uid: req(w.uid, 'workload.uid'),
    name: req(w.name, 'workload.name'),
    namespace: req(w.namespace, 'workload.namespace'),
    serviceAccount: req(w.serviceAccount, 'workload.service_account'),
    trustDomain: req(w.trustDomain, 'workload.trust_domain'),
    node: w.node,
    addresses: w.addresses.map((a, i) => ip(a, `workload.addresses[${i}]`)),
    labels: { ...w.labels },
    canonicalName: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    workloadName: w.workloadName,
    workloadType: enumOf(WORKLOAD_TYPES, w.workloadType, 'workload.workload_type'),
    tunnel: enumOf(['none', 'hbone'] as const, w.tunnel, 'workload.tunnel'),
    healthy: enumOf([true, false], w.status, 'workload.status'),
    services: w.services,
    authorizationPolicies: w.authorizationPolicies,
  };
  const wp = waypointFromWire(w.waypoint, 'workload.waypoint');
  return wp ? { ...out, waypoint: wp } : out;
}

function serviceFromWire(s: WireService): Service {
  const ports: ServicePort[] = s.ports.map((p, i) => {
    const sp = port(p.port, `service.ports[${i}].port`);
    const out: { port: number; targetPort: number; name?: string; appProtocol?: string } = {
      port: sp, targetPort: port(p.targetPort, `service.ports[${i}].target_port`, true) || sp,
    };
    if (p.name) out.name = p.name;
    if (p.appProtocol) out.appProtocol = p.appProtocol;
    return out;
  });
  const out: Service = {
    name: req(s.name, 'service.name'),
    namespace: req(s.namespace, 'service.namespace'),
    hostname: req(s.hostname, 'service.hostname'),
    vips: s.vips.map((v, i) => ip(v, `service.vips[${i}]`)),
    ports,
  };
  const wp = waypointFromWire(s.waypoint, 'service.waypoint');
  return wp ? { ...out, waypoint: wp } : out;
}

/** Decode each resource on its own: one bad resource never hides the good ones. */
function decodeEach<T>(rs: readonly WireResource[], one: (r: WireResource) => T): Decoded<T> {
  const out: Decoded<T> = { resources: [], rejected: [] };
  for (const r of rs) {
    try {
      out.resources.push({ name: r.name, version: r.version, value: one(r) });
    } catch (e) {
      const msg = e instanceof FieldError ? e.message : `malformed payload: ${errorMessage(e)}`;
      out.rejected.push({ name: r.name, message: msg });
    }
  }
  return out;
}

export function decodeAddresses(rs: readonly WireResource[]): Decoded<AddressValue> {
  const T = schema().Address;
  return decodeEach(rs, (r) => {
    const m = T.decode(r.payload) as unknown as {
      type?: string; workload?: WireWorkload; service?: WireService;
      waypoint?: { name: string; namespace: string; service: string; for: number; gatewayClass: string };
    };
    if (m.type === 'workload') {
      const w = workloadFromWire(m.workload!);
      if (w.uid !== r.name) throw new FieldError(`workload.uid: ${JSON.stringify(w.uid)} differs from the resource name`);
      return { kind: 'workload', workload: w };
    }
    if (m.type === 'service') {
      const s = serviceFromWire(m.service!);
      if (serviceKey(s) !== r.name) throw new FieldError(`service: key ${JSON.stringify(serviceKey(s))} differs from the resource name`);
      return { kind: 'service', service: s };
    }
    if (m.type === 'waypoint') {
      const x = m.waypoint!;
      const w: Waypoint = {
        name: req(x.name, 'waypoint.name'), namespace: req(x.namespace, 'waypoint.namespace'), service: req(x.service, 'waypoint.service'),
        for: enumOf(WAYPOINT_FOR, x.for, 'waypoint.for'), gatewayClass: x.gatewayClass,
      };
      if (waypointResourceName(w) !== r.name) throw new FieldError(`waypoint: name ${JSON.stringify(waypointResourceName(w))} differs from the resource name`);
      return { kind: 'waypoint', waypoint: w };
    }
    throw new FieldError('address: none of workload, service, waypoint is set');
  });
}

interface WireStringMatch { matchType?: string; exact?: string; prefix?: string; suffix?: string }
interface WireCidr { address: Uint8Array; length: number }
interface WireMatch {
  namespaces: WireStringMatch[]; notNamespaces: WireStringMatch[]; principals: WireStringMatch[]; notPrincipals: WireStringMatch[];
  sourceIps: WireCidr[]; notSourceIps: WireCidr[]; destinationIps: WireCidr[]; notDestinationIps: WireCidr[];
  destinationPorts: number[]; notDestinationPorts: number[];
}
interface WireAuthorization { name: string; namespace: string; scope: number; action: number; dryRun: boolean; rules: { clauses: { matches: WireMatch[] }[] }[] }

function stringMatchFromWire(m: WireStringMatch, field: string): StringMatch {
  switch (m.matchType) {
    case 'exact': return { exact: m.exact! };
    case 'prefix': return { prefix: m.prefix! };
    case 'suffix': return { suffix: m.suffix! };
    case 'presence': return { presence: true };
    default: throw new FieldError(`${field}: none of exact, prefix, suffix, presence is set`);
  }
}

function cidrFromWire(c: WireCidr, field: string): Cidr {
  const address = ip(c.address, `${field}.address`);
  const max = c.address.length * 8;
  if (c.length > max) throw new FieldError(`${field}.length: ${c.length} exceeds ${max}`);
  return { address, prefixLen: c.length };
}

function matchFromWire(m: WireMatch, field: string): AuthzMatch {
  const out: Record<string, unknown> = {};
  const strings = ['namespaces', 'notNamespaces', 'principals', 'notPrincipals'] as const;
  const cidrs = ['sourceIps', 'notSourceIps', 'destinationIps', 'notDestinationIps'] as const;
  const ports = ['destinationPorts', 'notDestinationPorts'] as const;
  // an empty repeated field and an absent one are the same on the wire: both become absent
  for (const k of strings) if (m[k].length) out[k] = m[k].map((x, i) => stringMatchFromWire(x, `${field}.${k}[${i}]`));
  for (const k of cidrs) if (m[k].length) out[k] = m[k].map((x, i) => cidrFromWire(x, `${field}.${k}[${i}]`));
  for (const k of ports) if (m[k].length) out[k] = m[k].map((x, i) => port(x, `${field}.${k}[${i}]`));
  return out as AuthzMatch;
}

export function decodeAuthorizations(rs: readonly WireResource[]): Decoded<Authorization> {
  const T = schema().Authorization;
  return decodeEach(rs, (r) => {
    const a = T.decode(r.payload) as unknown as WireAuthorization;
    const rules: AuthzRule[] = a.rules.map((rule, i) => ({
      clauses: rule.clauses.map((c, j): AuthzClause => ({
        matches: c.matches.map((m, k) => matchFromWire(m, `authorization.rules[${i}].clauses[${j}].matches[${k}]`)),
      })),
    }));
    const out: Authorization = {
      name: req(a.name, 'authorization.name'),
      namespace: req(a.namespace, 'authorization.namespace'),
      scope: enumOf(SCOPES, a.scope, 'authorization.scope'),
      action: enumOf(ACTIONS, a.action, 'authorization.action'),
      dryRun: a.dryRun,
      rules,
    };
    if (authorizationKey(out) !== r.name) throw new FieldError(`authorization: key ${JSON.stringify(authorizationKey(out))} differs from the resource name`);
    return out;
  });
}

/**
 * L7 configs travel as JSON (see waypoint.proto); only the outline is checked here, the waypoint
 * compiles the routes and rejects what it cannot use.
 */
export function decodeWaypointConfigs(rs: readonly WireResource[]): Decoded<ServiceL7> {
  const T = schema().WaypointConfig;
  return decodeEach(rs, (r) => {
    const m = T.decode(r.payload) as unknown as { service: string; json: Uint8Array };
    if (m.service !== r.name) throw new FieldError(`waypoint_config.service: ${JSON.stringify(m.service)} differs from the resource name`);
    let v: unknown;
    try {
      v = JSON.parse(Buffer.from(m.json).toString('utf8'));
    } catch (e) {
      throw new FieldError(`waypoint_config.json: ${errorMessage(e)}`);
    }
    const o = v as Partial<Record<keyof ServiceL7, unknown>> | null;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new FieldError('waypoint_config.json: not an object');
    if (o.service !== r.name) throw new FieldError('waypoint_config.json.service: differs from the resource name');
    if (!Array.isArray(o.http)) throw new FieldError('waypoint_config.json.http: not a list');
    if (!Array.isArray(o.grpc)) throw new FieldError('waypoint_config.json.grpc: not a list');
    if (o.destination !== undefined && (typeof o.destination !== 'object' || o.destination === null)) throw new FieldError('waypoint_config.json.destination: not an object');
    if (o.authorization !== undefined && !Array.isArray(o.authorization)) throw new FieldError('waypoint_config.json.authorization: not a list');
    return v as ServiceL7;
  });
}

/** Encode helper used by tables: wraps an encode failure with the resource name. */
export function encodeOrThrow(name: string, fn: () => Uint8Array): Uint8Array {
  try {
    return fn();
  } catch (e) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${name}: cannot encode: ${errorMessage(e)}`, { cause: e });
  }
}
