/** Shared by the translate tests: YAML in, translation out. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import type { KubeObject, Rejection } from '../../../src/control/config/types.js';
import { Translator } from '../../../src/control/translate/index.js';
import type { TranslateResult } from '../../../src/control/translate/index.js';

export const TD = 'cluster.local';
export const ROOT = 'istio-system';

export function objects(text: string): KubeObject[] {
  const out: KubeObject[] = [];
  for (const d of parseAllDocuments(text)) {
    if (d.errors.length > 0) throw new Error(`bad test yaml: ${d.errors[0]?.message ?? ''}`);
    const v: unknown = d.toJS();
    if (v !== null && v !== undefined) out.push(v as KubeObject);
  }
  return out;
}

export function fixture(name: string): KubeObject[] {
  return objects(readFileSync(fileURLToPath(new URL(`../../fixtures/config/${name}`, import.meta.url)), 'utf8'));
}

export function translator(): Translator {
  return new Translator({ trustDomain: TD, rootNamespace: ROOT, clusterId: 'c1' });
}

export function translate(text: string | KubeObject[]): TranslateResult {
  return translator().update(typeof text === 'string' ? objects(text) : text);
}

/** A running, ready pod. */
export function pod(name: string, ns: string, labels: Record<string, string>, ip: string, extra: Record<string, unknown> = {}): KubeObject {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: ns, labels },
    spec: { nodeName: 'node-a', serviceAccountName: 'sa-' + name, containers: [{ name: 'app', ports: [{ name: 'web', containerPort: 8080 }] }], ...extra },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

export function messages(rs: readonly Rejection[]): string[] {
  return rs.map((r) => r.message);
}
