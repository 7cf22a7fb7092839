/**
 * L7 authorization as a waypoint enforces it on every request (AuthorizationPolicy with targetRefs).
 * Order (reference §3.1): a matching DENY denies; with no ALLOW policy the request is allowed; a matching
 * ALLOW allows; otherwise deny. Dry-run policies are evaluated and reported, never enforced.
 *
 * Fail closed where the waypoint cannot know an attribute (JWT claims and request principals: no
 * RequestAuthentication; `connection.sni`; `experimental.*`; a key it does not know; a missing destination
 * IP): in an ALLOW rule such a condition never holds, in a DENY rule it always holds.
 *
 * Paths are matched on the normalized path (the caller normalizes, see src/waypoint/l7). A path with `;`
 * parameters (`/admin;x`) means `/admin` to some servers and not to others, so it is read both ways: a DENY
 * rule that matches either reading denies, an ALLOW rule must match both readings to allow.
 * Each value of a repeated header is matched on its own.
 *
 * Policies are compiled once per L7Authorization object (they are immutable).
 */
import type { L7Authorization, L7Condition, L7Operation, L7PathPattern, L7Source } from '../model/index.js';
import type { StringMatch } from '../model/index.js';
import { authorizationKey, cidrContains, compileCidr, parseCidr, parseIp } from '../model/index.js';
import type { CompiledCidr, IpAddr } from '../model/index.js';
import type { DryRunResult } from './l4.js';
import { compileRegex } from './regex.js';

/** What L7 policy looks at in a request. */
export interface L7Request {
  /** as received, e.g. `GET` */
  readonly method: string;
  /** normalized path without query */
  readonly path: string;
  /** `Host` / `:authority` as received (port included when sent) */
  readonly authority: string;
  /** the service port the request was sent to */
  readonly port: number;
  /** lowercase names; a repeated header as a list of its values */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** verified SPIFFE id of the client, `spiffe://<td>/ns/<ns>/sa/<sa>`; absent without peer identity */
  readonly sourcePrincipal?: string | undefined;
  readonly sourceIp: string;
  /** for `destination.ip` conditions; absent: such a condition cannot be evaluated (fail closed) */
  readonly destinationIp?: string | undefined;
}

export interface L7Decision {
  readonly allowed: boolean;
  /** `<namespace>/<name>` of the policy that decided, when one did */
  readonly policy?: string;
  readonly reason: string;
  /** dry-run policies and whether they matched: for logging only */
  readonly dryRun?: readonly DryRunResult[];
}

/** Facts derived once per request. */
interface Ctx {
  readonly req: L7Request;
  /** principal without `spiffe://` */
  readonly principal: string | undefined;
  readonly namespace: string | undefined;
  readonly serviceAccount: string | undefined;
  readonly trustDomain: string | undefined;
  readonly sourceIp: IpAddr | undefined;
  readonly destinationIp: IpAddr | undefined;
  readonly authority: string;
}

/** A rule predicate under one reading of the path. */
type Pred = (c: Ctx, path: string) => boolean;

interface CPolicy {
  readonly key: string;
  readonly action: 'allow' | 'deny';
  readonly dryRun: boolean;
  readonly rules: readonly Pred[];
}

const compiled = new WeakMap<L7Authorization, CPolicy>();
/** the same policies compiled for opaque TCP (no HTTP attributes) */
const compiledTcp = new WeakMap<L7Authorization, CPolicy>();

function compile(p: L7Authorization, tcp = false): CPolicy {
  const cache = tcp ? compiledTcp : compiled;
  let c = cache.get(p);
  if (!c) {
    // what an attribute the waypoint cannot evaluate counts as: never in an ALLOW, always in a DENY
    const unknown = p.action === 'deny';
    c = { key: authorizationKey(p), action: p.action, dryRun: p.dryRun, rules: p.rules.map((r) => compileRule(r, unknown, tcp)) };
    cache.set(p, c);
  }
  return c;
}

function compileRule(r: { from?: readonly L7Source[]; to?: readonly L7Operation[]; when?: readonly L7Condition[] }, unknown: boolean, tcp: boolean): Pred {
  const parts: Pred[] = [];
  if (r.from && r.from.length > 0) { const ss = r.from.map((s) => compileSource(s, unknown)); parts.push((c, p) => ss.some((s) => s(c, p))); }
  if (r.to && r.to.length > 0) { const os = r.to.map((o) => compileOperation(o, unknown, tcp)); parts.push((c, p) => os.some((o) => o(c, p))); }
  for (const w of r.when ?? []) parts.push(compileCondition(w, unknown, tcp));
  return (c, p) => parts.every((x) => x(c, p));
}

