/**
 * Every L7 decision of the waypoint, pure: no sockets, timers or files. The caller (the waypoint program)
 * passes the request's facts, the clock (`now`, ms) and random numbers, and carries out the plan it gets.
 *
 * One request, in order:
 * 1. `prepareRequest(facts)`: normalizes the path (dot segments, `\`, `%2F`, unreserved escapes, `//`), splits
 *    the query off; a `LocalResponse` (400, `DPE`) for `%00`, invalid escapes, bad methods or header names.
 * 2. `authorizeL7(l7.authorization, prepared)` (evaluation in src/policy): DENY before ALLOW; a refusal is
 *    `rbacDenied()` (403 "RBAC: access denied"). Runs on the normalized path.
 * 3. `selectRoute(l7, prepared, service, hostname)`: the first matching route (GRPCRoutes first for gRPC), the
 *    implicit route to the Service itself when it has none, or 404 `NR`.
 * 4. `planRoute(choice, prepared, rand)`: redirect / direct response / fault abort as a local response, or a
 *    `ForwardPlan` (backend picked by weight, rewritten path and authority, header modifiers, timeout, retry
 *    policy, mirrors, fault delay). `decideRequest` does 1 to 4 in one call (authorization included).
 * 5. `ClusterTable.cluster(...)` then `cluster.admit()` / `pick()` / `release()`: the endpoint by load balancer
 *    (LEAST_REQUEST default, ROUND_ROBIN, RANDOM, consistent hash), connection-pool limits (503 `UO`), outlier
 *    detection, no healthy endpoint (503 `UH`).
 * 6. After each attempt: `shouldRetry(policy, attempt, outcome)`, `retryBackoffMs`, `attemptTimeoutMs`.
 * 7. `applyHeaderModifiers(headers, plan.requestHeaders)` on the way up, `plan.responseHeaders` on the way down.
 */
export type { HeaderValues, RequestFacts, LocalResponse, ResponseFlag, PreparedRequest, NormalizedPath } from './request.js';
export { normalizePath, prepareRequest, parseQuery, headerValues, hostOf, MAX_PATH_LENGTH } from './request.js';
export type { RouteChoice } from './route.js';
export { selectRoute, selfAction, checkServiceL7 } from './route.js';
export type { Rand, BackendTarget, MirrorPlan, ForwardPlan, RespondPlan, RequestPlan, MutableHeaders } from './plan.js';
export { planRoute, pickWeighted, redirectLocation, rewriteTarget, applyHeaderModifiers } from './plan.js';
export type { AttemptOutcome } from './retry.js';
export { shouldRetry, isRetriableStatus, retryBackoffMs, attemptTimeoutMs, grpcTimeoutMs, BACKOFF_CAP_FACTOR } from './retry.js';
export { decideRequest } from './decide.js';
export type { EndpointLike, Admission, EndpointStatus } from './cluster.js';
export { Cluster, ClusterTable, subsetEndpoints, policyFor, hashKeyOf } from './cluster.js';
export type { HashTable } from './hash.js';
export { ringHash, maglev, hash32 } from './hash.js';
export { authorizeL7, authorizeTcp, authzRequest, rbacDenied } from './authz.js';
export { evaluateL7, evaluateTcp } from '../../policy/index.js';
export type { L7Decision, L7Request, TcpConnectionFacts } from '../../policy/index.js';
