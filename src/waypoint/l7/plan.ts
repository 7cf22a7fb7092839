/**
 * A chosen route's action turned into a plan for one request: local response (redirect, direct response,
 * fault abort, 500 for nothing valid to send to) or forward (backend, rewritten path and authority, header
 * modifiers, timeout, retries, mirrors, fault delay). Pure: randomness comes from the caller's `rand`.
 */
import type { HeaderModifier, HttpAction, L7Origin, PathMatch, Redirect, RetryPolicy, Rewrite, WeightedBackend } from '../../model/index.js';
import { replacePrefix } from '../../model/index.js';
import { compileRegex } from '../../policy/index.js';
import type { LocalResponse, PreparedRequest } from './request.js';
import type { RouteChoice } from './route.js';

/** A random number in [0, 1); tests pass a seeded generator. */
export type Rand = () => number;

/** Where one request (or a mirror copy) goes: a Service, optionally narrowed to a DestinationRule subset. */
export interface BackendTarget {
  /** Service key `<namespace>/<hostname>` */
  readonly service: string;
  /** FQDN of the Service */
  readonly host: string;
  /** service port (the request's port when the route names none) */
  readonly port: number;
  readonly subset?: string;
}

export interface MirrorPlan extends BackendTarget {
  /** authority of the mirrored copy: the request's authority with `-shadow` appended to the host (Envoy's habit) */
  readonly authority: string;
}

export interface ForwardPlan {
  readonly kind: 'forward';
  readonly origin?: L7Origin;
  readonly protocol: 'http' | 'grpc';
  readonly backend: BackendTarget;
  /** the path (after rewrite) with the original query, to send upstream; normalized */
  readonly path: string;
  /** `:authority` / `Host` to send upstream (after a hostname rewrite, else as received) */
  readonly authority: string;
  /** to apply to the upstream request in this order (route level, then backend level) */
  readonly requestHeaders: readonly HeaderModifier[];
  /** to apply to the response in this order (backend level, then route level) */
  readonly responseHeaders: readonly HeaderModifier[];
  /** whole request including retries, ms; absent: none */
  readonly timeoutMs?: number;
  /** absent or `attempts: 0`: no retry */
  readonly retry?: RetryPolicy;
  /** copies to send and forget (responses ignored) */
  readonly mirrors: readonly MirrorPlan[];
  /** fault injection: wait this long (ms) before forwarding */
  readonly delayMs?: number;
}

export type RespondPlan = LocalResponse & {
  readonly origin?: L7Origin;
  /** fault injection: wait this long (ms) before answering */
  readonly delayMs?: number;
  /** response header modifiers of the route that still apply to a local answer */
  readonly responseHeaders?: readonly HeaderModifier[];
};

export type RequestPlan = ForwardPlan | RespondPlan;

const DEFAULT_PORT: Record<string, number> = { http: 80, https: 443 };

/**
 * Plans the request on its route. Random numbers are drawn in a fixed order (fault delay, fault abort,
 * backend, one per mirror) so a seeded `rand` gives a reproducible plan.
 */
