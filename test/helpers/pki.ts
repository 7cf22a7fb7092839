/**
 * Real PKI for tests: the production CA, real keys and CSRs, no fakes. Other modules' tests use
 * this to get certificate bundles for HBONE peers.
 *
 *   const pki = makeTestPki({ trustDomain: 'cluster.local' });
 *   const a = await pki.issue({ trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: 'a' });
 *   const foreign = makeTestPki({ trustDomain: 'evil.example' }); // a second, unrelated CA
 */
import { CertificateAuthority, certValidity, generateKeyAndCsr, pemToDers } from '../../src/identity/index.js';
import type { CertBundle, Identity } from '../../src/identity/index.js';

export interface IssueOptions {
  /** leaf lifetime, seconds; default the CA default (24 h) */
  ttlSeconds?: number;
}

export interface TestPki {
  ca: CertificateAuthority;
  trustDomain: string;
  /** a complete bundle (key, chain, roots) for `id`, signed through the real CSR path */
  issue(id: Identity, opts?: IssueOptions): Promise<CertBundle>;
  /** shorthand identity in this trust domain */
  id(namespace: string, serviceAccount: string): Identity;
}

export interface TestPkiOptions {
  trustDomain?: string;
  /** ms since the epoch, for certificates issued in the past or future; default Date.now */
  clock?: () => number;
}

export function makeTestPki(opts: TestPkiOptions = {}): TestPki {
  const trustDomain = opts.trustDomain ?? 'cluster.local';
  const ca = CertificateAuthority.generate({ trustDomain, ...(opts.clock ? { clock: opts.clock } : {}) });
  return {
    ca,
    trustDomain,
    id: (namespace, serviceAccount) => ({ trustDomain, namespace, serviceAccount }),
    async issue(id, o = {}) {
      const { keyPem, csrPem } = await generateKeyAndCsr(id);
      const chainPem = ca.sign(csrPem, id, o.ttlSeconds);
      const { notBefore, notAfter } = certValidity(pemToDers(chainPem[0]!)[0]!);
      return { identity: id, keyPem, chainPem, rootsPem: ca.rootsPem, notBefore, notAfter };
    },
  };
}

/** A second, unrelated CA (by default in another trust domain) for negative tests. */
export function makeForeignPki(trustDomain = 'foreign.example'): TestPki {
  return makeTestPki({ trustDomain });
}
