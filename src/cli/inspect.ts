/**
 * `ambit status` and `ambit config-dump TARGET`: the read verbs, for the local mesh of a running
 * `ambit up` (its state.json names each program's ports on 127.0.0.1) or for a cluster (the
 * kubeconfig's; each pod reached through the API server's port-forward, see kube-port-forward.ts).
 *
 * Which mesh: `--kube` asks for the cluster; `--dir` (or $AMBIT_DIR) for the local mesh; without
 * either, the local mesh when ./.ambit/state.json exists, else the cluster of the kubeconfig.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { MeshError, errorMessage } from '../core/index.js';
import { httpGet } from './children.js';
import { liveState } from './exec.js';
import { findKubeconfig } from './install/install.js';
import { loadKubeConfig, request, statusMessage } from './install/kube-apply.js';
import { podGet } from './kube-port-forward.js';
import { render, summaryTable, type OutputFormat } from './output.js';
import { readState, resolveDir, type UpProgram } from './state-file.js';
import { parseSyncz, statusRows, statusTable, type SynczPeer } from './status-view.js';

/** Ports of the programs in a cluster (daemonset/ manifests and the programs' defaults). */
export const KUBE_PORTS = { controlStatus: 15014, admin: 15000 } as const;
const CONTROL_LABEL = 'app=ambit-control';
const AGENT_LABEL = 'app=ambit-agent';
const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';

export type Mesh =
  | { readonly kind: 'local'; readonly dir: string }
  | { readonly kind: 'kube'; readonly kc: KubeConfig; readonly where: string; readonly namespace: string };

