/**
 * `ambit install` against a cluster: checks the prerequisites (the Gateway API CRDs, v1 served),
 * then server-side applies every rendered object in order (field manager `ambit`, conflicts
 * forced: these objects are ambit's). The kubeconfig's cluster, CA, client certificate, token
 * or exec credentials are applied by the Kubernetes client library's KubeConfig; the requests
 * themselves are plain HTTP(S), bounded in size and time.
 */
import type https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';
import { MeshError, boundedRequest, errorMessage, type BoundedAnswer } from '../../core/index.js';
import { PART_OF, type Obj } from './manifests.js';

/** API paths of the kinds `ambit install` renders: plural, and whether namespaced. */
const RESOURCES: Record<string, { plural: string; namespaced: boolean }> = {
  Namespace: { plural: 'namespaces', namespaced: false },
  CustomResourceDefinition: { plural: 'customresourcedefinitions', namespaced: false },
  ClusterRole: { plural: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { plural: 'clusterrolebindings', namespaced: false },
  Role: { plural: 'roles', namespaced: true },
  RoleBinding: { plural: 'rolebindings', namespaced: true },
  GatewayClass: { plural: 'gatewayclasses', namespaced: false },
  ServiceAccount: { plural: 'serviceaccounts', namespaced: true },
  Service: { plural: 'services', namespaced: true },
  Deployment: { plural: 'deployments', namespaced: true },
  DaemonSet: { plural: 'daemonsets', namespaced: true },
  PodDisruptionBudget: { plural: 'poddisruptionbudgets', namespaced: true },
};

/** The Gateway API kinds the control plane reads: their CRDs must serve v1 before ambit is installed. */
export const GATEWAY_API_CRDS = ['gateways.gateway.networking.k8s.io', 'httproutes.gateway.networking.k8s.io', 'grpcroutes.gateway.networking.k8s.io'];

const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 30_000;
export const FIELD_MANAGER = 'ambit';

/** Loads the kubeconfig found by findKubeconfig: a file, or the in-cluster service account. */
export function loadKubeConfig(where: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (where === 'in-cluster service account') kc.loadFromCluster(); else kc.loadFromFile(where);
  } catch (e) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `kubeconfig ${where}: ${errorMessage(e)}`);
  }
  if (!kc.getCurrentCluster()) throw new MeshError('AMBIT_CONFIG_INVALID', `kubeconfig ${where}: no current cluster (kubectl config use-context)`);
  return kc;
}

export type Answer = BoundedAnswer;

export async function request(kc: KubeConfig, method: string, path: string, body?: string, contentType?: string): Promise<Answer> {
  const cluster = kc.getCurrentCluster()!;
  const url = new URL(cluster.server.replace(/\/$/, '') + path);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (contentType) headers['content-type'] = contentType;
  // framed by its length: Node sends the body of a DELETE (DeleteOptions) unframed otherwise, and the server answers 400
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  const opts: https.RequestOptions = { method, headers };
  await kc.applyToHTTPSOptions(opts);
  return boundedRequest(url, { request: opts, body, maxBytes: MAX_RESPONSE_BYTES, timeoutMs: REQUEST_TIMEOUT_MS });
}

/** The API server's own words from a Status body, else the start of the body. */
export function statusMessage(a: Answer): string {
  try {
    const s = JSON.parse(a.body) as { message?: unknown };
    if (typeof s.message === 'string') return s.message;
  } catch { /* not JSON */ }
  return a.body.slice(0, 300) || '(no body)';
}

export function objectPath(o: Obj): string {
  const apiVersion = String(o.apiVersion);
  const kind = String(o.kind);
  const r = RESOURCES[kind];
  if (!r) throw new MeshError('AMBIT_BUG', `install: no API path known for kind ${kind}`);
  const md = (o.metadata ?? {}) as { name?: unknown; namespace?: unknown };
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  const ns = r.namespaced ? `/namespaces/${encodeURIComponent(String(md.namespace))}` : '';
  return `${base}${ns}/${r.plural}/${encodeURIComponent(String(md.name))}`;
}

