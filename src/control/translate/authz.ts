/**
 * Istio AuthorizationPolicy -> L4 Authorization for the node agent.
 *
 * Shape: policy = OR of rules; rule = AND of clauses (its from, its to, each when condition);
 * clause = OR of matches (one per source / operation). Fields the node agent cannot see (HTTP
 * attributes, JWT principals, remote IPs, trust domains) are handled so the result errs towards
 * denying:
 *  - ALLOW: a rule that uses any of them is dropped whole, so the policy allows less;
 *  - DENY: they are stripped; a source/operation/condition left empty becomes an empty match,
 *    which matches nothing, so a rule whose clause was only L7 never fires.
 * Policies with targetRefs belong to waypoints and are not sent to the node agent.
 */
import type { Authorization, AuthzClause, AuthzMatch, AuthzRule, Cidr, StringMatch } from '../../model/index.js';
import type { L7Authorization, L7Condition, L7Operation, L7PathPattern, L7Rule, L7Source } from '../../model/index.js';
import { parseCidr } from '../../model/index.js';
import type { KubeObject } from '../config/types.js';
import type { Check, Obj } from './check.js';
import { isObj } from './check.js';
import { annotationsOf } from './kinds.js';

export const DRY_RUN_ANNOTATION = 'istio.io/dry-run';
const MAX_TARGET_REFS = 16;

export interface AuthzInfo {
  readonly name: string;
  readonly namespace: string;
  /** matchLabels; undefined: namespace (or mesh) wide */
  readonly selector?: Readonly<Record<string, string>>;
  /** undefined: not for the node agent (targetRefs, AUDIT) */
  readonly authorization?: Authorization;
  /** targetRefs policies: enforced by the waypoints of what they target (see attachL7Authorizations) */
  readonly waypoint?: { readonly targets: readonly PolicyTarget[]; readonly policy: L7Authorization };
}

/**
 * What a targetRefs policy applies to: a waypoint Gateway (every Service bound to it), a GatewayClass (every
 * waypoint of the class; root namespace only), a Service. `Namespace` only comes from a rejected policy whose
 * targets cannot be read: every waypoint-bound Service of the namespace then denies (fail closed).
 */
export interface PolicyTarget {
  readonly kind: 'Gateway' | 'GatewayClass' | 'Service' | 'Namespace';
  readonly namespace: string;
  readonly name: string;
}

const SPEC_FIELDS = ['selector', 'targetRef', 'targetRefs', 'action', 'provider', 'rules'];
const RULE_FIELDS = ['from', 'to', 'when'];
const SOURCE_FIELDS = [
  'principals', 'notPrincipals', 'requestPrincipals', 'notRequestPrincipals', 'namespaces', 'notNamespaces',
  'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks', 'serviceAccounts', 'notServiceAccounts',
  'trustDomains', 'notTrustDomains',
];
/** Source fields the node agent cannot enforce. */
const SOURCE_L7 = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks', 'trustDomains', 'notTrustDomains'];
const OPERATION_FIELDS = ['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'];
const OPERATION_L7 = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'];
const TARGET_KINDS = ['Gateway', 'GatewayClass', 'Service', 'ServiceEntry'];

/** `when` keys the node agent enforces. */
const L4_WHEN = new Set(['source.ip', 'source.namespace', 'source.principal', 'destination.ip', 'destination.port']);
/** `when` keys that are valid but only a waypoint can evaluate. */
function isL7WhenKey(k: string): boolean {
  return /^request\.headers\[[^\]]+\]$/.test(k)
    || /^request\.auth\.claims(\[[^\]]+\])+$/.test(k)
    || ['remote.ip', 'source.serviceAccount', 'source.trustDomain', 'request.auth.principal', 'request.auth.audiences',
      'request.auth.presenter', 'connection.sni'].includes(k)
    || k.startsWith('experimental.envoy.filters.');
}

/** Istio string syntax: `*` presence, `x*` prefix, `*x` suffix, else exact (a `*` in the middle is literal). */
export function stringMatch(v: string): StringMatch {
  if (v === '*') return { presence: true };
  if (v.length > 1 && v.endsWith('*')) return { prefix: v.slice(0, -1) };
  if (v.length > 1 && v.startsWith('*')) return { suffix: v.slice(1) };
  return { exact: v };
}

