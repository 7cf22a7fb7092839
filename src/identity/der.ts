/**
 * A small, strict DER reader for the parts of an X.509 certificate the mesh decides on (SANs, key
 * usage, basic constraints, EKU). We read the bytes ourselves instead of trusting Node's
 * `subjectaltname` string: that string is a lossy rendering (escaping, NUL handling, joined with
 * ", ") and was the source of Node CVE-2021-44532. Every read is bounds-checked; anything that is
 * not well-formed DER throws `AMBIT_CERT_INVALID`.
 */
import { MeshError } from '../core/index.js';

export interface Tlv {
  /** the full identifier octet (class | constructed | number); only low tag numbers are accepted */
  tag: number;
  /** content octets (a view into the input, not a copy) */
  value: Buffer;
  /** offset just past this element in the buffer it was read from */
  end: number;
}

function bad(what: string): never {
  throw new MeshError('AMBIT_CERT_INVALID', `certificate: malformed der: ${what}`);
}

/** Read one TLV at `offset` of `buf`. */
export function readTlv(buf: Buffer, offset: number): Tlv {
  if (offset + 2 > buf.length) bad('truncated header');
  const tag = buf[offset]!;
  // High tag numbers (0x1f) never occur in the structures we read.
  if ((tag & 0x1f) === 0x1f) bad('high tag number form');
  let pos = offset + 1;
  const first = buf[pos++]!;
  let len: number;
  if (first < 0x80) {
    len = first;
  } else {
    const n = first & 0x7f;
    // 0x80 is the indefinite form (BER only); more than 4 length octets cannot fit a certificate.
    if (n === 0 || n > 4) bad('unsupported length form');
    if (pos + n > buf.length) bad('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos++]!;
    if (len < 0x80 || (n > 1 && buf[pos - n] === 0)) bad('non-minimal length');
  }
  const end = pos + len;
  if (end > buf.length) bad('length past end of data');
  return { tag, value: buf.subarray(pos, end), end };
}

/** All TLVs directly inside a constructed value; the content must be consumed exactly. */
export function children(value: Buffer): Tlv[] {
  const out: Tlv[] = [];
  let pos = 0;
  while (pos < value.length) {
    const t = readTlv(value, pos);
    out.push(t);
    pos = t.end;
    if (out.length > 4096) bad('too many elements');
  }
  return out;
}

/** The single TLV that makes up `buf` (no trailing bytes allowed). */
export function single(buf: Buffer): Tlv {
  const t = readTlv(buf, 0);
  if (t.end !== buf.length) bad('trailing bytes');
  return t;
}

function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined) bad(`missing ${what}`);
  if (t.tag !== tag) bad(`${what}: expected tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`);
  return t;
}

/** Dotted form of an OBJECT IDENTIFIER's content octets. */
export function decodeOid(v: Buffer): string {
  if (v.length === 0 || v.length > 64) bad('oid length');
  const arcs: number[] = [];
  let acc = 0;
  for (let i = 0; i < v.length; i++) {
    const b = v[i]!;
    if (acc === 0 && b === 0x80) bad('non-minimal oid arc');
    acc = acc * 128 + (b & 0x7f);
    if (acc > Number.MAX_SAFE_INTEGER / 128) bad('oid arc too large');
    if ((b & 0x80) === 0) {
      arcs.push(acc);
      acc = 0;
    } else if (i === v.length - 1) {
      bad('truncated oid');
    }
  }
  const head = arcs[0]!;
  const [a, b] = head < 40 ? [0, head] : head < 80 ? [1, head - 40] : [2, head - 80];
  return [a, b, ...arcs.slice(1)].join('.');
}

