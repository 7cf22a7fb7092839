/**
 * The contract between configuration sources (YAML directory, Kubernetes API) and the translator.
 * Sources hand over plain Kubernetes-shaped objects; the translator validates and converts them.
 */

/** A Kubernetes-shaped object as read from YAML or the API server. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: KubeMeta;
  spec?: unknown;
  status?: unknown;
  [k: string]: unknown;
}

export interface KubeMeta {
  name: string;
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  creationTimestamp?: string;
  generation?: number;
  [k: string]: unknown;
}

/**
 * Where configuration comes from. `onChange` receives the COMPLETE current set, after the initial load and after each change.
 * Objects are immutable once handed over: a changed resource is a new object (the translator caches its work per object,
 * so handing over the same reference for an unchanged resource makes updates cheap).
 */
export interface ConfigSource {
  start(onChange: (objects: readonly KubeObject[], origin: string) => void): Promise<void>;
  stop(): Promise<void>;
}

/** One resource (or one part of it) that could not be applied, or applied with a caveat. */
export interface Rejection {
  kind: string;
  namespace: string;
  name: string;
  /** dotted path of the offending field, e.g. `spec.rules[0].from[1].source.ipBlocks[2]` */
  field: string;
  message: string;
}

export interface WatchedKind {
  /** API group; '' for the core group */
  group: string;
  version: string;
  kind: string;
  /** resource name in the API path */
  plural: string;
  namespaced: boolean;
}

/** Kinds ambit reads. */
export const WATCHED_KINDS: readonly WatchedKind[] = [
  { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false },
  { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true },
  { group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'Gateway', plural: 'gateways', namespaced: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'HTTPRoute', plural: 'httproutes', namespaced: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'GRPCRoute', plural: 'grpcroutes', namespaced: true },
  { group: 'security.istio.io', version: 'v1', kind: 'AuthorizationPolicy', plural: 'authorizationpolicies', namespaced: true },
  { group: 'security.istio.io', version: 'v1', kind: 'PeerAuthentication', plural: 'peerauthentications', namespaced: true },
  { group: 'networking.istio.io', version: 'v1', kind: 'VirtualService', plural: 'virtualservices', namespaced: true },
  { group: 'networking.istio.io', version: 'v1', kind: 'DestinationRule', plural: 'destinationrules', namespaced: true },
];
