/**
 * Kubernetes objects (HTTPRoute, GRPCRoute, VirtualService, DestinationRule) -> per-Service L7 config.
 * Pure: no I/O. Each resource is validated on its own; a bad resource is rejected as a whole (named with
 * kind, namespace, name and field) and every other resource still applies. Things that are legal but that
 * ambit does not do (CORS, locality LB, TLS origination ...) are accepted with a warning, so the seed's and
 * users' Istio YAML keeps working; fields nobody defined are rejected, because a typo (`retires:`) silently
 * ignored is a production incident.
 *
 * Semantics follow reference/l7-and-policy-semantics.md §2:
 * - HTTPRoute/GRPCRoute attach to a Service through `parentRefs` (group "" kind Service, GAMMA). All rules of
 *   all routes of a Service are merged and ordered by Gateway API precedence.
 * - VirtualService `http[]` is first-match in written order; hosts resolve short names in the VS namespace.
 * - Mixing both for one Service is undefined upstream; here Gateway API routes win and the VS is reported.
 * - Several VirtualServices (or DestinationRules) for one host: the oldest wins, then namespace/name order.
 */
import type { Service } from '../../model/index.js';
import { parseDurationMs } from '../../model/index.js';
import { compileRegex } from '../../policy/index.js';
import type {
  DestinationPolicy, GrpcMatch, GrpcRoute, HeaderMatch, HeaderModifier, HttpAction, HttpMatch, HttpRoute,
  L7Origin, L7StringMatch, LoadBalancer, Mirror, OutlierDetection, PathMatch, QueryParamMatch, Redirect,
  RetryPolicy, Rewrite, ServiceL7, Subset, TrafficPolicy, WeightedBackend, ConnectionPool, FaultPolicy, ConsistentHash,
} from '../../model/index.js';
import type { KubeObject, Rejection } from '../config/types.js';

export interface L7Context {
  /** known Services by key `<namespace>/<hostname>` */
  readonly services: ReadonlyMap<string, Service>;
  /** mesh root namespace (e.g. `istio-system`) */
  readonly rootNamespace: string;
}

export interface L7Result {
  /** by Service key; only Services that some route or DestinationRule applies to */
  l7: Map<string, ServiceL7>;
  /** resources not applied at all */
  rejected: Rejection[];
  /** applied, with a caveat the user should see (ignored fields, unknown hosts, conflicts) */
  warnings: Rejection[];
}

/** Limits: beyond them a resource is rejected rather than letting one object blow up every waypoint. */
const MAX_REGEX = 1024;
const MAX_LIST = 1024;
const MAX_WEIGHT_GATEWAY = 1_000_000;
const MAX_WEIGHT_ISTIO = 2 ** 31 - 1;
const DEFAULT_RETRY_ON = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'];
const RETRY_ON_TOKENS = new Set([
  '5xx', 'gateway-error', 'reset', 'reset-before-request', 'connect-failure', 'envoy-ratelimited', 'retriable-4xx',
  'refused-stream', 'retriable-status-codes', 'retriable-headers', 'http3-post-connect-failure',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
]);
const DOMAIN = 'svc.cluster.local';

/** Thrown inside one resource's translation to reject it; never escapes translateL7. */
class Reject extends Error {
  constructor(readonly field: string, message: string) { super(message); }
}

type Obj = Record<string, unknown>;

/** Per-resource reader: typed access with field paths, unknown-field checks and warnings. */
class Reader {
  readonly warnings: Rejection[] = [];
  constructor(readonly kind: string, readonly namespace: string, readonly name: string) {}

  warn(field: string, message: string): void {
    this.warnings.push({ kind: this.kind, namespace: this.namespace, name: this.name, field, message });
  }
  fail(field: string, message: string): never { throw new Reject(field, message); }

  obj(v: unknown, field: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, 'must be a mapping');
    return v as Obj;
  }
  optObj(v: unknown, field: string): Obj | undefined { return v === undefined || v === null ? undefined : this.obj(v, field); }

  /** Rejects fields outside `known` and `ignored`; warns about `ignored` ones that are set. */
  fields(o: Obj, field: string, known: readonly string[], ignored: Readonly<Record<string, string>> = {}): void {
    for (const k of Object.keys(o)) {
      if (known.includes(k)) continue;
      if (k in ignored) { if (o[k] !== undefined && o[k] !== null) this.warn(join(field, k), ignored[k]!); continue; }
      this.fail(join(field, k), 'unknown field');
    }
  }
  arr(v: unknown, field: string, max = MAX_LIST): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    if (v.length > max) this.fail(field, `at most ${max} entries, got ${v.length}`);
    return v;
  }
  str(v: unknown, field: string): string {
    if (typeof v !== 'string') this.fail(field, 'must be a string');
    return v;
  }
  optStr(v: unknown, field: string): string | undefined { return v === undefined || v === null ? undefined : this.str(v, field); }
  int(v: unknown, field: string, min: number, max: number): number {
    // YAML users quote numbers now and then (`"10"`); wrappers like UInt32Value arrive as plain numbers.
    const n = typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) this.fail(field, `must be an integer, got ${JSON.stringify(v)}`);
    if (n < min || n > max) this.fail(field, `must be in ${min}..${max}, got ${n}`);
    return n;
  }
  optInt(v: unknown, field: string, min: number, max: number): number | undefined {
    return v === undefined || v === null ? undefined : this.int(v, field, min, max);
  }
  percent(v: unknown, field: string): number {
    const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n > 100) this.fail(field, `must be a number in 0..100, got ${JSON.stringify(v)}`);
    return n;
  }
  duration(v: unknown, field: string): number {
    const s = typeof v === 'number' && v === 0 ? '0' : this.str(v, field);
    const ms = parseDurationMs(s);
    if (ms === undefined) this.fail(field, `invalid duration ${JSON.stringify(s)} (e.g. "10s", "500ms", "1m30s")`);
    return ms;
  }
  optDuration(v: unknown, field: string): number | undefined { return v === undefined || v === null ? undefined : this.duration(v, field); }
  regex(v: unknown, field: string): string {
    const s = this.str(v, field);
    if (s.length > MAX_REGEX) this.fail(field, `regex longer than ${MAX_REGEX} characters`);
    // Users write RE2 and the waypoint matches with RE2 (linear time, src/policy/regex.ts): what RE2
    // refuses (backreferences, lookaround, bad syntax) is refused here, with the resource and field named.
    const compiled = compileRegex(s);
    if ('error' in compiled) this.fail(field, compiled.error);
    return s;
  }
  bool(v: unknown, field: string): boolean {
    if (typeof v !== 'boolean') this.fail(field, 'must be true or false');
    return v;
  }
}

function join(field: string, key: string | number): string {
  return typeof key === 'number' ? `${field}[${key}]` : field ? `${field}.${key}` : key;
}