/** Istio string forms: exact, `x*` prefix, `*x` suffix, `*` presence (non-empty). */
export function stringMatches(m: StringMatch, v: string | undefined): boolean {
  if (v === undefined) return false;
  if ('exact' in m) return v === m.exact;
  if ('prefix' in m) return v.startsWith(m.prefix);
  if ('suffix' in m) return v.endsWith(m.suffix);
  return v.length > 0;
}

/** `values` (any matches) AND `notValues` (none matches), either absent means no constraint. */
function field<T>(yes: readonly T[] | undefined, no: readonly T[] | undefined, test: (m: T, c: Ctx, path: string) => boolean): Pred | undefined {
  const y = yes && yes.length > 0 ? yes : undefined;
  const n = no && no.length > 0 ? no : undefined;
  if (!y && !n) return undefined;
  return (c, p) => (!y || y.some((m) => test(m, c, p))) && (!n || !n.some((m) => test(m, c, p)));
}

function all(preds: (Pred | undefined)[]): Pred {
  const ps = preds.filter((p): p is Pred => p !== undefined);
  return (c, p) => ps.every((x) => x(c, p));
}

function constant(v: boolean): Pred { return () => v; }

function cidrPred(xs: readonly { address: string; prefixLen: number }[] | undefined): CompiledCidr[] | undefined {
  return xs && xs.length > 0 ? xs.map((x) => compileCidr(x)) : undefined;
}

function compileSource(s: L7Source, unknown: boolean): Pred {
  const ips = cidrPred(s.ipBlocks), notIps = cidrPred(s.notIpBlocks);
  const rips = cidrPred(s.remoteIpBlocks), notRips = cidrPred(s.notRemoteIpBlocks);
  const inCidr = (m: CompiledCidr, c: Ctx): boolean => c.sourceIp !== undefined && cidrContains(m, c.sourceIp);
  const jwt = (s.requestPrincipals && s.requestPrincipals.length > 0) || (s.notRequestPrincipals && s.notRequestPrincipals.length > 0);
  return all([
    field(s.principals, s.notPrincipals, (m, c) => stringMatches(m, c.principal)),
    field(s.namespaces, s.notNamespaces, (m, c) => stringMatches(m, c.namespace)),
    field(s.trustDomains, s.notTrustDomains, (m, c) => stringMatches(m, c.trustDomain)),
    field(ips, notIps, inCidr),
    field(rips, notRips, inCidr),
    jwt ? constant(unknown) : undefined,
  ]);
}

/** A field that was set (values or notValues) but cannot be known on a TCP connection. */
function httpOnly(tcp: boolean, unknown: boolean, ...xs: (readonly unknown[] | undefined)[]): Pred | undefined {
  return tcp && xs.some((x) => x !== undefined && x.length > 0) ? constant(unknown) : undefined;
}

function compileOperation(o: L7Operation, unknown: boolean, tcp = false): Pred {
  if (tcp) {
    // opaque TCP (reference §3.3, missing attributes): hosts, methods and paths are unknown, so an ALLOW rule
    // that names them never matches (allows less) and a DENY rule ignores them (denies more); ports still apply
    return all([
      httpOnly(tcp, unknown, o.hosts, o.notHosts), httpOnly(tcp, unknown, o.methods, o.notMethods), httpOnly(tcp, unknown, o.paths, o.notPaths),
      field(o.ports, o.notPorts, (m, c) => c.req.port === m),
    ]);
  }
  const lower = (xs: readonly StringMatch[] | undefined): StringMatch[] | undefined => xs?.map(lowerMatch);
  const paths = o.paths?.map((p) => pathPredicate(p, unknown));
  const notPaths = o.notPaths?.map((p) => pathPredicate(p, unknown));
  return all([
    field(lower(o.hosts), lower(o.notHosts), (m, c) => stringMatches(m, c.authority)),
    field(o.ports, o.notPorts, (m, c) => c.req.port === m),
    field(o.methods, o.notMethods, (m, c) => stringMatches(m, c.req.method)),
    field(paths, notPaths, (m, _c, p) => m(p)),
  ]);
}

function lowerMatch(m: StringMatch): StringMatch {
  if ('exact' in m) return { exact: m.exact.toLowerCase() };
  if ('prefix' in m) return { prefix: m.prefix.toLowerCase() };
  if ('suffix' in m) return { suffix: m.suffix.toLowerCase() };
  return m;
}

/**
 * A path pattern as a predicate. Templates: `{*}` one non-empty segment, `{**}` zero or more characters up to
 * the end (possibly several segments); literal segments compare exactly. A template that does not compile
 * (the translator refuses those) counts as an attribute the waypoint cannot evaluate.
 */
function pathPredicate(p: L7PathPattern, unknown: boolean): (path: string) => boolean {
  if (!('template' in p)) return (path) => stringMatches(p, path);
  const re = compileRegex(templateRegex(p.template));
  if ('error' in re) return () => unknown;
  return (path) => re.regex.test(path);
}

