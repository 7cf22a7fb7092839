/**
 * A Kubernetes API server that speaks just enough TokenReview (authentication.k8s.io/v1) for the
 * control plane's TokenReviewAuthenticator, on loopback, closed in teardown.
 *
 * A token with `aud` is reviewed as the API server does with audiences: authenticated only when one
 * of its audiences is among those asked for (the API server's default audience when none are), and
 * the answer names the common ones; `audienceAware: false` mimics an authenticator that ignores
 * audiences. A token without `aud` is authenticated whatever is asked.
 */
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

export const API_DEFAULT_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

export interface ReviewToken { username: string; node?: string; aud?: string[] }
export interface TokenReviewRequest { spec: { token: string; audiences?: string[] } }

export async function fakeTokenReviewServer(
  t: ExecutionContext,
  tokens: Record<string, ReviewToken>,
  o: { audienceAware?: boolean } = {},
): Promise<{ kc: KubeConfig; seen: TokenReviewRequest[] }> {
  const seen: TokenReviewRequest[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      if (req.method !== 'POST' || req.url?.split('?')[0] !== '/apis/authentication.k8s.io/v1/tokenreviews') { res.statusCode = 404; res.end('{}'); return; }
      const review = JSON.parse(body) as TokenReviewRequest;
      seen.push(review);
      const tok = tokens[review.spec.token];
      const asked = review.spec.audiences?.length ? review.spec.audiences : [API_DEFAULT_AUDIENCE];
      const common = tok?.aud ? tok.aud.filter((a) => asked.includes(a)) : [];
      const ok = tok !== undefined && (tok.aud === undefined || common.length > 0 || o.audienceAware === false);
      const status = ok
        ? {
          authenticated: true,
          user: { username: tok.username, uid: 'x', ...(tok.node ? { extra: { 'authentication.kubernetes.io/node-name': [tok.node] } } : {}) },
          ...(tok.aud === undefined || o.audienceAware === false ? {} : { audiences: common }),
        }
        : { authenticated: false, error: tok ? 'token audiences are invalid' : 'invalid bearer token' };
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: review.spec, status }));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => { server.closeAllConnections(); server.close(); });
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'control-plane-token' }],
    contexts: [{ name: 'ctx', cluster: 'c', user: 'u' }],
    currentContext: 'ctx',
  });
  return { kc, seen };
}
