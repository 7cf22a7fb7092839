/**
 * Kubernetes / Istio / Gateway API objects -> the mesh model (Snapshot), waypoints and per-Service
 * L7 configuration. Pure apart from one piece of memory: the last good version of each resource.
 * When a resource that used to be valid turns invalid, it is reported as rejected and its last
 * good version stays in effect, so a typo in an edit does not silently drop a security policy.
 */
import type { Service, Waypoint, Workload } from '../../model/index.js';
import { authorizationKey, serviceKey, Snapshot, waypointKey } from '../../model/index.js';
import type { ServiceL7 } from '../../model/index.js';
import type { KubeObject, Rejection } from '../config/types.js';
import type { AuthzInfo } from './authz.js';
import { failClosedAuthorization, readAuthorizationPolicy } from './authz.js';
import { build } from './build.js';
import { Check } from './check.js';
import type { NamespaceInfo, PodInfo, ServiceInfo } from './core-kinds.js';
import { readNamespace, readPod, readService } from './core-kinds.js';
import type { WaypointInfo } from './gateway.js';
import { isWaypointGateway, readWaypoint } from './gateway.js';
import type { Identified } from './kinds.js';
import { identify, L7_KINDS } from './kinds.js';
import { translateL7 } from './l7.js';
import { attachL7Authorizations } from './waypoint-authz.js';
import type { PeerAuthnInfo } from './peer-authn.js';
import { failClosedPeerAuthentication, readPeerAuthentication } from './peer-authn.js';
import { reuse } from './reuse.js';

export interface TranslatorOptions {
  /** SPIFFE trust domain, e.g. `cluster.local` */
  readonly trustDomain: string;
  /** mesh root namespace; policies there apply mesh-wide. Usually `istio-system` */
  readonly rootNamespace: string;
  /** first part of workload uids; default `Kubernetes` (Istio's default cluster id) */
  readonly clusterId?: string;
  /** the L7 (waypoint config) translator; default ./l7.js translateL7. A seam for tests. */
  readonly translateL7?: typeof translateL7;
}

export interface TranslateResult {
  readonly snapshot: Snapshot;
  readonly waypoints: Waypoint[];
  /** waypoint (L7) configuration by Service key `<namespace>/<hostname>` */
  readonly l7: ReadonlyMap<string, ServiceL7>;
  /** resources (or parts) not applied; a previously good version may still be in effect */
  readonly rejected: Rejection[];
  /** applied, with a caveat the user should see */
  readonly warnings: Rejection[];
}

interface Collect {
  namespaces: Map<string, NamespaceInfo>;
  pods: PodInfo[];
  services: ServiceInfo[];
  waypoints: WaypointInfo[];
  authz: AuthzInfo[];
  peerAuthns: PeerAuthnInfo[];
}

type Apply = (col: Collect) => void;

interface Parsed {
  readonly check: Check;
  readonly apply: Apply | undefined;
}

export class Translator {
  readonly #opts: Required<Omit<TranslatorOptions, 'translateL7'>>;
  readonly #l7: typeof translateL7;
  /** identity key -> last object that translated without rejection */
  #lastGood = new Map<string, KubeObject>();
  #version = 0;
  /** per-object read results; objects are never mutated after a source hands them over */
  readonly #parsed = new WeakMap<object, Parsed>();
  /** per raw object: what identify() made of it (depends on nothing else) */
  readonly #identified = new WeakMap<object, ReturnType<typeof identify>>();
  /** the Workload last built from each pod record (see BuildInput.memo) */
  readonly #workloadMemo = new WeakMap<PodInfo, Workload>();
  /** the previous result: its objects are handed out again where the new ones are equal */
  #prev: TranslateResult | undefined;

  constructor(opts: TranslatorOptions) {
    this.#opts = { clusterId: opts.clusterId ?? 'Kubernetes', trustDomain: opts.trustDomain, rootNamespace: opts.rootNamespace };
    this.#l7 = opts.translateL7 ?? translateL7;
  }