/** Principals are compared without `spiffe://`, so strip it from what users write. */
function principalMatch(v: string): StringMatch {
  return stringMatch(v.startsWith('spiffe://') ? v.slice('spiffe://'.length) : v);
}

const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Every field of one source/operation/condition read as L4 matches, plus what L7 content it had. */
interface Part {
  readonly match: AuthzMatch;
  readonly l7: string[];
}

export function readAuthorizationPolicy(o: KubeObject, namespace: string, rootNamespace: string, trustDomain: string, c: Check): AuthzInfo | undefined {
  const name = o.metadata.name;
  const spec = c.obj(o.spec, 'spec') ?? {};
  c.known(spec, 'spec', SPEC_FIELDS);

  let dryRun = false;
  const dr = annotationsOf(o)[DRY_RUN_ANNOTATION];
  if (dr !== undefined) {
    if (dr === 'true') dryRun = true;
    else if (dr !== 'false') c.reject(`metadata.annotations["${DRY_RUN_ANNOTATION}"]`, `"${dr}" is not "true" or "false"`);
  }

  const { given: hasSelector, selector } = readSelector(spec, c);
  const targets = readTargetRefs(spec, namespace, rootNamespace, c);
  const targeted = targets !== undefined;
  if (hasSelector && targeted) c.reject('spec.selector', 'selector and targetRefs are mutually exclusive');

  const actionRaw = c.str(spec['action'], 'spec.action') ?? 'ALLOW';
  const provider = spec['provider'];
  if (provider !== undefined && actionRaw !== 'CUSTOM') c.reject('spec.provider', 'is only valid with action CUSTOM');
  let action: 'allow' | 'deny' | undefined;
  switch (actionRaw) {
    case 'ALLOW': action = 'allow'; break;
    case 'DENY': action = 'deny'; break;
    case 'AUDIT':
      c.warn('spec.action', `AUDIT is not supported by ${targeted ? 'waypoints' : 'the node agent'}; the policy never changes a decision and is ignored`);
      break;
    case 'CUSTOM':
      c.reject('spec.action', targeted
        ? 'CUSTOM is not supported: ambit has no external authorizer; what the policy targets denies every request until it is changed (fail closed)'
        : 'CUSTOM is not supported by the node agent (and ambit has no external authorizer); what it selects denies every connection until it is changed (fail closed)');
      break;
    default:
      c.reject('spec.action', `"${actionRaw}" is not one of ALLOW, DENY, AUDIT, CUSTOM`);
  }

  // Validate the rules whatever the destination, so a typo is reported even for waypoint policies.
  const rules: AuthzRule[] = [];
  const dropped: string[] = [];
  const stripped: string[] = [];
  let neverFires = 0;
  const rawRules = c.list(spec['rules'], 'spec.rules', (x, f) => c.obj(x, f) ?? (x === null ? {} : undefined));
  rawRules?.forEach((r, i) => {
    const f = `spec.rules[${i}]`;
    c.known(r, f, RULE_FIELDS);
    const clauses: AuthzClause[] = [];
    const l7: string[] = [];
    let empty = false;
    const addClause = (parts: Part[]): void => {
      for (const p of parts) l7.push(...p.l7);
      const matches = parts.map((p) => p.match);
      if (matches.every((m) => Object.keys(m).length === 0)) empty = true;
      clauses.push({ matches });
    };
    const from = c.list(r['from'], `${f}.from`, (x, ff) => {
      const e = c.obj(x, ff);
      if (!e) return undefined;
      c.known(e, ff, ['source']);
      const s = c.obj(e['source'], `${ff}.source`);
      if (!s) return c.reject(`${ff}.source`, 'is required');
      return readSource(s, `${ff}.source`, namespace, trustDomain, c);
    });
    if (from && from.length > 0) addClause(from);
    const to = c.list(r['to'], `${f}.to`, (x, ff) => {
      const e = c.obj(x, ff);
      if (!e) return undefined;
      c.known(e, ff, ['operation']);
      const op = c.obj(e['operation'], `${ff}.operation`);
      if (!op) return c.reject(`${ff}.operation`, 'is required');
      return readOperation(op, `${ff}.operation`, c);
    });
    if (to && to.length > 0) addClause(to);
    const when = c.list(r['when'], `${f}.when`, (x, ff) => {
      const e = c.obj(x, ff);
      return e ? readCondition(e, ff, c) : undefined;
    });
    for (const w of when ?? []) addClause([w]);
    if (l7.length > 0) {
      const what = `rule ${i} (${[...new Set(l7)].join(', ')})`;
      if (action === 'allow') { dropped.push(what); return; }
      stripped.push(what);
      if (empty) neverFires++;
    }
    rules.push({ clauses });
  });

  if (!targeted && action === 'allow' && dropped.length > 0) {
    c.warn('spec.rules', `HTTP-only fields cannot be enforced by the node agent; dropped ${dropped.join('; ')}, so this ALLOW policy allows less (fail closed)${rules.length === 0 ? ' and now allows nothing' : ''}`);
  }
  if (!targeted && action === 'deny' && stripped.length > 0) {
    if (neverFires === rules.length) c.warn('spec.rules', `has no enforceable rules at the node agent and will have no effect there: ${stripped.join('; ')} match only HTTP attributes`);
    else c.warn('spec.rules', `enforced at the node agent without the HTTP rules: ${stripped.join('; ')}`);
  }

  if (!c.ok) return undefined;
  if (targeted) {
    if (action === undefined) return { name, namespace };
    const policy: L7Authorization = { name, namespace, action, dryRun, rules: readL7Rules(spec, namespace, trustDomain) };
    if (targets.length === 0) c.warn('spec.targetRefs', 'no target ambit can enforce this policy at; it has no effect');
    return { name, namespace, waypoint: { targets, policy } };
  }
  if (action === undefined) return { name, namespace };
  const scope: Authorization['scope'] = selector ? 'workload' : namespace === rootNamespace ? 'global' : 'namespace';
  return {
    name, namespace, ...(selector ? { selector } : {}),
    authorization: { name, namespace, scope, action, dryRun, rules },
  };
}