export function planRoute(choice: RouteChoice, req: PreparedRequest, rand: Rand): RequestPlan {
  const a = choice.action;
  const origin = choice.origin ? { origin: choice.origin } : {};
  const routeResponse = a.responseHeaders ? [a.responseHeaders] : [];
  let delayMs: number | undefined;
  if (a.fault?.delay && roll(rand, a.fault.delay.percent)) delayMs = a.fault.delay.ms;
  const delay = delayMs !== undefined ? { delayMs } : {};
  if (a.fault?.abort && roll(rand, a.fault.abort.percent)) {
    const ab = a.fault.abort;
    const grpc = ab.grpcStatus !== undefined;
    return {
      kind: 'respond', status: grpc ? 200 : ab.httpStatus ?? 500, flag: 'FI', headers: [], body: grpc ? undefined : 'fault filter abort\n',
      ...(grpc ? { grpcStatus: ab.grpcStatus } : {}), details: 'fault_filter_abort', ...origin, ...delay, responseHeaders: routeResponse,
    } as RespondPlan;
  }
  if (a.redirect) {
    return {
      kind: 'respond', status: a.redirect.statusCode, flag: '-', headers: [['location', redirectLocation(a.redirect, req, choice.pathMatch)]],
      details: 'via_upstream_redirect', ...origin, ...delay, responseHeaders: routeResponse,
    };
  }
  if (a.directResponse) {
    return {
      kind: 'respond', status: a.directResponse.status, flag: '-', headers: [],
      ...(a.directResponse.body !== undefined ? { body: a.directResponse.body } : {}),
      details: 'direct_response', ...origin, ...delay, responseHeaders: routeResponse,
    };
  }
  const i = pickWeighted(a.backends, rand);
  const b = i === undefined ? undefined : a.backends[i]!;
  if (!b || !b.service) {
    // nothing valid to send to: no backends, all weights 0, or this share names no Service (Gateway API: 500)
    return {
      kind: 'respond', status: 500, flag: '-', headers: [], body: 'no valid backend for this route\n',
      details: b ? 'backend_not_found' : 'no_valid_backend', ...origin, ...delay, responseHeaders: routeResponse,
    };
  }
  const rw = rewriteTarget(a.rewrite, req, choice.pathMatch);
  const mirrors: MirrorPlan[] = [];
  for (const m of a.mirrors) {
    if (!roll(rand, m.percent) || !m.service) continue;
    mirrors.push({
      service: m.service, host: m.host, port: m.port ?? req.facts.port, ...(m.subset ? { subset: m.subset } : {}),
      authority: shadowAuthority(rw.authority),
    });
  }
  return {
    kind: 'forward', ...origin, protocol: choice.protocol,
    backend: { service: b.service, host: b.host, port: b.port ?? req.facts.port, ...(b.subset ? { subset: b.subset } : {}) },
    path: rw.path, authority: rw.authority,
    requestHeaders: [...(a.requestHeaders ? [a.requestHeaders] : []), ...(b.requestHeaders ? [b.requestHeaders] : [])],
    responseHeaders: [...(b.responseHeaders ? [b.responseHeaders] : []), ...routeResponse],
    ...(a.timeoutMs !== undefined && a.timeoutMs > 0 ? { timeoutMs: a.timeoutMs } : {}),
    ...(a.retries && a.retries.attempts > 0 ? { retry: a.retries } : {}),
    mirrors, ...delay,
  };
}

/** true with probability percent/100 (0 never, 100 always). */
function roll(rand: Rand, percent: number): boolean {
  if (percent <= 0) return false;
  if (percent >= 100) { rand(); return true; }
  return rand() * 100 < percent;
}

/**
 * Index of the backend a request goes to: each gets weight/sum of the requests; weight 0 gets none.
 * undefined when there is none to pick (empty list or all weights 0).
 */
export function pickWeighted(backends: readonly Pick<WeightedBackend, 'weight'>[], rand: Rand): number | undefined {
  let sum = 0;
  for (const b of backends) sum += b.weight > 0 ? b.weight : 0;
  if (sum <= 0) return undefined;
  let x = rand() * sum;
  for (let i = 0; i < backends.length; i++) {
    const w = backends[i]!.weight;
    if (w <= 0) continue;
    if (x < w) return i;
    x -= w;
  }
  // rounding at the top end: the last backend with weight
  for (let i = backends.length - 1; i >= 0; i--) if (backends[i]!.weight > 0) return i;
  return undefined;
}

function withQuery(path: string, query: string): string {
  return query === '' ? path : `${path}?${query}`;
}

/** The path a rewrite or redirect turns the request's (normalized) path into, without query. */
function replacedPath(spec: { type: 'full' | 'prefix'; value: string }, req: PreparedRequest, pathMatch: PathMatch | undefined): string {
  if (spec.type === 'full') return spec.value;
  // prefix: replace what the route's prefix match matched; a route without a path match matched `/`
  const pm = pathMatch && pathMatch.type === 'prefix' ? pathMatch : { value: '/', segmented: true };
  return replacePrefix(req.path, pm.value, spec.value, pm.segmented);
}

