/**
 * `ambit namespace enroll|unenroll` and `ambit waypoint apply|list|delete` on a cluster (the
 * kubeconfig's, chosen by chooseMesh as for status): what the local mesh does through `ambit up`,
 * done through the API server, with the client of `ambit install` (kube-apply.ts: one request,
 * bounded in size and time).
 *
 *   namespace enroll NAME    PATCH the Namespace (merge patch): istio.io/dataplane-mode=ambient
 *   namespace unenroll NAME  the same label set to null (removed)
 *   waypoint apply           server-side apply (field manager ambit) of the Gateway that
 *                            waypointGatewayYaml renders (class ambit-waypoint); with
 *                            --enroll-namespace, the namespace's istio.io/use-waypoint=NAME
 *   waypoint list            the Gateways of a waypoint class, with their status
 *   waypoint delete NAME...  DELETE each, only when it is of a waypoint class (uid precondition:
 *                            the Gateway checked is the one deleted)
 *
 * The requests and rows are built by pure functions below; the run* functions only send them.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { DNS_LABEL, MeshError } from '../core/index.js';
import { FIELD_MANAGER, request, statusMessage } from './install/kube-apply.js';
import { USE_WAYPOINT, WAYPOINT_CLASSES, waypointGatewayYaml } from './local-waypoints.js';
import { AMBIENT_LABEL } from './mesh.js';

/** The class `ambit install` adds (its controller is the control plane): what `ambit waypoint apply` uses on a cluster. */
export const CLUSTER_WAYPOINT_CLASS = 'ambit-waypoint';
const GATEWAYS = '/apis/gateway.networking.k8s.io/v1';
/** Gateways per page when listing, and pages at most (a bound on what one listing reads) */
const PAGE_SIZE = 250;
const MAX_PAGES = 40;

export interface KubeRequest {
  readonly method: 'PATCH' | 'GET' | 'DELETE';
  readonly path: string;
  readonly body?: string;
  readonly contentType?: string;
}


function checkName(what: string, v: string): string {
  if (!DNS_LABEL.test(v)) throw new MeshError('AMBIT_CONFIG_INVALID', `${what}: ${JSON.stringify(v).slice(0, 80)} is not a DNS label`);
  return v;
}

/** A merge patch of one label of a Namespace (`null` removes it). Pure. */
export function namespaceLabelRequest(namespace: string, label: string, value: string | null): KubeRequest {
  return {
    method: 'PATCH', path: `/api/v1/namespaces/${encodeURIComponent(checkName('namespace', namespace))}`,
    contentType: 'application/merge-patch+json', body: JSON.stringify({ metadata: { labels: { [label]: value } } }),
  };
}

/** `ambit namespace enroll|unenroll NAME`. Pure. */
export function enrollRequest(namespace: string, enroll: boolean): KubeRequest {
  return namespaceLabelRequest(namespace, AMBIENT_LABEL, enroll ? 'ambient' : null);
}

export interface WaypointSpec {
  readonly name: string;
  readonly namespace: string;
  /** istio.io/waypoint-for */
  readonly for: string;
}

function gatewayPath(namespace: string, name: string): string {
  return `${GATEWAYS}/namespaces/${encodeURIComponent(namespace)}/gateways/${encodeURIComponent(name)}`;
}

/** The Gateway of `ambit waypoint apply` (the local variant's, class ambit-waypoint). Pure. */
export function waypointGateway(w: WaypointSpec): Record<string, unknown> {
  // the annotation is the local mesh's way to label the namespace; here the label is patched itself
  return parse(waypointGatewayYaml({ ...w, enrollNamespace: false, gatewayClassName: CLUSTER_WAYPOINT_CLASS })) as Record<string, unknown>;
}

/** Server-side apply of the waypoint's Gateway (field manager ambit; its fields are ours, as istioctl forces them). Pure. */
export function waypointApplyRequest(w: WaypointSpec): KubeRequest {
  return {
    method: 'PATCH', path: `${gatewayPath(w.namespace, w.name)}?fieldManager=${FIELD_MANAGER}&force=true`,
    // JSON is YAML: the apply-patch content type takes either
    contentType: 'application/apply-patch+yaml', body: JSON.stringify(waypointGateway(w)),
  };
}

export interface KubeWaypointRow {
  readonly namespace: string;
  readonly name: string;
  readonly class: string;
  /** istio.io/waypoint-for (service when absent) */
  readonly for: string;
  /** status of the Programmed condition (True, False, Unknown), null before the control plane wrote one */
  readonly programmed: string | null;
  /** its reason and message when not True */
  readonly reason: string | null;
  /** status.addresses[0].value */
  readonly address: string | null;
}

