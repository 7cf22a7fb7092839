/**
 * Who is on the other end of an upgrade request. Two ways: a bootstrap token shared on the local
 * machine (the client names its node and role), or a Kubernetes service-account token checked
 * with a TokenReview (the API server names the node the pod runs on).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { AuthenticationV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import { MeshError, errorMessage } from '../../core/index.js';
import { parseSpiffeUri } from '../../identity/index.js';
import type { Identity } from '../../identity/index.js';

export type PeerRole = 'agent' | 'waypoint';

export interface Principal {
  role: PeerRole;
  /** node the peer runs on; '' when unknown (a waypoint outside Kubernetes may not say) */
  node: string;
  /** the peer's own workload identity (waypoints: certificates are only issued for it) */
  identity?: Identity;
  /** for logs and syncz: who authenticated */
  subject: string;
}

export interface Authenticator {
  /** Resolves the principal or rejects with MeshError AMBIT_XDS_UNAUTHENTICATED. */
  authenticate(req: IncomingMessage): Promise<Principal>;
}

function unauthenticated(msg: string): MeshError {
  return new MeshError('AMBIT_XDS_UNAUTHENTICATED', msg);
}

function bearer(req: IncomingMessage): string {
  const h = req.headers.authorization;
  if (!h) throw unauthenticated('no authorization header');
  const m = /^Bearer ([^\s]{1,8192})$/i.exec(h);
  if (!m) throw unauthenticated('authorization header is not "Bearer <token>"');
  return m[1]!;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function roleOf(req: IncomingMessage): PeerRole {
  const r = header(req, 'x-ambit-role') ?? 'agent';
  if (r !== 'agent' && r !== 'waypoint') throw unauthenticated(`x-ambit-role: ${JSON.stringify(r.slice(0, 40))} is neither agent nor waypoint`);
  return r;
}

/** Local mode: whoever holds the token is trusted to name its node, role and (waypoint) identity. */
export class BootstrapTokenAuthenticator implements Authenticator {
  readonly #token: Buffer;
  readonly #trustDomain: string;

  constructor(o: { token: string; trustDomain: string }) {
    if (o.token.length < 16) throw new MeshError('AMBIT_CONFIG_INVALID', 'bootstrap token: shorter than 16 characters');
    this.#token = Buffer.from(o.token);
    this.#trustDomain = o.trustDomain;
  }

  /** Read `<stateDir>/bootstrap-token`, or create it (random, mode 0600) on first start. */
  static async loadOrCreate(stateDir: string, trustDomain: string): Promise<{ authenticator: BootstrapTokenAuthenticator; token: string; path: string }> {
    const path = join(stateDir, 'bootstrap-token');
    let token: string;
    try {
      token = (await readFile(path, 'utf8')).trim();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
      token = randomBytes(32).toString('base64url');
      const tmp = `${path}.${process.pid}.tmp`;
      await writeFile(tmp, token + '\n', { mode: 0o600 });
      await rename(tmp, path);
    }
    return { authenticator: new BootstrapTokenAuthenticator({ token, trustDomain }), token, path };
  }

  async authenticate(req: IncomingMessage): Promise<Principal> {
    const got = Buffer.from(bearer(req));
    if (got.length !== this.#token.length || !timingSafeEqual(got, this.#token)) throw unauthenticated('wrong bootstrap token');
    const role = roleOf(req);
    const node = header(req, 'x-ambit-node') ?? '';
    if (role === 'agent' && !NODE_NAME.test(node)) throw unauthenticated(`x-ambit-node: ${JSON.stringify(node.slice(0, 64))} is not a node name`);
    const p: Principal = { role, node, subject: `bootstrap:${role}:${node}` };
    const idh = header(req, 'x-ambit-identity');
    if (idh) {
      let id: Identity;
      try { id = parseSpiffeUri(idh); } catch (e) { throw unauthenticated(`x-ambit-identity: ${errorMessage(e)}`); }
      if (id.trustDomain !== this.#trustDomain) throw unauthenticated(`x-ambit-identity: trust domain ${id.trustDomain} is not ${this.#trustDomain}`);
      p.identity = id;
    }
    return p;
  }
}

export interface TokenReviewOptions {
  kubeConfig: KubeConfig;
  trustDomain: string;
  /** `<namespace>/<serviceAccount>` of node agents; default ['ambit-system/ambit-node-agent'] */
  agentServiceAccounts?: readonly string[];
  /**
   * audiences the token must be valid for (the agents' projected token names one of them); the
   * review must confirm one of them. Default: none asked, the API server's own audience applies.
   */
  audiences?: readonly string[];
}

const SA_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;
const NODE_EXTRA = 'authentication.kubernetes.io/node-name';

/**
 * Kubernetes mode: the token is reviewed by the API server. Agents are recognised by their
 * service account and must carry the node-name claim (bound tokens of pods have it); every other
 * service account may ask for a waypoint session whose identity is that service account (the
 * push server then admits it only if that service account runs a waypoint pod: admitPeer).
 */
export class TokenReviewAuthenticator implements Authenticator {
  readonly #api: AuthenticationV1Api;
  readonly #o: TokenReviewOptions;
  readonly #agents: ReadonlySet<string>;

  constructor(o: TokenReviewOptions) {
    this.#o = o;
    this.#api = o.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#agents = new Set(o.agentServiceAccounts ?? ['ambit-system/ambit-node-agent']);
  }

  async authenticate(req: IncomingMessage): Promise<Principal> {
    const token = bearer(req);
    let review;
    try {
      review = await this.#api.createTokenReview({
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(this.#o.audiences ? { audiences: [...this.#o.audiences] } : {}) } },
      });
    } catch (e) {
      // the API server being unreachable is not the client's fault, but it still must not get in
      throw unauthenticated(`token review failed: ${errorMessage(e).slice(0, 200)}`);
    }
    const st = review.status;
    if (!st?.authenticated) throw unauthenticated(`token not authenticated${st?.error ? `: ${st.error}` : ''}`);
    const want = this.#o.audiences;
    if (want && want.length > 0) {
      // An API server (or webhook authenticator) that ignores audiences answers with none; only
      // an answer naming one of ours proves the token was minted for us and not for some other
      // service that could replay it here.
      const got = st.audiences ?? [];
      if (!got.some((a) => want.includes(a))) throw unauthenticated(`token is not for audience ${want.join(' or ')} (reviewed audiences: ${got.join(', ').slice(0, 200) || 'none'})`);
    }
    const user = st.user?.username ?? '';
    const m = SA_USER.exec(user);
    if (!m) throw unauthenticated(`${user || 'an anonymous user'} is not a service account`);
    const [, ns, sa] = m as unknown as [string, string, string];
    const nodeClaim = st.user?.extra?.[NODE_EXTRA]?.[0] ?? '';
    const isAgent = this.#agents.has(`${ns}/${sa}`);
    const claimed = roleOf(req);
    if (isAgent !== (claimed === 'agent')) throw unauthenticated(`service account ${ns}/${sa} may not connect as ${claimed}`);
    if (isAgent && !nodeClaim) throw unauthenticated(`token of ${ns}/${sa} carries no node name (use a bound service-account token)`);
    const p: Principal = { role: claimed, node: nodeClaim, subject: user };
    if (!isAgent) p.identity = { trustDomain: this.#o.trustDomain, namespace: ns, serviceAccount: sa };
    return p;
  }
}
