/**
 * Route selection: the first route of a Service whose match holds (routes arrive already ordered by the
 * translator: Gateway API precedence or VirtualService order). GRPCRoutes are tried first for gRPC requests.
 * Regexes are compiled once per ServiceL7 object (configs are immutable; a WeakMap drops them with the config).
 */
import type {
  GrpcRoute, HeaderMatch, HttpAction, HttpMatch, HttpRoute, L7Origin, L7StringMatch, PathMatch, ServiceL7,
} from '../../model/index.js';
import { pathHasPrefix } from '../../model/index.js';
import { compileRegex } from '../../policy/index.js';
import type { CompiledRegex } from '../../policy/index.js';
import type { LocalResponse, PreparedRequest } from './request.js';
import { headerValues, parseQuery } from './request.js';

/** The route a request takes. */
export interface RouteChoice {
  readonly kind: 'route';
  /** absent for the implicit route of a Service without routes */
  readonly origin?: L7Origin;
  readonly action: HttpAction;
  /** the path match that selected the route (ReplacePrefixMatch / prefix rewrites replace its value) */
  readonly pathMatch?: PathMatch;
  /** `http` or `grpc` route */
  readonly protocol: 'http' | 'grpc';
}

type Matcher = (req: PreparedRequest, query: () => ReadonlyMap<string, readonly string[]>) => boolean;

interface CompiledRoute {
  readonly choice: RouteChoice;
  readonly matches: Matcher;
}

interface CompiledService {
  readonly grpc: readonly CompiledRoute[];
  readonly http: readonly CompiledRoute[];
  /** config problems found while compiling (a route with a bad regex never matches) */
  readonly errors: readonly string[];
}

const cache = new WeakMap<ServiceL7, CompiledService>();

/**
 * Problems with a received config the translator should have caught (a regex RE2 refuses, ...). The waypoint
 * can call this on receipt and keep its last good config when the list is not empty. Routes with a problem
 * never match, so using such a config anyway fails towards 404, never towards the wrong backend.
 */
export function checkServiceL7(l7: ServiceL7): readonly string[] {
  return compiled(l7).errors;
}

/**
 * The route for a request. `l7` undefined, or a Service with no HTTP and no gRPC routes: the implicit route to
 * the Service itself (one backend, the port the request came on). No matching route: 404 with flag `NR`.
 * @param service key of the Service the request is for (`<namespace>/<hostname>`); used for the implicit route
 * @param hostname FQDN of that Service, for the implicit backend's `host`
 */
export function selectRoute(l7: ServiceL7 | undefined, req: PreparedRequest, service: string, hostname: string): RouteChoice | LocalResponse {
  if (!l7 || (l7.http.length === 0 && l7.grpc.length === 0)) {
    return { kind: 'route', action: selfAction(service, hostname), protocol: 'http' };
  }
  const c = compiled(l7);
  let q: ReadonlyMap<string, readonly string[]> | undefined;
  const query = (): ReadonlyMap<string, readonly string[]> => (q ??= parseQuery(req.query));
  if (req.facts.isGrpc) for (const r of c.grpc) if (r.matches(req, query)) return r.choice;
  for (const r of c.http) if (r.matches(req, query)) return r.choice;
  return {
    kind: 'respond', status: 404, flag: 'NR', headers: [], body: 'no route matched\n', details: 'route_not_found',
  };
}

/** The action of a Service without routes: everything to the Service itself, on the request's port. */
export function selfAction(service: string, hostname: string): HttpAction {
  return { backends: [{ host: hostname, service, weight: 1 }], mirrors: [] };
}

function compiled(l7: ServiceL7): CompiledService {
  let c = cache.get(l7);
  if (!c) { c = compileService(l7); cache.set(l7, c); }
  return c;
}

function compileService(l7: ServiceL7): CompiledService {
  const errors: string[] = [];
  const where = (o: L7Origin): string => `${o.kind} ${o.namespace}/${o.name} rule ${o.rule}`;
  const http = l7.http.map((r: HttpRoute): CompiledRoute => {
    const choice: RouteChoice = { kind: 'route', origin: r.origin, action: r.action, protocol: 'http', ...(r.match?.path ? { pathMatch: r.match.path } : {}) };
    try {
      return { choice, matches: r.match ? httpMatcher(r.match) : always };
    } catch (e) {
      errors.push(`${where(r.origin)}: ${e instanceof Error ? e.message : String(e)}`);
      return { choice, matches: never };
    }
  });
  const grpc = l7.grpc.map((r: GrpcRoute): CompiledRoute => {
    const choice: RouteChoice = { kind: 'route', origin: r.origin, action: r.action, protocol: 'grpc' };
    try {
      if (!r.match) return { choice, matches: always };
      const hs = r.match.headers.map(headerMatcher);
      const m = r.match.method;
      let method: Matcher = always;
      if (m) {
        const svc = m.service === undefined ? undefined : m.type === 'exact' ? exactString(m.service) : regexString(m.service);
        const meth = m.method === undefined ? undefined : m.type === 'exact' ? exactString(m.method) : regexString(m.method);
        method = (req) => {
          // gRPC paths are `/<package.Service>/<Method>`; anything else is not a gRPC call of any method.
          const p = /^\/([^/]+)\/([^/]+)$/.exec(req.path);
          if (!p) return false;
          return (svc === undefined || svc(p[1]!)) && (meth === undefined || meth(p[2]!));
        };
      }
      return { choice, matches: (req, q) => method(req, q) && hs.every((h) => h(req, q)) };
    } catch (e) {
      errors.push(`${where(r.origin)}: ${e instanceof Error ? e.message : String(e)}`);
      return { choice, matches: never };
    }
  });
  return { http, grpc, errors };
}