interface GatewayItem {
  metadata?: { name?: unknown; namespace?: unknown; labels?: Record<string, unknown> };
  spec?: { gatewayClassName?: unknown };
  status?: { conditions?: Array<{ type?: unknown; status?: unknown; reason?: unknown; message?: unknown }>; addresses?: Array<{ value?: unknown }> };
}

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);

/** The rows of `ambit waypoint list` from listed Gateways: waypoint classes only, sorted. Pure. */
export function kubeWaypointRows(items: readonly unknown[]): KubeWaypointRow[] {
  const rows: KubeWaypointRow[] = [];
  for (const raw of items) {
    const g = raw as GatewayItem | null;
    const cls = String(g?.spec?.gatewayClassName ?? '');
    const name = str(g?.metadata?.name);
    if (!g || name === null || !WAYPOINT_CLASSES.includes(cls)) continue;
    const c = (g.status?.conditions ?? []).find((x) => x?.type === 'Programmed');
    const programmed = c ? (str(c.status) ?? 'Unknown') : null;
    const why = c && programmed !== 'True' ? [str(c.reason), str(c.message)].filter((x) => x !== null).join(': ') : '';
    rows.push({
      namespace: str(g.metadata?.namespace) ?? 'default', name, class: cls,
      for: str(g.metadata?.labels?.['istio.io/waypoint-for']) ?? 'service',
      programmed, reason: why === '' ? null : why,
      address: str(g.status?.addresses?.[0]?.value),
    });
  }
  return rows.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
}

/** The table cells of a row (NAMESPACE, NAME, FOR, PROGRAMMED, ADDRESS). Pure. */
export function kubeWaypointCells(r: KubeWaypointRow): string[] {
  const programmed = r.programmed === null ? '-' : r.reason !== null ? `${r.programmed} (${r.reason})` : r.programmed;
  return [r.namespace, r.name, r.for, programmed, r.address ?? '-'];
}

export const KUBE_WAYPOINT_COLUMNS = ['NAMESPACE', 'NAME', 'FOR', 'PROGRAMMED', 'ADDRESS'] as const;

/**
 * Whether `ambit waypoint delete` may delete this Gateway: its DELETE (with the uid seen, so a
 * Gateway recreated meanwhile is not the one deleted), or why not. Pure.
 */
export function waypointDeleteDecision(namespace: string, name: string, live: unknown): { request: KubeRequest } | { refuse: string } {
  const g = live as GatewayItem & { metadata?: { uid?: unknown } };
  const cls = String(g?.spec?.gatewayClassName ?? '');
  if (!WAYPOINT_CLASSES.includes(cls)) {
    return { refuse: `Gateway ${namespace}/${name} is not a waypoint (gatewayClassName ${JSON.stringify(cls)}, not ${WAYPOINT_CLASSES.join(' or ')}); not deleted (kubectl delete gateway deletes any Gateway)` };
  }
  const uid = str(g.metadata?.uid);
  return {
    request: {
      method: 'DELETE', path: gatewayPath(namespace, name), contentType: 'application/json',
      body: JSON.stringify({ apiVersion: 'v1', kind: 'DeleteOptions', ...(uid !== null ? { preconditions: { uid } } : {}) }),
    },
  };
}

// --- I/O

async function send(kc: KubeConfig, r: KubeRequest): Promise<{ status: number; body: string }> {
  return request(kc, r.method, r.path, r.body, r.contentType);
}

function failed(what: string, a: { status: number; body: string }): MeshError {
  return new MeshError('AMBIT_CONFIG_INVALID', `${what}: HTTP ${a.status}: ${statusMessage(a)}`);
}

async function patchNamespace(kc: KubeConfig, r: KubeRequest, namespace: string): Promise<void> {
  const a = await send(kc, r);
  if (a.status === 404) throw new MeshError('AMBIT_CONFIG_INVALID', `namespace ${namespace}: not found in ${kc.getCurrentCluster()?.server ?? 'the cluster'}`);
  if (a.status !== 200) throw failed(`namespace ${namespace}`, a);
}

/** `ambit namespace enroll|unenroll NAME` on a cluster; returns the line to print. */
export async function kubeNamespaceLabel(kc: KubeConfig, namespace: string, enroll: boolean): Promise<string> {
  await patchNamespace(kc, enrollRequest(namespace, enroll), namespace);
  return `namespace ${namespace} ${enroll ? `enrolled: ${AMBIENT_LABEL}=ambient` : `unenrolled: ${AMBIENT_LABEL} removed`} (the agents ${enroll ? 'capture' : 'release'} its running pods)`;
}

