/** Workload key and certification request generation. */
import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { spiffeUri } from './spiffe.js';
import type { Identity } from './spiffe.js';
import { forgePublicKey, signCsr } from './x509-build.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/**
 * A fresh RSA 2048 key (generated off the main thread by node:crypto) and a CSR carrying the
 * identity as its only URI SAN. The CA ignores the CSR's names; they are there for humans and
 * for CAs that expect them.
 */
export async function generateKeyAndCsr(id: Identity): Promise<{ keyPem: string; csrPem: string }> {
  const uri = spiffeUri(id);
  const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forgePublicKey(privateKey);
  csr.setSubject([{ name: 'organizationName', value: id.trustDomain }]);
  csr.setAttributes([{
    name: 'extensionRequest',
    extensions: [{ name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: uri }] }],
  }]);
  return { keyPem, csrPem: signCsr(csr, privateKey) };
}
