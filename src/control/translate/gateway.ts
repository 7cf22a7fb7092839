/**
 * Gateway API Gateways of a waypoint class become waypoints. Gateways of other classes (ingress
 * controllers) are not ambit's and are ignored.
 */
import type { Waypoint, WaypointFor } from '../../model/index.js';
import type { KubeObject } from '../config/types.js';
import type { Check } from './check.js';
import { labelsOf } from './kinds.js';

export const WAYPOINT_CLASSES: readonly string[] = ['ambit-waypoint', 'istio-waypoint'];
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
/** HBONE port on waypoint pods */
export const HBONE_PORT = 15008;

export interface WaypointInfo {
  readonly waypoint: Waypoint;
  /** which namespaces may bind to it (listener allowedRoutes); default: its own */
  readonly allowed: { readonly from: 'Same' } | { readonly from: 'All' } | { readonly from: 'Selector'; readonly matchLabels: Readonly<Record<string, string>> };
}

const SPEC_FIELDS = ['gatewayClassName', 'listeners', 'addresses', 'infrastructure', 'backendTLS', 'allowedListeners'];
const LISTENER_FIELDS = ['name', 'hostname', 'port', 'protocol', 'tls', 'allowedRoutes'];

export function isWaypointGateway(o: KubeObject): boolean {
  const spec = o.spec;
  return typeof spec === 'object' && spec !== null && WAYPOINT_CLASSES.includes((spec as Record<string, unknown>)['gatewayClassName'] as string);
}

export function readWaypoint(o: KubeObject, namespace: string, c: Check): WaypointInfo | undefined {
  const spec = c.obj(o.spec, 'spec');
  if (!spec) return c.reject('spec', 'is required');
  const gatewayClass = c.str(spec['gatewayClassName'], 'spec.gatewayClassName') ?? '';
  c.known(spec, 'spec', SPEC_FIELDS);
  const forLabel = labelsOf(o)[WAYPOINT_FOR_LABEL];
  let forValue: WaypointFor = 'service';
  if (forLabel !== undefined) {
    if (forLabel === 'service' || forLabel === 'workload' || forLabel === 'all' || forLabel === 'none') forValue = forLabel;
    else c.reject(`metadata.labels["${WAYPOINT_FOR_LABEL}"]`, `"${forLabel}" is not one of service, workload, all, none`);
  }
  let hbone: Record<string, unknown> | undefined;
  const listeners = c.list(spec['listeners'], 'spec.listeners', (x, f) => {
    const l = c.obj(x, f);
    if (!l) return undefined;
    c.known(l, f, LISTENER_FIELDS);
    const port = c.port(l['port'], `${f}.port`);
    const protocol = c.str(l['protocol'], `${f}.protocol`);
    if (port === HBONE_PORT && protocol === 'HBONE') hbone ??= l;
    return l;
  });
  if (listeners && !hbone && c.ok) c.reject('spec.listeners', `a waypoint needs a listener {port: ${HBONE_PORT}, protocol: HBONE}`);
  if (!listeners) c.reject('spec.listeners', `is required: a waypoint needs a listener {port: ${HBONE_PORT}, protocol: HBONE}`);
  let allowed: WaypointInfo['allowed'] = { from: 'Same' };
  const idx = listeners && hbone ? listeners.indexOf(hbone) : -1;
  const ar = hbone ? c.obj(hbone['allowedRoutes'], `spec.listeners[${idx}].allowedRoutes`) : undefined;
  if (ar) {
    const f = `spec.listeners[${idx}].allowedRoutes`;
    c.known(ar, f, ['namespaces', 'kinds']);
    const ns = c.obj(ar['namespaces'], `${f}.namespaces`);
    if (ns) {
      c.known(ns, `${f}.namespaces`, ['from', 'selector']);
      const from = c.str(ns['from'], `${f}.namespaces.from`) ?? 'Same';
      if (from === 'All') allowed = { from: 'All' };
      else if (from === 'Selector') {
        const sel = c.obj(ns['selector'], `${f}.namespaces.selector`);
        if (sel) c.known(sel, `${f}.namespaces.selector`, ['matchLabels']);
        const matchLabels = sel ? c.stringMap(sel['matchLabels'], `${f}.namespaces.selector.matchLabels`) : undefined;
        if (!matchLabels) c.reject(`${f}.namespaces.selector`, 'from: Selector needs selector.matchLabels');
        else allowed = { from: 'Selector', matchLabels };
      } else if (from !== 'Same') c.reject(`${f}.namespaces.from`, `"${from}" is not one of Same, All, Selector`);
    }
  }
  if (!c.ok) return undefined;
  const name = o.metadata.name;
  return {
    waypoint: { name, namespace, service: `${namespace}/${name}.${namespace}.svc.cluster.local`, for: forValue, gatewayClass },
    allowed,
  };
}