export const OID = {
  subjectAltName: '2.5.29.17',
  keyUsage: '2.5.29.15',
  basicConstraints: '2.5.29.19',
  extKeyUsage: '2.5.29.37',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

export interface Extension {
  oid: string;
  critical: boolean;
  /** the content of extnValue (the DER of the extension's own structure) */
  value: Buffer;
}

const SEQ = 0x30;

/** The extensions of a DER certificate, in order. Duplicates are rejected (RFC 5280 §4.2). */
export function certExtensions(der: Buffer): Extension[] {
  const cert = expectTag(single(der), SEQ, 'certificate');
  const [tbsTlv] = children(cert.value);
  const tbs = expectTag(tbsTlv, SEQ, 'tbsCertificate');
  const fields = children(tbs.value);
  // [3] EXPLICIT Extensions is the only context tag 3 in the TBS; it is last when present.
  const extWrap = fields.find((f) => f.tag === 0xa3);
  if (extWrap === undefined) return [];
  const list = expectTag(single(extWrap.value), SEQ, 'extensions');
  const out: Extension[] = [];
  const seen = new Set<string>();
  for (const e of children(list.value)) {
    expectTag(e, SEQ, 'extension');
    const parts = children(e.value);
    const oid = decodeOid(expectTag(parts[0], 0x06, 'extension id').value);
    let i = 1;
    let critical = false;
    if (parts[i]?.tag === 0x01) {
      const b = parts[i]!.value;
      if (b.length !== 1) bad('boolean length');
      critical = b[0] !== 0;
      i++;
    }
    const value = expectTag(parts[i], 0x04, `extension ${oid} value`).value;
    if (parts.length !== i + 1) bad(`extension ${oid}: extra fields`);
    if (seen.has(oid)) bad(`duplicate extension ${oid}`);
    seen.add(oid);
    out.push({ oid, critical, value });
  }
  return out;
}

export interface GeneralNames {
  uris: string[];
  dns: string[];
  /** count of other name kinds (ip, email, otherName, ...) */
  other: number;
}

// IA5String content we accept: printable ASCII. A NUL or control byte in a name is a forgery attempt
// (CVE-2025-66220 style truncation), so the whole certificate is refused, not just the entry.
function ia5(v: Buffer, what: string): string {
  for (const b of v) if (b < 0x21 || b > 0x7e) bad(`${what} contains a non-printable byte`);
  return v.toString('latin1');
}

/** Parse a SubjectAltName extension value. */
export function parseGeneralNames(value: Buffer): GeneralNames {
  const seq = expectTag(single(value), SEQ, 'subjectAltName');
  const out: GeneralNames = { uris: [], dns: [], other: 0 };
  for (const n of children(seq.value)) {
    if (n.tag === 0x86) out.uris.push(ia5(n.value, 'uri san'));
    else if (n.tag === 0x82) out.dns.push(ia5(n.value, 'dns san'));
    else out.other++;
  }
  return out;
}

export interface KeyUsage {
  critical: boolean;
  digitalSignature: boolean;
  keyEncipherment: boolean;
  keyCertSign: boolean;
  cRLSign: boolean;
}

export function parseKeyUsage(e: Extension): KeyUsage {
  const bs = expectTag(single(e.value), 0x03, 'keyUsage');
  if (bs.value.length < 1 || bs.value[0]! > 7) bad('keyUsage bit string');
  const b0 = bs.value[1] ?? 0;
  return {
    critical: e.critical,
    digitalSignature: (b0 & 0x80) !== 0,
    keyEncipherment: (b0 & 0x20) !== 0,
    keyCertSign: (b0 & 0x04) !== 0,
    cRLSign: (b0 & 0x02) !== 0,
  };
}

export interface BasicConstraints { critical: boolean; ca: boolean; pathLen?: number }

export function parseBasicConstraints(e: Extension): BasicConstraints {
  const seq = expectTag(single(e.value), SEQ, 'basicConstraints');
  const parts = children(seq.value);
  let ca = false;
  let i = 0;
  if (parts[i]?.tag === 0x01) {
    if (parts[i]!.value.length !== 1) bad('boolean length');
    ca = parts[i]!.value[0] !== 0;
    i++;
  }
  const out: BasicConstraints = { critical: e.critical, ca };
  if (parts[i]?.tag === 0x02) {
    const v = parts[i]!.value;
    if (v.length === 0 || v.length > 4) bad('pathLen');
    out.pathLen = v.readUIntBE(0, v.length);
  }
  return out;
}

export function parseExtKeyUsage(e: Extension): string[] {
  const seq = expectTag(single(e.value), SEQ, 'extKeyUsage');
  return children(seq.value).map((t) => decodeOid(expectTag(t, 0x06, 'key purpose').value));
}

/** Raw key identifier bytes of a subjectKeyIdentifier extension. */
export function parseSubjectKeyId(e: Extension): Buffer {
  return expectTag(single(e.value), 0x04, 'subjectKeyIdentifier').value;
}

function parseTime(t: Tlv): number {
  const s = t.value.toString('latin1');
  let m: RegExpExecArray | null;
  let year: number;
  if (t.tag === 0x17 && (m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy; // RFC 5280 §4.1.2.5.1
  } else if (t.tag === 0x18 && (m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    year = Number(m[1]);
  } else {
    bad('validity time');
  }
  const ms = Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  if (!Number.isFinite(ms)) bad('validity time');
  return ms;
}

/** notBefore / notAfter of a DER certificate, ms since the epoch. */
export function certValidity(der: Buffer): { notBefore: number; notAfter: number } {
  const cert = expectTag(single(der), SEQ, 'certificate');
  const tbs = expectTag(children(cert.value)[0], SEQ, 'tbsCertificate');
  const f = children(tbs.value);
  // version [0] is optional; validity is the 4th field after it.
  const base = f[0]?.tag === 0xa0 ? 1 : 0;
  const validity = expectTag(f[base + 3], SEQ, 'validity');
  const [nb, na] = children(validity.value);
  if (nb === undefined || na === undefined) bad('validity');
  return { notBefore: parseTime(nb), notAfter: parseTime(na) };
}

/** The complete DER (tag, length and content) of a certificate's subject Name. */
export function certSubjectDer(der: Buffer): Buffer {
  const cert = expectTag(single(der), SEQ, 'certificate');
  const tbs = expectTag(children(cert.value)[0], SEQ, 'tbsCertificate');
  // children() hands out views, so recover the full TLV by re-reading from the tbs content.
  let pos = 0;
  const base = readTlv(tbs.value, 0).tag === 0xa0 ? 1 : 0;
  for (let i = 0; i < base + 4; i++) pos = readTlv(tbs.value, pos).end;
  const subject = readTlv(tbs.value, pos);
  if (subject.tag !== SEQ) bad('subject');
  return tbs.value.subarray(pos, subject.end);
}
