/**
 * The control plane's own judgement of a set of objects, for tools that want to refuse what it
 * would reject before the objects reach it (`ambit apply`, `ambit analyze`): the same translator,
 * the same messages. Pure (no I/O); a fresh translator, so nothing falls back on a last good
 * version.
 */
import { objectKey, watchedKindOf } from './config/kinds.js';
import type { KubeObject, Rejection } from './config/types.js';
import { Translator } from './translate/index.js';
import type { TranslateResult } from './translate/index.js';
import { groupOfKind, identify } from './translate/kinds.js';
import type { ServiceL7 } from '../model/index.js';

export type { KubeObject, Rejection } from './config/types.js';
export { notAnObjectReason } from './config/kinds.js';

export interface ValidateOptions {
  /** SPIFFE trust domain; default `cluster.local` (the control plane's default) */
  readonly trustDomain?: string;
  /** mesh root namespace; default `istio-system` (the control plane's default) */
  readonly rootNamespace?: string;
}

export interface ValidateResult {
  /** what the control plane would not apply (the first definition of a duplicated key is kept) */
  readonly rejected: readonly Rejection[];
  /** applied with a caveat */
  readonly warnings: readonly Rejection[];
}

/** Translates `objects` as the control plane would and returns what it rejects and warns about. */
export function validateObjects(objects: readonly KubeObject[], o: ValidateOptions = {}): ValidateResult {
  const r = translate(objects, o);
  return { rejected: r.rejected, warnings: r.warnings };
}

function translate(objects: readonly KubeObject[], o: ValidateOptions): TranslateResult {
  const t = new Translator({ trustDomain: o.trustDomain ?? 'cluster.local', rootNamespace: o.rootNamespace ?? 'istio-system' });
  return t.update(objects);
}

export interface AnalyzeResult extends ValidateResult {
  /** objects the control plane does not read at all (a Deployment, a ConfigMap): for information */
  readonly ignored: readonly Rejection[];
}

/**
 * `ambit analyze`: what validateObjects says, and what the translator's result tells cheaply about
 * config that is accepted but has no effect, as warnings:
 * - an object of a kind the control plane reads, under another API group (a typo'd apiVersion):
 *   ignored as a whole;
 * - L7 config (VirtualService, HTTPRoute, GRPCRoute, DestinationRule) of a Service that has no
 *   waypoint: only waypoints apply L7 config, so nothing applies it;
 * - a DestinationRule subset that no route sends traffic to.
 * Objects of kinds it never reads are listed in `ignored`. Pure, like validateObjects.
 */
export function analyzeObjects(objects: readonly KubeObject[], o: ValidateOptions = {}): AnalyzeResult {
  const r = translate(objects, o);
  const warnings = [...r.warnings];
  const ignored: Rejection[] = [];
  for (const obj of objects) {
    if (!('ignored' in identify(obj))) continue;
    const id = { kind: String(obj.kind), namespace: obj.metadata?.namespace ?? '', name: String(obj.metadata?.name ?? '') };
    const group = groupOfKind(id.kind);
    if (group !== undefined) {
      warnings.push({ ...id, field: 'apiVersion', message: `${obj.kind} is read from API group ${group || 'core (apiVersion v1)'}, not from "${obj.apiVersion}"; this object is ignored` });
    } else {
      ignored.push({ ...id, field: 'kind', message: `${obj.apiVersion} ${obj.kind} is not read by the control plane; ignored` });
    }
  }
  warnings.push(...l7WithoutWaypoint(r), ...unusedSubsets(r.l7, objects));
  return { rejected: r.rejected, warnings, ignored };
}

const L7_FIELD: Record<string, string> = { VirtualService: 'spec.hosts', HTTPRoute: 'spec.parentRefs', GRPCRoute: 'spec.parentRefs', DestinationRule: 'spec.host' };

/** One warning per L7 object and Service without a waypoint it configures. */
function l7WithoutWaypoint(r: TranslateResult): Rejection[] {
  const out = new Map<string, Rejection>();
  for (const [key, l7] of r.l7) {
    const svc = r.snapshot.service(key);
    if (!svc || svc.waypoint) continue;
    const origins = [...l7.http, ...l7.grpc].map((x) => x.origin);
    if (l7.destination) origins.push(l7.destination.origin);
    for (const { kind, namespace, name } of origins) {
      const k = `${kind}/${namespace}/${name}/${key}`;
      if (out.has(k)) continue;
      out.set(k, { kind, namespace, name, field: L7_FIELD[kind] ?? 'spec',
        message: `Service ${svc.namespace}/${svc.name} has no waypoint (istio.io/use-waypoint); only a waypoint applies ${kind} config, so this has no effect on it` });
    }
  }
  return [...out.values()];
}

/** Subsets of the DestinationRule in effect for a Service that no route (backend or mirror) names. */
function unusedSubsets(l7: ReadonlyMap<string, ServiceL7>, objects: readonly KubeObject[]): Rejection[] {
  const used = new Set<string>();
  for (const s of l7.values()) {
    for (const rt of [...s.http, ...s.grpc]) {
      for (const b of [...rt.action.backends, ...rt.action.mirrors]) if (b.service && b.subset) used.add(`${b.service}\0${b.subset}`);
    }
  }
  const out: Rejection[] = [];
  for (const [key, s] of l7) {
    const d = s.destination;
    if (!d) continue;
    // the index as written: the field names the subset in the file
    const raw = objects.find((x) => x.kind === 'DestinationRule' && (x.metadata.namespace ?? 'default') === d.origin.namespace && x.metadata.name === d.origin.name);
    const written = (raw?.spec as { subsets?: Array<{ name?: unknown }> } | undefined)?.subsets;
    for (const sub of d.subsets) {
      if (used.has(`${key}\0${sub.name}`)) continue;
      const i = Array.isArray(written) ? written.findIndex((x) => x?.name === sub.name) : -1;
      out.push({ kind: 'DestinationRule', namespace: d.origin.namespace, name: d.origin.name, field: i >= 0 ? `spec.subsets[${i}]` : 'spec.subsets',
        message: `subset ${JSON.stringify(sub.name)} is used by no route (VirtualService destination or mirror); it has no effect` });
    }
  }
  return out;
}

/**
 * Whether the control plane reads this kind, and if so whether it is namespaced; undefined for
 * kinds it ignores.
 */
export function watchedKind(obj: { apiVersion: string; kind: string }): { namespaced: boolean } | undefined {
  const k = watchedKindOf(obj);
  return k && { namespaced: k.namespaced };
}

/** The identity the control plane keys objects by: `<group>/<kind>/<namespace>/<name>`. */
export function controlObjectKey(obj: KubeObject): string {
  return objectKey(obj);
}
