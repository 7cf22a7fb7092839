/**
 * Which of the objects handed over by a config source the translator reads, and the identity
 * (kind, namespace, name) each one is reported and remembered under.
 */
import type { KubeObject } from '../config/types.js';
import { isDnsLabel } from '../../core/index.js';
import { isObj } from './check.js';

export type Kind =
  | 'Namespace' | 'Pod' | 'Service' | 'Gateway' | 'AuthorizationPolicy' | 'PeerAuthentication'
  | 'HTTPRoute' | 'GRPCRoute' | 'VirtualService' | 'DestinationRule';

/** Kinds translated by ./l7.ts (waypoint configuration). */
export const L7_KINDS: ReadonlySet<Kind> = new Set<Kind>(['HTTPRoute', 'GRPCRoute', 'VirtualService', 'DestinationRule']);

const VERSIONS: Record<string, { kinds: readonly Kind[]; versions: readonly string[] }> = {
  '': { kinds: ['Namespace', 'Pod', 'Service'], versions: ['v1'] },
  'gateway.networking.k8s.io': { kinds: ['Gateway', 'HTTPRoute', 'GRPCRoute'], versions: ['v1', 'v1beta1', 'v1alpha2'] },
  'security.istio.io': { kinds: ['AuthorizationPolicy', 'PeerAuthentication'], versions: ['v1', 'v1beta1'] },
  'networking.istio.io': { kinds: ['VirtualService', 'DestinationRule'], versions: ['v1', 'v1beta1', 'v1alpha3'] },
};

/** The API group the translator reads `kind` from, or undefined for a kind it never reads. */
export function groupOfKind(kind: string): string | undefined {
  for (const [group, g] of Object.entries(VERSIONS)) if ((g.kinds as readonly string[]).includes(kind)) return group;
  return undefined;
}

export interface Identified {
  readonly kind: Kind;
  readonly namespace: string;
  readonly name: string;
  /** identity for de-duplication and last-good memory */
  readonly key: string;
  readonly obj: KubeObject;
}

export type IdentifyResult =
  | { readonly ok: Identified }
  | { readonly ignored: true }
  | {
    readonly error: { kind: string; namespace: string; name: string; field: string; message: string };
    /** when the kind and a name are known: enough to fall back on a last good version or fail closed */
    readonly partial?: Identified;
  };

/**
 * Recognise an object. Kinds ambit does not read are ignored (a YAML directory may also hold
 * Deployments and the like); a recognised kind with a broken metadata block is an error.
 */
export function identify(raw: unknown): IdentifyResult {
  if (!isObj(raw)) return { error: { kind: '', namespace: '', name: '', field: '', message: 'object is not a mapping' } };
  const kindText = typeof raw['kind'] === 'string' ? raw['kind'] : '';
  const apiVersion = typeof raw['apiVersion'] === 'string' ? raw['apiVersion'] : '';
  const slash = apiVersion.indexOf('/');
  const group = slash === -1 ? '' : apiVersion.slice(0, slash);
  const version = slash === -1 ? apiVersion : apiVersion.slice(slash + 1);
  const g = VERSIONS[group];
  if (!g || !(g.kinds as readonly string[]).includes(kindText)) return { ignored: true };
  const kind = kindText as Kind;
  const meta = raw['metadata'];
  const bad = (field: string, message: string): IdentifyResult => {
    const name = isObj(meta) && typeof meta['name'] === 'string' ? meta['name'] : '';
    const namespace = isObj(meta) && typeof meta['namespace'] === 'string' ? meta['namespace'] : '';
    const error = { kind, namespace, name, field, message: `${kind} ${namespace ? `${namespace}/` : ''}${name}: ${field}: ${message}` };
    if (!isObj(meta) || name === '' || kind === 'Namespace') return { error };
    const ns = namespace || 'default';
    return { error, partial: { kind, namespace: ns, name, key: `${group}/${kind}/${ns}/${name}`, obj: raw as KubeObject } };
  };
  if (!g.versions.includes(version)) return bad('apiVersion', `unsupported version "${apiVersion}" (supported: ${g.versions.map((v) => (group ? `${group}/${v}` : v)).join(', ')})`);
  if (!isObj(meta)) return bad('metadata', 'must be an object');
  const name = meta['name'];
  if (typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9._]{0,251}[a-z0-9])?$/.test(name)) {
    return bad('metadata.name', typeof name === 'string' ? `"${name}" is not a valid name` : 'is required');
  }
  let namespace = '';
  if (kind !== 'Namespace') {
    const ns = meta['namespace'];
    if (ns === undefined || ns === null || ns === '') namespace = 'default';
    else if (typeof ns !== 'string' || !isDnsLabel(ns)) return bad('metadata.namespace', 'is not a valid namespace name');
    else namespace = ns;
  }
  for (const f of ['labels', 'annotations'] as const) {
    const m = meta[f];
    if (m === undefined || m === null) continue;
    if (!isObj(m)) return bad(`metadata.${f}`, 'must be a map of strings');
    for (const [k, v] of Object.entries(m)) if (typeof v !== 'string') return bad(`metadata.${f}["${k}"]`, 'must be a string');
  }
  return { ok: { kind, namespace, name, key: `${group}/${kind}/${namespace}/${name}`, obj: raw as KubeObject } };
}

export function labelsOf(o: KubeObject): Readonly<Record<string, string>> {
  return o.metadata.labels ?? {};
}

export function annotationsOf(o: KubeObject): Readonly<Record<string, string>> {
  return o.metadata.annotations ?? {};
}