function readTargetRefs(spec: Obj, namespace: string, rootNamespace: string, c: Check): PolicyTarget[] | undefined {
  const out: PolicyTarget[] = [];
  const refs: Obj[] = [];
  const single = c.obj(spec['targetRef'], 'spec.targetRef');
  if (single) refs.push(single);
  const many = c.list(spec['targetRefs'], 'spec.targetRefs', (x, f) => c.obj(x, f));
  if (single && many) c.reject('spec.targetRef', 'targetRef and targetRefs are mutually exclusive');
  if (many) {
    if (many.length > MAX_TARGET_REFS) c.reject('spec.targetRefs', `has ${many.length} entries, at most ${MAX_TARGET_REFS} are allowed`);
    refs.push(...many);
  }
  refs.forEach((r, i) => {
    const f = single && i === 0 ? 'spec.targetRef' : `spec.targetRefs[${single ? i - 1 : i}]`;
    c.known(r, f, ['group', 'kind', 'name', 'namespace']);
    const kind = c.str(r['kind'], `${f}.kind`);
    if (kind === undefined) c.reject(`${f}.kind`, 'is required');
    else if (!TARGET_KINDS.includes(kind)) c.reject(`${f}.kind`, `"${kind}" is not one of ${TARGET_KINDS.join(', ')}`);
    const n = c.str(r['name'], `${f}.name`);
    if (!n) c.reject(`${f}.name`, 'is required');
    const group = c.str(r['group'], `${f}.group`);
    const ns = c.str(r['namespace'], `${f}.namespace`);
    if (ns !== undefined && ns !== namespace) c.reject(`${f}.namespace`, `must be the policy's own namespace ${namespace}, got "${ns}"`);
    if (kind === undefined || !n) return;
    const wantGroup = kind === 'Service' ? '' : kind === 'ServiceEntry' ? 'networking.istio.io' : 'gateway.networking.k8s.io';
    if (group !== undefined && group !== wantGroup && !(kind === 'Service' && group === 'core')) c.reject(`${f}.group`, `a ${kind} target has group "${wantGroup}", got "${group}"`);
    if (kind === 'ServiceEntry') { c.warn(f, 'ServiceEntry targets are not supported (ambit has no ServiceEntry); this target is ignored'); return; }
    if (kind === 'GatewayClass' && namespace !== rootNamespace) { c.reject(`${f}.kind`, `a GatewayClass target is only allowed in the root namespace ${rootNamespace}`); return; }
    if (kind === 'Gateway' || kind === 'GatewayClass' || kind === 'Service') out.push({ kind, namespace, name: n });
  });
  return refs.length > 0 ? out : undefined;
}

