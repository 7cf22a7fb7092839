/**
 * Helpers shared by the configuration sources: which watched kind an object is, its identity, and the
 * shape check every source applies before handing an object on.
 */
import { WATCHED_KINDS } from './types.js';
import type { KubeObject, WatchedKind } from './types.js';

/** API group of an `apiVersion` (`networking.istio.io/v1` -> `networking.istio.io`, `v1` -> ''). */
export function groupOf(apiVersion: string): string {
  const slash = apiVersion.indexOf('/');
  return slash < 0 ? '' : apiVersion.slice(0, slash);
}

/**
 * The watched kind an object belongs to, matched on group and kind only: users write older versions
 * (`networking.istio.io/v1beta1`, `v1alpha3`) of the same resources and expect them to work.
 */
export function watchedKindOf(obj: { apiVersion: string; kind: string }, kinds: readonly WatchedKind[] = WATCHED_KINDS): WatchedKind | undefined {
  const group = groupOf(obj.apiVersion);
  return kinds.find((k) => k.kind === obj.kind && k.group === group);
}

/** Identity of an object across sources: `<group>/<kind>/<namespace>/<name>` (namespace '' when cluster-scoped). */
export function objectKey(obj: KubeObject): string {
  return `${groupOf(obj.apiVersion)}/${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Why `v` is not a Kubernetes object, or undefined when it is one. */
export function notAnObjectReason(v: unknown): string | undefined {
  if (!isRecord(v)) return 'not a mapping';
  if (typeof v.apiVersion !== 'string' || v.apiVersion === '') return 'apiVersion: missing or not a string';
  if (typeof v.kind !== 'string' || v.kind === '') return 'kind: missing or not a string';
  if (!isRecord(v.metadata)) return 'metadata: missing or not a mapping';
  if (typeof v.metadata.name !== 'string' || v.metadata.name === '') return 'metadata.name: missing or not a string';
  if (v.metadata.namespace !== undefined && typeof v.metadata.namespace !== 'string') return 'metadata.namespace: not a string';
  return undefined;
}

export function isKubeObject(v: unknown): v is KubeObject {
  return notAnObjectReason(v) === undefined;
}
