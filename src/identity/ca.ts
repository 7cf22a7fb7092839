/**
 * The mesh certificate authority: issues X.509-SVIDs for identities the caller has already been
 * authorised for. The CSR only proves possession of a key; its names are ignored.
 */
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdir, readFile, rename, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import forge from 'node-forge';
import { MeshError, errorMessage } from '../core/index.js';
import {
  OID, certExtensions, certSubjectDer, certValidity, parseBasicConstraints, parseGeneralNames, parseKeyUsage, parseSubjectKeyId,
} from './der.js';
import { pemToDers, derToPem } from './pem.js';
import { checkIdentity, checkTrustDomain, spiffeUri } from './spiffe.js';
import type { Identity } from './spiffe.js';
import { BACKDATE_MS, SHA256_WITH_RSA, forgePublicKey, randomSerialHex, signCertificate, toBinary } from './x509-build.js';

export interface CaOptions {
  /** trust domain of every identity this CA issues */
  trustDomain: string;
  /** leaf lifetime when the request names none, seconds; default 86400 (24 h) */
  defaultTtlSeconds?: number;
  /** longest leaf lifetime accepted, seconds; longer requests are rejected, not clamped; default 90 days */
  maxTtlSeconds?: number;
  /** largest CSR accepted, bytes of PEM; default 16 KiB */
  maxCsrBytes?: number;
  /** ms since the epoch; default Date.now */
  clock?: () => number;
}

/** The PEM texts of the plug-in CA layout (CA_FILES); `chain` may be left out when `cert` is the root. */
export interface CaPemFiles {
  cert: string;
  key: string;
  root: string;
  chain?: string;
}

/** Authorization hook used by the control plane: may `callerNode` get a certificate for `identity`? */
export type NodeAuthorizer = (callerNode: string, identity: Identity) => boolean;

/** File names of the plug-in CA layout (the same names Istio's `cacerts` secret uses). */
export const CA_FILES = {
  cert: 'ca-cert.pem',
  key: 'ca-key.pem',
  root: 'root-cert.pem',
  chain: 'cert-chain.pem',
} as const;

const DAY_S = 86_400;
const ROOT_TTL_S = 10 * 365 * DAY_S;
const INTERMEDIATE_TTL_S = 365 * DAY_S;
const MIN_KEY_BITS = 2048;
const MAX_KEY_BITS = 8192;
const CSR_SIG_OIDS = new Set([SHA256_WITH_RSA, '1.2.840.113549.1.1.12', '1.2.840.113549.1.1.13']);

function csrInvalid(msg: string, cause?: unknown): never {
  throw new MeshError('AMBIT_CSR_INVALID', `csr: ${msg}`, cause === undefined ? undefined : { cause });
}

function caInvalid(what: string, msg: string, cause?: unknown): never {
  throw new MeshError('AMBIT_CONFIG_INVALID', `ca ${what}: ${msg}`, cause === undefined ? undefined : { cause });
}

interface Resolved { trustDomain: string; defaultTtlSeconds: number; maxTtlSeconds: number; maxCsrBytes: number; clock: () => number }

function resolve(opts: CaOptions): Resolved {
  if (opts === null || typeof opts !== 'object') caInvalid('options', 'missing');
  try {
    checkTrustDomain(opts.trustDomain);
  } catch (e) {
    caInvalid('options', `trustDomain: ${errorMessage(e)}`);
  }
  const r: Resolved = {
    trustDomain: opts.trustDomain,
    defaultTtlSeconds: opts.defaultTtlSeconds ?? DAY_S,
    maxTtlSeconds: opts.maxTtlSeconds ?? 90 * DAY_S,
    maxCsrBytes: opts.maxCsrBytes ?? 16 * 1024,
    clock: opts.clock ?? Date.now,
  };
  for (const k of ['defaultTtlSeconds', 'maxTtlSeconds', 'maxCsrBytes'] as const) {
    if (!Number.isFinite(r[k]) || r[k] <= 0) caInvalid('options', `${k}: must be a positive number, got ${r[k]}`);
  }
  if (r.defaultTtlSeconds > r.maxTtlSeconds) caInvalid('options', 'defaultTtlSeconds: larger than maxTtlSeconds');
  return r;
}