function stringValues(o: Obj, key: string, field: string, c: Check): string[] | undefined {
  const xs = c.strList(o[key], `${field}.${key}`);
  if (!xs) return undefined;
  xs.forEach((x, i) => { if (x === '') c.reject(`${field}.${key}[${i}]`, 'must not be empty'); });
  return xs.length > 0 ? xs : undefined;
}

function cidrValues(o: Obj, key: string, field: string, c: Check): Cidr[] | undefined {
  const xs = stringValues(o, key, field, c);
  if (!xs) return undefined;
  return cidrList(xs, `${field}.${key}`, c);
}

function cidrList(xs: readonly string[], field: string, c: Check): Cidr[] {
  const out: Cidr[] = [];
  xs.forEach((x, i) => {
    const r = parseCidr(x);
    if ('error' in r) c.reject(`${field}[${i}]`, r.error);
    else out.push(r);
  });
  return out;
}

function portList(xs: readonly unknown[], field: string, c: Check): number[] {
  const out: number[] = [];
  xs.forEach((x, i) => {
    const p = c.port(x, `${field}[${i}]`);
    if (p !== undefined) out.push(p);
  });
  return out;
}

function readSource(s: Obj, f: string, namespace: string, trustDomain: string, c: Check): Part {
  c.known(s, f, SOURCE_FIELDS);
  const m: { -readonly [K in keyof AuthzMatch]: AuthzMatch[K] } = {};
  const l7: string[] = [];
  for (const k of SOURCE_L7) if (stringValues(s, k, f, c)) l7.push(k);
  const remote = ['remoteIpBlocks', 'notRemoteIpBlocks'];
  for (const k of remote) {
    const xs = s[k];
    if (Array.isArray(xs)) cidrList(xs.filter((x): x is string => typeof x === 'string'), `${f}.${k}`, c);
  }
  const principals = stringValues(s, 'principals', f, c);
  const notPrincipals = stringValues(s, 'notPrincipals', f, c);
  const namespaces = stringValues(s, 'namespaces', f, c);
  const notNamespaces = stringValues(s, 'notNamespaces', f, c);
  const sas = readServiceAccounts(s, 'serviceAccounts', f, namespace, trustDomain, c);
  const notSas = readServiceAccounts(s, 'notServiceAccounts', f, namespace, trustDomain, c);
  if (sas && (principals || namespaces)) c.reject(`${f}.serviceAccounts`, 'cannot be combined with principals or namespaces');
  if (notSas && (notPrincipals || notNamespaces)) c.reject(`${f}.notServiceAccounts`, 'cannot be combined with notPrincipals or notNamespaces');
  const p = [...(principals ?? []).map(principalMatch), ...(sas ?? [])];
  const np = [...(notPrincipals ?? []).map(principalMatch), ...(notSas ?? [])];
  if (p.length) m.principals = p;
  if (np.length) m.notPrincipals = np;
  if (namespaces) m.namespaces = namespaces.map(stringMatch);
  if (notNamespaces) m.notNamespaces = notNamespaces.map(stringMatch);
  const ips = cidrValues(s, 'ipBlocks', f, c);
  const notIps = cidrValues(s, 'notIpBlocks', f, c);
  if (ips?.length) m.sourceIps = ips;
  if (notIps?.length) m.notSourceIps = notIps;
  return { match: m, l7 };
}

/**
 * `ns/sa` or `sa` (in the policy's namespace) -> the exact principal. Exact comparison, never a
 * pattern: a `.` in a name is a literal dot (CVE-2026-39350 came from compiling it as a regex).
 */