/** Host names to Service keys; short names resolve in the namespace of the resource that wrote them. */
class Hosts {
  readonly #byHost = new Map<string, string>();
  constructor(services: ReadonlyMap<string, Service>) {
    for (const [key, s] of services) this.#byHost.set(s.hostname.toLowerCase(), key);
  }
  /** FQDN of `host` as written in namespace `ns` */
  fqdn(host: string, ns: string): string {
    const h = host.toLowerCase().replace(/\.$/, '');
    if (!h.includes('.')) return `${h}.${ns}.${DOMAIN}`;
    // `reviews.prod` and `reviews.prod.svc` are what kube DNS users write; complete them when that names a Service.
    for (const suffix of [`.${DOMAIN}`, '.cluster.local']) {
      if (!h.endsWith(suffix) && this.#byHost.has(h + suffix) && (h.split('.').length === 2 || h.endsWith('.svc'))) return h + suffix;
    }
    return h;
  }
  key(fqdn: string): string | undefined { return this.#byHost.get(fqdn); }
  /** Service key of a Kubernetes Service by name and namespace */
  service(name: string, ns: string): string | undefined { return this.#byHost.get(`${name}.${ns}.${DOMAIN}`.toLowerCase()); }
}

interface Candidate<T> { obj: KubeObject; value: T }

function creation(o: KubeObject): string { return typeof o.metadata.creationTimestamp === 'string' ? o.metadata.creationTimestamp : ''; }
/** Oldest first, then namespace/name: the order conflicts are decided in. */
function olderFirst(a: KubeObject, b: KubeObject): number {
  const ca = creation(a), cb = creation(b);
  if (ca !== cb) return ca === '' ? 1 : cb === '' ? -1 : ca < cb ? -1 : 1;
  const ka = `${a.metadata.namespace ?? ''}/${a.metadata.name}`, kb = `${b.metadata.namespace ?? ''}/${b.metadata.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function apiGroup(o: KubeObject): string { const i = o.apiVersion.indexOf('/'); return i < 0 ? '' : o.apiVersion.slice(0, i); }

export function translateL7(objects: readonly KubeObject[], ctx: L7Context): L7Result {
  const rejected: Rejection[] = [];
  const warnings: Rejection[] = [];
  const hosts = new Hosts(ctx.services);

  const gwHttp = new Map<string, { obj: KubeObject; routes: RankedHttp[] }[]>();
  const gwGrpc = new Map<string, { obj: KubeObject; routes: RankedGrpc[] }[]>();
  const vs = new Map<string, Candidate<HttpRoute[]>[]>();
  const dr = new Map<string, Candidate<DestinationPolicy>[]>();

  for (const obj of objects) {
    const group = apiGroup(obj);
    const isGw = group === 'gateway.networking.k8s.io';
    const isIstio = group === 'networking.istio.io';
    if (!((isGw && (obj.kind === 'HTTPRoute' || obj.kind === 'GRPCRoute')) || (isIstio && (obj.kind === 'VirtualService' || obj.kind === 'DestinationRule')))) continue;
    const r = new Reader(obj.kind, obj.metadata.namespace ?? 'default', obj.metadata.name);
    try {
      const spec = r.obj(obj.spec ?? {}, 'spec');
      switch (obj.kind) {
        case 'HTTPRoute':
          for (const [svc, routes] of httpRoute(r, spec, hosts)) push(gwHttp, svc, { obj, routes });
          break;
        case 'GRPCRoute':
          for (const [svc, routes] of grpcRoute(r, spec, hosts)) push(gwGrpc, svc, { obj, routes });
          break;
        case 'VirtualService':
          for (const [svc, routes] of virtualService(r, spec, hosts)) push(vs, svc, { obj, value: routes });
          break;
        case 'DestinationRule': {
          const res = destinationRule(r, spec, hosts);
          if (res) push(dr, res[0], { obj, value: res[1] });
          break;
        }
      }
      warnings.push(...r.warnings);
    } catch (e) {
      // A bug must not take the whole config down with it: the resource is refused (fail closed), the rest applies.
      const field = e instanceof Reject ? e.field : 'spec';
      const message = e instanceof Reject ? e.message : `internal error while translating: ${e instanceof Error ? e.message : String(e)}`;
      rejected.push({ kind: r.kind, namespace: r.namespace, name: r.name, field, message });
    }
  }

  const out = new Map<string, ServiceL7>();
  const entry = (svc: string): { http: HttpRoute[]; grpc: GrpcRoute[]; destination?: DestinationPolicy } => {
    let e = out.get(svc) as { service: string; http: HttpRoute[]; grpc: GrpcRoute[]; destination?: DestinationPolicy } | undefined;
    if (!e) { e = { service: svc, http: [], grpc: [] }; out.set(svc, e); }
    return e;
  };

  for (const [svc, list] of gwHttp) {
    const all: (RankedHttp & { obj: KubeObject })[] = [];
    for (const { obj, routes } of list) for (const rt of routes) all.push({ ...rt, obj });
    all.sort(compareHttp);
    entry(svc).http.push(...all.map((x) => x.route));
  }
  for (const [svc, list] of gwGrpc) {
    const all: (RankedGrpc & { obj: KubeObject })[] = [];
    for (const { obj, routes } of list) for (const rt of routes) all.push({ ...rt, obj });
    all.sort(compareGrpc);
    entry(svc).grpc.push(...all.map((x) => x.route));
  }
  for (const [svc, cands] of vs) {
    cands.sort((a, b) => olderFirst(a.obj, b.obj));
    const [win, ...rest] = cands;
    const who = (o: KubeObject): string => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    if (gwHttp.has(svc) || gwGrpc.has(svc)) {
      for (const c of cands) warnings.push(warning(c.obj, 'spec.hosts', `service ${svc} also has Gateway API routes, which take precedence; this VirtualService is ignored for it`));
      continue;
    }
    for (const c of rest) warnings.push(warning(c.obj, 'spec.hosts', `VirtualService ${who(win!.obj)} already routes ${svc} (older, or first by name); ignored for it`));
    entry(svc).http.push(...win!.value);
  }
  for (const [svc, cands] of dr) {
    cands.sort((a, b) => olderFirst(a.obj, b.obj));
    const [win, ...rest] = cands;
    for (const c of rest) warnings.push(warning(c.obj, 'spec.host', `DestinationRule ${win!.obj.metadata.namespace ?? ''}/${win!.obj.metadata.name} already applies to ${svc}; ignored`));
    entry(svc).destination = win!.value;
  }

  // A subset named by a route but defined by no DestinationRule gets no endpoints: say so where it is written.
  for (const l7 of out.values()) {
    for (const rt of [...l7.http, ...l7.grpc]) {
      for (const b of [...rt.action.backends, ...rt.action.mirrors]) {
        if (!b.subset || !b.service) continue;
        const d = out.get(b.service)?.destination;
        if (!d || !d.subsets.some((s) => s.name === b.subset)) {
          warnings.push({ kind: rt.origin.kind, namespace: rt.origin.namespace, name: rt.origin.name,
            field: `${rt.origin.kind === 'VirtualService' ? 'spec.http' : 'spec.rules'}[${rt.origin.rule}]`,
            message: `subset ${JSON.stringify(b.subset)} of ${b.host} is not defined by any DestinationRule; its share gets 503` });
        }
      }
    }
  }
  return { l7: out, rejected, warnings: dedupe(warnings) };
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v); else m.set(k, [v]);
}
function warning(o: KubeObject, field: string, message: string): Rejection {
  return { kind: o.kind, namespace: o.metadata.namespace ?? 'default', name: o.metadata.name, field, message };
}
function dedupe(list: Rejection[]): Rejection[] {
  const seen = new Set<string>();
  return list.filter((w) => { const k = JSON.stringify(w); if (seen.has(k)) return false; seen.add(k); return true; });
}

// ============================================================================================
// Gateway API
// ============================================================================================

interface RankedHttp { route: HttpRoute; rule: number; match: number }
interface RankedGrpc { route: GrpcRoute; rule: number; match: number }

/**
 * Gateway API precedence (reference §2.1) with Istio's regex placement: exact path, then prefix, then regex;
 * longer value first; method; more headers; more query params; older route; namespace/name; rule order.
 */
function compareHttp(a: RankedHttp & { obj: KubeObject }, b: RankedHttp & { obj: KubeObject }): number {
  const rank = (p?: PathMatch): number => (p?.type === 'exact' ? 0 : p?.type === 'regex' ? 2 : 1);
  const pa = a.route.match?.path, pb = b.route.match?.path;
  return rank(pa) - rank(pb)
    || (pb?.value.length ?? 1) - (pa?.value.length ?? 1)
    || Number(b.route.match?.method !== undefined) - Number(a.route.match?.method !== undefined)
    || (b.route.match?.headers.length ?? 0) - (a.route.match?.headers.length ?? 0)
    || (b.route.match?.queryParams.length ?? 0) - (a.route.match?.queryParams.length ?? 0)
    || olderFirst(a.obj, b.obj)
    || a.rule - b.rule
    || a.match - b.match;
}

/** GRPCRoute precedence: more characters in service, then method, then more headers; then age, name, order. */
function compareGrpc(a: RankedGrpc & { obj: KubeObject }, b: RankedGrpc & { obj: KubeObject }): number {
  const m = (r: GrpcRoute): GrpcMatch | undefined => r.match;
  return (m(b.route)?.method?.service?.length ?? 0) - (m(a.route)?.method?.service?.length ?? 0)
    || (m(b.route)?.method?.method?.length ?? 0) - (m(a.route)?.method?.method?.length ?? 0)
    || (m(b.route)?.headers.length ?? 0) - (m(a.route)?.headers.length ?? 0)
    || olderFirst(a.obj, b.obj)
    || a.rule - b.rule
    || a.match - b.match;
}

/** Services (and optional port) a Gateway API route attaches to through its Service parentRefs. */
function parents(r: Reader, spec: Obj, hosts: Hosts): { svc: string; port?: number }[] {
  const out: { svc: string; port?: number }[] = [];
  r.arr(spec.parentRefs, 'spec.parentRefs', 32).forEach((raw, i) => {
    const f = join('spec.parentRefs', i);
    const p = r.obj(raw, f);
    r.fields(p, f, ['group', 'kind', 'name', 'namespace', 'port', 'sectionName']);
    const group = r.optStr(p.group, join(f, 'group')) ?? 'gateway.networking.k8s.io';
    const kind = r.optStr(p.kind, join(f, 'kind')) ?? 'Gateway';
    const name = r.str(p.name, join(f, 'name'));
    const ns = r.optStr(p.namespace, join(f, 'namespace')) ?? r.namespace;
    const port = r.optInt(p.port, join(f, 'port'), 1, 65535);
    if (group !== '' || kind !== 'Service') {
      r.warn(f, `parent ${group || 'core'}/${kind} ${name} is not a Service; ambit attaches routes to Services only (mesh/GAMMA mode)`);
      return;
    }
    if (ns !== r.namespace) {
      // A route in a consumer namespace applies to that namespace's clients only; ambit cannot scope by client yet.
      r.warn(join(f, 'namespace'), `consumer routes (parent Service in another namespace) are not supported; parent ${ns}/${name} ignored`);
      return;
    }
    const svc = hosts.service(name, ns);
    if (!svc) { r.warn(f, `Service ${ns}/${name} does not exist; the route applies once it does`); return; }
    out.push(port === undefined ? { svc } : { svc, port });
  });
  return out;
}

const GW_IGNORED_SPEC = { hostnames: 'hostnames do not apply to mesh routes (the parent Service decides); ignored' };

function httpRoute(r: Reader, spec: Obj, hosts: Hosts): Map<string, RankedHttp[]> {
  r.fields(spec, 'spec', ['parentRefs', 'rules'], GW_IGNORED_SPEC);
  const ps = parents(r, spec, hosts);
  const rules = r.arr(spec.rules, 'spec.rules', 16);
  const built: { rule: number; ruleName?: string; matches: (HttpMatch | undefined)[]; action: HttpAction }[] = [];
  rules.forEach((raw, i) => {
    const f = join('spec.rules', i);
    const rule = r.obj(raw, f);
    r.fields(rule, f, ['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry'], {
      sessionPersistence: 'session persistence is not supported; ignored',
    });
    const ruleName = r.optStr(rule.name, join(f, 'name'));
    const rawMatches = r.arr(rule.matches, join(f, 'matches'), 64);
    // No matches means `PathPrefix /` (spec default); written out so precedence and the waypoint see one shape.
    const matches: HttpMatch[] = rawMatches.length === 0
      ? [{ path: { type: 'prefix', value: '/', segmented: true, ignoreCase: false }, headers: [], queryParams: [] }]
      : rawMatches.map((m, j) => gwHttpMatch(r, m, join(join(f, 'matches'), j)));
    const action = gwAction(r, rule, f, hosts, matches);
    built.push({ rule: i, ...(ruleName ? { ruleName } : {}), matches, action });
  });
  const out = new Map<string, RankedHttp[]>();
  for (const p of ps) {
    const list: RankedHttp[] = [];
    for (const b of built) {
      b.matches.forEach((m, j) => {
        const match = withPort(m, p.port);
        const origin: L7Origin = { kind: 'HTTPRoute', namespace: r.namespace, name: r.name, rule: b.rule, ...(b.ruleName ? { ruleName: b.ruleName } : {}) };
        list.push({ route: { origin, ...(match ? { match } : {}), action: b.action }, rule: b.rule, match: j });
      });
    }
    const prev = out.get(p.svc) ?? [];
    out.set(p.svc, [...prev, ...list]);
  }
  return out;
}

/** A parentRef with a port narrows every match of the route to that service port. */
function withPort(m: HttpMatch | undefined, port: number | undefined): HttpMatch | undefined {
  if (port === undefined) return m;
  return m ? { ...m, port } : { headers: [], queryParams: [], path: { type: 'prefix', value: '/', segmented: true, ignoreCase: false }, port };
}

function gwHttpMatch(r: Reader, raw: unknown, f: string): HttpMatch {
  const m = r.obj(raw, f);
  r.fields(m, f, ['path', 'headers', 'queryParams', 'method']);
  let path: PathMatch = { type: 'prefix', value: '/', segmented: true, ignoreCase: false };
  const rp = r.optObj(m.path, join(f, 'path'));
  if (rp) {
    r.fields(rp, join(f, 'path'), ['type', 'value']);
    const type = r.optStr(rp.type, join(f, 'path.type')) ?? 'PathPrefix';
    const value = r.optStr(rp.value, join(f, 'path.value')) ?? '/';
    if (type === 'RegularExpression') path = { type: 'regex', value: r.regex(value, join(f, 'path.value')), segmented: false, ignoreCase: false };
    else if (type === 'Exact' || type === 'PathPrefix') {
      if (!value.startsWith('/')) r.fail(join(f, 'path.value'), 'must start with "/"');
      if (value.includes('//')) r.fail(join(f, 'path.value'), 'must not contain "//"');
      if (value.length > 1024) r.fail(join(f, 'path.value'), 'longer than 1024 characters');
      path = { type: type === 'Exact' ? 'exact' : 'prefix', value, segmented: true, ignoreCase: false };
    } else r.fail(join(f, 'path.type'), `must be Exact, PathPrefix or RegularExpression, got ${JSON.stringify(type)}`);
  }
  const headers: HeaderMatch[] = [];
  r.arr(m.headers, join(f, 'headers'), 16).forEach((h, k) => {
    const hm = gwNameValue(r, h, join(join(f, 'headers'), k));
    // Names are case-insensitive; a repeated name counts once (the first), as the spec says.
    if (headers.some((x) => x.name === hm.name)) { r.warn(join(join(f, 'headers'), k), `header ${hm.name} repeated; only the first entry counts`); return; }
    headers.push({ name: hm.name, match: hm.match, invert: false });
  });
  const queryParams: QueryParamMatch[] = [];
  r.arr(m.queryParams, join(f, 'queryParams'), 16).forEach((q, k) => {
    const qm = gwNameValue(r, q, join(join(f, 'queryParams'), k), false);
    if (queryParams.some((x) => x.name === qm.name)) { r.warn(join(join(f, 'queryParams'), k), `query parameter ${qm.name} repeated; only the first entry counts`); return; }
    queryParams.push(qm);
  });
  const method = r.optStr(m.method, join(f, 'method'));
  if (method !== undefined && !/^(GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH)$/.test(method)) r.fail(join(f, 'method'), `unknown method ${JSON.stringify(method)}`);
  return { path, headers, queryParams, ...(method ? { method } : {}) };
}

function gwNameValue(r: Reader, raw: unknown, f: string, lower = true): { name: string; match: L7StringMatch } {
  const o = r.obj(raw, f);
  r.fields(o, f, ['type', 'name', 'value']);
  const type = r.optStr(o.type, join(f, 'type')) ?? 'Exact';
  let name = r.str(o.name, join(f, 'name'));
  if (name === '' || name.length > 256) r.fail(join(f, 'name'), 'must be 1..256 characters');
  if (lower) name = name.toLowerCase();
  const value = r.str(o.value, join(f, 'value'));
  if (type === 'Exact') return { name, match: { exact: value } };
  if (type === 'RegularExpression') return { name, match: { regex: r.regex(value, join(f, 'value')) } };
  return r.fail(join(f, 'type'), `must be Exact or RegularExpression, got ${JSON.stringify(type)}`);
}

/** Gateway API header modifier: `set`/`add` lists of {name, value}, `remove` names. */
function gwHeaderModifier(r: Reader, raw: unknown, f: string): HeaderModifier {
  const o = r.obj(raw, f);
  r.fields(o, f, ['set', 'add', 'remove']);
  const seen = new Set<string>();
  const pairs = (key: 'set' | 'add'): [string, string][] => r.arr(o[key], join(f, key), 16).map((e, i) => {
    const ff = join(join(f, key), i);
    const p = r.obj(e, ff);
    r.fields(p, ff, ['name', 'value']);
    const name = r.str(p.name, join(ff, 'name')).toLowerCase();
    if (!/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(name)) r.fail(join(ff, 'name'), `invalid header name ${JSON.stringify(name)}`);
    if (seen.has(name)) r.fail(join(ff, 'name'), `header ${name} has more than one action`);
    seen.add(name);
    const value = r.str(p.value, join(ff, 'value'));
    if (/[\r\n\0]/.test(value)) r.fail(join(ff, 'value'), 'must not contain CR, LF or NUL');
    return [name, value];
  });
  const set = pairs('set');
  const add = pairs('add');
  const remove = r.arr(o.remove, join(f, 'remove'), 16).map((n, i) => {
    const name = r.str(n, join(join(f, 'remove'), i)).toLowerCase();
    if (seen.has(name)) r.fail(join(join(f, 'remove'), i), `header ${name} has more than one action`);
    seen.add(name);
    return name;
  });
  return { set, add, remove };
}

interface GwBackend { backend: WeightedBackend; }

function gwBackendRef(r: Reader, raw: unknown, f: string, hosts: Hosts, withWeight: boolean): GwBackend {
  const b = r.obj(raw, f);
  r.fields(b, f, ['group', 'kind', 'name', 'namespace', 'port', ...(withWeight ? ['weight', 'filters'] : [])]);
  const group = r.optStr(b.group, join(f, 'group')) ?? '';
  const kind = r.optStr(b.kind, join(f, 'kind')) ?? 'Service';
  const name = r.str(b.name, join(f, 'name'));
  const ns = r.optStr(b.namespace, join(f, 'namespace')) ?? r.namespace;
  const port = r.optInt(b.port, join(f, 'port'), 1, 65535);
  const weight = withWeight ? r.optInt(b.weight, join(f, 'weight'), 0, MAX_WEIGHT_GATEWAY) ?? 1 : 1;
  const host = `${name}.${ns}.${DOMAIN}`;
  let service: string | undefined;
  if (group !== '' || kind !== 'Service') r.warn(f, `backend ${group}/${kind} ${name} is not a Service; its share gets 500`);
  else if (ns !== r.namespace) r.warn(join(f, 'namespace'), `cross-namespace backend ${ns}/${name} needs a ReferenceGrant, which ambit does not read; its share gets 500`);
  else if (port === undefined) r.warn(join(f, 'port'), `port is required for a Service backend; the share of ${name} gets 500`);
  else {
    service = hosts.service(name, ns);
    if (!service) r.warn(join(f, 'name'), `Service ${ns}/${name} does not exist; its share gets 500 until it does`);
  }
  let requestHeaders: HeaderModifier | undefined;
  let responseHeaders: HeaderModifier | undefined;
  if (withWeight) {
    r.arr(b.filters, join(f, 'filters'), 16).forEach((raw2, i) => {
      const ff = join(join(f, 'filters'), i);
      const fl = r.obj(raw2, ff);
      const type = r.str(fl.type, join(ff, 'type'));
      if (type === 'RequestHeaderModifier') { r.fields(fl, ff, ['type', 'requestHeaderModifier']); requestHeaders = gwHeaderModifier(r, fl.requestHeaderModifier, join(ff, 'requestHeaderModifier')); }
      else if (type === 'ResponseHeaderModifier') { r.fields(fl, ff, ['type', 'responseHeaderModifier']); responseHeaders = gwHeaderModifier(r, fl.responseHeaderModifier, join(ff, 'responseHeaderModifier')); }
      else r.fail(join(ff, 'type'), `backend filter ${JSON.stringify(type)} is not supported (RequestHeaderModifier, ResponseHeaderModifier)`);
    });
  }
  return {
    backend: {
      host, ...(service ? { service } : {}), ...(port !== undefined ? { port } : {}), weight,
      ...(requestHeaders ? { requestHeaders } : {}), ...(responseHeaders ? { responseHeaders } : {}),
    },
  };
}

/**
 * Filters, backends, timeouts and retry of one rule. A ReplacePrefixMatch rewrite/redirect replaces the
 * prefix of the route's own match (`HttpRoute.match.path`), so one action serves every match of the rule.
 */
function gwAction(r: Reader, rule: Obj, f: string, hosts: Hosts, matches: readonly (HttpMatch | undefined)[]): HttpAction {
  let requestHeaders: HeaderModifier | undefined;
  let responseHeaders: HeaderModifier | undefined;
  let redirect: Redirect | undefined;
  let rewrite: Rewrite | undefined;
  let unresolved = false;
  const mirrors: Mirror[] = [];
  const seenTypes = new Set<string>();
  r.arr(rule.filters, join(f, 'filters'), 16).forEach((raw, i) => {
    const ff = join(join(f, 'filters'), i);
    const fl = r.obj(raw, ff);
    const type = r.str(fl.type, join(ff, 'type'));
    if (type !== 'RequestMirror' && seenTypes.has(type)) r.fail(join(ff, 'type'), `${type} may appear only once per rule`);
    seenTypes.add(type);
    switch (type) {
      case 'RequestHeaderModifier':
        r.fields(fl, ff, ['type', 'requestHeaderModifier']);
        requestHeaders = gwHeaderModifier(r, fl.requestHeaderModifier, join(ff, 'requestHeaderModifier'));
        break;
      case 'ResponseHeaderModifier':
        r.fields(fl, ff, ['type', 'responseHeaderModifier']);
        responseHeaders = gwHeaderModifier(r, fl.responseHeaderModifier, join(ff, 'responseHeaderModifier'));
        break;
      case 'RequestRedirect': {
        r.fields(fl, ff, ['type', 'requestRedirect']);
        const rf = join(ff, 'requestRedirect');
        const o = r.obj(fl.requestRedirect, rf);
        r.fields(o, rf, ['scheme', 'hostname', 'path', 'port', 'statusCode']);
        const scheme = r.optStr(o.scheme, join(rf, 'scheme'));
        if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') r.fail(join(rf, 'scheme'), 'must be http or https');
        const hostname = r.optStr(o.hostname, join(rf, 'hostname'));
        const port = r.optInt(o.port, join(rf, 'port'), 1, 65535);
        const statusCode = r.optInt(o.statusCode, join(rf, 'statusCode'), 301, 308) ?? 302;
        if (![301, 302, 303, 307, 308].includes(statusCode)) r.fail(join(rf, 'statusCode'), 'must be 301, 302, 303, 307 or 308');
        const path = gwPathModifier(r, o.path, join(rf, 'path'), matches);
        redirect = { ...(scheme ? { scheme } : {}), ...(hostname ? { hostname } : {}), ...(port ? { port } : {}), ...(path ? { path } : {}), statusCode };
        break;
      }
      case 'URLRewrite': {
        r.fields(fl, ff, ['type', 'urlRewrite']);
        const rf = join(ff, 'urlRewrite');
        const o = r.obj(fl.urlRewrite, rf);
        r.fields(o, rf, ['hostname', 'path']);
        const hostname = r.optStr(o.hostname, join(rf, 'hostname'));
        const path = gwPathModifier(r, o.path, join(rf, 'path'), matches);
        rewrite = { ...(hostname ? { hostname } : {}), ...(path ? { path } : {}) };
        break;
      }
      case 'RequestMirror': {
        r.fields(fl, ff, ['type', 'requestMirror']);
        const rf = join(ff, 'requestMirror');
        const o = r.obj(fl.requestMirror, rf);
        r.fields(o, rf, ['backendRef', 'percent', 'fraction']);
        const { backend } = gwBackendRef(r, o.backendRef, join(rf, 'backendRef'), hosts, false);
        let percent = 100;
        if (o.percent !== undefined && o.fraction !== undefined) r.fail(rf, 'percent and fraction are mutually exclusive');
        if (o.percent !== undefined) percent = r.int(o.percent, join(rf, 'percent'), 0, 100);
        const fr = r.optObj(o.fraction, join(rf, 'fraction'));
        if (fr) {
          r.fields(fr, join(rf, 'fraction'), ['numerator', 'denominator']);
          const num = r.int(fr.numerator, join(rf, 'fraction.numerator'), 0, 2 ** 31 - 1);
          const den = r.optInt(fr.denominator, join(rf, 'fraction.denominator'), 1, 2 ** 31 - 1) ?? 100;
          if (num > den) r.fail(join(rf, 'fraction'), 'numerator must not exceed denominator');
          percent = (num / den) * 100;
        }
        const { weight: _w, requestHeaders: _q, responseHeaders: _s, ...m } = backend;
        mirrors.push({ ...m, percent });
        break;
      }
      case 'CORS':
        r.warn(join(ff, 'type'), 'CORS is not supported yet; the filter is ignored');
        break;
      default:
        // An unresolved filter must not be skipped: the rule answers 500 instead (spec).
        r.warn(join(ff, 'type'), `filter ${JSON.stringify(type)} is not supported; requests matching this rule get 500`);
        unresolved = true;
    }
  });
  if (redirect && rewrite) r.fail(join(f, 'filters'), 'RequestRedirect and URLRewrite cannot be combined');

  const backends = r.arr(rule.backendRefs, join(f, 'backendRefs'), 16).map((b, i) => gwBackendRef(r, b, join(join(f, 'backendRefs'), i), hosts, true).backend);

  // Timeouts: request covers the whole exchange (retries included); backendRequest one attempt.
  let timeoutMs: number | undefined;
  let perTryMs: number | undefined;
  const to = r.optObj(rule.timeouts, join(f, 'timeouts'));
  if (to) {
    r.fields(to, join(f, 'timeouts'), ['request', 'backendRequest']);
    const req = r.optDuration(to.request, join(f, 'timeouts.request'));
    const be = r.optDuration(to.backendRequest, join(f, 'timeouts.backendRequest'));
    if (req !== undefined && req > 0) timeoutMs = req;
    if (be !== undefined && be > 0) {
      if (timeoutMs !== undefined && be > timeoutMs) r.fail(join(f, 'timeouts.backendRequest'), 'must not exceed timeouts.request');
      perTryMs = be;
    }
  }
  let retries: RetryPolicy = defaultRetry();
  const rt = r.optObj(rule.retry, join(f, 'retry'));
  if (rt) {
    r.fields(rt, join(f, 'retry'), ['codes', 'attempts', 'backoff']);
    const codes = r.arr(rt.codes, join(f, 'retry.codes'), 64).map((c, i) => r.int(c, join(join(f, 'retry.codes'), i), 400, 599));
    const attempts = r.optInt(rt.attempts, join(f, 'retry.attempts'), 0, 100) ?? 2;
    const backoffBaseMs = r.optDuration(rt.backoff, join(f, 'retry.backoff')) ?? 25;
    retries = { attempts, retryOn: DEFAULT_RETRY_ON, retriableStatusCodes: codes, backoffBaseMs };
  }
  // Istio's mapping: backendRequest is the per-try timeout when retrying, else the route timeout.
  if (perTryMs !== undefined) {
    if (retries.attempts > 0 && rt) retries = { ...retries, perTryTimeoutMs: perTryMs };
    else if (timeoutMs === undefined) timeoutMs = perTryMs;
    else retries = { ...retries, perTryTimeoutMs: perTryMs };
  }

  const sum = backends.reduce((a, b) => a + b.weight, 0);
  {
    const base = {
      ...(requestHeaders ? { requestHeaders } : {}), ...(responseHeaders ? { responseHeaders } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}), retries, mirrors,
    };
    if (unresolved) return { ...base, backends: [], directResponse: { status: 500 } };
    if (redirect) return { ...base, backends: [], redirect };
    // Istio answers a rule whose weights sum to 0 with 500 rather than picking anything.
    if (backends.length > 0 && sum === 0) return { ...base, backends: [], directResponse: { status: 500 } };
    return { ...base, backends, ...(rewrite ? { rewrite } : {}) };
  }
}

function gwPathModifier(r: Reader, raw: unknown, f: string, matches: readonly (HttpMatch | undefined)[]): { type: 'full' | 'prefix'; value: string } | undefined {
  const o = r.optObj(raw, f);
  if (!o) return undefined;
  r.fields(o, f, ['type', 'replaceFullPath', 'replacePrefixMatch']);
  const type = r.str(o.type, join(f, 'type'));
  if (type === 'ReplaceFullPath') return { type: 'full', value: r.str(o.replaceFullPath, join(f, 'replaceFullPath')) };
  if (type === 'ReplacePrefixMatch') {
    // Only meaningful when every match of the rule is a path prefix match (an absent match is `PathPrefix /`).
    if (matches.some((m) => m !== undefined && m.path?.type !== 'prefix')) r.fail(join(f, 'type'), 'ReplacePrefixMatch requires PathPrefix matches');
    return { type: 'prefix', value: r.str(o.replacePrefixMatch, join(f, 'replacePrefixMatch')) };
  }
  return r.fail(join(f, 'type'), 'must be ReplaceFullPath or ReplacePrefixMatch');
}

function defaultRetry(): RetryPolicy {
  return { attempts: 2, retryOn: DEFAULT_RETRY_ON, retriableStatusCodes: [503], backoffBaseMs: 25 };
}

function grpcRoute(r: Reader, spec: Obj, hosts: Hosts): Map<string, RankedGrpc[]> {
  r.fields(spec, 'spec', ['parentRefs', 'rules'], GW_IGNORED_SPEC);
  const ps = parents(r, spec, hosts);
  const built: { rule: number; ruleName?: string; matches: (GrpcMatch | undefined)[]; action: HttpAction }[] = [];
  r.arr(spec.rules, 'spec.rules', 16).forEach((raw, i) => {
    const f = join('spec.rules', i);
    const rule = r.obj(raw, f);
    r.fields(rule, f, ['name', 'matches', 'filters', 'backendRefs'], { sessionPersistence: 'session persistence is not supported; ignored' });
    const ruleName = r.optStr(rule.name, join(f, 'name'));
    const rawMatches = r.arr(rule.matches, join(f, 'matches'), 64);
    const matches = rawMatches.length === 0 ? [undefined] : rawMatches.map((m, j) => grpcMatch(r, m, join(join(f, 'matches'), j)));
    for (const [k, fl] of r.arr(rule.filters, join(f, 'filters'), 16).entries()) {
      const t = r.obj(fl, join(join(f, 'filters'), k)).type;
      if (t === 'RequestRedirect' || t === 'URLRewrite') r.fail(join(join(join(f, 'filters'), k), 'type'), `${String(t)} is not allowed in a GRPCRoute`);
    }
    const action = gwAction(r, { filters: rule.filters, backendRefs: rule.backendRefs }, f, hosts, []);
    built.push({ rule: i, ...(ruleName ? { ruleName } : {}), matches, action });
  });
  const out = new Map<string, RankedGrpc[]>();
  for (const p of ps) {
    if (p.port !== undefined) r.warn('spec.parentRefs', 'a port on a GRPCRoute parent is not supported; the route applies to every port');
    const list: RankedGrpc[] = [];
    for (const b of built) {
      b.matches.forEach((match, j) => {
        const origin: L7Origin = { kind: 'GRPCRoute', namespace: r.namespace, name: r.name, rule: b.rule, ...(b.ruleName ? { ruleName: b.ruleName } : {}) };
        list.push({ route: { origin, ...(match ? { match } : {}), action: b.action }, rule: b.rule, match: j });
      });
    }
    out.set(p.svc, [...(out.get(p.svc) ?? []), ...list]);
  }
  return out;
}

function grpcMatch(r: Reader, raw: unknown, f: string): GrpcMatch {
  const m = r.obj(raw, f);
  r.fields(m, f, ['method', 'headers']);
  const headers: HeaderMatch[] = [];
  r.arr(m.headers, join(f, 'headers'), 16).forEach((h, k) => {
    const hm = gwNameValue(r, h, join(join(f, 'headers'), k));
    if (!headers.some((x) => x.name === hm.name)) headers.push({ name: hm.name, match: hm.match, invert: false });
  });
  const mm = r.optObj(m.method, join(f, 'method'));
  if (!mm) return { headers };
  r.fields(mm, join(f, 'method'), ['type', 'service', 'method']);
  const type = r.optStr(mm.type, join(f, 'method.type')) ?? 'Exact';
  const service = r.optStr(mm.service, join(f, 'method.service'));
  const method = r.optStr(mm.method, join(f, 'method.method'));
  if (!service && !method) r.fail(join(f, 'method'), 'at least one of service and method must be set');
  if (type === 'Exact') {
    if (service !== undefined && !/^\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$/.test(service)) r.fail(join(f, 'method.service'), `invalid gRPC service name ${JSON.stringify(service)}`);
    if (method !== undefined && !/^[A-Za-z_][A-Za-z_0-9]*$/.test(method)) r.fail(join(f, 'method.method'), `invalid gRPC method name ${JSON.stringify(method)}`);
    return { headers, method: { type: 'exact', ...(service ? { service } : {}), ...(method ? { method } : {}) } };
  }
  if (type === 'RegularExpression') {
    if (service !== undefined) r.regex(service, join(f, 'method.service'));
    if (method !== undefined) r.regex(method, join(f, 'method.method'));
    return { headers, method: { type: 'regex', ...(service ? { service } : {}), ...(method ? { method } : {}) } };
  }
  return r.fail(join(f, 'method.type'), 'must be Exact or RegularExpression');
}

// ============================================================================================
// Istio VirtualService
// ============================================================================================

const VS_IGNORED_SPEC = {
  tcp: 'tcp routes are not supported by ambit waypoints yet; ignored',
  tls: 'tls routes are not supported by ambit waypoints yet; ignored',
  exportTo: 'exportTo is not enforced; the VirtualService applies to every client of its hosts',
};

function virtualService(r: Reader, spec: Obj, hosts: Hosts): Map<string, HttpRoute[]> {
  r.fields(spec, 'spec', ['hosts', 'gateways', 'http'], VS_IGNORED_SPEC);
  const out = new Map<string, HttpRoute[]>();
  const gateways = r.arr(spec.gateways, 'spec.gateways', 64).map((g, i) => r.str(g, join('spec.gateways', i)));
  const hostList = r.arr(spec.hosts, 'spec.hosts', 256).map((h, i) => r.str(h, join('spec.hosts', i)));
  if (hostList.length === 0) r.fail('spec.hosts', 'at least one host is required');
  // Routes are read (and validated) even when they end up applying nowhere: a bad VS is reported either way.
  const routes: HttpRoute[] = [];
  r.arr(spec.http, 'spec.http', 4096).forEach((raw, i) => routes.push(...vsHttpRule(r, raw, join('spec.http', i), i, hosts)));
  if (gateways.length > 0 && !gateways.includes('mesh')) {
    r.warn('spec.gateways', `applies to gateways (${gateways.join(', ')}) only, not to mesh traffic; nothing to do for waypoints`);
    return out;
  }
  hostList.forEach((h, i) => {
    if (h.includes('*')) { r.warn(join('spec.hosts', i), `wildcard host ${JSON.stringify(h)} is not supported for mesh routing; ignored`); return; }
    const fq = hosts.fqdn(h, r.namespace);
    const svc = hosts.key(fq);
    if (!svc) { r.warn(join('spec.hosts', i), `host ${JSON.stringify(h)} (${fq}) is not a known Service; ignored until it exists`); return; }
    out.set(svc, routes);
  });
  return out;
}

function vsHttpRule(r: Reader, raw: unknown, f: string, index: number, hosts: Hosts): HttpRoute[] {
  const rule = r.obj(raw, f);
  if (rule.delegate !== undefined) r.fail(join(f, 'delegate'), 'delegate is not supported');
  r.fields(rule, f, ['name', 'match', 'route', 'redirect', 'directResponse', 'rewrite', 'timeout', 'retries', 'fault', 'mirror', 'mirrorPercentage', 'mirrorPercent', 'mirrors', 'headers'], {
    corsPolicy: 'corsPolicy is not supported yet; ignored',
  });
  const ruleName = r.optStr(rule.name, join(f, 'name'));
  const origin: L7Origin = { kind: 'VirtualService', namespace: r.namespace, name: r.name, rule: index, ...(ruleName ? { ruleName } : {}) };

  const rawMatches = r.arr(rule.match, join(f, 'match'), 64);
  const matches: (HttpMatch | undefined)[] = [];
  if (rawMatches.length === 0) matches.push(undefined);
  rawMatches.forEach((m, j) => {
    const hm = vsMatch(r, m, join(join(f, 'match'), j));
    if (hm) matches.push(hm);
  });

  const destinations = r.arr(rule.route, join(f, 'route'), 64);
  const decisions = ['route', 'redirect', 'directResponse'].filter((k) => (k === 'route' ? destinations.length > 0 : rule[k] !== undefined && rule[k] !== null));
  if (decisions.length !== 1) r.fail(f, `exactly one of route, redirect and directResponse is required, got ${decisions.length === 0 ? 'none' : decisions.join(', ')}`);

  const backends = destinations.map((d, i) => vsDestination(r, d, join(join(f, 'route'), i), hosts));
  if (backends.length === 1 && backends[0]!.weight === 0) backends[0] = { ...backends[0]!, weight: 100 };
  if (backends.length > 1) {
    const sum = backends.reduce((a, b) => a + b.weight, 0);
    if (sum === 0) r.fail(join(f, 'route'), 'several destinations need weights; they all are 0');
    if (sum !== 100) r.warn(join(f, 'route'), `weights sum to ${sum}, not 100; each destination gets weight/sum`);
  }

  let redirect: Redirect | undefined;
  const rd = r.optObj(rule.redirect, join(f, 'redirect'));
  if (rd) {
    const rf = join(f, 'redirect');
    r.fields(rd, rf, ['uri', 'authority', 'port', 'derivePort', 'scheme', 'redirectCode']);
    if (rd.port !== undefined && rd.derivePort !== undefined) r.fail(rf, 'port and derivePort are mutually exclusive');
    const uri = r.optStr(rd.uri, join(rf, 'uri'));
    const authority = r.optStr(rd.authority, join(rf, 'authority'));
    const scheme = r.optStr(rd.scheme, join(rf, 'scheme'));
    const port = r.optInt(rd.port, join(rf, 'port'), 1, 65535);
    const dp = r.optStr(rd.derivePort, join(rf, 'derivePort'));
    if (dp !== undefined && dp !== 'FROM_PROTOCOL_DEFAULT' && dp !== 'FROM_REQUEST_PORT') r.fail(join(rf, 'derivePort'), 'must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT');
    const statusCode = r.optInt(rd.redirectCode, join(rf, 'redirectCode'), 300, 399) ?? 301;
    redirect = {
      ...(scheme ? { scheme } : {}), ...(authority ? { hostname: authority } : {}), ...(port ? { port } : {}),
      ...(uri !== undefined ? { path: { type: 'full' as const, value: uri } } : {}),
      ...(dp ? { derivePort: dp === 'FROM_PROTOCOL_DEFAULT' ? 'protocol-default' as const : 'request-port' as const } : {}),
      statusCode,
    };
  }
  let directResponse: { status: number; body?: string } | undefined;
  const dr = r.optObj(rule.directResponse, join(f, 'directResponse'));
  if (dr) {
    r.fields(dr, join(f, 'directResponse'), ['status', 'body']);
    const status = r.int(dr.status, join(f, 'directResponse.status'), 200, 599);
    const body = r.optObj(dr.body, join(f, 'directResponse.body'));
    let text: string | undefined;
    if (body) {
      r.fields(body, join(f, 'directResponse.body'), ['string', 'bytes']);
      text = body.string !== undefined ? r.str(body.string, join(f, 'directResponse.body.string'))
        : Buffer.from(r.str(body.bytes, join(f, 'directResponse.body.bytes')), 'base64').toString('utf8');
      if (text.length > 64 * 1024) r.fail(join(f, 'directResponse.body'), 'larger than 64 KiB');
    }
    directResponse = { status, ...(text !== undefined ? { body: text } : {}) };
  }

  let rewriteUri: string | undefined;
  let rewrite: Rewrite | undefined;
  const rw = r.optObj(rule.rewrite, join(f, 'rewrite'));
  if (rw) {
    const rf = join(f, 'rewrite');
    r.fields(rw, rf, ['uri', 'authority', 'uriRegexRewrite']);
    if (rw.uri !== undefined && rw.uriRegexRewrite !== undefined) r.fail(rf, 'uri and uriRegexRewrite are mutually exclusive');
    if (redirect) r.fail(rf, 'rewrite cannot be combined with redirect');
    const authority = r.optStr(rw.authority, join(rf, 'authority'));
    rewriteUri = r.optStr(rw.uri, join(rf, 'uri'));
    const rr = r.optObj(rw.uriRegexRewrite, join(rf, 'uriRegexRewrite'));
    let regexPath: Rewrite['path'];
    if (rr) {
      r.fields(rr, join(rf, 'uriRegexRewrite'), ['match', 'rewrite']);
      regexPath = { type: 'regex', pattern: r.regex(rr.match, join(rf, 'uriRegexRewrite.match')), value: r.str(rr.rewrite, join(rf, 'uriRegexRewrite.rewrite')) };
    }
    rewrite = { ...(authority ? { hostname: authority } : {}), ...(regexPath ? { path: regexPath } : {}) };
  }

  const timeoutMs = r.optDuration(rule.timeout, join(f, 'timeout'));
  const retries = vsRetries(r, rule.retries, join(f, 'retries'));
  const fault = vsFault(r, rule.fault, join(f, 'fault'));
  const mirrors = vsMirrors(r, rule, f, hosts);
  const hdrs = vsHeaders(r, rule.headers, join(f, 'headers'));

  return matches.map((match) => {
    // `rewrite.uri` after a prefix match replaces just the prefix; after anything else the whole path.
    let rwr = rewrite;
    if (rewriteUri !== undefined) {
      const p = match?.path;
      rwr = { ...rewrite, path: p?.type === 'prefix' ? { type: 'prefix', value: rewriteUri } : { type: 'full', value: rewriteUri } };
    }
    const action: HttpAction = {
      backends: redirect || directResponse ? [] : backends,
      ...(redirect ? { redirect } : {}), ...(directResponse ? { directResponse } : {}),
      ...(rwr && (rwr.hostname || rwr.path) ? { rewrite: rwr } : {}),
      ...(hdrs.request ? { requestHeaders: hdrs.request } : {}), ...(hdrs.response ? { responseHeaders: hdrs.response } : {}),
      ...(timeoutMs ? { timeoutMs } : {}), retries, ...(fault ? { fault } : {}), mirrors,
    };
    return { origin, ...(match ? { match } : {}), action };
  });
}

/** One VS match, or undefined when it uses a selector a waypoint cannot evaluate (it then never matches). */
function vsMatch(r: Reader, raw: unknown, f: string): HttpMatch | undefined {
  const m = r.obj(raw, f);
  r.fields(m, f, ['name', 'uri', 'scheme', 'method', 'authority', 'headers', 'withoutHeaders', 'queryParams', 'ignoreUriCase', 'port', 'sourceLabels', 'sourceNamespace', 'gateways', 'statPrefix']);
  const ignoreCase = m.ignoreUriCase === undefined ? false : r.bool(m.ignoreUriCase, join(f, 'ignoreUriCase'));
  let path: PathMatch | undefined;
  if (m.uri !== undefined) {
    const sm = vsStringMatch(r, m.uri, join(f, 'uri'), false);
    if ('exact' in sm) path = { type: 'exact', value: sm.exact, segmented: false, ignoreCase };
    else if ('prefix' in sm) path = { type: 'prefix', value: sm.prefix, segmented: false, ignoreCase };
    else if ('regex' in sm) path = { type: 'regex', value: sm.regex, segmented: false, ignoreCase: false };
  }
  let method: string | undefined;
  const headers: HeaderMatch[] = [];
  if (m.method !== undefined) {
    const sm = vsStringMatch(r, m.method, join(f, 'method'), false);
    if ('exact' in sm) method = sm.exact.toUpperCase();
    else headers.push({ name: ':method', match: sm, invert: false });
  }
  const headerMap = (v: unknown, ff: string, invert: boolean): void => {
    const o = r.optObj(v, ff);
    if (!o) return;
    const keys = Object.keys(o);
    if (keys.length > 64) r.fail(ff, 'at most 64 headers');
    for (const k of keys) {
      if (k !== k.toLowerCase()) r.fail(join(ff, k), 'header names must be lowercase');
      headers.push({ name: k, match: vsStringMatch(r, o[k], join(ff, k), true), invert });
    }
  };
  headerMap(m.headers, join(f, 'headers'), false);
  headerMap(m.withoutHeaders, join(f, 'withoutHeaders'), true);
  const queryParams: QueryParamMatch[] = [];
  const qp = r.optObj(m.queryParams, join(f, 'queryParams'));
  if (qp) for (const k of Object.keys(qp)) queryParams.push({ name: k, match: vsStringMatch(r, qp[k], join(join(f, 'queryParams'), k), true) });
  const authority = m.authority !== undefined ? vsStringMatch(r, m.authority, join(f, 'authority'), false) : undefined;
  const scheme = m.scheme !== undefined ? vsStringMatch(r, m.scheme, join(f, 'scheme'), false) : undefined;
  const port = r.optInt(m.port, join(f, 'port'), 1, 65535);
  for (const sel of ['sourceLabels', 'sourceNamespace', 'gateways'] as const) {
    if (m[sel] !== undefined && m[sel] !== null) {
      if (sel === 'gateways' && Array.isArray(m[sel]) && (m[sel] as unknown[]).includes('mesh')) continue;
      // A waypoint does not know the client's labels at config time; dropping the match is the safe reading.
      r.warn(join(f, sel), `${sel} selects clients, which a waypoint cannot do; this match never applies`);
      return undefined;
    }
  }
  return {
    ...(path ? { path } : {}), ...(method ? { method } : {}), headers, queryParams,
    ...(authority ? { authority } : {}), ...(scheme ? { scheme } : {}), ...(port ? { port } : {}),
  };
}

function vsStringMatch(r: Reader, raw: unknown, f: string, allowPresence: boolean): L7StringMatch {
  const o = r.obj(raw, f);
  r.fields(o, f, ['exact', 'prefix', 'regex']);
  const keys = Object.keys(o).filter((k) => o[k] !== undefined && o[k] !== null);
  if (keys.length === 0) {
    if (allowPresence) return { present: true };
    return r.fail(f, 'one of exact, prefix or regex is required');
  }
  if (keys.length > 1) r.fail(f, 'exactly one of exact, prefix or regex');
  const k = keys[0]!;
  if (k === 'regex') return { regex: r.regex(o.regex, join(f, 'regex')) };
  const v = r.str(o[k], join(f, k));
  return k === 'exact' ? { exact: v } : { prefix: v };
}

function vsDestination(r: Reader, raw: unknown, f: string, hosts: Hosts): WeightedBackend {
  const o = r.obj(raw, f);
  r.fields(o, f, ['destination', 'weight', 'headers']);
  const d = vsDest(r, o.destination, join(f, 'destination'), hosts);
  const weight = r.optInt(o.weight, join(f, 'weight'), 0, MAX_WEIGHT_ISTIO) ?? 0;
  const hdrs = vsHeaders(r, o.headers, join(f, 'headers'));
  return { ...d, weight, ...(hdrs.request ? { requestHeaders: hdrs.request } : {}), ...(hdrs.response ? { responseHeaders: hdrs.response } : {}) };
}

function vsDest(r: Reader, raw: unknown, f: string, hosts: Hosts): { host: string; service?: string; port?: number; subset?: string } {
  const d = r.obj(raw, f);
  r.fields(d, f, ['host', 'subset', 'port']);
  const written = r.str(d.host, join(f, 'host'));
  if (written === '') r.fail(join(f, 'host'), 'must not be empty');
  if (written.includes('*')) r.fail(join(f, 'host'), 'a destination host cannot be a wildcard');
  const host = hosts.fqdn(written, r.namespace);
  const service = hosts.key(host);
  if (!service) r.warn(join(f, 'host'), `host ${JSON.stringify(written)} (${host}) is not a known Service; its share gets 500 until it exists`);
  const subset = r.optStr(d.subset, join(f, 'subset'));
  let port: number | undefined;
  const p = r.optObj(d.port, join(f, 'port'));
  if (p) { r.fields(p, join(f, 'port'), ['number']); port = r.int(p.number, join(f, 'port.number'), 1, 65535); }
  return { host, ...(service ? { service } : {}), ...(port ? { port } : {}), ...(subset ? { subset } : {}) };
}

function vsHeaders(r: Reader, raw: unknown, f: string): { request?: HeaderModifier; response?: HeaderModifier } {
  const o = r.optObj(raw, f);
  if (!o) return {};
  r.fields(o, f, ['request', 'response']);
  const one = (v: unknown, ff: string): HeaderModifier | undefined => {
    const h = r.optObj(v, ff);
    if (!h) return undefined;
    r.fields(h, ff, ['set', 'add', 'remove']);
    const pairs = (k: 'set' | 'add'): [string, string][] => {
      const m = r.optObj(h[k], join(ff, k)) ?? {};
      const keys = Object.keys(m);
      if (keys.length > 64) r.fail(join(ff, k), 'at most 64 headers');
      return keys.map((n) => {
        const value = r.str(m[n], join(join(ff, k), n));
        if (/[\r\n\0]/.test(value)) r.fail(join(join(ff, k), n), 'must not contain CR, LF or NUL');
        return [n.toLowerCase(), value];
      });
    };
    return { set: pairs('set'), add: pairs('add'), remove: r.arr(h.remove, join(ff, 'remove'), 64).map((n, i) => r.str(n, join(join(ff, 'remove'), i)).toLowerCase()) };
  };
  const request = one(o.request, join(f, 'request'));
  const response = one(o.response, join(f, 'response'));
  return { ...(request ? { request } : {}), ...(response ? { response } : {}) };
}

function vsRetries(r: Reader, raw: unknown, f: string): RetryPolicy {
  const o = r.optObj(raw, f);
  if (!o) return defaultRetry();
  r.fields(o, f, ['attempts', 'perTryTimeout', 'retryOn', 'backoff'], {
    retryRemoteLocalities: 'locality-aware retries are not supported; ignored',
    retryIgnorePreviousHosts: 'retries always prefer another endpoint; ignored',
  });
  const attempts = r.optInt(o.attempts, join(f, 'attempts'), 0, 100) ?? 2;
  const perTryTimeoutMs = r.optDuration(o.perTryTimeout, join(f, 'perTryTimeout'));
  if (perTryTimeoutMs !== undefined && perTryTimeoutMs < 1) r.fail(join(f, 'perTryTimeout'), 'must be at least 1ms');
  const backoffBaseMs = r.optDuration(o.backoff, join(f, 'backoff')) ?? 25;
  let retryOn = DEFAULT_RETRY_ON;
  const codes: number[] = [];
  const ro = r.optStr(o.retryOn, join(f, 'retryOn'));
  if (ro !== undefined) {
    const tokens = ro.split(',').map((t) => t.trim()).filter((t) => t !== '');
    retryOn = [];
    for (const t of tokens) {
      if (/^\d+$/.test(t)) {
        const c = Number(t);
        if (c < 100 || c > 599) r.fail(join(f, 'retryOn'), `status code ${t} out of range`);
        codes.push(c);
      } else if (RETRY_ON_TOKENS.has(t)) retryOn.push(t);
      else r.fail(join(f, 'retryOn'), `unknown retry condition ${JSON.stringify(t)}`);
    }
    if (codes.length > 0 && !retryOn.includes('retriable-status-codes')) retryOn.push('retriable-status-codes');
  } else codes.push(503);
  return { attempts, ...(perTryTimeoutMs !== undefined ? { perTryTimeoutMs } : {}), retryOn, retriableStatusCodes: codes, backoffBaseMs };
}

function vsPercentage(r: Reader, raw: unknown, f: string): number | undefined {
  const o = r.optObj(raw, f);
  if (!o) return undefined;
  r.fields(o, f, ['value']);
  return r.percent(o.value ?? 0, join(f, 'value'));
}

function vsFault(r: Reader, raw: unknown, f: string): FaultPolicy | undefined {
  const o = r.optObj(raw, f);
  if (!o) return undefined;
  r.fields(o, f, ['delay', 'abort']);
  let delay: FaultPolicy['delay'];
  let abort: FaultPolicy['abort'];
  const d = r.optObj(o.delay, join(f, 'delay'));
  if (d) {
    r.fields(d, join(f, 'delay'), ['fixedDelay', 'percentage', 'percent']);
    const ms = r.duration(d.fixedDelay, join(f, 'delay.fixedDelay'));
    // With no percentage nothing is injected (reference §2.2); `percent` is the deprecated integer form.
    const percent = vsPercentage(r, d.percentage, join(f, 'delay.percentage')) ?? (d.percent !== undefined ? r.int(d.percent, join(f, 'delay.percent'), 0, 100) : 0);
    delay = { percent, ms };
  }
  const a = r.optObj(o.abort, join(f, 'abort'));
  if (a) {
    r.fields(a, join(f, 'abort'), ['httpStatus', 'grpcStatus', 'percentage']);
    const hs = r.optInt(a.httpStatus, join(f, 'abort.httpStatus'), 200, 599);
    let gs: number | undefined;
    if (a.grpcStatus !== undefined) {
      const codes = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED',
        'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
      const g = r.str(a.grpcStatus, join(f, 'abort.grpcStatus'));
      gs = codes.indexOf(g);
      if (gs < 0) r.fail(join(f, 'abort.grpcStatus'), `unknown gRPC status ${JSON.stringify(g)}`);
    }
    if ((hs === undefined) === (gs === undefined)) r.fail(join(f, 'abort'), 'exactly one of httpStatus and grpcStatus');
    const percent = vsPercentage(r, a.percentage, join(f, 'abort.percentage')) ?? 0;
    abort = { percent, ...(hs !== undefined ? { httpStatus: hs } : {}), ...(gs !== undefined ? { grpcStatus: gs } : {}) };
  }
  return { ...(delay ? { delay } : {}), ...(abort ? { abort } : {}) };
}

function vsMirrors(r: Reader, rule: Obj, f: string, hosts: Hosts): Mirror[] {
  const out: Mirror[] = [];
  if (rule.mirror !== undefined && rule.mirror !== null) {
    if (rule.mirrors !== undefined) r.fail(join(f, 'mirrors'), 'mirror and mirrors are mutually exclusive');
    const d = vsDest(r, rule.mirror, join(f, 'mirror'), hosts);
    const pct = vsPercentage(r, rule.mirrorPercentage, join(f, 'mirrorPercentage'))
      ?? (rule.mirrorPercent !== undefined ? r.int(rule.mirrorPercent, join(f, 'mirrorPercent'), 0, 100) : 100);
    out.push({ ...d, percent: pct });
  }
  r.arr(rule.mirrors, join(f, 'mirrors'), 16).forEach((raw, i) => {
    const ff = join(join(f, 'mirrors'), i);
    const m = r.obj(raw, ff);
    r.fields(m, ff, ['destination', 'percentage']);
    out.push({ ...vsDest(r, m.destination, join(ff, 'destination'), hosts), percent: vsPercentage(r, m.percentage, join(ff, 'percentage')) ?? 100 });
  });
  return out;
}

// ============================================================================================
// Istio DestinationRule
// ============================================================================================

function destinationRule(r: Reader, spec: Obj, hosts: Hosts): [string, DestinationPolicy] | undefined {
  r.fields(spec, 'spec', ['host', 'trafficPolicy', 'subsets'], {
    exportTo: 'exportTo is not enforced; the DestinationRule applies to every client',
    workloadSelector: 'workloadSelector scopes a rule to sidecars; waypoints apply the rule to every client',
  });
  const written = r.str(spec.host, 'spec.host');
  if (written === '') r.fail('spec.host', 'must not be empty');
  const trafficPolicy = spec.trafficPolicy === undefined ? {} : trafficPolicyOf(r, spec.trafficPolicy, 'spec.trafficPolicy');
  const names = new Set<string>();
  const subsets: Subset[] = r.arr(spec.subsets, 'spec.subsets', 256).map((raw, i) => {
    const f = join('spec.subsets', i);
    const s = r.obj(raw, f);
    r.fields(s, f, ['name', 'labels', 'trafficPolicy']);
    const name = r.str(s.name, join(f, 'name'));
    if (!/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$/.test(name)) r.fail(join(f, 'name'), `invalid subset name ${JSON.stringify(name)}`);
    if (names.has(name)) r.fail(join(f, 'name'), `duplicate subset ${name}`);
    names.add(name);
    const lo = r.optObj(s.labels, join(f, 'labels')) ?? {};
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(lo)) labels[k] = r.str(v, join(join(f, 'labels'), k));
    // A subset's policy replaces the rule's policy one top-level field at a time.
    const own = s.trafficPolicy === undefined ? {} : trafficPolicyOf(r, s.trafficPolicy, join(f, 'trafficPolicy'));
    return { name, labels, trafficPolicy: { ...trafficPolicy, ...own } };
  });
  if (written.includes('*')) { r.warn('spec.host', `wildcard host ${JSON.stringify(written)} is not supported; ignored`); return undefined; }
  const host = hosts.fqdn(written, r.namespace);
  const svc = hosts.key(host);
  if (!svc) { r.warn('spec.host', `host ${JSON.stringify(written)} (${host}) is not a known Service; ignored until it exists`); return undefined; }
  return [svc, { origin: { kind: 'DestinationRule', namespace: r.namespace, name: r.name, rule: 0 }, trafficPolicy, subsets }];
}

const U32 = 2 ** 32 - 1;

function trafficPolicyOf(r: Reader, raw: unknown, f: string): TrafficPolicy {
  const o = r.obj(raw, f);
  r.fields(o, f, ['loadBalancer', 'connectionPool', 'outlierDetection'], {
    tls: 'tls settings are ignored: the mesh always uses its own mTLS (HBONE) between workloads',
    portLevelSettings: 'portLevelSettings are not supported yet; ignored',
    tunnel: 'tunnel settings are not supported; ignored',
    proxyProtocol: 'proxyProtocol is not supported; ignored',
    retryBudget: 'retryBudget is not supported; ignored',
  });
  let loadBalancer: LoadBalancer | undefined;
  let consistentHash: ConsistentHash | undefined;
  const lb = r.optObj(o.loadBalancer, join(f, 'loadBalancer'));
  if (lb) {
    const lf = join(f, 'loadBalancer');
    r.fields(lb, lf, ['simple', 'consistentHash'], {
      localityLbSetting: 'locality load balancing is not supported (single locality); ignored',
      warmupDurationSecs: 'slow start is not supported; ignored',
      warmup: 'slow start is not supported; ignored',
    });
    if (lb.simple !== undefined && lb.simple !== null && lb.consistentHash !== undefined && lb.consistentHash !== null) r.fail(lf, 'simple and consistentHash are mutually exclusive');
    const simple = r.optStr(lb.simple, join(lf, 'simple'));
    if (simple === 'ROUND_ROBIN' || simple === 'LEAST_REQUEST' || simple === 'RANDOM') loadBalancer = simple;
    else if (simple === 'LEAST_CONN') { r.warn(join(lf, 'simple'), 'LEAST_CONN is deprecated; using LEAST_REQUEST'); loadBalancer = 'LEAST_REQUEST'; }
    else if (simple === 'PASSTHROUGH') r.warn(join(lf, 'simple'), 'PASSTHROUGH is not supported; using the default LEAST_REQUEST');
    else if (simple !== undefined && simple !== 'UNSPECIFIED') r.fail(join(lf, 'simple'), `must be ROUND_ROBIN, LEAST_REQUEST or RANDOM, got ${JSON.stringify(simple)}`);
    const chRaw = r.optObj(lb.consistentHash, join(lf, 'consistentHash'));
    if (chRaw) consistentHash = consistentHashOf(r, chRaw, join(lf, 'consistentHash'));
  }
  let connectionPool: ConnectionPool | undefined;
  const cp = r.optObj(o.connectionPool, join(f, 'connectionPool'));
  if (cp) {
    const cf = join(f, 'connectionPool');
    r.fields(cp, cf, ['tcp', 'http']);
    const pool: { -readonly [K in keyof ConnectionPool]: ConnectionPool[K] } = {};
    const tcp = r.optObj(cp.tcp, join(cf, 'tcp'));
    if (tcp) {
      const tf = join(cf, 'tcp');
      r.fields(tcp, tf, ['maxConnections', 'connectTimeout', 'idleTimeout'], {
        tcpKeepalive: 'tcpKeepalive is not supported yet; OS defaults apply',
        maxConnectionDuration: 'maxConnectionDuration is not supported yet; ignored',
      });
      pool.maxConnections = r.optInt(tcp.maxConnections, join(tf, 'maxConnections'), 1, U32);
      pool.connectTimeoutMs = r.optDuration(tcp.connectTimeout, join(tf, 'connectTimeout'));
      pool.idleTimeoutMs = r.optDuration(tcp.idleTimeout, join(tf, 'idleTimeout'));
    }
    const h = r.optObj(cp.http, join(cf, 'http'));
    if (h) {
      const hf = join(cf, 'http');
      r.fields(h, hf, ['http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'idleTimeout'], {
        h2UpgradePolicy: 'h2UpgradePolicy is not applied: the waypoint keeps the client protocol',
        useClientProtocol: 'the waypoint always uses the client protocol; ignored',
        maxConcurrentStreams: 'maxConcurrentStreams is not supported yet; ignored',
      });
      pool.http1MaxPendingRequests = r.optInt(h.http1MaxPendingRequests, join(hf, 'http1MaxPendingRequests'), 1, U32);
      pool.http2MaxRequests = r.optInt(h.http2MaxRequests, join(hf, 'http2MaxRequests'), 1, U32);
      pool.maxRequestsPerConnection = r.optInt(h.maxRequestsPerConnection, join(hf, 'maxRequestsPerConnection'), 0, U32);
      pool.maxRetries = r.optInt(h.maxRetries, join(hf, 'maxRetries'), 0, U32);
      pool.idleTimeoutMs = r.optDuration(h.idleTimeout, join(hf, 'idleTimeout')) ?? pool.idleTimeoutMs;
    }
    for (const k of Object.keys(pool) as (keyof ConnectionPool)[]) if (pool[k] === undefined) delete pool[k];
    connectionPool = pool;
  }
  let outlierDetection: OutlierDetection | undefined;
  const od = r.optObj(o.outlierDetection, join(f, 'outlierDetection'));
  if (od) {
    const of = join(f, 'outlierDetection');
    r.fields(od, of, ['consecutive5xxErrors', 'consecutiveGatewayErrors', 'interval', 'baseEjectionTime', 'maxEjectionPercent', 'minHealthPercent'], {
      consecutiveErrors: 'consecutiveErrors is deprecated and ignored; use consecutive5xxErrors',
      splitExternalLocalOriginErrors: 'local-origin error accounting is not supported; ignored',
      consecutiveLocalOriginFailures: 'local-origin error accounting is not supported; ignored',
      outlierDetectionHttpErrorCodes: 'custom error codes are not supported; 5xx counts',
    });
    const gw = r.optInt(od.consecutiveGatewayErrors, join(of, 'consecutiveGatewayErrors'), 0, U32);
    const five = r.optInt(od.consecutive5xxErrors, join(of, 'consecutive5xxErrors'), 0, U32) ?? 5;
    const interval = r.optDuration(od.interval, join(of, 'interval')) ?? 10_000;
    if (interval < 1) r.fail(join(of, 'interval'), 'must be at least 1ms');
    const base = r.optDuration(od.baseEjectionTime, join(of, 'baseEjectionTime')) ?? 30_000;
    if (base < 1) r.fail(join(of, 'baseEjectionTime'), 'must be at least 1ms');
    outlierDetection = {
      consecutive5xxErrors: five,
      ...(gw !== undefined && gw > 0 ? { consecutiveGatewayErrors: gw } : {}),
      intervalMs: interval,
      baseEjectionTimeMs: base,
      maxEjectionPercent: r.optInt(od.maxEjectionPercent, join(of, 'maxEjectionPercent'), 0, 100) ?? 10,
      minHealthPercent: r.optInt(od.minHealthPercent, join(of, 'minHealthPercent'), 0, 100) ?? 0,
    };
    if (gw !== undefined && gw > 0 && five > 0 && gw >= five) r.warn(join(of, 'consecutiveGatewayErrors'), 'has no effect when not below consecutive5xxErrors');
  }
  return {
    ...(loadBalancer ? { loadBalancer } : {}), ...(consistentHash ? { consistentHash } : {}),
    ...(connectionPool ? { connectionPool } : {}), ...(outlierDetection ? { outlierDetection } : {}),
  };
}

/** `loadBalancer.consistentHash`: exactly one key (header, cookie, source IP, query parameter); ring or maglev. */
function consistentHashOf(r: Reader, o: Obj, f: string): ConsistentHash {
  r.fields(o, f, ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName', 'ringHash', 'maglev', 'minimumRingSize'], {
    localityLbSetting: 'locality load balancing is not supported (single locality); ignored',
  });
  const keys = ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'].filter((k) => o[k] !== undefined && o[k] !== null && o[k] !== false);
  if (keys.length !== 1) r.fail(f, `exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required, got ${keys.length === 0 ? 'none' : keys.join(', ')}`);
  let key: ConsistentHash['key'];
  switch (keys[0]) {
    case 'httpHeaderName': {
      const h = r.str(o.httpHeaderName, join(f, 'httpHeaderName')).toLowerCase();
      if (!/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(h)) r.fail(join(f, 'httpHeaderName'), `invalid header name ${JSON.stringify(h)}`);
      key = { header: h };
      break;
    }
    case 'httpCookie': {
      const cf = join(f, 'httpCookie');
      const c = r.obj(o.httpCookie, cf);
      r.fields(c, cf, ['name', 'path', 'ttl'], { attributes: 'cookie attributes are not supported; ignored' });
      const name = r.str(c.name, join(cf, 'name'));
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) r.fail(join(cf, 'name'), `invalid cookie name ${JSON.stringify(name)}`);
      const path = r.optStr(c.path, join(cf, 'path'));
      const ttlMs = r.optDuration(c.ttl, join(cf, 'ttl'));
      if (ttlMs !== undefined && ttlMs > 0) r.warn(join(cf, 'ttl'), 'the waypoint does not issue the cookie; requests without it are balanced at random');
      key = { cookie: name, ...(ttlMs !== undefined ? { ttlMs } : {}), ...(path !== undefined ? { path } : {}) };
      break;
    }
    case 'useSourceIp':
      if (r.bool(o.useSourceIp, join(f, 'useSourceIp')) !== true) r.fail(join(f, 'useSourceIp'), 'must be true when set');
      key = { sourceIp: true };
      break;
    default: {
      const q = r.str(o.httpQueryParameterName, join(f, 'httpQueryParameterName'));
      if (q === '') r.fail(join(f, 'httpQueryParameterName'), 'must not be empty');
      key = { queryParameter: q };
    }
  }
  if (o.ringHash !== undefined && o.maglev !== undefined) r.fail(f, 'ringHash and maglev are mutually exclusive');
  let minimumRingSize = r.optInt(o.minimumRingSize, join(f, 'minimumRingSize'), 1, 8_388_608);
  const ring = r.optObj(o.ringHash, join(f, 'ringHash'));
  if (ring) {
    r.fields(ring, join(f, 'ringHash'), ['minimumRingSize']);
    minimumRingSize = r.optInt(ring.minimumRingSize, join(f, 'ringHash.minimumRingSize'), 1, 8_388_608) ?? minimumRingSize;
  }
  const mg = r.optObj(o.maglev, join(f, 'maglev'));
  if (mg) {
    r.fields(mg, join(f, 'maglev'), ['tableSize']);
    if (mg.tableSize !== undefined) r.warn(join(f, 'maglev.tableSize'), 'the table size is fixed at 65537; ignored');
  }
  return { key, algorithm: mg ? 'maglev' : 'ring', ...(minimumRingSize !== undefined ? { minimumRingSize } : {}) };
}
