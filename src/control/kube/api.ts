/**
 * The few Kubernetes API calls the control plane writes with (the CA Secret, waypoint objects,
 * Gateway status): plain JSON over HTTP(S), with the KubeConfig applying the cluster CA and the
 * credentials. Bounded in size and time; an answer is returned as status + parsed body, and the
 * callers decide what a 404 or a 409 means.
 */
import type https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { MeshError, boundedRequest } from '../../core/index.js';

export type Json = Record<string, unknown>;

export interface KubeAnswer {
  readonly status: number;
  /** the parsed body; {} when it was empty or not JSON */
  readonly body: Json;
}

export interface KubeApiOptions {
  /** largest response body, bytes; default 4 MiB */
  maxResponseBytes?: number;
  /** a request must be answered within this, ms; default 30 000 */
  timeoutMs?: number;
}

/** Server-side apply: field manager of every object the control plane writes. */
export const CONTROL_FIELD_MANAGER = 'ambit-control';

export const CONTENT = {
  json: 'application/json',
  mergePatch: 'application/merge-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

export class KubeApi {
  readonly #kc: KubeConfig;
  readonly #max: number;
  readonly #timeout: number;

  constructor(kc: KubeConfig, o: KubeApiOptions = {}) {
    this.#kc = kc;
    this.#max = o.maxResponseBytes ?? 4 * 1024 * 1024;
    this.#timeout = o.timeoutMs ?? 30_000;
  }

  get server(): string { return this.#kc.getCurrentCluster()?.server ?? '?'; }

  async request(method: string, path: string, body?: unknown, contentType: string = CONTENT.json): Promise<KubeAnswer> {
    const cluster = this.#kc.getCurrentCluster();
    if (!cluster) throw new MeshError('AMBIT_CONFIG_INVALID', 'kubeconfig: no current cluster');
    const url = new URL(cluster.server.replace(/\/$/, '') + path);
    const headers: Record<string, string> = { accept: 'application/json' };
    const text = body === undefined ? undefined : JSON.stringify(body);
    if (text !== undefined) {
      headers['content-type'] = contentType;
      // Node sends a DELETE body neither chunked nor sized unless told: the server would read it
      // as the next request
      headers['content-length'] = String(Buffer.byteLength(text));
    }
    const opts: https.RequestOptions = { method, headers };
    await this.#kc.applyToHTTPSOptions(opts);
    const a = await boundedRequest(url, { request: opts, body: text, maxBytes: this.#max, timeoutMs: this.#timeout });
    let parsed: Json = {};
    try {
      const v = JSON.parse(a.body) as unknown;
      if (v && typeof v === 'object' && !Array.isArray(v)) parsed = v as Json;
    } catch { /* not JSON: callers look at the status */ }
    return { status: a.status, body: parsed };
  }

  get(path: string): Promise<KubeAnswer> { return this.request('GET', path); }
  create(collectionPath: string, obj: Json): Promise<KubeAnswer> { return this.request('POST', collectionPath, obj); }
  delete(path: string): Promise<KubeAnswer> { return this.request('DELETE', path, { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' }); }
  mergePatch(path: string, patch: Json): Promise<KubeAnswer> { return this.request('PATCH', path, patch, CONTENT.mergePatch); }
  /** Server-side apply as the control plane (conflicts forced: these fields are the control plane's). */
  apply(path: string, obj: Json): Promise<KubeAnswer> {
    return this.request('PATCH', `${path}?fieldManager=${CONTROL_FIELD_MANAGER}&force=true`, obj, CONTENT.apply);
  }
}

/** The API server's own words from a Status body. */
export function statusMessage(a: KubeAnswer): string {
  const m = a.body.message;
  return typeof m === 'string' ? m.slice(0, 500) : `HTTP ${a.status}`;
}

/** Throws AMBIT_KUBE_API naming `what` unless the status is one of `ok`. */
export function expectStatus(a: KubeAnswer, what: string, ...ok: number[]): KubeAnswer {
  if (!ok.includes(a.status)) throw new MeshError('AMBIT_KUBE_API', `${what}: HTTP ${a.status}: ${statusMessage(a)}`);
  return a;
}

/** `/api/v1` or `/apis/<group>/<version>`, then namespace and plural; name optional. */
export function resourcePath(apiVersion: string, plural: string, namespace?: string, name?: string): string {
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  const ns = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${base}${ns}/${plural}${name ? `/${encodeURIComponent(name)}` : ''}`;
}