function readServiceAccounts(s: Obj, key: string, f: string, namespace: string, trustDomain: string, c: Check): StringMatch[] | undefined {
  const xs = stringValues(s, key, f, c);
  if (!xs) return undefined;
  const out: StringMatch[] = [];
  xs.forEach((x, i) => {
    const parts = x.split('/');
    const [ns, sa] = parts.length === 1 ? [namespace, parts[0] as string] : [parts[0] as string, parts[1] as string];
    if (parts.length > 2 || !K8S_NAME.test(ns) || !K8S_NAME.test(sa)) {
      c.reject(`${f}.${key}[${i}]`, `"${x}" is not "<namespace>/<serviceaccount>" or "<serviceaccount>" (no wildcards)`);
      return;
    }
    out.push({ exact: `${trustDomain}/ns/${ns}/sa/${sa}` });
  });
  return out;
}

/** Path syntax, including `{*}` / `{**}` templates, checked even though only a waypoint uses paths. */
function checkPath(p: string, field: string, c: Check): void {
  if (!p.includes('{') && !p.includes('}')) return;
  const segs = p.split('/');
  let sawDouble = false;
  for (const seg of segs) {
    if (!seg.includes('{') && !seg.includes('}')) continue;
    if (seg !== '{*}' && seg !== '{**}') { c.reject(field, `"${p}": a path template operator must be a whole segment, {*} or {**}`); return; }
    if (sawDouble) { c.reject(field, `"${p}": {**} must be the last template operator`); return; }
    if (seg === '{**}') sawDouble = true;
  }
  if (p.includes('*') && p.replace(/\{\*\*?\}/g, '').includes('*')) c.reject(field, `"${p}": a path template cannot also use "*" wildcards`);
}

function readOperation(op: Obj, f: string, c: Check): Part {
  c.known(op, f, OPERATION_FIELDS);
  const m: { -readonly [K in keyof AuthzMatch]: AuthzMatch[K] } = {};
  const l7: string[] = [];
  for (const k of OPERATION_L7) {
    const xs = stringValues(op, k, f, c);
    if (!xs) continue;
    l7.push(k);
    if (k === 'paths' || k === 'notPaths') xs.forEach((x, i) => checkPath(x, `${f}.${k}[${i}]`, c));
  }
  for (const [k, target] of [['ports', 'destinationPorts'], ['notPorts', 'notDestinationPorts']] as const) {
    const xs = c.list(op[k], `${f}.${k}`, (x) => x);
    if (!xs || xs.length === 0) continue;
    const ports = portList(xs, `${f}.${k}`, c);
    if (ports.length) m[target] = ports;
  }
  return { match: m, l7 };
}

function readCondition(w: Obj, f: string, c: Check): Part | undefined {
  c.known(w, f, ['key', 'values', 'notValues']);
  const key = c.str(w['key'], `${f}.key`);
  if (!key) return c.reject(`${f}.key`, 'is required');
  const values = stringValues(w, 'values', f, c);
  const notValues = stringValues(w, 'notValues', f, c);
  if (!values && !notValues) return c.reject(f, 'needs values or notValues');
  if (!L4_WHEN.has(key)) {
    if (isL7WhenKey(key)) return { match: {}, l7: [`when ${key}`] };
    return c.reject(`${f}.key`, `unknown key "${key}" (node agent keys: ${[...L4_WHEN].join(', ')}; waypoint keys: request.headers[...], request.auth.*, remote.ip, source.serviceAccount, source.trustDomain, connection.sni)`);
  }
  const m: { -readonly [K in keyof AuthzMatch]: AuthzMatch[K] } = {};
  switch (key) {
    case 'source.ip':
      if (values) m.sourceIps = cidrList(values, `${f}.values`, c);
      if (notValues) m.notSourceIps = cidrList(notValues, `${f}.notValues`, c);
      break;
    case 'destination.ip':
      if (values) m.destinationIps = cidrList(values, `${f}.values`, c);
      if (notValues) m.notDestinationIps = cidrList(notValues, `${f}.notValues`, c);
      break;
    case 'destination.port':
      if (values) m.destinationPorts = portList(values, `${f}.values`, c);
      if (notValues) m.notDestinationPorts = portList(notValues, `${f}.notValues`, c);
      break;
    case 'source.namespace':
      if (values) m.namespaces = values.map(stringMatch);
      if (notValues) m.notNamespaces = notValues.map(stringMatch);
      break;
    case 'source.principal':
      if (values) m.principals = values.map(principalMatch);
      if (notValues) m.notPrincipals = notValues.map(principalMatch);
      break;
  }
  return { match: m, l7: [] };
}

