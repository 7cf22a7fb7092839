/**
 * The control plane's own serving certificate for the wss listener: identity
 * spiffe://<td>/ns/ambit-system/sa/ambit-control, issued by the mesh CA it runs, so clients verify
 * it with the mesh root they already trust.
 */
import { generateKeyAndCsr, certValidity, pemToDers } from '../../identity/index.js';
import type { CertBundle, Identity } from '../../identity/index.js';
import type { CaSigner } from './ca-service.js';

export const CONTROL_NAMESPACE = 'ambit-system';
export const CONTROL_SERVICE_ACCOUNT = 'ambit-control';

/** The control plane's serving certificate: the same bundle a workload gets, for the same TLS helpers. */
export type ServingCert = CertBundle;

export async function issueControlCert(ca: CaSigner, trustDomain: string, ttlSeconds = 86_400): Promise<CertBundle> {
  const identity: Identity = { trustDomain, namespace: CONTROL_NAMESPACE, serviceAccount: CONTROL_SERVICE_ACCOUNT };
  const { keyPem, csrPem } = await generateKeyAndCsr(identity);
  const chainPem = ca.sign(csrPem, identity, ttlSeconds);
  const { notBefore, notAfter } = certValidity(pemToDers(chainPem[0]!)[0]!);
  return { identity, keyPem, chainPem, rootsPem: ca.rootsPem, notBefore, notAfter };
}
