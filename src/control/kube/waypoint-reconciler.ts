/**
 * Carries out waypointObjects() and gatewayStatus() against the API server, for the complete
 * config set of every update: server-side apply (field manager ambit-control) of each object that
 * differs from what this process last applied, the Gateway's status through its status
 * subresource when it would change, and deletion of the objects of a Gateway that went away or
 * stopped being a waypoint (a deleted Gateway's objects also go with it by their ownerReferences;
 * the explicit delete covers a class change and anything left while the control plane was down:
 * the first run lists what carries its label).
 *
 * One run at a time; updates arriving during a run are merged into the next (only the latest set
 * matters). A run that fails on the API server (5xx, 409, 429, unreachable) is retried after a
 * backoff; a refusal (4xx) of one object is written into its Gateway's Programmed condition and
 * not retried until the Gateway or the resync changes something. Every `resyncMs` the memory of
 * what was applied is dropped, so hand edits and deleted objects are put back.
 *
 * Writes happen only while `isLeader()` answers true (the Lease of leader.ts in the control plane;
 * a new leader calls resync(), which applies everything again). Without it (tests, one replica)
 * every update is carried out.
 */
import { Backoff, MeshError, errorMessage, logger } from '../../core/index.js';
import type { BackoffOptions } from '../../core/index.js';
import type { KubeObject, Rejection } from '../config/types.js';
import { expectStatus, resourcePath, statusMessage } from './api.js';
import type { Json, KubeApi } from './api.js';
import {
  GATEWAY_API_VERSION, GATEWAY_NAME_LABEL, MANAGED_BY, MANAGED_BY_LABEL, WAYPOINT_GATEWAY_CLASS, WAYPOINT_KINDS, caRootName, gatewayClassStatus,
  gatewayStatus, statusDiffers, waypointObjects,
} from './waypoint-objects.js';
import type { GatewayState, WaypointDeploySettings } from './waypoint-objects.js';

const log = logger('control.waypoints');

export const WAYPOINT_CLASSES: readonly string[] = ['ambit-waypoint', 'istio-waypoint'];

export interface WaypointReconcilerOptions {
  readonly api: KubeApi;
  readonly settings: WaypointDeploySettings;
  /** the mesh root, for each waypoint's ConfigMap */
  readonly rootsPem: string;
  /** writes only while true (leader election); default always */
  readonly isLeader?: () => boolean;
  /** between failed runs; default 500 ms doubling to 30 s */
  readonly backoff?: BackoffOptions;
  /** forget what was applied and apply everything again this often, ms; default 600 000 */
  readonly resyncMs?: number;
  /** items per page when listing what carries its label (first run); default 500 */
  readonly pageSize?: number;
  /** at most this many waypoint Gateways are served; more are logged and skipped; default 1000 */
  readonly maxWaypoints?: number;
  /** now as an RFC 3339 time (conditions' lastTransitionTime); default the clock */
  readonly now?: () => string;
  /** the GatewayClass marked Accepted when it names this controller; default ambit-waypoint / ambit.dev/waypoint-controller */
  readonly gatewayClass?: { readonly name: string; readonly controllerName: string };
}

interface Input { objects: readonly KubeObject[]; rejected: readonly Rejection[] }

function isWaypoint(o: KubeObject): boolean {
  return o.kind === 'Gateway' && o.apiVersion.startsWith('gateway.networking.k8s.io/')
    && WAYPOINT_CLASSES.includes(String((o.spec as { gatewayClassName?: unknown } | undefined)?.gatewayClassName));
}

const keyOf = (ns: string, name: string): string => `${ns}/${name}`;

/** 4xx other than conflict and throttling: the API server will answer the same again. */
const isRefusal = (status: number): boolean => status >= 400 && status < 500 && status !== 409 && status !== 429;

export class WaypointReconciler {
  readonly #o: WaypointReconcilerOptions;
  readonly #backoff: Backoff;
  #input: Input | undefined;
  /** the latest set (kept for resync) */
  #last: Input | undefined;
  #running = false;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;
  #resync: NodeJS.Timeout | undefined;
  /** API path -> JSON of the body last applied there with success */
  #applied = new Map<string, string>();
  /** ns/name of a Gateway -> its Service's ClusterIP (from the apply answer) */
  readonly #clusterIPs = new Map<string, string>();
  /** waypoint Gateways of the last successful run; undefined before it (then a sweep lists) */
  #known: Set<string> | undefined;
  /** the GatewayClass has been looked at (first run, and after each resync) */
  #classDone = false;
  #waiters: Array<() => void> = [];
  #runs = 0;