interface Material {
  /** signing certificate (root or intermediate) */
  cert: X509Certificate;
  key: KeyObject;
  /** certificates between the signing certificate and the root, signing certificate first; excludes roots */
  intermediatesPem: string[];
  rootsPem: string;
}

function isRsa(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'rsa';
}

function keyBits(key: KeyObject): number {
  return key.asymmetricKeyDetails?.modulusLength ?? 0;
}

/** Check that `m` is usable: a CA cert, matching RSA key, valid now, chaining to one of the roots. */
function validate(m: Material, now: number, td: string, what: string): void {
  const der = m.cert.raw;
  const exts = certExtensions(der);
  const bc = exts.find((e) => e.oid === OID.basicConstraints);
  if (bc === undefined || !parseBasicConstraints(bc).ca) caInvalid(what, `${CA_FILES.cert} is not a CA certificate`);
  const ku = exts.find((e) => e.oid === OID.keyUsage);
  if (ku !== undefined && !parseKeyUsage(ku).keyCertSign) caInvalid(what, `${CA_FILES.cert} keyUsage lacks keyCertSign`);
  if (!isRsa(m.key)) caInvalid(what, `${CA_FILES.key} must be an RSA key (got ${m.key.asymmetricKeyType})`);
  if (keyBits(m.key) < MIN_KEY_BITS) caInvalid(what, `${CA_FILES.key} is shorter than ${MIN_KEY_BITS} bits`);
  if (!m.cert.checkPrivateKey(m.key)) caInvalid(what, `${CA_FILES.key} does not match ${CA_FILES.cert}`);
  const { notBefore, notAfter } = certValidity(der);
  if (now < notBefore || now > notAfter) caInvalid(what, `${CA_FILES.cert} is not valid now (${m.cert.validFrom} .. ${m.cert.validTo})`);
  const san = exts.find((e) => e.oid === OID.subjectAltName);
  const foreign = san === undefined ? [] : parseGeneralNames(san.value).uris.filter((u) => u.startsWith('spiffe://') && u !== `spiffe://${td}`);
  if (foreign.length > 0) caInvalid(what, `${CA_FILES.cert} names ${foreign[0]}, not trust domain ${td}`);
  // Walk signing cert -> intermediates -> root, so we never hand out a chain peers cannot verify.
  const roots = pemToDers(m.rootsPem, `ca ${what} ${CA_FILES.root}`).map((d) => new X509Certificate(d));
  const pool = m.intermediatesPem.slice(1).map((p) => new X509Certificate(p));
  let cur = m.cert;
  for (let depth = 0; depth <= pool.length; depth++) {
    if (roots.some((r) => cur.checkIssued(r) && cur.verify(r.publicKey))) return;
    const next = pool.find((p) => cur.checkIssued(p) && cur.verify(p.publicKey));
    if (next === undefined) break;
    cur = next;
  }
  caInvalid(what, `${CA_FILES.cert} does not chain to ${CA_FILES.root} (through ${CA_FILES.chain})`);
}

function caSubjectKeyId(cert: X509Certificate): string {
  const ski = certExtensions(cert.raw).find((e) => e.oid === OID.subjectKeyIdentifier);
  if (ski !== undefined) return toBinary(parseSubjectKeyId(ski));
  // RFC 5280 §4.2.1.2 method 1 (SHA-1 of the public key), which forge computes for us.
  const fc = forge.pki.createCertificate();
  fc.publicKey = forgePublicKey(cert.publicKey);
  return fc.generateSubjectKeyIdentifier().getBytes();
}

