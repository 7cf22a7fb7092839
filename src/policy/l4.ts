/**
 * L4 authorization as the node agent enforces it on every inbound connection (HBONE with a peer
 * identity, or plaintext without one). Order: a matching DENY denies; with no ALLOW policy the
 * connection is allowed; a matching ALLOW allows; otherwise deny. Dry-run policies are evaluated
 * and reported but never change the decision.
 *
 * Policies are compiled once per Authorization object (they are immutable; a WeakMap keeps the
 * compiled form alive exactly as long as the snapshot that holds the policy).
 */
import type { Authorization, AuthzMatch, StringMatch } from '../model/index.js';
import { authorizationKey, cidrContains, compileCidr, parseIp } from '../model/index.js';
import type { CompiledCidr, IpAddr } from '../model/index.js';

export interface SourceIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export interface L4Connection {
  /** verified peer identity (HBONE); undefined for plaintext */
  readonly srcIdentity?: SourceIdentity | undefined;
  readonly srcIp: string;
  readonly dstIp: string;
  readonly dstPort: number;
}

export interface DryRunResult {
  /** `<namespace>/<name>` */
  readonly policy: string;
  readonly action: 'allow' | 'deny';
  readonly matched: boolean;
}

export interface L4Decision {
  readonly allowed: boolean;
  /** `<namespace>/<name>` of the policy that decided, when one did */
  readonly policy?: string;
  readonly reason: string;
  /** dry-run policies and whether they matched: for logging only */
  readonly dryRun?: readonly DryRunResult[];
}

interface CMatch {
  /** no field set: matches nothing */
  readonly empty: boolean;
  readonly namespaces?: readonly StringMatch[] | undefined;
  readonly notNamespaces?: readonly StringMatch[] | undefined;
  readonly principals?: readonly StringMatch[] | undefined;
  readonly notPrincipals?: readonly StringMatch[] | undefined;
  readonly sourceIps?: readonly CompiledCidr[] | undefined;
  readonly notSourceIps?: readonly CompiledCidr[] | undefined;
  readonly destinationIps?: readonly CompiledCidr[] | undefined;
  readonly notDestinationIps?: readonly CompiledCidr[] | undefined;
  readonly destinationPorts?: readonly number[] | undefined;
  readonly notDestinationPorts?: readonly number[] | undefined;
}

interface CPolicy {
  readonly key: string;
  /** rules -> clauses -> matches */
  readonly rules: readonly (readonly (readonly CMatch[])[])[];
}

const compiled = new WeakMap<Authorization, CPolicy>();

function nonEmpty<T>(xs: readonly T[] | undefined): readonly T[] | undefined {
  return xs && xs.length > 0 ? xs : undefined;
}

function cidrs(xs: AuthzMatch['sourceIps']): readonly CompiledCidr[] | undefined {
  return xs && xs.length > 0 ? xs.map(compileCidr) : undefined;
}

function compileMatch(m: AuthzMatch): CMatch {
  const c: CMatch = {
    empty: false,
    namespaces: nonEmpty(m.namespaces),
    notNamespaces: nonEmpty(m.notNamespaces),
    principals: nonEmpty(m.principals),
    notPrincipals: nonEmpty(m.notPrincipals),
    sourceIps: cidrs(m.sourceIps),
    notSourceIps: cidrs(m.notSourceIps),
    destinationIps: cidrs(m.destinationIps),
    notDestinationIps: cidrs(m.notDestinationIps),
    destinationPorts: nonEmpty(m.destinationPorts),
    notDestinationPorts: nonEmpty(m.notDestinationPorts),
  };
  const empty = !(c.namespaces || c.notNamespaces || c.principals || c.notPrincipals || c.sourceIps || c.notSourceIps
    || c.destinationIps || c.notDestinationIps || c.destinationPorts || c.notDestinationPorts);
  return { ...c, empty };
}

function compile(a: Authorization): CPolicy {
  let c = compiled.get(a);
  if (!c) {
    c = {
      key: authorizationKey(a),
      rules: a.rules.map((r) => r.clauses.map((cl) => cl.matches.map(compileMatch))),
    };
    compiled.set(a, c);
  }
  return c;
}

