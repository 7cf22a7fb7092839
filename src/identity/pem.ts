/** PEM <-> DER for certificates, with limits (a trust bundle is small; a huge one is an attack or a mistake). */
import { MeshError } from '../core/index.js';

/** At most this many certificates in one PEM bundle (roots for rotation, or a chain). */
export const MAX_PEM_CERTS = 64;
/** At most this many bytes of PEM text in one bundle. */
export const MAX_PEM_BYTES = 256 * 1024;

const BLOCK_RE = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----/g;

/** DER of every CERTIFICATE block in `pem`, in order. Throws `AMBIT_CERT_INVALID` if there is none. */
export function pemToDers(pem: string, what = 'certificate bundle'): Buffer[] {
  if (typeof pem !== 'string') throw new MeshError('AMBIT_CERT_INVALID', `${what}: not a string`);
  if (pem.length > MAX_PEM_BYTES) {
    throw new MeshError('AMBIT_CERT_INVALID', `${what}: larger than ${MAX_PEM_BYTES} bytes`);
  }
  const out: Buffer[] = [];
  for (const m of pem.matchAll(BLOCK_RE)) {
    if (out.length >= MAX_PEM_CERTS) {
      throw new MeshError('AMBIT_CERT_INVALID', `${what}: more than ${MAX_PEM_CERTS} certificates`);
    }
    const der = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
    if (der.length === 0) throw new MeshError('AMBIT_CERT_INVALID', `${what}: empty certificate block`);
    out.push(der);
  }
  if (out.length === 0) throw new MeshError('AMBIT_CERT_INVALID', `${what}: no PEM certificate found`);
  return out;
}

export function derToPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}-----END CERTIFICATE-----\n`;
}

/** Split a bundle into one PEM string per certificate (normalised). */
export function splitPem(pem: string, what?: string): string[] {
  return pemToDers(pem, what).map(derToPem);
}