  constructor(o: WaypointReconcilerOptions) {
    this.#o = o;
    this.#backoff = new Backoff({ initialMs: 500, maxMs: 30_000, ...o.backoff });
    const resync = o.resyncMs ?? 600_000;
    this.#resync = setInterval(() => this.resync(), resync);
    this.#resync.unref();
  }

  /** completed runs (diagnostics and tests) */
  get runs(): number { return this.#runs; }

  /** The complete config set and the translator's rejections (Gateways rejected there are not Accepted). */
  update(objects: readonly KubeObject[], rejected: readonly Rejection[]): void {
    if (this.#stopped) return;
    this.#input = { objects, rejected };
    this.#last = this.#input;
    this.#kick();
  }

  /** Forgets what was applied and applies everything again with the latest set (the periodic resync). */
  resync(): void {
    this.#applied.clear();
    this.#classDone = false;
    if (this.#last && !this.#input) this.#input = this.#last;
    if (this.#input) this.#kick();
  }

  /** Resolves once the latest update has been carried out (tests; waits through retries). */
  settled(): Promise<void> {
    const following = this.#o.isLeader !== undefined && !this.#o.isLeader();
    if (!this.#running && (!this.#input || following) && !this.#retry) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
    clearInterval(this.#resync);
    this.#retry = undefined;
    for (const w of this.#waiters.splice(0)) w();
  }

  #kick(): void {
    if (this.#running || this.#retry || this.#stopped) return;
    void this.#loop();
  }

  async #loop(): Promise<void> {
    this.#running = true;
    let following = false;
    try {
      while (this.#input && !this.#stopped) {
        // kept for later: leadership calls resync(), which runs it
        if (this.#o.isLeader && !this.#o.isLeader()) { following = true; break; }
        const input = this.#input;
        this.#input = undefined;
        try {
          await this.#run(input);
          this.#runs++;
          this.#backoff.reset();
        } catch (e) {
          this.#input ??= input; // unless a newer set arrived meanwhile
          const delay = this.#backoff.next();
          log.warn('waypoint reconcile failed; retrying', { error: errorMessage(e), retryMs: delay });
          this.#retry = setTimeout(() => { this.#retry = undefined; this.#kick(); }, delay);
          return;
        }
      }
    } finally {
      this.#running = false;
      // settled: done, or nothing this replica may do while another leads
      if ((!this.#input || following) && !this.#retry) for (const w of this.#waiters.splice(0)) w();
    }
  }

  async #run(input: Input): Promise<void> {
    const { api } = this.#o;
    if (!this.#classDone) await this.#acceptClass();
    const invalid = new Map<string, string>();
    for (const r of input.rejected) if (r.kind === 'Gateway' && !invalid.has(keyOf(r.namespace, r.name))) invalid.set(keyOf(r.namespace, r.name), r.message);
    const wanted = new Set<string>();
    for (const gw of input.objects) {
      if (!isWaypoint(gw) || !gw.metadata.namespace) continue;
      const key = keyOf(gw.metadata.namespace, gw.metadata.name);
      if (wanted.size >= (this.#o.maxWaypoints ?? 1000)) { log.error('too many waypoint Gateways; skipping', { gateway: key }); continue; }
      wanted.add(key);
      const state = await this.#reconcileGateway(gw, key, invalid.get(key));
      const next = gatewayStatus(gw, state, (this.#o.now ?? (() => new Date().toISOString()))());
      if (!statusDiffers(gw, next)) continue;
      const path = `${resourcePath(GATEWAY_API_VERSION, 'gateways', gw.metadata.namespace, gw.metadata.name)}/status`;
      const a = await api.mergePatch(path, { status: next });
      if (a.status === 404) continue; // deleted meanwhile; the next set says so
      expectStatus(a, `writing the status of Gateway ${key}`, 200);
      log.info('gateway status written', { gateway: key, programmed: state.invalid === undefined && state.notProgrammed === undefined && state.clusterIP !== undefined });
    }
    if (this.#known === undefined) await this.#sweep(wanted);
    else for (const key of this.#known) if (!wanted.has(key)) await this.#remove(key);
    this.#known = wanted;
  }

  async #reconcileGateway(gw: KubeObject, key: string, rejected: string | undefined): Promise<GatewayState> {
    // a rejected Gateway keeps what it has (the translator keeps its last good version in effect)
    if (rejected !== undefined) return { invalid: rejected };
    const d = waypointObjects(gw, this.#o.settings, this.#o.rootsPem);
    if ('error' in d) return { invalid: d.error };
    let clusterIP = this.#clusterIPs.get(key);
    for (const want of d.objects) {
      const body = JSON.stringify(want.obj);
      if (this.#applied.get(want.path) === body) continue;
      const a = await this.#o.api.apply(want.path, want.obj);
      const what = `${want.kind} ${key}`;
      if (isRefusal(a.status)) {
        this.#applied.delete(want.path);
        log.warn('waypoint object refused', { object: what, status: a.status, message: statusMessage(a) });
        return { notProgrammed: `${what}: HTTP ${a.status}: ${statusMessage(a)}`, ...(clusterIP ? { clusterIP } : {}) };
      }
      expectStatus(a, `applying ${what}`, 200, 201);
      this.#applied.set(want.path, body);
      if (a.status === 201) log.info('waypoint object created', { object: what });
      if (want.kind === 'Service') {
        const ip = (a.body.spec as { clusterIP?: unknown } | undefined)?.clusterIP;
        if (typeof ip === 'string' && ip && ip !== 'None') { clusterIP = ip; this.#clusterIPs.set(key, ip); }
      }
    }
    return clusterIP ? { clusterIP } : { notProgrammed: `Service ${key} has no ClusterIP` };
  }

  /** Marks ambit's GatewayClass Accepted (when it exists and names this controller). */
  async #acceptClass(): Promise<void> {
    const gcName = this.#o.gatewayClass ?? WAYPOINT_GATEWAY_CLASS;
    const path = resourcePath(GATEWAY_API_VERSION, 'gatewayclasses', undefined, gcName.name);
    const a = await this.#o.api.get(path);
    if (a.status === 200) {
      const next = gatewayClassStatus(a.body as unknown as KubeObject, gcName.controllerName, (this.#o.now ?? (() => new Date().toISOString()))());
      if (next) {
        const w = await this.#o.api.mergePatch(`${path}/status`, { status: next });
        if (isRefusal(w.status)) log.warn('GatewayClass status refused', { gatewayClass: gcName.name, status: w.status, message: statusMessage(w) });
        else expectStatus(w, `writing the status of GatewayClass ${gcName.name}`, 200);
      }
    } else if (isRefusal(a.status) && a.status !== 404) {
      log.warn('GatewayClass not readable', { gatewayClass: gcName.name, status: a.status, message: statusMessage(a) });
    } else if (a.status !== 404) {
      expectStatus(a, `reading GatewayClass ${gcName.name}`, 200);
    }
    this.#classDone = true;
  }

  /** Deletes the objects of waypoint `key` (ns/name); absent ones are fine. */
  async #remove(key: string): Promise<void> {
    const [ns, name] = key.split('/') as [string, string];
    for (const k of [...WAYPOINT_KINDS].reverse()) {
      const n = k.kind === 'ConfigMap' ? caRootName(name) : name;
      const path = resourcePath(k.apiVersion, k.plural, ns, n);
      const a = await this.#o.api.delete(path);
      this.#applied.delete(path);
      if (a.status === 404) continue;
      expectStatus(a, `deleting ${k.kind} ${ns}/${n}`, 200, 202);
      log.info('waypoint object deleted', { object: `${k.kind} ${ns}/${n}` });
    }
    this.#clusterIPs.delete(key);
  }

  /** First run: whatever carries our label for a Gateway that is not a waypoint now goes. */
  async #sweep(wanted: ReadonlySet<string>): Promise<void> {
    const gone = new Set<string>();
    // each waypoint has one object of each kind: more pages than this means a server that loops
    const pageSize = this.#o.pageSize ?? 500;
    const maxPages = Math.ceil((this.#o.maxWaypoints ?? 1000) / pageSize) + 2;
    for (const k of WAYPOINT_KINDS) {
      const items: Json[] = [];
      let cont = '';
      for (let page = 0; page === 0 || cont; page++) {
        if (page >= maxPages) throw new MeshError('AMBIT_LIMIT', `listing ${k.plural}: more than ${maxPages} pages`);
        const q = new URLSearchParams({ labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY}`, limit: String(pageSize), ...(cont ? { continue: cont } : {}) });
        const a = expectStatus(await this.#o.api.get(`${resourcePath(k.apiVersion, k.plural)}?${q.toString()}`), `listing ${k.plural}`, 200);
        if (Array.isArray(a.body.items)) items.push(...a.body.items as Json[]);
        const c = (a.body.metadata as { continue?: unknown } | undefined)?.continue;
        cont = typeof c === 'string' ? c : '';
      }
      for (const it of items) {
        const md = (it.metadata ?? {}) as { namespace?: unknown; labels?: Record<string, unknown> };
        const gw = md.labels?.[GATEWAY_NAME_LABEL];
        if (typeof md.namespace !== 'string' || typeof gw !== 'string') continue;
        if (!wanted.has(keyOf(md.namespace, gw))) gone.add(keyOf(md.namespace, gw));
      }
    }
    for (const key of gone) await this.#remove(key);
  }
}

