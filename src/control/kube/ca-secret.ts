/**
 * The mesh CA in Kubernetes mode, kept in a Secret of the control plane's namespace so every
 * replica and every restart signs with the same root:
 *
 *   Secret `cacerts` (Istio's plug-in CA: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)
 *     present -> used as it is (never written)
 *   else Secret `ambit-ca` present -> loaded
 *   else a new self-signed root is created into `ambit-ca`; when another replica created it
 *     first (409 Conflict), the winner's is read and used, never ours
 *
 * A Secret that exists but cannot be used (keys missing, a key that does not match, another trust
 * domain) stops the start: overwriting it would orphan every certificate issued from it.
 * The root is then published, for agents and anything else that verifies the control plane, in
 * the ConfigMap `ambit-ca-root` (root-cert.pem) of the same namespace, by server-side apply.
 */
import { MeshError, logger } from '../../core/index.js';
import { CA_FILES, CertificateAuthority } from '../../identity/index.js';
import type { CaOptions, CaPemFiles } from '../../identity/index.js';
import { expectStatus, resourcePath, statusMessage } from './api.js';
import type { Json, KubeApi, KubeAnswer } from './api.js';

const log = logger('control.ca.kube');

export const CA_SECRET = 'ambit-ca';
export const PLUGIN_CA_SECRET = 'cacerts';
export const CA_ROOT_CONFIGMAP = 'ambit-ca-root';
export const PART_OF = { 'app.kubernetes.io/part-of': 'ambit' } as const;

export interface KubeCaOptions extends CaOptions {
  readonly api: KubeApi;
  /** the control plane's own namespace */
  readonly namespace: string;
  /** default ambit-ca */
  readonly secretName?: string;
  /** default cacerts */
  readonly pluginSecretName?: string;
  /** default ambit-ca-root; null: do not publish the root */
  readonly rootConfigMap?: string | null;
}

export type KubeCaOrigin = 'plugin' | 'loaded' | 'created' | 'lost-race';

export interface KubeCa {
  readonly ca: CertificateAuthority;
  /** which Secret it came from, and how */
  readonly origin: KubeCaOrigin;
  readonly secret: string;
}

function decode(a: KubeAnswer, what: string): CaPemFiles {
  const data = (a.body.data ?? {}) as Record<string, unknown>;
  const get = (k: string): string | undefined => {
    const v = data[k];
    return typeof v === 'string' ? Buffer.from(v, 'base64').toString('utf8') : undefined;
  };
  const cert = get(CA_FILES.cert);
  const key = get(CA_FILES.key);
  const root = get(CA_FILES.root);
  const chain = get(CA_FILES.chain);
  const missing = [[CA_FILES.cert, cert], [CA_FILES.key, key], [CA_FILES.root, root]].filter(([, v]) => v === undefined).map(([k]) => k);
  if (missing.length > 0) throw new MeshError('AMBIT_CONFIG_INVALID', `ca ${what}: missing ${missing.join(', ')} (refusing to overwrite it)`);
  return { cert: cert!, key: key!, root: root!, ...(chain !== undefined ? { chain } : {}) };
}

/** The Secret object holding `files`. */
export function caSecretObject(namespace: string, name: string, files: Required<CaPemFiles>): Json {
  const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
  return {
    apiVersion: 'v1', kind: 'Secret', type: 'Opaque',
    metadata: { name, namespace, labels: { ...PART_OF } },
    data: {
      [CA_FILES.cert]: b64(files.cert), [CA_FILES.key]: b64(files.key),
      [CA_FILES.root]: b64(files.root), [CA_FILES.chain]: b64(files.chain),
    },
  };
}

/** Loads the plug-in CA, or the control plane's own, or creates the latter (create-or-read). */
export async function loadOrCreateKubeCa(o: KubeCaOptions): Promise<KubeCa> {
  const { api, namespace } = o;
  const name = o.secretName ?? CA_SECRET;
  const plugin = o.pluginSecretName ?? PLUGIN_CA_SECRET;
  const secrets = resourcePath('v1', 'secrets', namespace);
  const read = async (n: string): Promise<KubeAnswer> => expectStatus(await api.get(`${secrets}/${encodeURIComponent(n)}`), `reading Secret ${namespace}/${n}`, 200, 404);

  let kca: KubeCa;
  const p = await read(plugin);
  if (p.status === 200) {
    const what = `Secret ${namespace}/${plugin}`;
    kca = { ca: CertificateAuthority.fromPem(decode(p, what), o, what), origin: 'plugin', secret: plugin };
  } else {
    const what = `Secret ${namespace}/${name}`;
    const own = await read(name);
    if (own.status === 200) {
      kca = { ca: CertificateAuthority.fromPem(decode(own, what), o, what), origin: 'loaded', secret: name };
    } else {
      const files = CertificateAuthority.generatePem(o);
      const c = await api.create(secrets, caSecretObject(namespace, name, files));
      if (c.status === 201 || c.status === 200) {
        kca = { ca: CertificateAuthority.fromPem(files, o, what), origin: 'created', secret: name };
      } else if (c.status === 409) {
        // another replica created it between our read and our create: its CA is the one
        const again = expectStatus(await read(name), `reading Secret ${namespace}/${name} after a conflict`, 200);
        kca = { ca: CertificateAuthority.fromPem(decode(again, what), o, what), origin: 'lost-race', secret: name };
      } else {
        throw new MeshError('AMBIT_KUBE_API', `creating Secret ${namespace}/${name}: HTTP ${c.status}: ${statusMessage(c)}`);
      }
    }
  }
  log.info('mesh ca ready', { secret: `${namespace}/${kca.secret}`, origin: kca.origin });
  const cm = o.rootConfigMap === undefined ? CA_ROOT_CONFIGMAP : o.rootConfigMap;
  if (cm !== null) await publishRoot(api, namespace, cm, kca.ca.rootsPem);
  return kca;
}

/** The ConfigMap carrying root-cert.pem (server-side apply: created, or updated when the root changed). */
export function rootConfigMapObject(namespace: string, name: string, rootsPem: string, extra: { labels?: Record<string, string>; ownerReferences?: Json[] } = {}): Json {
  return {
    apiVersion: 'v1', kind: 'ConfigMap',
    metadata: { name, namespace, labels: { ...PART_OF, ...extra.labels }, ...(extra.ownerReferences ? { ownerReferences: extra.ownerReferences } : {}) },
    data: { [CA_FILES.root]: rootsPem },
  };
}

export async function publishRoot(api: KubeApi, namespace: string, name: string, rootsPem: string): Promise<void> {
  const path = resourcePath('v1', 'configmaps', namespace, name);
  expectStatus(await api.apply(path, rootConfigMapObject(namespace, name, rootsPem)), `applying ConfigMap ${namespace}/${name}`, 200, 201);
}