  /** Translate the complete current set of objects. Never throws on bad input. */
  update(objects: readonly KubeObject[]): TranslateResult {
    const rejected: Rejection[] = [];
    const warnings: Rejection[] = [];
    const col: Collect = { namespaces: new Map(), pods: [], services: [], waypoints: [], authz: [], peerAuthns: [] };
    const seen = new Set<string>();
    const nextGood = new Map<string, KubeObject>();
    const l7Objects: Identified[] = [];

    for (const raw of objects) {
      const r = this.#identify(raw);
      if ('ignored' in r) continue;
      if ('error' in r) {
        rejected.push(r.error);
        if (r.partial && !seen.has(r.partial.key) && !L7_KINDS.has(r.partial.kind)) {
          seen.add(r.partial.key);
          this.#fallBack(r.partial, col, nextGood, warnings);
        }
        continue;
      }
      const id = r.ok;
      if (seen.has(id.key)) {
        rejected.push(rejection(id, 'metadata.name', 'is defined more than once; the first definition applies'));
        continue;
      }
      seen.add(id.key);
      if (L7_KINDS.has(id.kind)) { l7Objects.push(id); continue; }
      const { check: c, apply } = this.#readCached(id);
      if (c.ok) {
        nextGood.set(id.key, id.obj);
        warnings.push(...c.warnings);
        apply?.(col);
        continue;
      }
      rejected.push(...c.rejected);
      this.#fallBack(id, col, nextGood, warnings);
    }

    const out = build({ ...this.#opts, ...col, memo: this.#workloadMemo });
    warnings.push(...out.warnings);

    // Hand out the previous object wherever the new one is equal: the wire encoder caches by
    // identity, so this keeps a one-pod change at one encode. Workloads of unchanged pods come
    // back from build's memo already; the comparison covers changed pod objects whose result
    // did not change, and the other kinds, which are few.
    const prev = this.#prev;
    const workloads = prev ? out.workloads.map((w) => reuse(prev.snapshot.workload(w.uid), w)) : out.workloads;
    const services = new Map<string, Service>();
    for (const s of out.services) {
      const k = serviceKey(s);
      services.set(k, prev ? reuse(prev.snapshot.service(k), s) : s);
    }
    const authorizations = prev ? out.authorizations.map((a) => reuse(prev.snapshot.authorization(authorizationKey(a)), a)) : out.authorizations;
    const waypoints = prev ? out.waypoints.map((w) => reuse(prev.snapshot.waypoint(waypointKey(w)), w)) : out.waypoints;
    const l7 = new Map<string, ServiceL7>();
    const routed = this.#translateL7(l7Objects, services, nextGood, rejected, warnings);
    // targetRefs AuthorizationPolicies travel with the waypoint config of each Service they apply to
    for (const [k, v] of attachL7Authorizations(routed, services, out.waypoints, col.authz, warnings)) l7.set(k, prev ? reuse(prev.l7.get(k), v) : v);

    this.#lastGood = nextGood;
    const snapshot = Snapshot.build({ workloads, services: services.values(), authorizations, waypoints }, ++this.#version);
    const result: TranslateResult = { snapshot, waypoints, l7, rejected, warnings };
    this.#prev = result;
    return result;
  }

  /** identify() depends only on the object, and sources never mutate objects they handed over. */
  #identify(raw: KubeObject): ReturnType<typeof identify> {
    if (typeof raw !== 'object' || raw === null) return identify(raw);
    let r = this.#identified.get(raw);
    if (!r) this.#identified.set(raw, (r = identify(raw)));
    return r;
  }

  /**
   * L7 kinds are validated by translateL7 as a set (it needs the Services). A resource is good
   * when no rejection names it; a rejected one with a last good version is swapped for that
   * version and the set is translated again.
   */
  #translateL7(
    ids: readonly Identified[], services: ReadonlyMap<string, Service>, nextGood: Map<string, KubeObject>,
    rejected: Rejection[], warnings: Rejection[],
  ): ReadonlyMap<string, ServiceL7> {
    const ctx = { services, rootNamespace: this.#opts.rootNamespace };
    const named = (id: Identified): string => `${id.kind}/${id.namespace}/${id.name}`;
    const withNs = (id: Identified, obj: KubeObject): KubeObject =>
      obj.metadata.namespace === id.namespace ? obj : { ...obj, metadata: { ...obj.metadata, namespace: id.namespace } };
    const first = safeL7(this.#l7, ids.map((id) => withNs(id, id.obj)), ctx);
    const bad = new Set(first.rejected.map((r) => `${r.kind}/${r.namespace}/${r.name}`));
    rejected.push(...first.rejected);
    let replaced = false;
    const effective = ids.map((id) => {
      if (!bad.has(named(id))) { nextGood.set(id.key, id.obj); return withNs(id, id.obj); }
      const last = this.#lastGood.get(id.key);
      if (!last || last === id.obj) return withNs(id, id.obj);
      replaced = true;
      nextGood.set(id.key, last);
      warnings.push(rejection(id, 'metadata', 'the new version is rejected; the last good version stays in effect'));
      return withNs(id, last);
    });
    if (!replaced) {
      warnings.push(...first.warnings);
      return first.l7;
    }
    const second = safeL7(this.#l7, effective, ctx);
    // the rejections that matter were reported from the first pass; the second only confirms
    warnings.push(...second.warnings);
    return second.l7;
  }

  /**
   * Reading one object depends only on the object (and this translator's options), so the result
   * is kept per object: a config source hands over the same object references for resources that
   * did not change, and a 100k-pod update then only reads what changed.
   */
  #readCached(id: Identified): Parsed {
    let p = this.#parsed.get(id.obj);
    if (!p) {
      const check = new Check(id.kind, id.namespace, id.name);
      p = { check, apply: this.#read(id, check) };
      this.#parsed.set(id.obj, p);
    }
    return p;
  }

  /** A rejected resource: its last good version if there is one, else fail closed. */
  #fallBack(id: Identified, col: Collect, nextGood: Map<string, KubeObject>, warnings: Rejection[]): void {
    const last = this.#lastGood.get(id.key);
    if (last) {
      const { check: lc, apply: lastApply } = this.#readCached({ ...id, obj: last });
      if (lc.ok) {
        nextGood.set(id.key, last);
        lastApply?.(col);
        warnings.push(rejection(id, 'metadata', 'the new version is rejected; the last good version stays in effect'));
        return;
      }
    }
    this.#failClosed(id, col, warnings);
  }

  /**
   * A security resource that cannot be applied (and has no good version to fall back on) must not
   * silently vanish: a dropped DENY or a dropped STRICT opens traffic. Its workloads instead deny
   * everything (AuthorizationPolicy) or require mTLS (PeerAuthentication) until it is fixed.
   */
  #failClosed(id: Identified, col: Collect, warnings: Rejection[]): void {
    if (id.kind === 'AuthorizationPolicy') {
      const a = failClosedAuthorization(id.obj, id.namespace, this.#opts.rootNamespace);
      if (!a) return;
      col.authz.push(a);
      if (a.waypoint) warnings.push(rejection(id, 'spec', 'the policy is rejected; until it is fixed, the waypoint denies every request to what it targets (fail closed)'));
      else warnings.push(rejection(id, 'spec', `the policy is rejected; until it is fixed, ${a.selector ? 'the workloads it selects' : a.authorization?.scope === 'global' ? 'every workload of the mesh' : `every workload of namespace ${id.namespace}`} deny all connections (fail closed)`));
    } else if (id.kind === 'PeerAuthentication') {
      const pa = failClosedPeerAuthentication(id.obj, id.namespace, this.#opts.rootNamespace);
      if (!pa) return;
      col.peerAuthns.push(pa);
      warnings.push(rejection(id, 'spec', 'the policy is rejected; until it is fixed, the workloads it covers require mTLS (STRICT, fail closed)'));
    }
  }

  #read(id: Identified, c: Check): Apply | undefined {
    const o = id.obj;
    const ns = id.namespace;
    switch (id.kind) {
      case 'Namespace': {
        const n = readNamespace(o);
        return (col) => { col.namespaces.set(n.name, n); };
      }
      case 'Pod': {
        const p = readPod(o, ns, c);
        return p && ((col) => { col.pods.push(p); });
      }
      case 'Service': {
        const s = readService(o, ns, c);
        return s && ((col) => { col.services.push(s); });
      }
      case 'Gateway': {
        if (!isWaypointGateway(o)) return undefined;
        const w = readWaypoint(o, ns, c);
        return w && ((col) => { col.waypoints.push(w); });
      }
      case 'AuthorizationPolicy': {
        const a = readAuthorizationPolicy(o, ns, this.#opts.rootNamespace, this.#opts.trustDomain, c);
        return a && ((col) => { col.authz.push(a); });
      }
      case 'PeerAuthentication': {
        const pa = readPeerAuthentication(o, ns, this.#opts.rootNamespace, c);
        return pa && ((col) => { col.peerAuthns.push(pa); });
      }
      default:
        return undefined;
    }
  }
}

function rejection(id: Identified, field: string, message: string): Rejection {
  return { kind: id.kind, namespace: id.namespace, name: id.name, field, message: `${id.kind} ${id.namespace ? `${id.namespace}/` : ''}${id.name}: ${field}: ${message}` };
}

/** A bug in the L7 translator must not take the L4 model down with it: reject everything it was given. */
function safeL7(fn: typeof translateL7, objects: readonly KubeObject[], ctx: Parameters<typeof translateL7>[1]): ReturnType<typeof translateL7> {
  try {
    return fn(objects, ctx);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    return {
      l7: new Map(),
      rejected: objects.map((o) => ({
        kind: o.kind, namespace: o.metadata.namespace ?? '', name: o.metadata.name, field: '',
        message: `${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}: internal error translating L7 config: ${msg}`,
      })),
      warnings: [],
    };
  }
}
