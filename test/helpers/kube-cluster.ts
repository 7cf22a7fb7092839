/**
 * The in-test API server (fake-kube-api.ts) with a bearer token, listening, and a kubeconfig in a
 * temporary directory pointing at it: what the CLI's cluster verbs (status, config-dump, install,
 * namespace, waypoint) are tested against. Everything goes in t.teardown.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { FakeKubeApi } from './fake-kube-api.js';

export interface FakeCluster {
  readonly api: FakeKubeApi;
  /** http://127.0.0.1:PORT */
  readonly server: string;
  /** a temporary directory (HOME of the CLI: no ~/.kube/config there) */
  readonly dir: string;
  readonly kubeconfig: string;
  /** KUBECONFIG and HOME for the CLI */
  readonly env: { KUBECONFIG: string; HOME: string };
}

/** A kubeconfig of one cluster (TLS unchecked: the fake speaks plain HTTP), a bearer token and optionally the context's namespace. */
export function kubeconfigText(server: string, token: string, namespace?: string): string {
  return `apiVersion: v1
kind: Config
clusters: [{ name: fake, cluster: { server: "${server}", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token: ${token} } }]
contexts: [{ name: c, context: { cluster: fake, user: u${namespace !== undefined ? `, namespace: ${namespace}` : ''} } }]
current-context: c
`;
}

export async function fakeCluster(t: ExecutionContext, o: { token: string; api?: FakeKubeApi; namespace?: string }): Promise<FakeCluster> {
  const api = o.api ?? new FakeKubeApi();
  api.token = o.token;
  const server = await api.listen();
  t.teardown(() => api.close());
  const dir = mkdtempSync(join(tmpdir(), 'ambit-kube-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigText(server, o.token, o.namespace));
  return { api, server, dir, kubeconfig, env: { KUBECONFIG: kubeconfig, HOME: dir } };
}
