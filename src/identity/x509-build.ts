/**
 * Building and signing certificates. node-forge lays out the ASN.1 (it is the only X.509 writer we
 * have), but the RSA signature itself is made by node:crypto: forge's pure-JS RSA is slow and its
 * key handling is RSA-only anyway.
 */
import { randomBytes, sign as cryptoSign, createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { derToPem } from './pem.js';

const pkiInternals = forge.pki as unknown as {
  getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1;
  getCertificationRequestInfo(csr: forge.pki.CertificateSigningRequest): forge.asn1.Asn1;
};

export const SHA256_WITH_RSA = '1.2.840.113549.1.1.11';
/** Clock skew allowance: certificates start this long before the moment they are issued. */
export const BACKDATE_MS = 60_000;

/** A random positive 128-bit serial, as hex (top bit cleared so DER keeps it positive, next bit set so it is minimal). */
export function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b.toString('hex');
}

export function toBinary(b: Buffer): string {
  return b.toString('binary');
}

export function forgePublicKey(key: KeyObject): forge.pki.PublicKey {
  const pem = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
  return forge.pki.publicKeyFromPem(pem);
}

/**
 * Finish `cert` (all fields but the signature set) and sign it with `signer` (an RSA private key).
 * `issuerDer`, when given, replaces the issuer Name with the issuing certificate's subject bytes
 * verbatim, so name chaining cannot be broken by forge re-encoding an unusual Name.
 */
export function signCertificate(cert: forge.pki.Certificate, signer: KeyObject, issuerDer?: Buffer): string {
  cert.signatureOid = SHA256_WITH_RSA;
  cert.siginfo.algorithmOid = SHA256_WITH_RSA;
  const tbs = pkiInternals.getTBSCertificate(cert);
  if (issuerDer !== undefined) {
    const fields = tbs.value as forge.asn1.Asn1[];
    // [0] version, serial, signature, issuer, ...
    fields[3] = forge.asn1.fromDer(toBinary(issuerDer));
  }
  cert.tbsCertificate = tbs;
  const bytes = Buffer.from(forge.asn1.toDer(tbs).getBytes(), 'binary');
  cert.signature = toBinary(cryptoSign('sha256', bytes, signer));
  // forge writes CRLF PEM; ours is LF everywhere so PEM strings compare equal across load paths.
  return derToPem(Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary'));
}

/** Sign a certification request with a node:crypto RSA key. */
export function signCsr(csr: forge.pki.CertificateSigningRequest, signer: KeyObject): string {
  csr.signatureOid = SHA256_WITH_RSA;
  csr.siginfo.algorithmOid = SHA256_WITH_RSA;
  const cri = pkiInternals.getCertificationRequestInfo(csr);
  csr.certificationRequestInfo = cri;
  const bytes = Buffer.from(forge.asn1.toDer(cri).getBytes(), 'binary');
  csr.signature = toBinary(cryptoSign('sha256', bytes, signer));
  return forge.pki.certificationRequestToPem(csr);
}
