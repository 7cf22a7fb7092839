/**
 * Assemble the model from the per-object records: which Services select which pods, waypoint
 * bindings, which selector policies and PeerAuthentication modes apply to each workload.
 * Linear in the number of objects: selectors are looked up through SelectorIndex, never by
 * scanning all Services or policies per pod.
 */
import type { Authorization, Service, ServicePort, Waypoint, WaypointRef, Workload } from '../../model/index.js';
import { authorizationKey, serviceKey, STATIC_STRICT_POLICY } from '../../model/index.js';
import type { Rejection } from '../config/types.js';
import type { AuthzInfo } from './authz.js';
import { selectorMatches } from './check.js';
import type { NamespaceInfo, PodInfo, ServiceInfo } from './core-kinds.js';
import type { WaypointInfo } from './gateway.js';
import { HBONE_PORT } from './gateway.js';
import type { MtlsMode, PeerAuthnInfo } from './peer-authn.js';
import { convertedPortPolicy, olderFirst, staticStrictPolicy } from './peer-authn.js';
import { SelectorIndex } from './selector-index.js';

export const USE_WAYPOINT = 'istio.io/use-waypoint';
export const USE_WAYPOINT_NAMESPACE = 'istio.io/use-waypoint-namespace';
export const DATAPLANE_MODE = 'istio.io/dataplane-mode';
/** Istio puts this label on the pods of a Gateway's deployment. */
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';

export interface BuildInput {
  readonly trustDomain: string;
  readonly rootNamespace: string;
  readonly clusterId: string;
  readonly namespaces: ReadonlyMap<string, NamespaceInfo>;
  readonly pods: readonly PodInfo[];
  readonly services: readonly ServiceInfo[];
  readonly waypoints: readonly WaypointInfo[];
  readonly authz: readonly AuthzInfo[];
  readonly peerAuthns: readonly PeerAuthnInfo[];
  /**
   * The Workload last built from each pod record, by this caller with the same trustDomain and
   * clusterId. When the pod record is the same object and its context (Services, policies,
   * tunnel, waypoint) came out equal, that Workload is returned again instead of a new equal one,
   * so identity-keyed caches downstream (the wire encoder) keep hitting. Updated in place.
   */
  readonly memo?: WeakMap<PodInfo, Workload>;
}

export interface BuildOutput {
  readonly workloads: Workload[];
  readonly services: Service[];
  readonly authorizations: Authorization[];
  readonly waypoints: Waypoint[];
  readonly warnings: Rejection[];
}

interface SvcEntry {
  readonly info: ServiceInfo;
  readonly key: string;
  /** named targetPort -> container port, from the first selected pod that declares it */
  readonly resolved: Map<string, number>;
  readonly named: readonly string[];
}

const NO_LABELS: Readonly<Record<string, string>> = {};