/** `/store/{**}/cart` -> `/store/.*\/cart`; literal text is escaped. */
export function templateRegex(t: string): string {
  return t.split('/').map((seg) => (seg === '{*}' ? '[^/]+' : seg === '{**}' ? '.*' : seg.replace(/[\\^$.|?*+()[\]{}]/g, (ch) => `\\${ch}`))).join('/');
}

/** Keys the waypoint evaluates; anything else is treated as unknown (fail closed). */
function compileCondition(w: L7Condition, unknown: boolean, tcp = false): Pred {
  const values = w.values && w.values.length > 0 ? w.values : undefined;
  const notValues = w.notValues && w.notValues.length > 0 ? w.notValues : undefined;
  const strings = (get: (c: Ctx) => string | undefined, map: (x: string) => string = (x) => x): Pred => {
    const y = values?.map((x) => istioString(map(x))), n = notValues?.map((x) => istioString(map(x)));
    return (c) => { const v = get(c); return (!y || y.some((m) => stringMatches(m, v))) && (!n || !n.some((m) => stringMatches(m, v))); };
  };
  const cidrs = (get: (c: Ctx) => IpAddr | undefined, missingUnknown: boolean): Pred => {
    const parse = (xs: readonly string[] | undefined): CompiledCidr[] | undefined | 'bad' => {
      if (!xs) return undefined;
      const out: CompiledCidr[] = [];
      for (const x of xs) { const r = parseCidr(x); if ('error' in r) return 'bad'; out.push(compileCidr(r)); }
      return out;
    };
    const y = parse(values), n = parse(notValues);
    if (y === 'bad' || n === 'bad') return constant(unknown);
    return (c) => {
      const ip = get(c);
      if (ip === undefined && missingUnknown) return unknown;
      const hit = (m: CompiledCidr): boolean => ip !== undefined && cidrContains(m, ip);
      return (!y || y.some(hit)) && (!n || !n.some(hit));
    };
  };
  const header = /^request\.headers\[([^\]]+)\]$/.exec(w.key);
  // no request headers on a TCP connection
  if (header && tcp) return constant(unknown);
  if (header) {
    const name = header[1]!.toLowerCase();
    const y = values?.map(istioString), n = notValues?.map(istioString);
    return (c) => {
      const raw = c.req.headers[name];
      const vs = raw === undefined ? [] : typeof raw === 'string' ? [raw] : raw;
      // each value of a repeated header on its own: some value matches a value, and no value matches a notValue
      return (!y || vs.some((v) => y.some((m) => stringMatches(m, v)))) && (!n || !vs.some((v) => n.some((m) => stringMatches(m, v))));
    };
  }
  switch (w.key) {
    case 'source.ip':
    case 'remote.ip':
      return cidrs((c) => c.sourceIp, false);
    case 'destination.ip':
      return cidrs((c) => c.destinationIp, true);
    case 'source.namespace': return strings((c) => c.namespace);
    case 'source.principal': return strings((c) => c.principal, (x) => (x.startsWith('spiffe://') ? x.slice(9) : x));
    case 'source.serviceAccount': return strings((c) => c.serviceAccount);
    case 'source.trustDomain': return strings((c) => c.trustDomain);
    case 'destination.port': {
      const y = values?.map(Number), n = notValues?.map(Number);
      if ([...(y ?? []), ...(n ?? [])].some((x) => !Number.isInteger(x))) return constant(unknown);
      return (c) => (!y || y.includes(c.req.port)) && (!n || !n.includes(c.req.port));
    }
    default:
      // request.auth.*, connection.sni, experimental.*, or a key this waypoint does not know
      return constant(unknown);
  }
}

function istioString(v: string): StringMatch {
  if (v === '*') return { presence: true };
  if (v.length > 1 && v.endsWith('*')) return { prefix: v.slice(0, -1) };
  if (v.length > 1 && v.startsWith('*')) return { suffix: v.slice(1) };
  return { exact: v };
}

