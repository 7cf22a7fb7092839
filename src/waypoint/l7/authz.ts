import type { L7Authorization } from '../../model/index.js';
import { evaluateL7, evaluateTcp } from '../../policy/index.js';
import type { L7Decision, TcpConnectionFacts } from '../../policy/index.js';
import type { LocalResponse, PreparedRequest } from './request.js';

/** The policy attributes of a prepared request (normalized path, authority as received, every header value). */
export function authzRequest(req: PreparedRequest): Parameters<typeof evaluateL7>[1] {
  const f = req.facts;
  return {
    method: f.method, path: req.path, authority: f.authority, port: f.port, headers: f.headers,
    sourcePrincipal: f.sourcePrincipal, sourceIp: f.sourceIp, destinationIp: f.destinationIp,
  };
}

/**
 * L7 authorization of a prepared request under its Service's policies (`ServiceL7.authorization`): the decision
 * (for logs and dry-run reporting) and, when denied, the 403 to answer (`rbacDenied`).
 */
export function authorizeL7(policies: readonly L7Authorization[] | undefined, req: PreparedRequest): { readonly decision: L7Decision; readonly deny?: LocalResponse } {
  const decision = evaluateL7(policies, authzRequest(req));
  return decision.allowed ? { decision } : { decision, deny: rbacDenied(req.facts.isGrpc, decision.policy) };
}

/**
 * Authorization of a connection on a port proxied as opaque TCP, under the same policies (Envoy's TCP-chain
 * semantics, see evaluateTcp): refused connections are closed. `details` names the policy as for HTTP.
 */
export function authorizeTcp(policies: readonly L7Authorization[] | undefined, conn: TcpConnectionFacts): { readonly decision: L7Decision; readonly deny?: { readonly details: string } } {
  const decision = evaluateTcp(policies, conn);
  if (decision.allowed) return { decision };
  return { decision, deny: { details: decision.policy ? `rbac_access_denied_matched_policy[${decision.policy}]` : 'rbac_access_denied_matched_policy[none]' } };
}

/**
 * The answer to a request L7 policy refuses: 403 `RBAC: access denied` (gRPC: grpc-status 7 PERMISSION_DENIED),
 * details naming the policy like Envoy's `rbac_access_denied_matched_policy[...]`.
 */
export function rbacDenied(grpc: boolean, policy?: string): LocalResponse {
  return {
    kind: 'respond', status: grpc ? 200 : 403, flag: '-', headers: [], body: 'RBAC: access denied',
    ...(grpc ? { grpcStatus: 7 } : {}),
    details: policy ? `rbac_access_denied_matched_policy[${policy}]` : 'rbac_access_denied_matched_policy[none]',
  };
}
