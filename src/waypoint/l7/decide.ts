import type { ServiceL7 } from '../../model/l7.js';
import type { Rand, RequestPlan } from './plan.js';
import { planRoute } from './plan.js';
import type { PreparedRequest, RequestFacts } from './request.js';
import { prepareRequest } from './request.js';
import { selectRoute } from './route.js';

/**
 * Normalize, select the route and plan it, in one call (authorization is separate: it needs the policies and
 * runs between normalization and routing; pass an already prepared request to skip step 1).
 * @param service key of the Service the request is for (`<namespace>/<hostname>`)
 * @param hostname FQDN of that Service
 */
export function decideRequest(l7: ServiceL7 | undefined, request: RequestFacts | PreparedRequest, service: string, hostname: string, rand: Rand): RequestPlan {
  const prepared = 'facts' in request ? request : prepareRequest(request);
  if ('kind' in prepared) return prepared;
  const choice = selectRoute(l7, prepared, service, hostname);
  if (choice.kind === 'respond') return choice;
  return planRoute(choice, prepared, rand);
}
