/**
 * mTLS material for the L4 baselines (stunnel4, haproxy): one CA of the mesh's own kind
 * (src/identity), one certificate for the client pod's identity and one for the server pod's.
 * Issued once per run, so both baselines present the same certificates.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CertificateAuthority, generateKeyAndCsr, type Identity } from '../../src/identity/index.js';
import type { Pod } from '../../src/local/index.js';

/** PEM files of one side. */
export interface TlsFiles {
  /** leaf + intermediates */
  readonly cert: string;
  readonly key: string;
  /** the mesh roots the peer's chain is verified against */
  readonly ca: string;
  /** chain followed by the key in one file (haproxy's `crt`) */
  readonly combined: string;
}

export interface PairFiles { readonly client: TlsFiles; readonly server: TlsFiles }

async function issue(ca: CertificateAuthority, id: Identity, dir: string, name: string): Promise<TlsFiles> {
  const { keyPem, csrPem } = await generateKeyAndCsr(id);
  const chain = ca.sign(csrPem, id).join('');
  const f: TlsFiles = {
    cert: join(dir, `${name}-chain.pem`), key: join(dir, `${name}-key.pem`), ca: join(dir, 'roots.pem'), combined: join(dir, `${name}-combined.pem`),
  };
  writeFileSync(f.cert, chain);
  writeFileSync(f.key, keyPem, { mode: 0o600 });
  writeFileSync(f.combined, chain + (chain.endsWith('\n') ? '' : '\n') + keyPem, { mode: 0o600 });
  writeFileSync(f.ca, ca.rootsPem);
  return f;
}

/** A fresh CA and the client's and server's certificates (SPIFFE ids of the pods' service accounts). */
export async function issuePairFiles(o: { client: Pod; server: Pod; dir: string; trustDomain?: string }): Promise<PairFiles> {
  const td = o.trustDomain ?? 'cluster.local';
  const ca = CertificateAuthority.generate({ trustDomain: td });
  const [client, server] = await Promise.all([
    issue(ca, { trustDomain: td, namespace: o.client.namespace, serviceAccount: o.client.serviceAccount }, o.dir, 'tls-client'),
    issue(ca, { trustDomain: td, namespace: o.server.namespace, serviceAccount: o.server.serviceAccount }, o.dir, 'tls-server'),
  ]);
  return { client, server };
}
