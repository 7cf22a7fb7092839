/**
 * Who may hold a waypoint session. A waypoint receives the whole mesh config (every workload,
 * address, policy and L7 route), so the role is only for identities that actually run a waypoint:
 * the service account of at least one pod in the current snapshot that is a waypoint pod.
 * Pure: decided from the snapshot alone.
 */
import { MeshError } from '../../core/index.js';
import type { Snapshot, Workload } from '../../model/index.js';
import { spiffeUri } from '../../identity/index.js';
import type { Identity } from '../../identity/index.js';
import type { Principal } from './authenticator.js';

/** Istio (and ambit) put this label on the pods of a Gateway's deployment. */
const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';

function idKey(id: { trustDomain: string; namespace: string; serviceAccount: string }): string {
  return `${id.trustDomain}/${id.namespace}/${id.serviceAccount}`;
}

/**
 * A waypoint pod: an endpoint of a waypoint's Service, or labelled with the name of a waypoint
 * Gateway of its own namespace. A label naming no waypoint does not count (anyone who can create
 * a pod can set a label; only a Gateway of a waypoint class makes it a waypoint).
 */
function isWaypointPod(snap: Snapshot, w: Workload): boolean {
  if (snap.waypointOf(w)) return true;
  const gw = w.labels[GATEWAY_NAME_LABEL];
  return gw !== undefined && snap.waypoint(`${w.namespace}/${gw}`) !== undefined;
}

// one scan per snapshot, not per connection: a reconnect storm of waypoints must not cost
// O(workloads) each
const cache = new WeakMap<Snapshot, ReadonlySet<string>>();

/** Identities (`td/ns/sa`) of the snapshot's waypoint pods. Health is not asked: a waypoint pod becomes ready only after it has its config. */
export function waypointIdentities(snap: Snapshot): ReadonlySet<string> {
  let ids = cache.get(snap);
  if (ids) return ids;
  const out = new Set<string>();
  if (snap.counts.waypoints > 0) {
    for (const w of snap.workloads) if (isWaypointPod(snap, w)) out.add(idKey(w));
  }
  ids = out;
  cache.set(snap, ids);
  return ids;
}

/** True when some waypoint pod of `snap` runs as `id`. */
export function runsWaypoint(id: Identity, snap: Snapshot): boolean {
  return waypointIdentities(snap).has(idKey(id));
}

/**
 * Throws AMBIT_XDS_FORBIDDEN unless `p` may hold its session: agents always (their
 * authentication already bound them to a node), waypoints only as the identity of a waypoint pod.
 */
export function admitPeer(p: Principal, snap: Snapshot): void {
  if (p.role !== 'waypoint') return;
  if (!p.identity) throw new MeshError('AMBIT_XDS_FORBIDDEN', `${p.subject}: a waypoint must name its identity`);
  if (!runsWaypoint(p.identity, snap)) {
    throw new MeshError('AMBIT_XDS_FORBIDDEN', `${spiffeUri(p.identity)} runs no waypoint: no waypoint pod with this service account`);
  }
}
