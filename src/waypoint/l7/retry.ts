/**
 * Retry decisions with Envoy's `retryOn` semantics (reference §2.2), backoff and per-try deadlines. Pure:
 * the caller passes the outcome of the attempt, the clock and a random number.
 */
import type { RetryPolicy } from '../../model/index.js';

/** What became of one attempt. */
export type AttemptOutcome =
  /** a response arrived (headers); `grpcStatus` when the response carried `grpc-status` in its headers */
  | { readonly kind: 'response'; readonly status: number; readonly grpcStatus?: number | undefined }
  /** no connection to the endpoint (refused, unreachable, connect timeout) */
  | { readonly kind: 'connect-failure' }
  /** HTTP/2 REFUSED_STREAM, or GOAWAY for a stream the peer never processed */
  | { readonly kind: 'refused-stream' }
  /** connected, request (partly) sent, then a reset or disconnect before a response */
  | { readonly kind: 'reset' }
  /** the per-try timeout fired before a response */
  | { readonly kind: 'timeout' };

const GRPC_TOKENS: Record<string, number> = {
  cancelled: 1, 'deadline-exceeded': 4, 'resource-exhausted': 8, internal: 13, unavailable: 14,
};

/** Does `outcome` match the retry condition `token`? */
function matches(token: string, o: AttemptOutcome, codes: readonly number[]): boolean {
  const noResponse = o.kind !== 'response';
  switch (token) {
    case '5xx': return noResponse || (o.kind === 'response' && o.status >= 500 && o.status <= 599);
    case 'gateway-error': return noResponse || (o.kind === 'response' && (o.status === 502 || o.status === 503 || o.status === 504));
    case 'reset': return noResponse;
    case 'reset-before-request': return o.kind === 'connect-failure' || o.kind === 'refused-stream';
    case 'connect-failure': return o.kind === 'connect-failure';
    case 'refused-stream': return o.kind === 'refused-stream';
    case 'retriable-4xx': return o.kind === 'response' && o.status === 409;
    case 'retriable-status-codes': return o.kind === 'response' && codes.includes(o.status);
    case 'http3-post-connect-failure': return false;
    case 'envoy-ratelimited': return false;
    case 'retriable-headers': return false;
    default: {
      const g = GRPC_TOKENS[token];
      if (g !== undefined) return o.kind === 'response' && o.grpcStatus === g;
      return false;
    }
  }
}

/**
 * Whether to try again after attempt number `attempt` (1 = the first request) ended with `outcome`.
 * At most `1 + policy.attempts` requests are made. Numeric codes in the policy count only through the
 * `retriable-status-codes` token (the translator adds it when codes are given).
 */
export function shouldRetry(policy: RetryPolicy | undefined, attempt: number, outcome: AttemptOutcome): boolean {
  if (!policy || policy.attempts <= 0 || attempt > policy.attempts) return false;
  return policy.retryOn.some((t) => matches(t, outcome, policy.retriableStatusCodes));
}

/** A response (status) that a retry policy would retry: such a response must be held back, not streamed. */
export function isRetriableStatus(policy: RetryPolicy | undefined, status: number, grpcStatus?: number): boolean {
  return shouldRetry(policy, 1, { kind: 'response', status, grpcStatus }) && (policy?.attempts ?? 0) > 0;
}

/** Backoff cap: 10 x the base interval (Envoy's default max interval). */
export const BACKOFF_CAP_FACTOR = 10;

/**
 * Wait before retry number `retry` (1 = the first retry), ms: fully jittered exponential backoff,
 * `rand * min(base * 2^(retry-1), 10 * base)`, base `policy.backoffBaseMs` (default 25 ms).
 */
export function retryBackoffMs(policy: RetryPolicy | undefined, retry: number, rand: number): number {
  const base = policy?.backoffBaseMs && policy.backoffBaseMs > 0 ? policy.backoffBaseMs : 25;
  const ceiling = Math.min(base * 2 ** Math.max(0, Math.min(retry - 1, 30)), BACKOFF_CAP_FACTOR * base);
  const r = rand < 0 ? 0 : rand >= 1 ? 0.999999 : rand;
  return Math.floor(r * ceiling);
}

/**
 * Time this attempt may take, ms: the per-try timeout, bounded by what is left of the route timeout.
 * undefined: no limit at all. 0: the route timeout has passed (answer 504, flag `UT`).
 * @param startedAt when the request arrived (ms, the caller's clock)
 */
export function attemptTimeoutMs(routeTimeoutMs: number | undefined, policy: RetryPolicy | undefined, startedAt: number, now: number): number | undefined {
  const perTry = policy?.perTryTimeoutMs;
  const left = routeTimeoutMs === undefined ? undefined : Math.max(0, routeTimeoutMs - (now - startedAt));
  if (left === undefined) return perTry;
  if (perTry === undefined) return left;
  return Math.min(left, perTry);
}

/**
 * Deadline from a gRPC `grpc-timeout` header (`<digits><H|M|S|m|u|n>`), ms (at least 1), or undefined when
 * absent or malformed. The waypoint uses the smaller of this and the route timeout.
 */
export function grpcTimeoutMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
  const ms = n * unit[m[2]!]!;
  return ms > 0 && ms < 1 ? 1 : Math.round(ms);
}
