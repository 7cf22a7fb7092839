/**
 * Kubernetes objects (HTTPRoute, GRPCRoute, VirtualService, DestinationRule) -> per-Service L7 config.
 * Pure: no I/O. Each resource is validated on its own; a bad resource is rejected (named with kind,
 * namespace, name and field) and the others still apply.
 */
import type { Service } from '../../model/types.js';
import type { ServiceL7 } from '../../model/l7.js';
import type { KubeObject, Rejection } from '../config/types.js';

export interface L7Context {
  /** known Services by key `<namespace>/<hostname>` */
  readonly services: ReadonlyMap<string, Service>;
  /** mesh root namespace (e.g. `istio-system`) */
  readonly rootNamespace: string;
}

export interface L7Result {
  /** by Service key */
  l7: Map<string, ServiceL7>;
  /** resources (or parts) not applied */
  rejected: Rejection[];
  /** applied, with a caveat the user should see */
  warnings: Rejection[];
}

export function translateL7(objects: readonly KubeObject[], ctx: L7Context): L7Result {
  void objects; void ctx;
  return { l7: new Map(), rejected: [], warnings: [] };
}