function context(req: L7Request): Ctx {
  const principal = req.sourcePrincipal?.startsWith('spiffe://') ? req.sourcePrincipal.slice(9) : req.sourcePrincipal;
  const m = principal ? /^([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(principal) : null;
  return {
    req, principal: principal || undefined,
    trustDomain: m?.[1], namespace: m?.[2], serviceAccount: m ? `${m[2]}/${m[3]}` : undefined,
    sourceIp: parseIp(req.sourceIp) ?? undefined,
    destinationIp: req.destinationIp !== undefined ? parseIp(req.destinationIp) ?? undefined : undefined,
    authority: req.authority.toLowerCase(),
  };
}

/** The readings of a path: as is, and with `;` parameters removed from every segment (then dot segments resolved). */
export function pathReadings(path: string): string[] {
  if (!path.includes(';')) return [path];
  const segs = path.split('/').slice(1).map((s) => { const i = s.indexOf(';'); return i < 0 ? s : s.slice(0, i); });
  const out: string[] = [];
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    const last = i === segs.length - 1;
    if (s === '.') { if (last) out.push(''); continue; }
    if (s === '..') { out.pop(); if (last) out.push(''); continue; }
    out.push(s);
  }
  const stripped = ('/' + out.join('/')).replace(/\/{2,}/g, '/');
  return stripped === path ? [path] : [path, stripped];
}

function policyMatches(p: CPolicy, c: Ctx, readings: readonly string[]): boolean {
  const ruleHolds = (r: Pred): boolean => (p.action === 'deny' ? readings.some((x) => r(c, x)) : readings.every((x) => r(c, x)));
  return p.rules.some(ruleHolds);
}

/**
 * The decision for one request under the policies of its Service (undefined or empty: allowed). Never throws:
 * a policy that is not of the model's shape (a config from a broken control plane) denies (fail closed).
 */
export function evaluateL7(policies: readonly L7Authorization[] | undefined, req: L7Request): L7Decision {
  if (!policies || policies.length === 0) return { allowed: true, reason: 'no policies' };
  try {
    return evaluate(policies, req);
  } catch (e) {
    return { allowed: false, reason: `policy cannot be evaluated: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** What L7 policy can see of an opaque TCP connection at the waypoint. */
export interface TcpConnectionFacts {
  /** the service port the connection was sent to */
  readonly port: number;
  /** verified SPIFFE id of the client; absent without peer identity */
  readonly sourcePrincipal?: string | undefined;
  readonly sourceIp: string;
  readonly destinationIp?: string | undefined;
}

/**
 * The decision for a connection on a port the waypoint proxies as TCP, under the same policies (targetRefs
 * AuthorizationPolicies of the Service or the waypoint) as its HTTP requests, with Envoy's semantics for a TCP
 * filter chain: principals, namespaces, ipBlocks, ports and the `when` keys on source and destination apply;
 * HTTP-only attributes (hosts, methods, paths, request principals, request headers, JWT claims) make an ALLOW
 * rule never match and are ignored (hold) in a DENY rule. Never throws; a policy it cannot evaluate denies.
 */
export function evaluateTcp(policies: readonly L7Authorization[] | undefined, conn: TcpConnectionFacts): L7Decision {
  if (!policies || policies.length === 0) return { allowed: true, reason: 'no policies' };
  const req: L7Request = { method: '', path: '', authority: '', port: conn.port, headers: {}, sourcePrincipal: conn.sourcePrincipal, sourceIp: conn.sourceIp, destinationIp: conn.destinationIp };
  try {
    return evaluate(policies, req, true);
  } catch (e) {
    return { allowed: false, reason: `policy cannot be evaluated: ${e instanceof Error ? e.message : String(e)}` };
  }
}

function evaluate(policies: readonly L7Authorization[], req: L7Request, tcp = false): L7Decision {
  const c = context(req);
  const readings = pathReadings(req.path);
  const dry: DryRunResult[] = [];
  const ps = policies.map((p) => compile(p, tcp));
  let allowPolicies = 0;
  for (const p of ps) {
    if (p.dryRun) { dry.push({ policy: p.key, action: p.action, matched: policyMatches(p, c, readings) }); continue; }
    if (p.action === 'allow') { allowPolicies++; continue; }
    if (policyMatches(p, c, readings)) return withDry({ allowed: false, policy: p.key, reason: `denied by DENY policy ${p.key}` }, dry, ps, c, readings);
  }
  if (allowPolicies === 0) return withDry({ allowed: true, reason: 'no ALLOW policy' }, dry, ps, c, readings);
  for (const p of ps) {
    if (!p.dryRun && p.action === 'allow' && policyMatches(p, c, readings)) return withDry({ allowed: true, policy: p.key, reason: `allowed by ALLOW policy ${p.key}` }, dry, ps, c, readings);
  }
  return withDry({ allowed: false, reason: 'no ALLOW policy matched' }, dry, ps, c, readings);
}

/** Completes the dry-run list (an early DENY stops the loop before later dry-run policies are seen). */
function withDry(d: L7Decision, dry: DryRunResult[], ps: readonly CPolicy[], c: Ctx, readings: readonly string[]): L7Decision {
  const seen = new Set(dry.map((x) => x.policy));
  for (const p of ps) if (p.dryRun && !seen.has(p.key)) dry.push({ policy: p.key, action: p.action, matched: policyMatches(p, c, readings) });
  return dry.length > 0 ? { ...d, dryRun: dry } : d;
}
