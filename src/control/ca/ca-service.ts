/**
 * Certificate signing on the control channel, with node authorization: an agent may get
 * certificates only for service accounts that have a pod on its node, a waypoint only for its own
 * service account. Decided from the current snapshot, so a pod that moved away loses the right.
 */
import type { Snapshot } from '../../model/index.js';
import { MeshError, errorMessage, logger } from '../../core/index.js';
import { parseSpiffeUri, spiffeUri } from '../../identity/index.js';
import type { Identity } from '../../identity/index.js';
import type { CertificateGrant } from '../../xds/index.js';
import type { Principal } from '../push/authenticator.js';

/** What the service needs of the CA (CertificateAuthority satisfies it). */
export interface CaSigner {
  sign(csrPem: string, identity: Identity, ttlSeconds?: number): string[];
  readonly rootsPem: string;
}

/** Throws AMBIT_CSR_FORBIDDEN when `p` may not hold `id`. Pure. */
export function authorizeCertificate(p: Principal, id: Identity, snap: Snapshot, trustDomain: string): void {
  const uri = spiffeUri(id);
  if (id.trustDomain !== trustDomain) throw new MeshError('AMBIT_TRUST_DOMAIN_MISMATCH', `${uri}: not in trust domain ${trustDomain}`);
  if (p.role === 'waypoint') {
    const own = p.identity;
    if (!own || own.trustDomain !== id.trustDomain || own.namespace !== id.namespace || own.serviceAccount !== id.serviceAccount) {
      throw new MeshError('AMBIT_CSR_FORBIDDEN', `${uri}: a waypoint may only get its own identity (${own ? spiffeUri(own) : 'unknown'})`);
    }
    return;
  }
  for (const w of snap.workloadsOnNode(p.node)) {
    if (w.namespace === id.namespace && w.serviceAccount === id.serviceAccount && w.trustDomain === id.trustDomain) return;
  }
  throw new MeshError('AMBIT_CSR_FORBIDDEN', `${uri}: no pod with this identity runs on node ${JSON.stringify(p.node)}`);
}

export interface CaServiceOptions {
  ca: CaSigner;
  trustDomain: string;
  /** the current snapshot, read at each request */
  snapshot(): Snapshot;
  /** used when a request names no TTL, seconds; default 86400 */
  defaultTtlSeconds?: number;
  /** counts issued and refused certificates */
  onResult?(ok: boolean, code?: string): void;
}

export class CaService {
  readonly #o: CaServiceOptions;
  readonly #log = logger('control.ca');

  constructor(o: CaServiceOptions) { this.#o = o; }

  get rootsPem(): string { return this.#o.ca.rootsPem; }

  async sign(p: Principal, req: { identity: string; csrPem: string; ttlSeconds: number }): Promise<CertificateGrant> {
    try {
      let id: Identity;
      try {
        id = parseSpiffeUri(req.identity);
      } catch (e) {
        throw new MeshError('AMBIT_CSR_INVALID', `identity: ${errorMessage(e)}`);
      }
      authorizeCertificate(p, id, this.#o.snapshot(), this.#o.trustDomain);
      const chainPem = this.#o.ca.sign(req.csrPem, id, req.ttlSeconds || this.#o.defaultTtlSeconds || 86_400);
      this.#log.info('certificate issued', { identity: req.identity, to: p.subject, node: p.node });
      this.#o.onResult?.(true);
      return { chainPem, rootsPem: this.#o.ca.rootsPem };
    } catch (e) {
      const code = e instanceof MeshError ? e.code : 'AMBIT_CSR_INVALID';
      this.#log.warn('certificate refused', { identity: req.identity.slice(0, 300), to: p.subject, node: p.node, code, error: errorMessage(e) });
      this.#o.onResult?.(false, code);
      throw e instanceof MeshError ? e : new MeshError('AMBIT_CSR_INVALID', errorMessage(e));
    }
  }
}
