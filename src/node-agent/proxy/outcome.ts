/**
 * Outcomes of the agent's connections as types, and the one place that turns them into the
 * `response_flags` label of istio_tcp_* metrics and access logs (ztunnel's vocabulary: DENY,
 * CONNECT, TLS_FAILURE, NO_HEALTHY_UPSTREAM). Decisions (route.ts, inbound.ts) and the engine's
 * close events (engine-adapter.ts) name what happened with a code; nothing reads error text.
 */
import type { HboneFailure } from '../../hbone/index.js';

/** The `response_flags` label values of the agent (ztunnel's); '-' is none. */
export type ResponseFlag = '-' | 'DENY' | 'CONNECT' | 'TLS_FAILURE' | 'H2_HANDSHAKE_FAILURE' | 'IDENTITY_ERROR' | 'NO_HEALTHY_UPSTREAM';

/** Why an inbound connection (15006) or HBONE stream (15008) was refused before it was carried. */
export type InboundRefusalReason =
  /** 15008: the proxy is stopping (not handed over) */
  | 'draining'
  /** 15008: the CONNECT `:authority` is not `ip:port` */
  | 'bad-authority'
  /** 15008: the authority names another address than the one the stream arrived on */
  | 'authority-mismatch'
  /** the target (original destination or authority) is not an address of this pod */
  | 'not-pod-address'
  /** the target port is one of the agent's own (a loop) */
  | 'agent-port'
  /** the pod is not (or no longer) in the mesh snapshot */
  | 'pod-unknown'
  /** 15008: the peer's verified SPIFFE id does not parse */
  | 'bad-peer-identity'
  /** an authorization policy denied the connection */
  | 'policy-denied';

/** Why the agent refused a captured outbound connection (15001). */
export type OutboundRefusalReason =
  /** the pod is not (or no longer) in the mesh snapshot */
  | 'pod-unknown'
  /** the pod addressed the agent's own ports */
  | 'self-call'
  /** the service or its waypoint has no ready endpoint */
  | 'no-healthy-upstream'
  /** the pod has no valid certificate for mesh traffic (fail closed) */
  | 'no-certificate';

/** The transport a refused inbound connection came on. */
export type InboundVia = 'plain' | 'hbone';

export type Outcome =
  | { readonly kind: 'inbound-refused'; readonly reason: InboundRefusalReason; readonly via: InboundVia }
  | { readonly kind: 'outbound-refused'; readonly reason: OutboundRefusalReason }
  /** 15006: the agent's own dial to the app failed */
  | { readonly kind: 'dial-failed' }
  /**
   * An engine flow closed before it was established, with the engine's failure code (undefined:
   * the engine gave none).
   */
  | { readonly kind: 'flow-failed'; readonly failure: HboneFailure | undefined };

/** The HTTP status an HBONE stream is refused with, by reason (15006 has none: the connection is reset). */
export const INBOUND_REFUSAL_STATUS: Readonly<Record<InboundRefusalReason, 400 | 401 | 503>> = Object.freeze({
  'draining': 503,
  'bad-authority': 400,
  'authority-mismatch': 400,
  'not-pod-address': 400,
  'agent-port': 400,
  'pod-unknown': 503,
  'bad-peer-identity': 400,
  'policy-denied': 401,
});

const OUTBOUND_FLAG: Readonly<Record<OutboundRefusalReason, ResponseFlag>> = Object.freeze({
  'pod-unknown': 'DENY',
  'self-call': 'DENY',
  'no-healthy-upstream': 'NO_HEALTHY_UPSTREAM',
  'no-certificate': 'TLS_FAILURE',
});

/** The response flag of an outcome. Exhaustive: a new outcome does not compile until it has a flag. */
export function responseFlag(o: Outcome): ResponseFlag {
  switch (o.kind) {
    case 'inbound-refused':
      // Policy is DENY on both ports. On 15006 every refusal is the agent's own (DENY); on 15008
      // the others are answers to a CONNECT that could not be carried (CONNECT).
      return o.reason === 'policy-denied' || o.via === 'plain' ? 'DENY' : 'CONNECT';
    case 'outbound-refused':
      return OUTBOUND_FLAG[o.reason];
    case 'dial-failed':
      return 'CONNECT';
    case 'flow-failed':
      // TLS: the handshake failed or the peer's identity was refused; everything else (TCP
      // dial, CONNECT refused or answered non-200, connection lost, cut here) is CONNECT.
      return o.failure === 'tls' ? 'TLS_FAILURE' : 'CONNECT';
  }
  return assertNever(o);
}

function assertNever(o: never): never {
  throw new Error(`unknown outcome ${JSON.stringify(o)}`);
}