const always: Matcher = () => true;
const never: Matcher = () => false;

function regexOf(pattern: string): CompiledRegex {
  const r = compileRegex(pattern);
  if ('error' in r) throw new Error(`regex ${JSON.stringify(pattern)}: ${r.error}`);
  return r.regex;
}

function exactString(v: string): (s: string) => boolean { return (s) => s === v; }
function regexString(v: string): (s: string) => boolean { const re = regexOf(v); return (s) => re.test(s); }

/** An L7StringMatch as a predicate on one value. */
export function stringPredicate(m: L7StringMatch, ignoreCase = false): (s: string) => boolean {
  if ('exact' in m) { const v = ignoreCase ? m.exact.toLowerCase() : m.exact; return ignoreCase ? (s) => s.toLowerCase() === v : (s) => s === v; }
  if ('prefix' in m) { const v = ignoreCase ? m.prefix.toLowerCase() : m.prefix; return ignoreCase ? (s) => s.toLowerCase().startsWith(v) : (s) => s.startsWith(v); }
  if ('regex' in m) return regexString(m.regex);
  return () => true;
}

function pathMatcher(p: PathMatch): (path: string) => boolean {
  switch (p.type) {
    case 'exact': {
      const v = p.ignoreCase ? p.value.toLowerCase() : p.value;
      return p.ignoreCase ? (s) => s.toLowerCase() === v : (s) => s === v;
    }
    case 'prefix': return (s) => pathHasPrefix(s, p.value, p.segmented, p.ignoreCase);
    case 'regex': { const re = regexOf(p.value); return (s) => re.test(s); }
  }
}

/** The value(s) a header match looks at; pseudo-headers come from the request line. */
function valuesOf(req: PreparedRequest, name: string): readonly string[] {
  switch (name) {
    case ':method': return [req.facts.method];
    case ':authority': return [req.facts.authority];
    case ':path': return [req.query === '' ? req.path : `${req.path}?${req.query}`];
    case ':scheme': return [req.facts.scheme];
    case 'host': return headerValues(req.facts.headers, 'host').length > 0 ? headerValues(req.facts.headers, 'host') : [req.facts.authority];
    default: return headerValues(req.facts.headers, name);
  }
}

/**
 * A header match holds when some value of the header matches (each line of a repeated header on its own);
 * presence holds when the header is there at all. `invert` (withoutHeaders): holds when no value matches.
 */
function headerMatcher(h: HeaderMatch): Matcher {
  const pred = stringPredicate(h.match);
  const present = 'present' in h.match;
  return (req) => {
    const vs = valuesOf(req, h.name);
    const hit = present ? vs.length > 0 : vs.some(pred);
    return h.invert ? !hit : hit;
  };
}

function httpMatcher(m: HttpMatch): Matcher {
  const checks: Matcher[] = [];
  if (m.port !== undefined) { const port = m.port; checks.push((req) => req.facts.port === port); }
  if (m.method !== undefined) { const method = m.method; checks.push((req) => req.facts.method === method); }
  if (m.path) { const pm = pathMatcher(m.path); checks.push((req) => pm(req.path)); }
  if (m.authority) {
    // DNS names are case-insensitive: exact and prefix compare lowercase; a regex sees the authority as sent.
    const pred = 'regex' in m.authority ? stringPredicate(m.authority) : stringPredicate(m.authority, true);
    checks.push((req) => pred(req.facts.authority));
  }
  if (m.scheme) { const pred = stringPredicate(m.scheme); checks.push((req) => pred(req.facts.scheme)); }
  for (const h of m.headers) checks.push(headerMatcher(h));
  for (const qp of m.queryParams) {
    const pred = stringPredicate(qp.match);
    const present = 'present' in qp.match;
    const name = qp.name;
    // The first value of a repeated parameter is compared (the Gateway API's recommendation).
    checks.push((_req, query) => {
      const vs = query().get(name);
      if (!vs || vs.length === 0) return false;
      return present || pred(vs[0]!);
    });
  }
  return (req, q) => checks.every((c) => c(req, q));
}