export function build(input: BuildInput): BuildOutput {
  const warnings: Rejection[] = [];
  const warned = new Set<string>();
  const warn = (kind: string, namespace: string, name: string, field: string, message: string): void => {
    const full = `${kind} ${namespace ? `${namespace}/` : ''}${name}: ${field}: ${message}`;
    if (warned.has(full)) return;
    warned.add(full);
    warnings.push({ kind, namespace, name, field, message: full });
  };
  const nsLabels = (ns: string): Readonly<Record<string, string>> => input.namespaces.get(ns)?.labels ?? NO_LABELS;

  // --- waypoints
  const waypoints = new Map<string, WaypointInfo>();
  const waypointServices = new Set<string>();
  for (const w of input.waypoints) {
    waypoints.set(`${w.waypoint.namespace}/${w.waypoint.name}`, w);
    waypointServices.add(w.waypoint.service);
  }

  /**
   * Waypoint binding of one object per the use-waypoint labels: the object's label overrides
   * the namespace's; `none` opts out; the waypoint must exist, accept this traffic type and admit
   * the object's namespace. Returns the binding or undefined (not redirected).
   */
  const bind = (
    target: 'service' | 'workload', kind: string, ns: string, name: string, labels: Readonly<Record<string, string>>,
  ): WaypointRef | undefined => {
    let wpName = labels[USE_WAYPOINT];
    let wpNs = labels[USE_WAYPOINT_NAMESPACE];
    let fromNamespace = false;
    if (wpName === undefined) {
      const nl = nsLabels(ns);
      wpName = nl[USE_WAYPOINT];
      wpNs = nl[USE_WAYPOINT_NAMESPACE];
      fromNamespace = true;
    }
    if (wpName === undefined || wpName === '' || wpName === 'none') return undefined;
    const targetNs = wpNs || ns;
    const field = `metadata.labels["${USE_WAYPOINT}"]`;
    const [rk, rns, rname] = fromNamespace ? ['Namespace', '', ns] : [kind, ns, name];
    const wp = waypoints.get(`${targetNs}/${wpName}`);
    if (!wp) {
      warn(rk, rns, rname, field, `waypoint ${targetNs}/${wpName} does not exist; traffic is not redirected to a waypoint`);
      return undefined;
    }
    const f = wp.waypoint.for;
    const accepts = f === 'all' || f === target;
    if (!accepts) {
      // a pod inheriting a service-only waypoint from its namespace is the normal case: stay quiet
      if (!(target === 'workload' && fromNamespace)) {
        warn(kind, ns, name, field, `waypoint ${targetNs}/${wpName} is for "${f}" traffic, not ${target} traffic; not bound`);
      }
      return undefined;
    }
    if (targetNs !== ns) {
      const a = wp.allowed;
      const ok = a.from === 'All' || (a.from === 'Selector' && selectorMatches(a.matchLabels, nsLabels(ns)));
      if (!ok) {
        warn(rk, rns, rname, field, `waypoint ${targetNs}/${wpName} does not admit namespace ${ns} (listener allowedRoutes); not bound`);
        return undefined;
      }
    }
    return { service: wp.waypoint.service, port: HBONE_PORT };
  };

  // --- services, indexed by selector
  const svcIndex = new SelectorIndex<SvcEntry>();
  const svcEntries: SvcEntry[] = [];
  for (const s of input.services) {
    const named = s.ports.filter((p) => typeof p.targetPort === 'string').map((p) => p.targetPort as string);
    const e: SvcEntry = { info: s, key: serviceKey({ namespace: s.namespace, hostname: hostnameOf(s) }), resolved: new Map(), named };
    svcEntries.push(e);
    if (s.selector) svcIndex.add(s.namespace, s.selector, e);
  }

  // --- selector authorization policies (root namespace ones apply in every namespace)
  const authorizations: Authorization[] = [];
  const authzIndex = new SelectorIndex<string>();
  for (const a of input.authz) {
    if (!a.authorization) continue;
    authorizations.push(a.authorization);
    if (a.selector) authzIndex.add(a.namespace === input.rootNamespace ? undefined : a.namespace, a.selector, authorizationKey(a.authorization));
  }

  // --- PeerAuthentication levels
  const sortedPa = [...input.peerAuthns].sort(olderFirst);
  let meshMode: MtlsMode | undefined;
  const nsMode = new Map<string, MtlsMode>();
  const paIndex = new SelectorIndex<PeerAuthnInfo>();
  for (const pa of sortedPa) {
    if (pa.selector) { paIndex.add(pa.namespace, pa.selector, pa); continue; }
    if (pa.namespace === input.rootNamespace) {
      // oldest wins: only the first one seen sets the level
      meshMode ??= pa.mode;
    } else if (!nsMode.has(pa.namespace)) nsMode.set(pa.namespace, pa.mode);
  }
  const anyPa = input.peerAuthns.length > 0;
  const staticStrict = staticStrictPolicy(input.rootNamespace);
  const staticStrictKey = authorizationKey(staticStrict);
  if (anyPa) authorizations.push(staticStrict);
  const converted = new Map<string, Authorization | null>();

  // --- workloads
  const workloads: Workload[] = [];
  for (const p of input.pods) {
    const labels = p.labels;
    const matched = svcIndex.match(p.namespace, labels);
    const services: string[] = [];
    let isWaypoint = false;
    for (const e of matched) {
      services.push(e.key);
      if (waypointServices.has(e.key)) isWaypoint = true;
      for (const n of e.named) {
        if (e.resolved.has(n)) continue;
        const cp = p.namedPorts.get(n);
        if (cp !== undefined) e.resolved.set(n, cp);
      }
    }
    const gwName = labels[GATEWAY_NAME_LABEL];
    if (gwName !== undefined && waypoints.has(`${p.namespace}/${gwName}`)) isWaypoint = true;

    const mode = labels[DATAPLANE_MODE] ?? nsLabels(p.namespace)[DATAPLANE_MODE];
    const tunnel: Workload['tunnel'] = mode === 'ambient' && !p.hostNetwork ? 'hbone' : 'none';

    const policies = authzIndex.match(p.namespace, labels);
    // effective mTLS mode: workload > namespace > mesh, UNSET inherits
    const wlPa = paIndex.match(p.namespace, labels).sort(olderFirst)[0];
    let base: 'PERMISSIVE' | 'STRICT' = 'PERMISSIVE';
    for (const m of [meshMode ?? 'UNSET', nsMode.get(p.namespace) ?? 'UNSET', wlPa?.mode ?? 'UNSET']) if (m !== 'UNSET') base = m;
    let portPolicy: Authorization | undefined;
    if (wlPa && wlPa.ports.size > 0) {
      const ck = `${wlPa.namespace}/${wlPa.name}/${base}`;
      let cp = converted.get(ck);
      if (cp === undefined) {
        cp = convertedPortPolicy(wlPa, base) ?? null;
        converted.set(ck, cp);
        if (cp) authorizations.push(cp);
      }
      portPolicy = cp ?? undefined;
    }
    if (portPolicy) policies.push(authorizationKey(portPolicy));
    else if (base === 'STRICT') policies.push(staticStrictKey);

    const waypoint = isWaypoint ? undefined : bind('workload', 'Pod', p.namespace, p.name, labels);
    // every field below comes from `p` (unchanged when it is the same record), the input's
    // constants, or the four context values compared here
    const last = input.memo?.get(p);
    if (last && last.tunnel === tunnel && sameStrings(last.services, services)
      && sameStrings(last.authorizationPolicies, policies) && sameWaypointRef(last.waypoint, waypoint)) {
      workloads.push(last);
      continue;
    }
    const w: Workload = {
      uid: `${input.clusterId}//Pod/${p.namespace}/${p.name}`,
      name: p.name,
      namespace: p.namespace,
      serviceAccount: p.serviceAccount,
      trustDomain: input.trustDomain,
      node: p.node,
      addresses: p.addresses,
      labels,
      canonicalName: labels['app.kubernetes.io/name'] ?? labels['app'] ?? p.workloadName,
      canonicalRevision: labels['app.kubernetes.io/version'] ?? labels['version'] ?? 'latest',
      workloadName: p.workloadName,
      workloadType: p.workloadType,
      tunnel,
      ...(waypoint ? { waypoint } : {}),
      healthy: p.healthy,
      services,
      authorizationPolicies: policies,
    };
    input.memo?.set(p, w);
    workloads.push(w);
  }

  // --- services (after pods: named target ports resolve from the selected pods)
  const services: Service[] = [];
  for (const e of svcEntries) {
    const s = e.info;
    const ports: ServicePort[] = s.ports.map((p) => ({
      port: p.port,
      targetPort: typeof p.targetPort === 'number' ? p.targetPort : (e.resolved.get(p.targetPort) ?? p.port),
      ...(p.name !== undefined ? { name: p.name } : {}),
      ...(p.appProtocol !== undefined ? { appProtocol: p.appProtocol } : {}),
    }));
    // a waypoint's own Service never goes through a waypoint
    const waypoint = waypointServices.has(e.key) ? undefined : bind('service', 'Service', s.namespace, s.name, s.labels);
    services.push({
      name: s.name, namespace: s.namespace, hostname: hostnameOf(s), vips: s.vips, ports,
      ...(waypoint ? { waypoint } : {}),
    });
  }
  const haveServices = new Set(svcEntries.map((e) => e.key));
  for (const w of input.waypoints) {
    if (!haveServices.has(w.waypoint.service)) {
      warn('Gateway', w.waypoint.namespace, w.waypoint.name, 'metadata.name',
        `waypoint Service ${w.waypoint.name} not found in namespace ${w.waypoint.namespace}; traffic bound to this waypoint has no endpoint until it exists`);
    }
  }
  return { workloads, services, authorizations, waypoints: input.waypoints.map((w) => w.waypoint), warnings };
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameWaypointRef(a: WaypointRef | undefined, b: WaypointRef | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.service === b.service && a.port === b.port);
}

export function hostnameOf(s: { name: string; namespace: string }): string {
  return `${s.name}.${s.namespace}.svc.cluster.local`;
}

/** Key of the static STRICT policy in the given root namespace. */
export function staticStrictKeyFor(rootNamespace: string): string {
  return `${rootNamespace}/${STATIC_STRICT_POLICY}`;
}