/**
 * `Location` of a redirect (Gateway API RequestRedirect, VirtualService redirect): scheme and host replaced when
 * given; the port is the one given, else per `derivePort`, else the scheme's well-known port when the scheme is
 * given, else the port the request came to; a port equal to the scheme's default is left out. The path is
 * replaced (full, or the matched prefix) when given; the query is kept unless the new path brings its own.
 */
export function redirectLocation(r: Redirect, req: PreparedRequest, pathMatch: PathMatch | undefined): string {
  const scheme = (r.scheme ?? req.facts.scheme).toLowerCase();
  const host = r.hostname ?? hostPart(req.facts.authority);
  let port: number | undefined;
  if (r.port !== undefined) port = r.port;
  else if (r.derivePort === 'protocol-default') port = undefined;
  else if (r.derivePort === 'request-port') port = req.facts.port;
  else if (r.scheme === undefined) port = req.facts.port;
  const showPort = port !== undefined && port !== DEFAULT_PORT[scheme];
  let path = r.path ? replacedPath(r.path, req, pathMatch) : req.path;
  if (!path.includes('?')) path = withQuery(path, req.query);
  return `${scheme}://${host}${showPort ? `:${port}` : ''}${path}`;
}

/** The host of an authority as sent (case kept), without the port. */
function hostPart(authority: string): string {
  if (authority.startsWith('[')) { const end = authority.indexOf(']'); return end < 0 ? authority : authority.slice(0, end + 1); }
  const colon = authority.lastIndexOf(':');
  return colon < 0 || authority.indexOf(':') !== colon ? authority : authority.slice(0, colon);
}

/**
 * Path (with query) and authority after a URLRewrite / VirtualService rewrite. A regex rewrite replaces every
 * match of the pattern; `\1`..`\9` in the replacement are the pattern's groups.
 */
export function rewriteTarget(rw: Rewrite | undefined, req: PreparedRequest, pathMatch: PathMatch | undefined): { path: string; authority: string } {
  let path = req.path;
  if (rw?.path) {
    if (rw.path.type === 'regex') {
      const re = compileRegex(rw.path.pattern);
      // the translator refuses what does not compile; if it gets here anyway the path stays as it was
      if (!('error' in re)) path = re.regex.replaceAll(path, rw.path.value);
    } else path = replacedPath(rw.path, req, pathMatch);
    if (!path.startsWith('/')) path = '/' + path;
  }
  const authority = rw?.hostname ?? req.facts.authority;
  return { path: withQuery(path, req.query), authority };
}

function shadowAuthority(authority: string): string {
  const host = hostPart(authority);
  return `${host}-shadow${authority.slice(host.length)}`;
}

/** Mutable header map a modifier is applied to: lowercase names, a repeated header as a list. */
export type MutableHeaders = Record<string, string | string[] | undefined>;

/**
 * Applies header modifiers in order, in place: `set` overwrites (every value of a repeated header), `add`
 * appends to an existing value with `,` (`foo` + `bar` -> `foo,bar`) or creates the header, `remove` deletes.
 */
export function applyHeaderModifiers(headers: MutableHeaders, mods: readonly HeaderModifier[]): MutableHeaders {
  for (const m of mods) {
    for (const [k, v] of m.set) headers[k] = v;
    for (const [k, v] of m.add) {
      const cur = headers[k];
      if (cur === undefined) headers[k] = v;
      else if (typeof cur === 'string') headers[k] = `${cur},${v}`;
      else if (cur.length === 0) headers[k] = v;
      else { const last = cur.length - 1; headers[k] = [...cur.slice(0, last), `${cur[last]},${v}`]; }
    }
    for (const k of m.remove) delete headers[k];
  }
  return headers;
}

/** For callers that hold an HttpAction outside a RouteChoice (tests, tools). */
export type { HttpAction };