// === waypoint (L7) form of a targetRefs policy; the spec has been validated by readAuthorizationPolicy ===

function strs(o: Obj, key: string): string[] | undefined {
  const v = o[key];
  return Array.isArray(v) && v.length > 0 ? v.filter((x): x is string => typeof x === 'string') : undefined;
}

function cidrsOf(o: Obj, key: string): Cidr[] | undefined {
  const xs = strs(o, key);
  if (!xs) return undefined;
  const out: Cidr[] = [];
  for (const x of xs) { const r = parseCidr(x); if (!('error' in r)) out.push(r); }
  return out;
}

/** Policy path syntax: `{*}` / `{**}` templates (whole segments), else Istio's string forms. */
function pathPattern(p: string): L7PathPattern {
  return p.includes('{') ? { template: p } : stringMatch(p);
}

function readL7Rules(spec: Obj, namespace: string, trustDomain: string): L7Rule[] {
  const raw = spec['rules'];
  if (!Array.isArray(raw)) return [];
  return raw.map((r0): L7Rule => {
    const r = isObj(r0) ? r0 : {};
    const rule: { from?: L7Source[]; to?: L7Operation[]; when?: L7Condition[] } = {};
    if (Array.isArray(r['from']) && r['from'].length > 0) {
      rule.from = r['from'].map((e) => {
        const s = isObj(e) && isObj(e['source']) ? e['source'] : {};
        const sas = (k: string): StringMatch[] => (strs(s, k) ?? []).map((x) => {
          const parts = x.split('/');
          const [ns, sa] = parts.length === 1 ? [namespace, parts[0]] : [parts[0], parts[1]];
          return { exact: `${trustDomain}/ns/${ns}/sa/${sa}` };
        });
        const principals = [...(strs(s, 'principals') ?? []).map(principalMatch), ...sas('serviceAccounts')];
        const notPrincipals = [...(strs(s, 'notPrincipals') ?? []).map(principalMatch), ...sas('notServiceAccounts')];
        const src: { -readonly [K in keyof L7Source]: L7Source[K] } = {};
        if (principals.length) src.principals = principals;
        if (notPrincipals.length) src.notPrincipals = notPrincipals;
        const m = (k: 'namespaces' | 'notNamespaces' | 'trustDomains' | 'notTrustDomains' | 'requestPrincipals' | 'notRequestPrincipals'): void => {
          const xs = strs(s, k);
          if (xs) src[k] = xs.map(stringMatch);
        };
        m('namespaces'); m('notNamespaces'); m('trustDomains'); m('notTrustDomains'); m('requestPrincipals'); m('notRequestPrincipals');
        for (const k of ['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const) { const xs = cidrsOf(s, k); if (xs?.length) src[k] = xs; }
        return src;
      });
    }
    if (Array.isArray(r['to']) && r['to'].length > 0) {
      rule.to = r['to'].map((e) => {
        const o = isObj(e) && isObj(e['operation']) ? e['operation'] : {};
        const op: { -readonly [K in keyof L7Operation]: L7Operation[K] } = {};
        const hosts = (k: 'hosts' | 'notHosts'): void => { const xs = strs(o, k); if (xs) op[k] = xs.map((x) => stringMatch(x.toLowerCase())); };
        hosts('hosts'); hosts('notHosts');
        for (const k of ['methods', 'notMethods'] as const) { const xs = strs(o, k); if (xs) op[k] = xs.map(stringMatch); }
        for (const k of ['paths', 'notPaths'] as const) { const xs = strs(o, k); if (xs) op[k] = xs.map(pathPattern); }
        for (const k of ['ports', 'notPorts'] as const) {
          const v = o[k];
          if (Array.isArray(v) && v.length > 0) op[k] = v.map((x) => Number(x)).filter((x) => Number.isInteger(x));
        }
        return op;
      });
    }
    if (Array.isArray(r['when']) && r['when'].length > 0) {
      rule.when = r['when'].filter(isObj).map((w) => {
        const values = strs(w, 'values');
        const notValues = strs(w, 'notValues');
        return { key: String(w['key']), ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) };
      });
    }
    return rule;
  });
}

/**
 * `spec.selector` of an Istio security policy (`{matchLabels: {...}}`), checked field by field.
 * `given`: the field is there (even if empty); `selector`: its labels, undefined when none (the
 * policy then covers the whole namespace, or the mesh).
 */
export function readSelector(spec: Obj, c: Check): { given: boolean; selector?: Record<string, string> } {
  const sel = c.obj(spec['selector'], 'spec.selector');
  if (!sel) return { given: false };
  c.known(sel, 'spec.selector', ['matchLabels']);
  const ml = c.stringMap(sel['matchLabels'], 'spec.selector.matchLabels');
  return ml && Object.keys(ml).length > 0 ? { given: true, selector: ml } : { given: true };
}

/** Best-effort selector of a possibly malformed object: undefined when absent, empty or unreadable. */
export function looseSelector(spec: unknown): Record<string, string> | undefined | 'unreadable' {
  if (!isObj(spec) || spec['selector'] === undefined || spec['selector'] === null) return undefined;
  const sel = spec['selector'];
  const ml = isObj(sel) ? sel['matchLabels'] : undefined;
  if (!isObj(ml)) return 'unreadable';
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(ml)) {
    if (typeof v !== 'string') return 'unreadable';
    out[k] = v;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Targets of a possibly malformed policy; the whole namespace when they cannot be read. */
function looseTargets(spec: Obj, namespace: string, rootNamespace: string): PolicyTarget[] {
  const raw = [spec['targetRef'], ...(Array.isArray(spec['targetRefs']) ? spec['targetRefs'] : [spec['targetRefs']])].filter((x) => x !== undefined && x !== null);
  const out: PolicyTarget[] = [];
  for (const r of raw) {
    if (!isObj(r) || typeof r['name'] !== 'string' || typeof r['kind'] !== 'string') return [{ kind: 'Namespace', namespace, name: namespace }];
    const kind = r['kind'];
    if (kind === 'Gateway' || kind === 'Service' || (kind === 'GatewayClass' && namespace === rootNamespace)) out.push({ kind, namespace, name: r['name'] });
    else if (kind !== 'ServiceEntry') return [{ kind: 'Namespace', namespace, name: namespace }];
  }
  return out;
}

/**
 * What a rejected policy becomes at the node agent: DENY everything in its scope. A selector that
 * cannot be read widens the scope to the namespace. Waypoint-only policies (targetRefs without a
 * selector) and AUDIT (never changes a decision) produce nothing. The dry-run annotation is kept,
 * so a rejected dry-run policy still changes nothing.
 */
export function failClosedAuthorization(o: KubeObject, namespace: string, rootNamespace: string): AuthzInfo | undefined {
  const spec = isObj(o.spec) ? o.spec : {};
  const targeted = spec['targetRefs'] !== undefined || spec['targetRef'] !== undefined;
  const sel = looseSelector(spec);
  if (spec['action'] === 'AUDIT') return undefined;
  if (targeted && sel === undefined) {
    // A waypoint policy: what it targets denies every request until it is fixed.
    const name = o.metadata.name;
    const dryRun = annotationsOf(o)[DRY_RUN_ANNOTATION] === 'true';
    return { name, namespace, waypoint: { targets: looseTargets(spec, namespace, rootNamespace), policy: { name, namespace, action: 'deny', dryRun, rules: [{}] } } };
  }
  const selector = sel === 'unreadable' ? undefined : sel;
  const name = o.metadata.name;
  const scope: Authorization['scope'] = selector ? 'workload' : namespace === rootNamespace ? 'global' : 'namespace';
  const dryRun = annotationsOf(o)[DRY_RUN_ANNOTATION] === 'true';
  return {
    name, namespace, ...(selector ? { selector } : {}),
    authorization: { name, namespace, scope, action: 'deny', dryRun, rules: [{ clauses: [] }] },
  };
}
