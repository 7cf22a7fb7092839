/**
 * targetRefs AuthorizationPolicies -> the `authorization` list of each Service's waypoint config. A policy
 * targeting a waypoint Gateway applies to every Service bound to that waypoint; a GatewayClass target (root
 * namespace) to every Service of every waypoint of that class; a Service target to that Service, which must
 * have a waypoint (without one nothing enforces L7 policy: reported, as Istio does). Selector policies are
 * for the node agent only: waypoints ignore them (reference §1.4).
 *
 * The config of the waypoint's own Service (`<ns>/<gateway>.<ns>.svc.cluster.local`) carries the policies that
 * target the whole waypoint (Gateway, GatewayClass): they are what the waypoint enforces on workload-addressed
 * traffic (`istio.io/waypoint-for: workload|all`), which has no Service config of its own.
 */
import type { Service, Waypoint } from '../../model/index.js';
import type { L7Authorization, ServiceL7 } from '../../model/index.js';
import type { Rejection } from '../config/types.js';
import type { AuthzInfo } from './authz.js';

const DOMAIN = 'svc.cluster.local';

export function attachL7Authorizations(
  l7: ReadonlyMap<string, ServiceL7>, services: ReadonlyMap<string, Service>, waypoints: readonly Waypoint[],
  authz: readonly AuthzInfo[], warnings: Rejection[],
): Map<string, ServiceL7> {
  const out = new Map(l7);
  const policies = authz.filter((a) => a.waypoint).sort((a, b) => (`${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1));
  if (policies.length === 0) return out;
  const waypointByService = new Map(waypoints.map((w) => [w.service, w]));
  const perService = new Map<string, L7Authorization[]>();
  const add = (svc: string, p: L7Authorization): void => {
    const l = perService.get(svc);
    if (!l) perService.set(svc, [p]); else if (!l.includes(p)) l.push(p);
  };
  for (const a of policies) {
    const { targets, policy } = a.waypoint!;
    const warn = (field: string, message: string): void => {
      warnings.push({ kind: 'AuthorizationPolicy', namespace: a.namespace, name: a.name, field, message: `AuthorizationPolicy ${a.namespace}/${a.name}: ${field}: ${message}` });
    };
    targets.forEach((t, i) => {
      const field = `spec.targetRefs[${i}]`;
      let hit = 0;
      for (const [k, s] of services) {
        const wp = s.waypoint ? waypointByService.get(s.waypoint.service) : undefined;
        let applies = false;
        switch (t.kind) {
          case 'Service': applies = k === `${t.namespace}/${t.name}.${t.namespace}.${DOMAIN}` && s.waypoint !== undefined; break;
          case 'Gateway': applies = s.waypoint?.service === `${t.namespace}/${t.name}.${t.namespace}.${DOMAIN}`; break;
          case 'GatewayClass': applies = wp?.gatewayClass === t.name; break;
          case 'Namespace': applies = s.namespace === t.namespace && s.waypoint !== undefined; break;
        }
        if (applies) { add(k, policy); hit++; }
      }
      // the waypoint-wide list, for workload-addressed traffic
      for (const w of waypoints) {
        if ((t.kind === 'Gateway' && w.namespace === t.namespace && w.name === t.name) || (t.kind === 'GatewayClass' && w.gatewayClass === t.name)
          || (t.kind === 'Namespace' && w.namespace === t.namespace)) { add(w.service, policy); hit++; }
      }
      if (hit > 0 || t.kind === 'Namespace') return;
      if (t.kind === 'Service') {
        const s = services.get(`${t.namespace}/${t.name}.${t.namespace}.${DOMAIN}`);
        warn(field, s ? `Service ${t.namespace}/${t.name} has no waypoint (istio.io/use-waypoint); nothing enforces this L7 policy for it` : `Service ${t.namespace}/${t.name} does not exist; the policy applies once it does`);
      } else if (t.kind === 'Gateway' && !waypoints.some((w) => w.namespace === t.namespace && w.name === t.name)) {
        warn(field, `Gateway ${t.namespace}/${t.name} is not a waypoint (class ambit-waypoint or istio-waypoint) or does not exist`);
      }
    });
  }
  for (const [k, list] of perService) {
    const cur = out.get(k);
    out.set(k, { ...(cur ?? { service: k, http: [], grpc: [] }), authorization: list });
  }
  return out;
}
