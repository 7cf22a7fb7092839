/**
 * Hand-built certificates for negative tests: shapes the real CA refuses to produce (two URI SANs,
 * CA leaves, missing EKU, same-subject impostor CAs). Built with node-forge, signed by node:crypto.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { forgePublicKey, randomSerialHex, signCertificate } from '../../../src/identity/x509-build.js';

const keys: KeyObject[] = [];
/** A distinct RSA 2048 key per index, generated once per process (keygen dominates test time). */
export function rsaKey(i: number): KeyObject {
  while (keys.length <= i) keys.push(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
  return keys[i]!;
}

export interface Crafted { pem: string; der: Buffer; key: KeyObject; x: X509Certificate }

export interface CraftOptions {
  key: KeyObject;
  subject?: forge.pki.CertificateField[];
  /** signer; self-signed when absent */
  issuer?: Crafted;
  uris?: string[];
  dns?: string[];
  ca?: boolean;
  keyUsage?: Record<string, boolean> & { critical?: boolean };
  /** extKeyUsage names (serverAuth, clientAuth, emailProtection...); null to omit the extension */
  eku?: string[] | null;
  notBefore?: Date;
  notAfter?: Date;
  /** include authority/subject key identifiers (default true) */
  keyIds?: boolean;
}

export function craft(o: CraftOptions): Crafted {
  const c = forge.pki.createCertificate();
  c.publicKey = forgePublicKey(o.key);
  c.serialNumber = randomSerialHex();
  c.validity.notBefore = o.notBefore ?? new Date(Date.now() - 3_600_000);
  c.validity.notAfter = o.notAfter ?? new Date(Date.now() + 3_600_000);
  const subject = o.subject ?? [{ name: 'organizationName', value: 'crafted' }];
  c.setSubject(subject);
  c.setIssuer(o.issuer ? forge.pki.certificateFromPem(o.issuer.pem).subject.attributes : subject);
  const exts: object[] = [
    { name: 'basicConstraints', cA: o.ca ?? false, critical: true },
    { name: 'keyUsage', critical: true, ...(o.keyUsage ?? (o.ca ? { keyCertSign: true, cRLSign: true } : { digitalSignature: true, keyEncipherment: true })) },
  ];
  const eku = o.eku === undefined ? (o.ca ? null : ['serverAuth', 'clientAuth']) : o.eku;
  if (eku !== null) exts.push({ name: 'extKeyUsage', ...Object.fromEntries(eku.map((n) => [n, true])) });
  const alt = [...(o.uris ?? []).map((value) => ({ type: 6, value })), ...(o.dns ?? []).map((value) => ({ type: 2, value }))];
  if (alt.length > 0) exts.push({ name: 'subjectAltName', altNames: alt });
  if (o.keyIds ?? true) {
    exts.push({ name: 'subjectKeyIdentifier' });
    if (o.issuer) {
      const ic = forge.pki.certificateFromPem(o.issuer.pem);
      const ski = ic.generateSubjectKeyIdentifier().getBytes();
      exts.push({ name: 'authorityKeyIdentifier', keyIdentifier: ski });
    }
  }
  c.setExtensions(exts);
  const pem = signCertificate(c, o.issuer?.key ?? o.key);
  const x = new X509Certificate(pem);
  return { pem, der: x.raw, key: o.key, x };
}
