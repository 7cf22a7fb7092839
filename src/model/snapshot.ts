import type { Authorization, Service, Waypoint, WaypointRef, Workload } from './types.js';
import { authorizationKey, serviceKey, waypointKey } from './types.js';

export interface SnapshotInput {
  readonly workloads: Iterable<Workload>;
  readonly services: Iterable<Service>;
  readonly authorizations: Iterable<Authorization>;
  /** waypoints (Gateways of a waypoint class); optional so older callers keep compiling */
  readonly waypoints?: Iterable<Waypoint>;
}

const NO_WORKLOADS: readonly Workload[] = [];

/**
 * An immutable, indexed view of the mesh. The hot path reads it synchronously; an update builds a
 * new one and swaps the reference. Lookups never allocate beyond their result.
 */
export class Snapshot {
  readonly version: number;
  readonly #workloads: ReadonlyMap<string, Workload>;
  readonly #workloadByIp: ReadonlyMap<string, Workload>;
  readonly #services: ReadonlyMap<string, Service>;
  readonly #serviceByVip: ReadonlyMap<string, Service>;
  readonly #endpoints: ReadonlyMap<string, readonly Workload[]>;
  readonly #authz: ReadonlyMap<string, Authorization>;
  readonly #nsPolicies: ReadonlyMap<string, readonly Authorization[]>;
  readonly #globalPolicies: readonly Authorization[];
  readonly #waypoints: ReadonlyMap<string, Waypoint>;
  readonly #waypointByService: ReadonlyMap<string, Waypoint>;
  readonly #byNode: ReadonlyMap<string, readonly Workload[]>;

  private constructor(input: SnapshotInput, version: number) {
    this.version = version;
    const workloads = new Map<string, Workload>();
    const byIp = new Map<string, Workload>();
    const endpoints = new Map<string, Workload[]>();
    const byNode = new Map<string, Workload[]>();
    for (const w of input.workloads) {
      workloads.set(w.uid, w);
      let onNode = byNode.get(w.node);
      if (!onNode) byNode.set(w.node, (onNode = []));
      onNode.push(w);
      for (const ip of w.addresses) byIp.set(ip, w);
      for (const s of w.services) {
        let list = endpoints.get(s);
        if (!list) endpoints.set(s, (list = []));
        list.push(w);
      }
    }
    const services = new Map<string, Service>();
    const byVip = new Map<string, Service>();
    for (const s of input.services) {
      services.set(serviceKey(s), s);
      for (const vip of s.vips) byVip.set(vip, s);
    }
    const authz = new Map<string, Authorization>();
    const nsPolicies = new Map<string, Authorization[]>();
    const global: Authorization[] = [];
    for (const a of input.authorizations) {
      authz.set(authorizationKey(a), a);
      if (a.scope === 'global') global.push(a);
      else if (a.scope === 'namespace') {
        let list = nsPolicies.get(a.namespace);
        if (!list) nsPolicies.set(a.namespace, (list = []));
        list.push(a);
      }
    }
    const waypoints = new Map<string, Waypoint>();
    const wpBySvc = new Map<string, Waypoint>();
    for (const wp of input.waypoints ?? []) {
      waypoints.set(waypointKey(wp), wp);
      wpBySvc.set(wp.service, wp);
    }
    this.#waypoints = waypoints;
    this.#waypointByService = wpBySvc;
    this.#byNode = byNode;
    this.#workloads = workloads;
    this.#workloadByIp = byIp;
    this.#services = services;
    this.#serviceByVip = byVip;
    this.#endpoints = endpoints;
    this.#authz = authz;
    this.#nsPolicies = nsPolicies;
    this.#globalPolicies = global;
  }

  static build(input: SnapshotInput, version = 0): Snapshot {
    return new Snapshot(input, version);
  }

  static empty(): Snapshot {
    return new Snapshot({ workloads: [], services: [], authorizations: [], waypoints: [] }, 0);
  }

  workload(uid: string): Workload | undefined { return this.#workloads.get(uid); }
  workloadByIp(ip: string): Workload | undefined { return this.#workloadByIp.get(ip); }
  service(key: string): Service | undefined { return this.#services.get(key); }
  serviceByVip(ip: string): Service | undefined { return this.#serviceByVip.get(ip); }
  /** Workloads that are endpoints of the service (healthy or not; callers filter). */
  endpoints(key: string): readonly Workload[] { return this.#endpoints.get(key) ?? []; }
  authorization(key: string): Authorization | undefined { return this.#authz.get(key); }

  /** Every L4 policy that applies to a workload: global, its namespace's, and its selector policies. */
  policiesFor(w: Workload): Authorization[] {
    const out = [...this.#globalPolicies, ...(this.#nsPolicies.get(w.namespace) ?? [])];
    for (const key of w.authorizationPolicies) {
      const a = this.#authz.get(key);
      if (a) out.push(a);
    }
    return out;
  }

  /** Waypoint by Gateway key `<namespace>/<name>`. */
  waypoint(key: string): Waypoint | undefined { return this.#waypoints.get(key); }
  /** The waypoint a Service key belongs to (the Service is the waypoint's own Service). */
  waypointByService(key: string): Waypoint | undefined { return this.#waypointByService.get(key); }
  /** Pods of a waypoint reference (healthy or not; callers filter). */
  waypointEndpoints(ref: WaypointRef): readonly Workload[] { return this.#endpoints.get(ref.service) ?? NO_WORKLOADS; }
  /**
   * The waypoint this workload implements, if it is a waypoint pod (an endpoint of a waypoint's
   * Service). Used to skip a workload waypoint for traffic that already came from it.
   */
  waypointOf(w: Workload): Waypoint | undefined {
    for (const s of w.services) {
      const wp = this.#waypointByService.get(s);
      if (wp) return wp;
    }
    return undefined;
  }
  /** Workloads scheduled on a node (by node name); the node agent serves these. */
  workloadsOnNode(node: string): readonly Workload[] { return this.#byNode.get(node) ?? NO_WORKLOADS; }

  get workloads(): IterableIterator<Workload> { return this.#workloads.values(); }
  get services(): IterableIterator<Service> { return this.#services.values(); }
  get authorizations(): IterableIterator<Authorization> { return this.#authz.values(); }
  get waypoints(): IterableIterator<Waypoint> { return this.#waypoints.values(); }
  get counts(): { workloads: number; services: number; authorizations: number; waypoints: number } {
    return { workloads: this.#workloads.size, services: this.#services.size, authorizations: this.#authz.size, waypoints: this.#waypoints.size };
  }
}
