import type { ServiceL7 } from '../../model/index.js';
import { authorizeL7 } from './authz.js';
import type { Rand, RequestPlan } from './plan.js';
import { planRoute } from './plan.js';
import type { PreparedRequest, RequestFacts } from './request.js';
import { prepareRequest } from './request.js';
import { selectRoute } from './route.js';

/**
 * The whole decision for one request, in order: normalize (400 `DPE`), L7 authorization with the Service's
 * policies (`l7.authorization`; 403 "RBAC: access denied"), route selection (404 `NR`), the route's plan.
 * Pass an already prepared request to skip normalization.
 * @param service key of the Service the request is for (`<namespace>/<hostname>`)
 * @param hostname FQDN of that Service
 */
export function decideRequest(l7: ServiceL7 | undefined, request: RequestFacts | PreparedRequest, service: string, hostname: string, rand: Rand): RequestPlan {
  const prepared = 'facts' in request ? request : prepareRequest(request);
  if ('kind' in prepared) return prepared;
  const { deny } = authorizeL7(l7?.authorization, prepared);
  if (deny) return deny;
  const choice = selectRoute(l7, prepared, service, hostname);
  if (choice.kind === 'respond') return choice;
  return planRoute(choice, prepared, rand);
}