/** Names what is missing of the Gateway API (or undefined when every CRD serves v1). */
export async function missingPrerequisites(kc: KubeConfig): Promise<string | undefined> {
  const missing: string[] = [];
  for (const name of GATEWAY_API_CRDS) {
    const a = await request(kc, 'GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
    if (a.status === 404) { missing.push(name); continue; }
    if (a.status !== 200) throw new MeshError('AMBIT_CONFIG_INVALID', `install: reading CRD ${name}: HTTP ${a.status}: ${statusMessage(a)}`);
    const crd = JSON.parse(a.body) as { spec?: { versions?: Array<{ name?: string; served?: boolean }> } };
    if (!crd.spec?.versions?.some((v) => v.name === 'v1' && v.served === true)) missing.push(`${name} (v1 not served)`);
  }
  return missing.length === 0 ? undefined : missing.join(', ');
}

function describe(o: Obj): string {
  const md = (o.metadata ?? {}) as { name?: unknown; namespace?: unknown };
  return `${String(o.kind)} ${md.namespace ? `${String(md.namespace)}/` : ''}${String(md.name)}`;
}

/** The live object: undefined when absent, else whether it carries ambit's label. */
async function live(kc: KubeConfig, o: Obj): Promise<{ ours: boolean } | undefined> {
  const a = await request(kc, 'GET', objectPath(o));
  if (a.status === 404) return undefined;
  if (a.status !== 200) throw new MeshError('AMBIT_CONFIG_INVALID', `${describe(o)}: HTTP ${a.status}: ${statusMessage(a)}`);
  const labels = ((JSON.parse(a.body) as { metadata?: { labels?: Record<string, unknown> } }).metadata?.labels) ?? {};
  return { ours: labels[PART_OF.key] === PART_OF.value };
}

/**
 * Server-side applies `objects` in order; `progress` hears of each. Stops at the first refusal,
 * naming the object and the API server's message. A CRD that exists without ambit's label (Istio's
 * own) is kept as it is: forcing ours over it would change another installation's schema.
 */
export async function serverSideApply(kc: KubeConfig, objects: readonly Obj[], progress: (line: string) => void): Promise<void> {
  for (const o of objects) {
    const path = objectPath(o);
    const what = describe(o);
    if (o.kind === 'CustomResourceDefinition') {
      const l = await live(kc, o);
      if (l && !l.ours) { progress(`${what} kept: it exists and is not ambit's (no ${PART_OF.key}=${PART_OF.value})`); continue; }
    }
    // JSON is YAML: the apply-patch content type takes either
    const a = await request(kc, 'PATCH', `${path}?fieldManager=${FIELD_MANAGER}&force=true`, JSON.stringify(o), 'application/apply-patch+yaml');
    if (a.status !== 200 && a.status !== 201) throw new MeshError('AMBIT_CONFIG_INVALID', `install: ${what}: HTTP ${a.status}: ${statusMessage(a)}`);
    progress(`${what} ${a.status === 201 ? 'created' : 'applied'}`);
  }
}

/**
 * Server-side applies CRDs another project owns (the Gateway API's), with force: unlike
 * serverSideApply, an existing CRD without ambit's label is updated, since the user asked for it.
 */
export async function applyForeignCrds(kc: KubeConfig, crds: readonly Obj[], progress: (line: string) => void): Promise<void> {
  for (const o of crds) {
    const a = await request(kc, 'PATCH', `${objectPath(o)}?fieldManager=${FIELD_MANAGER}&force=true`, JSON.stringify(o), 'application/apply-patch+yaml');
    if (a.status !== 200 && a.status !== 201) throw new MeshError('AMBIT_CONFIG_INVALID', `install: ${describe(o)}: HTTP ${a.status}: ${statusMessage(a)}`);
    progress(`${describe(o)} ${a.status === 201 ? 'created' : 'applied'}`);
  }
}

export interface UninstallOptions {
  /** also delete the CRDs (and with them every object of those kinds in the cluster); default false */
  readonly removeCrds: boolean;
  /** also delete the namespace (and with it everything in it, the CA Secret included); default false */
  readonly removeNamespace: boolean;
}

/**
 * Deletes, in reverse install order, the installed objects that carry ambit's label; an object
 * that is absent or not ambit's is left alone, and so are the CRDs and the namespace unless asked.
 */
export async function uninstall(kc: KubeConfig, objects: readonly Obj[], o: UninstallOptions, progress: (line: string) => void): Promise<void> {
  for (const obj of [...objects].reverse()) {
    const what = describe(obj);
    const plural = String((obj.metadata as { name?: unknown }).name).split('.')[0];
    if (obj.kind === 'CustomResourceDefinition' && !o.removeCrds) { progress(`${what} kept (--remove-crds deletes it and all ${plural} of the cluster)`); continue; }
    if (obj.kind === 'Namespace' && !o.removeNamespace) { progress(`${what} kept (--remove-namespace deletes it and everything in it)`); continue; }
    const l = await live(kc, obj);
    if (!l) { progress(`${what} not found`); continue; }
    if (!l.ours) { progress(`${what} kept: it is not ambit's (no ${PART_OF.key}=${PART_OF.value})`); continue; }
    const a = await request(kc, 'DELETE', objectPath(obj));
    if (a.status === 404) { progress(`${what} not found`); continue; }
    if (a.status !== 200 && a.status !== 202) throw new MeshError('AMBIT_CONFIG_INVALID', `uninstall: ${what}: HTTP ${a.status}: ${statusMessage(a)}`);
    progress(`${what} deleted`);
  }
}
