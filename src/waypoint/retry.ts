/**
 * Whether a failed attempt is tried again, pure, from a VirtualService/HTTPRoute retry policy
 * (Envoy's `retryOn` tokens) and what happened. Also the backoff between attempts.
 */
import type { RetryPolicy } from '../model/l7.js';

export type AttemptOutcome =
  | { readonly kind: 'response'; readonly status: number; readonly grpcStatus?: string | undefined }
  /** no connection to the endpoint */
  | { readonly kind: 'connect-failure' }
  /** the stream was reset or the connection closed before a response */
  | { readonly kind: 'reset'; readonly refused?: boolean }
  /** the per-try timeout fired */
  | { readonly kind: 'timeout' };

const GRPC_TOKENS: Record<string, string> = { cancelled: '1', 'deadline-exceeded': '4', 'resource-exhausted': '8', unavailable: '14', internal: '13' };

export function isRetriable(p: RetryPolicy, o: AttemptOutcome): boolean {
  const on = new Set(p.retryOn);
  switch (o.kind) {
    case 'connect-failure':
      return on.has('connect-failure') || on.has('5xx') || on.has('gateway-error') || on.has('reset') || on.has('reset-before-request');
    case 'reset':
      return on.has('reset') || on.has('5xx') || on.has('gateway-error') || (o.refused === true && on.has('refused-stream'));
    case 'timeout':
      return on.has('5xx') || on.has('gateway-error') || on.has('reset');
    case 'response': {
      const s = o.status;
      if (o.grpcStatus !== undefined && o.grpcStatus !== '0') {
        for (const [token, code] of Object.entries(GRPC_TOKENS)) if (on.has(token) && o.grpcStatus === code) return true;
      }
      if (s >= 500 && s <= 599 && on.has('5xx')) return true;
      if ((s === 502 || s === 503 || s === 504) && on.has('gateway-error')) return true;
      if (s === 409 && on.has('retriable-4xx')) return true;
      if (p.retriableStatusCodes.includes(s) && (on.has('retriable-status-codes') || p.retriableStatusCodes.length > 0)) return true;
      return false;
    }
  }
}

/** Envoy's fully jittered exponential backoff: uniform in [0, base * 2^n), capped at 10x base. */
export function backoffMs(p: RetryPolicy, retryIndex: number, random: () => number): number {
  const base = p.backoffBaseMs > 0 ? p.backoffBaseMs : 25;
  const cap = base * 10;
  const ceiling = Math.min(cap, base * 2 ** retryIndex);
  return Math.floor(random() * ceiling);
}
