/**
 * PeerAuthentication in ambient mode. The node agent never sees PeerAuthentication itself: a
 * workload whose effective mode is STRICT references a DENY policy that refuses connections
 * without a peer identity (plaintext), and port-level exceptions become a per-policy DENY with the
 * ports carved out (or in).
 *
 * Effective mode: workload (selector) over namespace over mesh (root namespace); at one level the
 * oldest policy wins; UNSET inherits; nothing set means PERMISSIVE. DISABLE is not supported in
 * ambient mode and is ignored (inherits), with a warning.
 */
import type { Authorization, AuthzMatch } from '../../model/index.js';
import { STATIC_STRICT_POLICY } from '../../model/index.js';
import type { KubeObject } from '../config/types.js';
import type { Check } from './check.js';
import { looseSelector, readSelector } from './authz.js';

export type MtlsMode = 'UNSET' | 'PERMISSIVE' | 'STRICT';

export interface PeerAuthnInfo {
  readonly name: string;
  readonly namespace: string;
  /** ms since epoch; +Infinity when unknown (sorts after every dated policy) */
  readonly created: number;
  readonly selector?: Readonly<Record<string, string>>;
  readonly mode: MtlsMode;
  /** workload (target) port -> mode; only with a selector */
  readonly ports: ReadonlyMap<number, MtlsMode>;
}

const MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];

function readMode(v: unknown, field: string, c: Check, portLevel: boolean): MtlsMode | undefined {
  const m = c.str(v, field);
  if (m === undefined) return 'UNSET';
  if (!MODES.includes(m)) return c.reject(field, `"${m}" is not one of ${MODES.join(', ')}`);
  if (m === 'DISABLE') {
    if (portLevel) {
      c.warn(field, 'DISABLE is not supported in ambient mode; the port accepts plaintext and mTLS (PERMISSIVE)');
      return 'PERMISSIVE';
    }
    c.warn(field, 'DISABLE is not supported in ambient mode and is ignored; the namespace or mesh mode applies');
    return 'UNSET';
  }
  return m as MtlsMode;
}

export function readPeerAuthentication(o: KubeObject, namespace: string, rootNamespace: string, c: Check): PeerAuthnInfo | undefined {
  const spec = c.obj(o.spec, 'spec') ?? {};
  c.known(spec, 'spec', ['selector', 'mtls', 'portLevelMtls']);
  const { selector } = readSelector(spec, c);
  const mtls = c.obj(spec['mtls'], 'spec.mtls');
  if (mtls) c.known(mtls, 'spec.mtls', ['mode']);
  const mode = readMode(mtls?.['mode'], 'spec.mtls.mode', c, false);
  const ports = new Map<number, MtlsMode>();
  const pl = c.obj(spec['portLevelMtls'], 'spec.portLevelMtls');
  if (pl) {
    if (!selector) c.reject('spec.portLevelMtls', 'requires a selector (port-level modes apply to selected workloads)');
    for (const [k, v] of Object.entries(pl)) {
      const f = `spec.portLevelMtls["${k}"]`;
      const port = c.port(k, f);
      const entry = c.obj(v, f);
      if (!entry) { if (v === undefined || v === null) c.reject(f, 'needs {mode: ...}'); continue; }
      c.known(entry, f, ['mode']);
      const m = readMode(entry['mode'], `${f}.mode`, c, true);
      if (port !== undefined && m !== undefined) ports.set(port, m);
    }
  }
  if (!c.ok || mode === undefined) return undefined;
  if (selector && namespace === rootNamespace) {
    c.warn('spec.selector', 'selector policies in the root namespace are ignored');
    return undefined;
  }
  return {
    name: o.metadata.name, namespace, created: createdMs(o),
    ...(selector ? { selector } : {}), mode, ports,
  };
}

/** creationTimestamp in ms; +Infinity when missing or unreadable (YAML files often have none). */
function createdMs(o: KubeObject): number {
  const ts = o.metadata.creationTimestamp;
  const t = typeof ts === 'string' ? Date.parse(ts) : NaN;
  return Number.isNaN(t) ? Infinity : t;
}

/** Oldest first; ties (and undated YAML) by name so the result never depends on input order. */
export function olderFirst(a: PeerAuthnInfo, b: PeerAuthnInfo): number {
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

const NO_IDENTITY: AuthzMatch = { notPrincipals: [{ presence: true }] };

/** DENY every connection that has no peer identity. */
export function staticStrictPolicy(rootNamespace: string): Authorization {
  return {
    name: STATIC_STRICT_POLICY, namespace: rootNamespace, scope: 'workload', action: 'deny', dryRun: false,
    rules: [{ clauses: [{ matches: [NO_IDENTITY] }] }],
  };
}

export function convertedPolicyName(pa: { name: string }): string {
  return `converted_peer_authentication_${pa.name}`;
}

/**
 * The per-policy DENY for a workload PeerAuthentication with port-level modes, given the
 * workload's effective base mode. Returns undefined when no port changes the base mode.
 * One rule, two clauses (ANDed): "no identity" and "port in / not in the list" — each port list
 * in a single match so ports OR within the field (getting this AND/OR wrong made port-level STRICT
 * effectively permissive in the anchor once, istio#54146).
 */
export function convertedPortPolicy(pa: PeerAuthnInfo, base: 'PERMISSIVE' | 'STRICT'): Authorization | undefined {
  const flip: number[] = [];
  for (const [port, m] of pa.ports) {
    if (m === 'UNSET' || m === base) continue;
    flip.push(port);
  }
  if (flip.length === 0) return undefined;
  flip.sort((a, b) => a - b);
  const portMatch: AuthzMatch = base === 'STRICT' ? { notDestinationPorts: flip } : { destinationPorts: flip };
  return {
    name: convertedPolicyName(pa), namespace: pa.namespace, scope: 'workload', action: 'deny', dryRun: false,
    rules: [{ clauses: [{ matches: [NO_IDENTITY] }, { matches: [portMatch] }] }],
  };
}

/** A rejected PeerAuthentication counts as STRICT for what it covers (an unreadable selector: its namespace). */
export function failClosedPeerAuthentication(o: KubeObject, namespace: string, rootNamespace: string): PeerAuthnInfo | undefined {
  const sel = looseSelector(o.spec);
  const selector = sel === 'unreadable' ? undefined : sel;
  if (selector && namespace === rootNamespace) return undefined;
  return {
    name: o.metadata.name, namespace, created: createdMs(o),
    ...(selector ? { selector } : {}), mode: 'STRICT', ports: new Map(),
  };
}
