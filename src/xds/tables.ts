/**
 * Server side: the model turned into per-type tables of encoded resources (name -> version and
 * payload), and a store that keeps the current tables plus the last delta of each type so one
 * encoded frame can be shared by every client that is in sync.
 */
import { createHash, hash } from 'node:crypto';
import type { Snapshot } from '../model/index.js';
import { authorizationKey, serviceKey } from '../model/index.js';
import { errorMessage } from '../core/index.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, TYPE_URLS, WAYPOINT_CONFIG_TYPE, encodeControlMessage } from './codec.js';
import type { TypeUrl, WireResource } from './codec.js';
import { encodeAuthorization, encodeService, encodeWaypoint, encodeWaypointConfig, encodeWorkload, waypointResourceName } from './convert.js';
import type { ServiceL7 } from '../model/index.js';

export interface ResourceEntry {
  /** content hash: equal payloads have equal versions across control-plane restarts */
  readonly version: string;
  readonly payload: Uint8Array;
}
export type ResourceTable = Map<string, ResourceEntry>;
export type ResourceTables = Map<TypeUrl, ResourceTable>;

function entry(payload: Uint8Array): ResourceEntry {
  // crypto.hash (Node >= 20.12) is the one-shot form, about twice as fast for small inputs
  const digest = typeof hash === 'function' ? hash('sha1', payload, 'base64url') : createHash('sha1').update(payload).digest('base64url');
  return { version: digest.slice(0, 16), payload };
}

/**
 * Encoding is the expensive part of a push; the translator keeps unchanged model objects
 * identical between updates, so an identity cache makes a one-workload change cost one encode.
 */
const cache = new WeakMap<object, ResourceEntry>();
function cached(obj: object, enc: () => Uint8Array): ResourceEntry {
  let e = cache.get(obj);
  if (!e) cache.set(obj, (e = entry(enc())));
  return e;
}

export interface BuildResult {
  tables: ResourceTables;
  /** model objects that could not be encoded (bad IP text...) */
  rejected: { name: string; message: string }[];
}

/** Build the tables for a snapshot and the per-service L7 configs. */
export function buildResourceTables(snap: Snapshot, l7: ReadonlyMap<string, ServiceL7> = new Map()): BuildResult {
  const rejected: { name: string; message: string }[] = [];
  const add = (t: ResourceTable, name: string, obj: object, enc: () => Uint8Array) => {
    try { t.set(name, cached(obj, enc)); } catch (e) { rejected.push({ name, message: errorMessage(e) }); }
  };
  const address: ResourceTable = new Map();
  for (const w of snap.workloads) add(address, w.uid, w, () => encodeWorkload(w));
  for (const s of snap.services) add(address, serviceKey(s), s, () => encodeService(s));
  for (const w of snap.waypoints) add(address, waypointResourceName(w), w, () => encodeWaypoint(w));
  const authz: ResourceTable = new Map();
  for (const a of snap.authorizations) add(authz, authorizationKey(a), a, () => encodeAuthorization(a));
  const wp: ResourceTable = new Map();
  for (const [k, v] of l7) add(wp, k, v, () => encodeWaypointConfig(k, v));
  return { tables: new Map([[ADDRESS_TYPE, address], [AUTHORIZATION_TYPE, authz], [WAYPOINT_CONFIG_TYPE, wp]]), rejected };
}

interface Delta {
  readonly generation: number;
  readonly version: string;
  readonly changed: WireResource[];
  readonly removed: string[];
  frame?: Uint8Array;
}

interface TypeState {
  table: ResourceTable;
  generation: number;
  version: string;
  delta?: Delta;
}

/** Current tables and the last step of each type. Single writer: the push server. */
export class ResourceStore {
  #counter = 0;
  readonly #types = new Map<TypeUrl, TypeState>();

  constructor() {
    for (const t of TYPE_URLS) this.#types.set(t, { table: new Map(), generation: 0, version: '0' });
  }

  /** Global version: bumped by every update that changed something. */
  get version(): string { return String(this.#counter); }

  /** Replace the tables; returns the types that changed (their delta is ready to send). */
  update(tables: ResourceTables): TypeUrl[] {
    const changedTypes: TypeUrl[] = [];
    const next = this.#counter + 1;
    for (const [type, table] of tables) {
      const st = this.#types.get(type)!;
      const changed: WireResource[] = [];
      const removed: string[] = [];
      for (const [name, e] of table) {
        if (st.table.get(name)?.version !== e.version) changed.push({ name, version: e.version, payload: e.payload });
      }
      for (const name of st.table.keys()) if (!table.has(name)) removed.push(name);
      if (changed.length === 0 && removed.length === 0) continue;
      st.table = table;
      st.generation++;
      st.version = String(next);
      st.delta = { generation: st.generation, version: st.version, changed, removed };
      changedTypes.push(type);
    }
    if (changedTypes.length) this.#counter = next;
    return changedTypes;
  }

  table(type: TypeUrl): ReadonlyMap<string, ResourceEntry> { return this.#types.get(type)!.table; }
  generation(type: TypeUrl): number { return this.#types.get(type)!.generation; }
  typeVersion(type: TypeUrl): string { return this.#types.get(type)!.version; }

  /** The encoded response of the last step of `type`, shared by all in-sync clients. */
  deltaFrame(type: TypeUrl): { frame: Uint8Array; nonce: string; generation: number; version: string; count: number } | undefined {
    const d = this.#types.get(type)!.delta;
    if (!d) return undefined;
    const nonce = `d${d.generation}`;
    d.frame ??= encodeControlMessage({
      kind: 'deltaResponse',
      deltaResponse: { typeUrl: type, systemVersionInfo: d.version, nonce, resources: d.changed, removedResources: d.removed },
    });
    return { frame: d.frame, nonce, generation: d.generation, version: d.version, count: d.changed.length + d.removed.length };
  }
}
