/**
 * `ambit install [--dry-run] [--set k=v] [--output-dir DIR]`: renders the installation from the
 * values; --dry-run prints it (or writes daemonset/-style files). Without --dry-run it needs a
 * kubeconfig (KUBECONFIG, ~/.kube/config, or the in-cluster service account), checks that the
 * Gateway API CRDs serve v1, and server-side applies every object in order.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { MeshError } from '../../core/index.js';
import { writeFileAtomic } from '../state-file.js';
import { removeCniPlugins } from './cni-cleanup.js';
import { GATEWAY_API_RELEASE, gatewayApiCrds, readGatewayApiSource } from './gateway-api.js';
import { applyForeignCrds, loadKubeConfig, missingPrerequisites, serverSideApply, uninstall, type UninstallOptions } from './kube-apply.js';
import { manifestFiles, type Obj } from './manifests.js';
import { fileText, installObjects, installText, kustomizationText } from './render.js';
import { applySets, defaultValues } from './values.js';

export interface InstallOptions {
  readonly version: string;
  readonly dryRun: boolean;
  readonly set: readonly string[];
  /** with dryRun: write one file per component and the kustomization here instead of printing */
  readonly outputDir?: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly print: (text: string) => void;
  /** first install the Gateway API CRDs from this file or URL ('' = the pinned release) */
  readonly gatewayApi?: string;
}

/** Where a Kubernetes client would find its cluster, or undefined (KUBECONFIG, ~/.kube/config, in-cluster). */
export function findKubeconfig(env: Readonly<Record<string, string | undefined>>): string | undefined {
  for (const p of (env.KUBECONFIG ?? '').split(':').filter(Boolean)) if (existsSync(p)) return p;
  const home = join(env.HOME ?? homedir(), '.kube', 'config');
  if (existsSync(home)) return home;
  if (env.KUBERNETES_SERVICE_HOST && existsSync('/var/run/secrets/kubernetes.io/serviceaccount/token')) return 'in-cluster service account';
  return undefined;
}

function cluster(verb: string, env: InstallOptions['env']): { kc: ReturnType<typeof loadKubeConfig>; where: string } {
  const where = findKubeconfig(env);
  if (!where) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${verb}: needs a cluster: no kubeconfig found (KUBECONFIG, ~/.kube/config) and not running in a cluster; `
      + '`ambit install --dry-run` prints the manifests (pipe them to kubectl apply -f -)');
  }
  return { kc: loadKubeConfig(where), where };
}

export type UninstallRunOptions = Omit<InstallOptions, 'dryRun' | 'outputDir'> & UninstallOptions;

/** `ambit uninstall`: removes what `ambit install` (with the same --set values) added, and nothing else. */
export async function runUninstall(o: UninstallRunOptions): Promise<void> {
  const files = manifestFiles(applySets(defaultValues(o.version), o.set));
  const { kc, where } = cluster('uninstall', o.env);
  o.print(`uninstalling from ${kc.getCurrentCluster()!.server} (${where})\n`);
  // while the agents still run: they take their CNI plugin off their nodes
  await removeCniPlugins(kc, applySets(defaultValues(o.version), o.set).namespace, (line) => { o.print(`${line}\n`); });
  await uninstall(kc, installObjects(files), o, (line) => { o.print(`${line}\n`); });
}

export async function runInstall(o: InstallOptions): Promise<void> {
  const values = applySets(defaultValues(o.version), o.set);
  const files = manifestFiles(values);
  if (o.dryRun) {
    if (o.outputDir === undefined) { o.print(installText(files)); return; }
    mkdirSync(o.outputDir, { recursive: true });
    for (const f of files) writeFileAtomic(join(o.outputDir, f.file), fileText(f));
    writeFileAtomic(join(o.outputDir, 'kustomization.yaml'), kustomizationText(files));
    o.print(`wrote ${files.length + 1} files to ${o.outputDir}\n`);
    return;
  }
  if (o.outputDir !== undefined) throw new MeshError('AMBIT_CONFIG_INVALID', '--output-dir: only with --dry-run');
  const { kc, where } = cluster('install', o.env);
  if (o.gatewayApi !== undefined) {
    const source = o.gatewayApi === '' ? GATEWAY_API_RELEASE : o.gatewayApi;
    const { crds, skipped } = gatewayApiCrds(await readGatewayApiSource(source), source);
    o.print(`installing the Gateway API CRDs from ${source}\n`);
    await applyForeignCrds(kc, crds, (line) => { o.print(`${line}\n`); });
    for (const s of skipped) o.print(`${s} skipped: not a Gateway API CRD\n`);
  }
  const missing = await missingPrerequisites(kc);
  if (missing) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `install: the Gateway API (v1) is a prerequisite and its CRDs are missing: ${missing}; `
      + 'install its standard channel release first (ambit install --gateway-api, or https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)');
  }
  const objects: Obj[] = installObjects(files);
  o.print(`installing into ${kc.getCurrentCluster()!.server} (${where})\n`);
  await serverSideApply(kc, objects, (line) => { o.print(`${line}\n`); });
  o.print(`installed ${objects.length} objects\n`);
}