function newCaCert(opts: {
  td: string; key: KeyObject; now: number; ttlS: number; subjectCn: string;
  issuer?: { cert: X509Certificate; key: KeyObject };
}): string {
  const c = forge.pki.createCertificate();
  c.publicKey = forgePublicKey(opts.key);
  c.serialNumber = randomSerialHex();
  c.validity.notBefore = new Date(opts.now - BACKDATE_MS);
  c.validity.notAfter = new Date(opts.now + opts.ttlS * 1000);
  c.setSubject([{ name: 'organizationName', value: opts.td }, { name: 'commonName', value: opts.subjectCn }]);
  if (opts.issuer === undefined) c.setIssuer(c.subject.attributes);
  const exts: object[] = [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectAltName', altNames: [{ type: 6, value: `spiffe://${opts.td}` }] },
    { name: 'subjectKeyIdentifier' },
  ];
  if (opts.issuer !== undefined) exts.push({ name: 'authorityKeyIdentifier', keyIdentifier: caSubjectKeyId(opts.issuer.cert) });
  c.setExtensions(exts);
  if (opts.issuer === undefined) return signCertificate(c, opts.key);
  return signCertificate(c, opts.issuer.key, certSubjectDer(opts.issuer.cert.raw));
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

async function readText(dir: string, name: string): Promise<string> {
  try {
    return await readFile(join(dir, name), 'utf8');
  } catch (e) {
    caInvalid(dir, `cannot read ${name}: ${errorMessage(e)}`, e);
  }
}

export class CertificateAuthority {
  readonly trustDomain: string;
  /** trust bundle (root-cert.pem): every root peers should trust */
  readonly rootsPem: string;
  readonly #o: Resolved;
  readonly #m: Material;
  readonly #skid: string;
  readonly #issuerDer: Buffer;
  readonly #caNotAfter: number;

  private constructor(o: Resolved, m: Material) {
    this.#o = o;
    this.#m = m;
    this.trustDomain = o.trustDomain;
    this.rootsPem = m.rootsPem;
    this.#skid = caSubjectKeyId(m.cert);
    this.#issuerDer = certSubjectDer(m.cert.raw);
    this.#caNotAfter = certValidity(m.cert.raw).notAfter;
  }

  /** In-memory CA with a fresh self-signed root (tests, `ambit up`). */
  static generate(opts: CaOptions): CertificateAuthority {
    const o = resolve(opts);
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = newCaCert({ td: o.trustDomain, key: privateKey, now: o.clock(), ttlS: ROOT_TTL_S, subjectCn: 'ambit root ca' });
    return new CertificateAuthority(o, { cert: new X509Certificate(pem), key: privateKey, intermediatesPem: [], rootsPem: pem });
  }

  /**
   * Plug-in CA from `dir`: ca-cert.pem (signing cert), ca-key.pem, root-cert.pem (trust bundle,
   * may hold several roots during rotation), cert-chain.pem (signing cert up to the root; optional
   * when the signing cert is itself the root).
   */
  static async fromDirectory(dir: string, opts: CaOptions): Promise<CertificateAuthority> {
    resolve(opts); // bad options are named before any file is read
    const cert = await readText(dir, CA_FILES.cert);
    const key = await readText(dir, CA_FILES.key);
    const root = await readText(dir, CA_FILES.root);
    const chain = (await exists(join(dir, CA_FILES.chain))) ? await readText(dir, CA_FILES.chain) : undefined;
    return CertificateAuthority.fromPem({ cert, key, root, ...(chain !== undefined ? { chain } : {}) }, opts, dir);
  }

  /**
   * Plug-in CA from PEM texts (the files of the directory layout, e.g. the keys of a Secret);
   * `what` names their origin in errors. Checked as fromDirectory checks the files.
   */
  static fromPem(files: CaPemFiles, opts: CaOptions, what = 'pem'): CertificateAuthority {
    const o = resolve(opts);
    const certPem = files.cert;
    const rootsPem = files.root;
    const chainPem = files.chain ?? certPem;
    let m: Material;
    try {
      const [certDer] = pemToDers(certPem, `ca ${what} ${CA_FILES.cert}`);
      const cert = new X509Certificate(certDer!);
      const key = createPrivateKey(files.key);
      const rootDers = pemToDers(rootsPem, `ca ${what} ${CA_FILES.root}`);
      const isRoot = (d: Buffer): boolean => rootDers.some((r) => r.equals(d));
      // The chain we hand out: signing cert, then intermediates, never a root (peers have those).
      const inter = [certDer!, ...pemToDers(chainPem, `ca ${what} ${CA_FILES.chain}`).filter((d) => !d.equals(certDer!))]
        .filter((d) => !isRoot(d));
      m = { cert, key, intermediatesPem: inter.map(derToPem), rootsPem: rootDers.map(derToPem).join('') };
    } catch (e) {
      if (e instanceof MeshError) throw e;
      caInvalid(what, errorMessage(e), e);
    }
    validate(m, o.clock(), o.trustDomain, what);
    return new CertificateAuthority(o, m);
  }

  /**
   * A new self-signed root as the PEM texts of the plug-in layout (cert = root = chain), for
   * storing somewhere (a directory, a Secret) before use: load it back with fromPem.
   */
  static generatePem(opts: CaOptions): Required<CaPemFiles> {
    const o = resolve(opts);
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = newCaCert({ td: o.trustDomain, key: privateKey, now: o.clock(), ttlS: ROOT_TTL_S, subjectCn: 'ambit root ca' });
    return { cert: pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), root: pem, chain: pem };
  }

  /**
   * Load the CA from `dir`, or on first start generate a self-signed root and persist it there
   * (key file mode 0600). Refuses a directory holding only some of the files rather than
   * overwriting a key.
   */
  static async loadOrCreate(dir: string, opts: CaOptions): Promise<CertificateAuthority> {
    const hasCert = await exists(join(dir, CA_FILES.cert));
    const hasKey = await exists(join(dir, CA_FILES.key));
    if (hasCert && hasKey) return CertificateAuthority.fromDirectory(dir, opts);
    if (hasCert || hasKey) caInvalid(dir, `only one of ${CA_FILES.cert} and ${CA_FILES.key} exists; refusing to overwrite`);
    const ca = CertificateAuthority.generate(opts);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const keyPem = ca.#m.key.export({ type: 'pkcs8', format: 'pem' }).toString();
    const root = ca.rootsPem;
    // Write each file under a temporary name and rename, so a crash never leaves a half file; the
    // key goes last-but-one and the cert last, because the cert's presence means "CA exists".
    const put = async (name: string, text: string, mode: number): Promise<void> => {
      const tmp = join(dir, `.${name}.${process.pid}.tmp`);
      await writeFile(tmp, text, { mode, flag: 'w' });
      await rename(tmp, join(dir, name));
    };
    await put(CA_FILES.root, root, 0o644);
    await put(CA_FILES.chain, root, 0o644);
    await put(CA_FILES.key, keyPem, 0o600);
    await put(CA_FILES.cert, root, 0o644);
    return ca;
  }

  /**
   * Issue a leaf for `identity`. The CSR must be a single PEM request within the size limit, with
   * a valid RSA (>= 2048 bit) SHA-2 signature; its subject and SANs are ignored. The leaf carries
   * exactly one URI SAN, the authorised identity. `ttlSeconds` above the maximum, or <= 0, is
   * rejected. Returns `[leaf, ...intermediates]` as PEM (the root is not included).
   */
  sign(csrPem: string, identity: Identity, ttlSeconds?: number): string[] {
    const o = this.#o;
    if (typeof csrPem !== 'string') csrInvalid('not a string');
    if (Buffer.byteLength(csrPem) > o.maxCsrBytes) csrInvalid(`larger than ${o.maxCsrBytes} bytes`);
    try {
      checkIdentity(identity);
    } catch (e) {
      csrInvalid(`identity: ${errorMessage(e)}`, e);
    }
    if (identity.trustDomain !== this.trustDomain) {
      throw new MeshError('AMBIT_TRUST_DOMAIN_MISMATCH',
        `csr: identity ${spiffeUri(identity)} is outside this ca's trust domain ${this.trustDomain}`);
    }
    const ttl = ttlSeconds ?? o.defaultTtlSeconds;
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0) csrInvalid(`ttl ${ttl}s: must be a positive number of seconds`);
    if (ttl > o.maxTtlSeconds) csrInvalid(`ttl ${ttl}s: longer than the maximum ${o.maxTtlSeconds}s`);
    const blocks = csrPem.match(/-----BEGIN [A-Z ]+-----/g) ?? [];
    if (blocks.length !== 1 || !/^-----BEGIN (NEW )?CERTIFICATE REQUEST-----$/.test(blocks[0]!)) {
      csrInvalid('expected exactly one PEM "CERTIFICATE REQUEST" block');
    }
    let csr: forge.pki.CertificateSigningRequest;
    try {
      csr = forge.pki.certificationRequestFromPem(csrPem, true);
    } catch (e) {
      csrInvalid(`cannot parse: ${errorMessage(e)}`, e);
    }
    if (csr.signatureOid === null || !CSR_SIG_OIDS.has(csr.signatureOid)) {
      csrInvalid(`signature algorithm ${csr.signatureOid}: only sha256/384/512 with RSA is accepted`);
    }
    let ok = false;
    try {
      ok = csr.verify();
    } catch (e) {
      csrInvalid(`signature check failed: ${errorMessage(e)}`, e);
    }
    if (!ok) csrInvalid('signature does not verify');
    const pub = csr.publicKey as forge.pki.rsa.PublicKey | null;
    if (pub === null || pub.n === undefined) csrInvalid('no RSA public key');
    const bits = pub.n.bitLength();
    if (bits < MIN_KEY_BITS || bits > MAX_KEY_BITS) csrInvalid(`RSA key of ${bits} bits: must be ${MIN_KEY_BITS}..${MAX_KEY_BITS}`);
    let leaf: string;
    try {
      leaf = this.#issueLeaf(pub, identity, ttl);
    } catch (e) {
      if (e instanceof MeshError) throw e;
      csrInvalid(`cannot issue a certificate for this request: ${errorMessage(e)}`, e);
    }
    return [leaf, ...this.#m.intermediatesPem];
  }

  #issueLeaf(pub: forge.pki.PublicKey, identity: Identity, ttlSeconds: number): string {
    const now = this.#o.clock();
    const c = forge.pki.createCertificate();
    c.publicKey = pub;
    c.serialNumber = randomSerialHex();
    c.validity.notBefore = new Date(now - BACKDATE_MS);
    // A leaf cannot usefully outlive its signing certificate; cut it there so notAfter tells the
    // truth and renewal (at half-life) happens in time.
    c.validity.notAfter = new Date(Math.min(now + Math.round(ttlSeconds * 1000), this.#caNotAfter));
    // Empty subject, as SPIFFE prefers; the SAN is then critical (X509-SVID §2). The issuer Name is
    // spliced in from the CA certificate's bytes by signCertificate.
    c.setSubject([]);
    c.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: spiffeUri(identity) }] },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: this.#skid },
    ]);
    return signCertificate(c, this.#m.key, this.#issuerDer);
  }

  /**
   * Mint an intermediate signing CA under this one (for plug-in layouts and tests). Returns the
   * files of the plug-in directory layout for it.
   */
  issueIntermediate(opts: { ttlSeconds?: number; commonName?: string } = {}): {
    certPem: string; keyPem: string; chainPem: string; rootsPem: string;
  } {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const certPem = newCaCert({
      td: this.trustDomain, key: privateKey, now: this.#o.clock(), ttlS: opts.ttlSeconds ?? INTERMEDIATE_TTL_S,
      subjectCn: opts.commonName ?? 'ambit intermediate ca', issuer: { cert: this.#m.cert, key: this.#m.key },
    });
    return {
      certPem,
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      chainPem: [certPem, ...this.#m.intermediatesPem, this.rootsPem].join(''),
      rootsPem: this.rootsPem,
    };
  }
}