/** `ambit waypoint apply` on a cluster; returns the lines to print. */
export async function kubeWaypointApply(kc: KubeConfig, w: WaypointSpec, enrollNamespace: boolean): Promise<string[]> {
  const r = waypointApplyRequest(w);
  const a = await send(kc, r);
  const what = `Gateway ${w.namespace}/${w.name}`;
  if (a.status !== 200 && a.status !== 201) throw failed(`waypoint apply: ${what}`, a);
  const lines = [`${what} ${a.status === 201 ? 'created' : 'applied'} (class ${CLUSTER_WAYPOINT_CLASS}, listener mesh 15008/HBONE, istio.io/waypoint-for=${w.for}, field manager ${FIELD_MANAGER}); the control plane creates its Deployment and Service`];
  if (enrollNamespace) {
    await patchNamespace(kc, namespaceLabelRequest(w.namespace, USE_WAYPOINT, w.name), w.namespace);
    lines.push(`namespace ${w.namespace} labelled ${USE_WAYPOINT}=${w.name}`);
  }
  return lines;
}

/** `ambit waypoint list` on a cluster: of `namespace`, or of all namespaces. */
export async function kubeWaypointList(kc: KubeConfig, namespace: string | undefined): Promise<KubeWaypointRow[]> {
  const base = namespace === undefined ? `${GATEWAYS}/gateways` : `${GATEWAYS}/namespaces/${encodeURIComponent(checkName('namespace', namespace))}/gateways`;
  const items: unknown[] = [];
  let cont: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const a = await request(kc, 'GET', `${base}?limit=${PAGE_SIZE}${cont !== undefined ? `&continue=${encodeURIComponent(cont)}` : ''}`);
    if (a.status !== 200) throw failed(`waypoint list: listing Gateways${namespace !== undefined ? ` in ${namespace}` : ''}`, a);
    let list: { items?: unknown[]; metadata?: { continue?: unknown } };
    try { list = JSON.parse(a.body) as typeof list; } catch { throw new MeshError('AMBIT_CONFIG_INVALID', `waypoint list: the answer is not JSON: ${a.body.slice(0, 200)}`); }
    // a list's items carry no namespace only when the server leaves it out: the path names it
    for (const i of list.items ?? []) items.push(namespace === undefined ? i : withNamespace(i, namespace));
    cont = str(list.metadata?.continue) ?? undefined;
    if (cont === undefined) return kubeWaypointRows(items);
  }
  throw new MeshError('AMBIT_CONFIG_INVALID', `waypoint list: more than ${PAGE_SIZE * MAX_PAGES} Gateways; give -n NAMESPACE`);
}

function withNamespace(i: unknown, namespace: string): unknown {
  const g = i as GatewayItem | null;
  if (!g || typeof g !== 'object' || typeof g.metadata?.namespace === 'string') return i;
  return { ...g, metadata: { ...g.metadata, namespace } };
}

/** `ambit waypoint delete NAME...` on a cluster: one line per name, ok or not (the caller prints them and sets the exit code). */
export async function kubeWaypointDelete(kc: KubeConfig, namespace: string, names: readonly string[]): Promise<Array<{ ok: boolean; line: string }>> {
  const out: Array<{ ok: boolean; line: string }> = [];
  for (const name of names) {
    const what = `waypoint ${namespace}/${name}`;
    const notFound = { ok: false, line: `${what}: not found (ambit waypoint list)` };
    const g = await request(kc, 'GET', gatewayPath(checkName('-n', namespace), checkName('name', name)));
    if (g.status === 404) { out.push(notFound); continue; }
    if (g.status !== 200) throw failed(`waypoint delete: ${what}`, g);
    const d = waypointDeleteDecision(namespace, name, JSON.parse(g.body));
    if ('refuse' in d) { out.push({ ok: false, line: d.refuse }); continue; }
    const a = await send(kc, d.request);
    if (a.status === 404) { out.push(notFound); continue; }
    if (a.status !== 200 && a.status !== 202) throw failed(`waypoint delete: ${what}`, a);
    out.push({ ok: true, line: `${what} deleted (the control plane's Deployment and Service for it go with it)` });
  }
  return out;
}

/** The namespace of a verb on a cluster: -n, else the kubeconfig context's, else default (as kubectl). */
export function contextNamespace(kc: KubeConfig, given: string | undefined): string {
  return given ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
}