/** Lazily derived attributes of one connection; built at most once per evaluation. */
class ConnView {
  readonly #conn: L4Connection;
  #src: IpAddr | null | undefined;
  #dst: IpAddr | null | undefined;
  #principal: string | null | undefined;
  constructor(conn: L4Connection) { this.#conn = conn; }
  get port(): number { return this.#conn.dstPort; }
  get namespace(): string | undefined { return this.#conn.srcIdentity?.namespace; }
  /** `<td>/ns/<ns>/sa/<sa>` (no `spiffe://`), or null without identity */
  get principal(): string | null {
    if (this.#principal === undefined) {
      const id = this.#conn.srcIdentity;
      this.#principal = id ? `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}` : null;
    }
    return this.#principal;
  }
  get src(): IpAddr | null {
    if (this.#src === undefined) this.#src = parseIp(this.#conn.srcIp) ?? null;
    return this.#src;
  }
  get dst(): IpAddr | null {
    if (this.#dst === undefined) this.#dst = parseIp(this.#conn.dstIp) ?? null;
    return this.#dst;
  }
}

function strMatch(m: StringMatch, v: string): boolean {
  if ('exact' in m) return v === m.exact;
  if ('prefix' in m) return v.startsWith(m.prefix);
  if ('suffix' in m) return v.endsWith(m.suffix);
  return v.length > 0;
}

/** Any value matches; a missing attribute (no identity) matches nothing. */
function anyStr(ms: readonly StringMatch[], v: string | null | undefined): boolean {
  if (v === null || v === undefined) return false;
  for (const m of ms) if (strMatch(m, v)) return true;
  return false;
}

function anyCidr(cs: readonly CompiledCidr[], a: IpAddr | null): boolean {
  if (!a) return false;
  for (const c of cs) if (cidrContains(c, a)) return true;
  return false;
}

function matchOne(m: CMatch, v: ConnView): boolean {
  if (m.empty) return false;
  if (m.destinationPorts && !m.destinationPorts.includes(v.port)) return false;
  if (m.notDestinationPorts && m.notDestinationPorts.includes(v.port)) return false;
  if (m.namespaces && !anyStr(m.namespaces, v.namespace)) return false;
  if (m.notNamespaces && anyStr(m.notNamespaces, v.namespace)) return false;
  if (m.principals && !anyStr(m.principals, v.principal)) return false;
  if (m.notPrincipals && anyStr(m.notPrincipals, v.principal)) return false;
  if (m.sourceIps && !anyCidr(m.sourceIps, v.src)) return false;
  if (m.notSourceIps && anyCidr(m.notSourceIps, v.src)) return false;
  if (m.destinationIps && !anyCidr(m.destinationIps, v.dst)) return false;
  if (m.notDestinationIps && anyCidr(m.notDestinationIps, v.dst)) return false;
  return true;
}

function policyMatches(p: CPolicy, v: ConnView): boolean {
  rules: for (const clauses of p.rules) {
    for (const matches of clauses) {
      let any = false;
      for (const m of matches) {
        if (matchOne(m, v)) { any = true; break; }
      }
      if (!any) continue rules;
    }
    return true;
  }
  return false;
}

/** Does this one policy match the connection (ignoring its action and dry-run flag)? */
export function authorizationMatches(a: Authorization, conn: L4Connection): boolean {
  return policyMatches(compile(a), new ConnView(conn));
}

/** Decide one connection against every policy that applies to the destination workload. */
export function evaluateL4(policies: readonly Authorization[], conn: L4Connection): L4Decision {
  if (policies.length === 0) return { allowed: true, reason: 'no policies' };
  const v = new ConnView(conn);
  // A connection whose addresses cannot be read cannot be checked against ipBlocks: refuse it.
  if (!v.src || !v.dst) return { allowed: false, reason: `invalid connection address ${conn.srcIp} -> ${conn.dstIp}` };
  let dry: DryRunResult[] | undefined;
  let allowCount = 0;
  for (const a of policies) {
    if (a.dryRun) {
      (dry ??= []).push({ policy: authorizationKey(a), action: a.action, matched: policyMatches(compile(a), v) });
      continue;
    }
    if (a.action === 'allow') { allowCount++; continue; }
    const p = compile(a);
    if (policyMatches(p, v)) return withDry({ allowed: false, policy: p.key, reason: `denied by policy ${p.key}` }, dry, policies, v);
  }
  if (allowCount === 0) return withDry({ allowed: true, reason: 'no allow policies' }, dry, policies, v);
  for (const a of policies) {
    if (a.dryRun || a.action !== 'allow') continue;
    const p = compile(a);
    if (policyMatches(p, v)) return withDry({ allowed: true, policy: p.key, reason: `allowed by policy ${p.key}` }, dry, policies, v);
  }
  return withDry({ allowed: false, reason: 'no allow policy matched' }, dry, policies, v);
}

/**
 * Attach the dry-run results. An early DENY return skips the dry-run policies after it, so they
 * are filled in here; the common case (no dry-run policy) costs nothing.
 */
function withDry(d: L4Decision, dry: DryRunResult[] | undefined, policies: readonly Authorization[], v: ConnView): L4Decision {
  let out = dry;
  for (const a of policies) {
    if (!a.dryRun) continue;
    const key = authorizationKey(a);
    if (out?.some((r) => r.policy === key)) continue;
    (out ??= []).push({ policy: key, action: a.action, matched: policyMatches(compile(a), v) });
  }
  return out ? { ...d, dryRun: out } : d;
}
