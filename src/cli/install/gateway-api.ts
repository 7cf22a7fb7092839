/**
 * `ambit install --gateway-api [FILE|URL]`: the Gateway API CRDs the control plane needs (v1 of
 * Gateway, HTTPRoute and GRPCRoute: release 1.1 or later), installed before ambit itself. Without
 * a value the pinned standard-channel release below is downloaded; a FILE or URL names another
 * release (an air-gapped cluster: the file downloaded beforehand). Only the CustomResourceDefinitions
 * of gateway.networking.k8s.io are taken from it; anything else in the file (a release's
 * ValidatingAdmissionPolicy, say) is named and skipped. They are server-side applied with force, as
 * `kubectl apply --server-side --force-conflicts` would, and stay on uninstall (other controllers
 * use them too).
 */
import { readFileSync, statSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { MeshError, boundedRequest, errorMessage } from '../../core/index.js';
import type { Obj } from './manifests.js';

export const GATEWAY_API_VERSION = 'v1.2.1';
export const GATEWAY_API_RELEASE = `https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml`;
export const GATEWAY_API_GROUP = 'gateway.networking.k8s.io';
/** A release's install file is about 1 MB; a larger answer is refused. */
export const MAX_RELEASE_BYTES = 8 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const DOWNLOAD_TIMEOUT_MS = 60_000;

export interface GatewayApiCrds {
  readonly crds: Obj[];
  /** documents that are not Gateway API CRDs: "Kind name" */
  readonly skipped: string[];
}

/** The Gateway API CRDs of a multi-document YAML text; `source` names it in errors. Pure. */
export function gatewayApiCrds(text: string, source: string): GatewayApiCrds {
  const crds: Obj[] = [];
  const skipped: string[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    if (doc.errors.length > 0) throw new MeshError('AMBIT_CONFIG_INVALID', `${source}: document ${i + 1}: ${doc.errors[0]!.message}`);
    const o = doc.toJS() as unknown;
    if (o === null || o === undefined) return;
    if (typeof o !== 'object' || Array.isArray(o)) throw new MeshError('AMBIT_CONFIG_INVALID', `${source}: document ${i + 1} is not an object`);
    const obj = o as Obj & { metadata?: { name?: unknown }; spec?: { group?: unknown } };
    const name = typeof obj.metadata?.name === 'string' ? obj.metadata.name : '';
    if (obj.kind === 'CustomResourceDefinition' && obj.spec?.group === GATEWAY_API_GROUP && name !== '') crds.push(obj);
    else skipped.push(`${String(obj.kind ?? '(no kind)')} ${name || '(no name)'}`);
  });
  if (crds.length === 0) throw new MeshError('AMBIT_CONFIG_INVALID', `${source}: no CustomResourceDefinition of ${GATEWAY_API_GROUP} in it (is it a Gateway API release's install file?)`);
  return { crds, skipped };
}

/** The text of `source`: an http(s) URL (redirects followed, as GitHub's release downloads need) or a file. */
export async function readGatewayApiSource(source: string): Promise<string> {
  if (!/^https?:\/\//.test(source)) {
    try {
      if (statSync(source).size > MAX_RELEASE_BYTES) throw new MeshError('AMBIT_LIMIT', `--gateway-api ${source}: larger than ${MAX_RELEASE_BYTES} bytes`);
      return readFileSync(source, 'utf8');
    } catch (e) {
      if (e instanceof MeshError) throw e;
      throw new MeshError('AMBIT_CONFIG_INVALID', `--gateway-api ${source}: ${errorMessage(e)}`);
    }
  }
  let url = new URL(source);
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const a = await boundedRequest(url, { request: { method: 'GET' }, maxBytes: MAX_RELEASE_BYTES, timeoutMs: DOWNLOAD_TIMEOUT_MS, what: `--gateway-api ${source}` });
    if (a.status === 200) return a.body;
    if (a.status >= 300 && a.status < 400 && a.location) { url = new URL(a.location, url); continue; }
    throw new MeshError('AMBIT_CONFIG_INVALID', `--gateway-api ${source}: HTTP ${a.status}`);
  }
  throw new MeshError('AMBIT_CONFIG_INVALID', `--gateway-api ${source}: more than ${MAX_REDIRECTS} redirects`);
}