export interface MeshChoice {
  /** --dir */
  readonly dir?: string | undefined;
  /** --kube */
  readonly kube?: boolean | undefined;
  /** --control-namespace: where ambit install put the control plane and the agents */
  readonly namespace?: string | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** The mesh a read verb talks to (see the file comment). */
export function chooseMesh(o: MeshChoice): Mesh {
  const namespace = o.namespace ?? 'ambit-system';
  if (o.kube === true && o.dir !== undefined) throw new MeshError('AMBIT_CONFIG_INVALID', '--kube and --dir: give one (the cluster, or the local mesh of that directory)');
  if (o.kube !== true) {
    const explicit = o.dir ?? o.env.AMBIT_DIR;
    if (explicit !== undefined) return { kind: 'local', dir: resolveDir(explicit) };
    const dir = resolveDir(undefined);
    let state;
    try { state = readState(dir); } catch { state = undefined; }
    if (state) return { kind: 'local', dir };
  }
  const where = findKubeconfig(o.env);
  if (!where) {
    throw new MeshError('AMBIT_CONFIG_INVALID', o.kube === true
      ? '--kube: no kubeconfig found (KUBECONFIG, ~/.kube/config) and not running in a cluster'
      : `no mesh to ask: no running ambit up in ${resolveDir(undefined)} (--dir names another) and no kubeconfig (KUBECONFIG, ~/.kube/config)`);
  }
  return { kind: 'kube', kc: loadKubeConfig(where), where, namespace };
}

// --- local mesh

function localProgram(dir: string, name: string, what: string, port: keyof NonNullable<UpProgram['ports']>): number {
  const programs = liveState(dir).programs ?? [];
  // during a handover two instances share the name and the node's ports: the newest is last
  const p = [...programs].reverse().find((x) => x.name === name);
  const got = p?.ports?.[port];
  if (got === undefined) {
    const have = programs.filter((x) => x.ports !== undefined).map((x) => x.name);
    throw new MeshError('AMBIT_CONFIG_INVALID', `${what}: not running in the ambit up of ${dir}${have.length > 0 ? `; running: ${[...new Set(have)].join(', ')}` : ' (no mesh programs: was it started with --no-mesh?)'}`);
  }
  return got;
}

async function localGet(port: number, path: string, what: string): Promise<string> {
  let r;
  try {
    r = await httpGet('127.0.0.1', port, path, 10_000, 16 * 1024 * 1024);
  } catch (e) {
    throw new MeshError('AMBIT_CONNECT_REFUSED', `${what}: GET http://127.0.0.1:${port}${path}: ${errorMessage(e)}`, { cause: e });
  }
  if (r.status !== 200) throw new MeshError('AMBIT_CONNECT_REFUSED', `${what}: GET http://127.0.0.1:${port}${path}: HTTP ${r.status}: ${r.body.trim().slice(0, 300)}`);
  return r.body;
}

// --- cluster

interface PodInfo { name: string; namespace: string; node: string; running: boolean }

async function listPods(kc: KubeConfig, namespace: string, labelSelector: string): Promise<PodInfo[]> {
  const a = await request(kc, 'GET', `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods?labelSelector=${encodeURIComponent(labelSelector)}`);
  if (a.status !== 200) throw new MeshError('AMBIT_CONFIG_INVALID', `listing pods ${labelSelector} in ${namespace}: HTTP ${a.status}: ${statusMessage(a)}`);
  const list = JSON.parse(a.body) as { items?: Array<{ metadata?: { name?: string; namespace?: string }; spec?: { nodeName?: string }; status?: { phase?: string } }> };
  return (list.items ?? []).map((p) => ({
    name: p.metadata?.name ?? '', namespace: p.metadata?.namespace ?? namespace, node: p.spec?.nodeName ?? '', running: p.status?.phase === 'Running',
  })).filter((p) => p.name !== '').sort((x, y) => x.name.localeCompare(y.name));
}

async function kubeGet(kc: KubeConfig, pod: PodInfo, port: number, path: string, what: string): Promise<string> {
  const r = await podGet(kc, { namespace: pod.namespace, pod: pod.name, port }, path);
  if (r.status !== 200) throw new MeshError('AMBIT_CONNECT_REFUSED', `${what}: GET ${path} on pod ${pod.namespace}/${pod.name}:${port}: HTTP ${r.status}: ${r.body.trim().slice(0, 300)}`);
  return r.body;
}

async function controlPods(m: Extract<Mesh, { kind: 'kube' }>): Promise<PodInfo[]> {
  const pods = (await listPods(m.kc, m.namespace, CONTROL_LABEL)).filter((p) => p.running);
  if (pods.length === 0) throw new MeshError('AMBIT_CONNECT_REFUSED', `no running control plane pod (${CONTROL_LABEL}) in namespace ${m.namespace} of ${m.kc.getCurrentCluster()?.server ?? '?'} (--control-namespace names another)`);
  return pods;
}

function parseJson(text: string, what: string): unknown {
  try { return JSON.parse(text); } catch { throw new MeshError('AMBIT_CONFIG_INVALID', `${what}: the answer is not JSON: ${text.slice(0, 200)}`); }
}

// --- the verbs

/** Every connected peer, as /debug/syncz of each control plane (replica) tells it. */
export async function fetchSyncz(m: Mesh): Promise<SynczPeer[]> {
  if (m.kind === 'local') {
    const port = localProgram(m.dir, 'control plane', 'control plane', 'status');
    return parseSyncz(parseJson(await localGet(port, '/debug/syncz', 'control plane'), 'control plane /debug/syncz'));
  }
  const out: SynczPeer[] = [];
  // agents spread over the replicas: each one knows its own peers
  for (const pod of await controlPods(m)) {
    const peers = parseSyncz(parseJson(await kubeGet(m.kc, pod, KUBE_PORTS.controlStatus, '/debug/syncz', 'control plane'), `${pod.name} /debug/syncz`));
    for (const p of peers) out.push({ ...p, controlPlane: pod.name });
  }
  return out;
}

export interface ReadOptions {
  readonly output: OutputFormat;
  readonly print: (text: string) => void;
  /** for the table's ages and expiries; default Date.now */
  readonly now?: () => number;
}

export async function runStatus(m: Mesh, o: ReadOptions): Promise<void> {
  const rows = statusRows(await fetchSyncz(m));
  o.print(render(o.output, rows, () => statusTable(rows, (o.now ?? Date.now)())));
}

export type DumpTarget = { readonly kind: 'control' } | { readonly kind: 'agent'; readonly node: string } | { readonly kind: 'waypoint'; readonly namespace?: string; readonly name: string };

/** `control`, `agent NODE`, `waypoint [NAMESPACE/]NAME` (namespace default, as kubectl's). */
export function parseDumpTarget(target: string, name: string | undefined): DumpTarget {
  const usage = 'config-dump: TARGET is control, agent NODE or waypoint [NAMESPACE/]NAME';
  if (target === 'control') {
    if (name !== undefined) throw new MeshError('AMBIT_CONFIG_INVALID', `${usage} (control takes no name; got ${JSON.stringify(name)})`);
    return { kind: 'control' };
  }
  if (target !== 'agent' && target !== 'waypoint') throw new MeshError('AMBIT_CONFIG_INVALID', `${usage}; got ${JSON.stringify(target).slice(0, 60)}`);
  if (name === undefined || name === '') throw new MeshError('AMBIT_CONFIG_INVALID', `${usage} (${target} needs its ${target === 'agent' ? 'node' : 'name'})`);
  if (target === 'agent') return { kind: 'agent', node: name };
  const parts = name.split('/');
  if (parts.length > 2 || parts.some((x) => x === '')) throw new MeshError('AMBIT_CONFIG_INVALID', `${usage}; ${JSON.stringify(name)} is not [NAMESPACE/]NAME`);
  return parts.length === 2 ? { kind: 'waypoint', namespace: parts[0]!, name: parts[1]! } : { kind: 'waypoint', name: parts[0]! };
}

/** The target's config dump (JSON, parsed). */
export async function fetchConfigDump(m: Mesh, t: DumpTarget): Promise<unknown> {
  if (m.kind === 'local') {
    if (t.kind === 'control') return parseJson(await localGet(localProgram(m.dir, 'control plane', 'control plane', 'status'), '/debug/config_dump', 'control plane'), 'control plane /debug/config_dump');
    if (t.kind === 'agent') {
      const what = `agent ${t.node}`;
      return parseJson(await localGet(localProgram(m.dir, what, what, 'admin'), '/config_dump', what), `${what} /config_dump`);
    }
    const what = `waypoint ${t.namespace ?? 'default'}/${t.name}`;
    return parseJson(await localGet(localProgram(m.dir, what, what, 'admin'), '/config_dump', what), `${what} /config_dump`);
  }
  if (t.kind === 'control') {
    const [pod] = await controlPods(m);
    return parseJson(await kubeGet(m.kc, pod!, KUBE_PORTS.controlStatus, '/debug/config_dump', 'control plane'), `${pod!.name} /debug/config_dump`);
  }
  if (t.kind === 'agent') {
    const pods = await listPods(m.kc, m.namespace, AGENT_LABEL);
    const pod = pods.find((p) => p.node === t.node && p.running);
    if (!pod) throw new MeshError('AMBIT_CONFIG_INVALID', `agent ${t.node}: no running agent pod on that node in ${m.namespace}; nodes with agents: ${[...new Set(pods.map((p) => p.node))].join(', ') || 'none'}`);
    return parseJson(await kubeGet(m.kc, pod, KUBE_PORTS.admin, '/config_dump', `agent ${t.node}`), `agent ${t.node} /config_dump`);
  }
  const ns = t.namespace ?? 'default';
  const pods = (await listPods(m.kc, ns, `${GATEWAY_NAME_LABEL}=${t.name}`)).filter((p) => p.running);
  if (pods.length === 0) throw new MeshError('AMBIT_CONFIG_INVALID', `waypoint ${ns}/${t.name}: no running pod (${GATEWAY_NAME_LABEL}=${t.name}) in namespace ${ns}`);
  return parseJson(await kubeGet(m.kc, pods[0]!, KUBE_PORTS.admin, '/config_dump', `waypoint ${ns}/${t.name}`), `waypoint ${ns}/${t.name} /config_dump`);
}

export async function runConfigDump(m: Mesh, t: DumpTarget, o: ReadOptions): Promise<void> {
  const dump = await fetchConfigDump(m, t);
  o.print(render(o.output, dump, () => summaryTable(dump)));
}
