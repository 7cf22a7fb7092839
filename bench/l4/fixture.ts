/**
 * One ambient pod pair across two nodes with the real control plane and two node agents: the
 * setting of the restart and soak steps (and of the l4 ambit path). Builds it, runs `fn`, and
 * removes everything again, also when `fn` throws.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster, installExitCleanup, type Cluster, type Pod } from '../../src/local/index.js';
import { messageOf } from '../common/errors.js';
import { ensureTools } from '../common/tools.js';
import { startApps, type Apps } from './apps.js';
import { startAmbit, type AmbitMesh } from './mesh.js';

export const APP_TOOLS = { iperf3: 'iperf3', haproxy: 'haproxy' } as const;

export interface AmbitPair {
  readonly cluster: Cluster;
  /** on node-1 */
  readonly client: Pod;
  /** on node-2, serving the apps of apps.ts (echo, haproxy's fixed 1 kB body on :8080, iperf3) */
  readonly server: Pod;
  readonly mesh: AmbitMesh;
  readonly dir: string;
}

export async function withAmbitPair<T>(name: string, log: (line: string) => void, fn: (p: AmbitPair) => Promise<T>): Promise<T> {
  if (process.getuid?.() !== 0) throw new Error(`bench ${name}: needs root (network namespaces, nftables)`);
  const tools = await ensureTools(APP_TOOLS, log);
  const dir = mkdtempSync(join(tmpdir(), `ambit-bench-${name}-`));
  let cluster: Cluster | undefined;
  let uninstall: (() => void) | undefined;
  let apps: Apps | undefined;
  let mesh: AmbitMesh | undefined;
  try {
    log('building a 2-node cluster');
    cluster = await createCluster({ nodes: 2 });
    uninstall = installExitCleanup(cluster);
    const ns = `bench-${name}`;
    const client = await cluster.addPod({ name: 'client', namespace: ns, node: 'node-1', labels: { app: 'client' }, serviceAccount: 'client' });
    const server = await cluster.addPod({ name: 'server', namespace: ns, node: 'node-2', labels: { app: 'server' }, serviceAccount: 'server' });
    cluster.setNamespaceLabels(ns, { 'istio.io/dataplane-mode': 'ambient' });
    apps = await startApps(cluster, server, dir, tools);
    mesh = await startAmbit({ cluster, client, server, dir, log });
    return await fn({ cluster, client, server, mesh, dir });
  } finally {
    await mesh?.stop().catch((e: unknown) => { log(`cleanup: ${messageOf(e)}`); });
    await apps?.stop().catch(() => undefined);
    if (cluster) await cluster.destroy().catch((e: unknown) => { log(`cleanup: ${messageOf(e)}`); cluster?.destroySync(); });
    uninstall?.();
    rmSync(dir, { recursive: true, force: true });
  }
}
