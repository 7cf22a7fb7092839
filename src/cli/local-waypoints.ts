/**
 * Waypoints in the local mesh: what istiod's deployment controller does in Kubernetes. For every
 * Gateway of a waypoint class in the watched YAML (`ambit waypoint apply`, or `ambit apply` of a
 * Gateway), `ambit up` adds its pod (a network namespace on a node, labelled with the Gateway's
 * name, outside the ambient capture) and its Service to the cluster, and runs `ambit waypoint`
 * for it in the root namespace with `--netns` naming the pod's namespace. A Gateway annotated
 * `ambit.dev/enroll-namespace: "true"` (`--enroll-namespace`) also labels its namespace
 * `istio.io/use-waypoint=<name>`. A Gateway removed from the directory stops its waypoint.
 */
import { readFileSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { MeshError, errorMessage, isDnsLabel, logger } from '../core/index.js';
import type { Cluster, Pod, Service } from '../local/index.js';
import { Program, httpGet, waitFor, type ProgramExit } from './children.js';
import { writeFileAtomic, type UpProgram } from './state-file.js';

const log = logger('cli.waypoints');

export const WAYPOINT_CLASSES = ['ambit-waypoint', 'istio-waypoint'];
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
export const ENROLL_ANNOTATION = 'ambit.dev/enroll-namespace';
export const USE_WAYPOINT = 'istio.io/use-waypoint';
const MAX_WAYPOINTS = 16;

export interface DeclaredWaypoint {
  readonly namespace: string;
  readonly name: string;
  readonly enrollNamespace: boolean;
  /** istio.io/waypoint-for: service (default), workload, all, none */
  readonly for: string;
}

/** Waypoint Gateways declared in the YAML files of `dir` (cluster.yaml excluded). Bad files are skipped (the control plane reports them). */
export function declaredWaypoints(dir: string): DeclaredWaypoint[] {
  const out = new Map<string, DeclaredWaypoint>();
  let names: string[];
  try { names = readdirSync(dir).filter((n) => /\.ya?ml$/.test(n) && n !== 'cluster.yaml').sort(); } catch { return []; }
  for (const n of names) {
    let docs;
    try { docs = parseAllDocuments(readFileSync(join(dir, n), 'utf8')); } catch { continue; }
    for (const d of docs) {
      if (d.errors.length > 0) continue;
      const o = d.toJS({ maxAliasCount: 100 }) as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown; annotations?: Record<string, unknown>; labels?: Record<string, unknown> }; spec?: { gatewayClassName?: unknown } } | null;
      if (!o || o.kind !== 'Gateway' || typeof o.metadata?.name !== 'string') continue;
      if (!WAYPOINT_CLASSES.includes(String(o.spec?.gatewayClassName))) continue;
      const namespace = typeof o.metadata.namespace === 'string' ? o.metadata.namespace : 'default';
      const enroll = String(o.metadata.annotations?.[ENROLL_ANNOTATION] ?? '') === 'true';
      const forWhat = o.metadata.labels?.['istio.io/waypoint-for'];
      out.set(`${namespace}/${o.metadata.name}`, { namespace, name: o.metadata.name, enrollNamespace: enroll, for: typeof forWhat === 'string' ? forWhat : 'service' });
    }
  }
  return [...out.values()];
}

export interface LocalWaypointOptions {
  readonly cluster: Cluster;
  readonly dir: string;
  readonly configDir: string;
  readonly controlUrl: string;
  readonly tokenFile: string;
  /** admin/metrics/readiness of waypoint k: base + 100*(150+k) + {0, 20, 21} */
  readonly portBase: number;
  readonly logLevel: string;
  /** node the waypoint pods go to; default the last node */
  readonly node?: string;
  /** a waypoint exited on its own (the rest keeps running; `ambit restart waypoint` starts it again) */
  readonly onExit: (e: ProgramExit) => void;
  /** a waypoint became ready */
  readonly onReady?: (w: RunningWaypoint) => void;
}

export interface RunningWaypoint {
  readonly key: string;
  readonly pod: Pod;
  readonly service: Service;
  /** the current instance (a restart replaces it, and its ports) */
  program: Program;
  args: readonly string[];
  metricsPort: number;
  adminPort: number;
  readinessPort: number;
  readonly logFile: string;
  /** the waypoint's port block; instances alternate between its two halves (a restart overlaps them) */
  readonly base: number;
}

/** A waypoint instance's admin, metrics and readiness ports in its block: `half` 0 or 1. */
export function waypointPorts(base: number, half: 0 | 1): { admin: number; metrics: number; readiness: number } {
  const b = base + 50 * half;
  return { admin: b, metrics: b + 20, readiness: b + 21 };
}

/**
 * Stops a local waypoint: SIGINT, a drain without SIGTERM's termination grace (that grace is for
 * Kubernetes, where endpoints take a while to learn that a pod is going).
 */
const STOP_SIGNAL = 'SIGINT';
const STOP_GRACE_MS = 10_000;

/** Keeps the running waypoints in line with the Gateways in the watched directory. */
export class LocalWaypoints {
  readonly #o: LocalWaypointOptions;
  readonly #running = new Map<string, RunningWaypoint>();
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #chain: Promise<void> = Promise.resolve();
  #slot = 0;
  #stopped = false;

  constructor(o: LocalWaypointOptions) { this.#o = o; }

  get running(): readonly RunningWaypoint[] { return [...this.#running.values()]; }

  /** First pass now (resolves when those waypoints are ready), then follow the directory. */
  async start(): Promise<void> {
    await this.reconcile();
    this.#watcher = watch(this.#o.configDir, () => {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => { void this.reconcile(); }, 200);
    });
    this.#watcher.on('error', (e) => log.warn('config directory watch failed', { error: errorMessage(e) }));
  }

  /** One pass; passes are serialised. */
  reconcile(): Promise<void> {
    this.#chain = this.#chain.then(() => this.#pass()).catch((e: unknown) => {
      log.error('waypoint reconcile failed', { error: errorMessage(e) });
    });
    return this.#chain;
  }

  async #pass(): Promise<void> {
    if (this.#stopped) return;
    const want = declaredWaypoints(this.#o.configDir).slice(0, MAX_WAYPOINTS);
    const keys = new Set(want.map((w) => `${w.namespace}/${w.name}`));
    for (const [k, r] of this.#running) if (!keys.has(k)) await this.#remove(k, r);
    let changedNs = false;
    const c = this.#o.cluster;
    for (const w of want) {
      if (!w.enrollNamespace) continue;
      const cur = c.state().namespaces.find((n) => n.name === w.namespace)?.labels ?? {};
      if (cur[USE_WAYPOINT] !== w.name) { c.setNamespaceLabels(w.namespace, { ...cur, [USE_WAYPOINT]: w.name }); changedNs = true; }
    }
    const added: DeclaredWaypoint[] = want.filter((w) => !this.#running.has(`${w.namespace}/${w.name}`));
    if (added.length === 0) {
      if (changedNs) this.#writeCluster();
      return;
    }
    for (const w of added) await this.#add(w);
  }

  #writeCluster(): void {
    writeFileAtomic(join(this.#o.configDir, 'cluster.yaml'), this.#o.cluster.toYaml());
  }

  async #add(w: DeclaredWaypoint): Promise<void> {
    const c = this.#o.cluster;
    const node = this.#o.node ?? c.nodes[c.nodes.length - 1]!.name;
    const podName = `${w.name}-wp`;
    const pod = await c.addPod({
      name: podName, namespace: w.namespace, node, serviceAccount: w.name,
      labels: { [GATEWAY_NAME_LABEL]: w.name, 'istio.io/dataplane-mode': 'none' },
    });
    const service = c.addService({
      name: w.name, namespace: w.namespace, selector: { [GATEWAY_NAME_LABEL]: w.name },
      ports: [{ name: 'mesh', port: 15008, targetPort: 15008 }],
    });
    this.#writeCluster();
    // A restart runs the new instance beside the old one, both listening on 15008 (SO_REUSEPORT):
    // when the old one closes its socket, the connections queued in it move to the new one
    // instead of being reset.
    const sysctl = await c.exec(pod, ['sysctl', '-qw', 'net.ipv4.tcp_migrate_req=1']);
    if (sysctl.code !== 0) log.warn('tcp_migrate_req not set in the waypoint pod: a restart may reset queued connections', { pod: pod.name, error: sysctl.stderr.trim() });
    const k = this.#slot++;
    const base = this.#o.portBase + 100 * (150 + k);
    const logFile = join(this.#o.dir, 'logs', `waypoint-${w.namespace}-${w.name}.log`);
    const key = `${w.namespace}/${w.name}`;
    const ports = waypointPorts(base, 0);
    const args = this.#args(w.name, w.namespace, pod, node, ports);
    const r: RunningWaypoint = {
      key, pod, service, args, program: this.#spawn(key, args, logFile, false), adminPort: ports.admin, metricsPort: ports.metrics, readinessPort: ports.readiness, logFile, base,
    };
    this.#running.set(r.key, r);
    await this.#ready(r);
    log.info('waypoint ready', { waypoint: r.key, ip: pod.ip, metrics: r.metricsPort });
    this.#o.onReady?.(r);
  }

  #args(name: string, namespace: string, pod: Pod, node: string, ports: { admin: number; metrics: number; readiness: number }): string[] {
    return ['waypoint', '--log-level', this.#o.logLevel, '--name', name, '--namespace', namespace, '--service-account', name,
      '--netns', pod.netnsPath, '--node', node, '--control-url', this.#o.controlUrl, '--token-file', this.#o.tokenFile,
      '--admin-port', String(ports.admin), '--metrics-port', String(ports.metrics), '--readiness-port', String(ports.readiness),
      '--public-host', '127.0.0.1', '--drain-ms', '3000'];
  }

  #spawn(key: string, args: readonly string[], logFile: string, append: boolean): Program {
    const program = new Program({ name: `waypoint ${key}`, logFile, args, append });
    void program.exited.then((how) => {
      if (program.stopping || this.#stopped) return;
      this.#o.onExit({ name: program.name, pid: program.pid, how, logFile, restart: `waypoint ${key}` });
    });
    return program;
  }

  #ready(r: RunningWaypoint, program = r.program, readinessPort = r.readinessPort): Promise<true> {
    return waitFor(`waypoint ${r.key} ready (/healthz/ready)`, [program],
      async () => ((await httpGet('127.0.0.1', readinessPort, '/healthz/ready')).status === 200 ? true : undefined),
      { timeoutMs: 60_000, cancelled: () => (this.#stopped ? 'ambit up is stopping' : undefined) });
  }

  /**
   * Replaces a waypoint without refusing a connection, as a Deployment's rolling update with
   * maxSurge 1 does: the new instance starts beside the old one (its own admin ports, the same
   * pod and HBONE port) and only once it is ready is the old one drained: it closes its listener
   * (queued connections move to the new one), sends its HBONE sessions GOAWAY (the agents open
   * new ones, to the new instance) and finishes what is in flight. A waypoint that had exited is
   * just started again. `name` is namespace/name, or a name that is unique.
   */
  restart(name: string, say: (line: string) => void): Promise<string> {
    const p = this.#chain.then(async () => {
      if (this.#stopped) throw new MeshError('AMBIT_PROCESS_FAILED', `restart waypoint ${name}: ambit up is stopping`);
      const matches = this.running.filter((w) => w.key === name || (!name.includes('/') && w.key.endsWith(`/${name}`)));
      const r = matches.length === 1 ? matches[0]! : undefined;
      if (!r) {
        const have = this.running.map((w) => w.key).join(', ') || 'none (ambit waypoint apply)';
        throw new MeshError('AMBIT_CONFIG_INVALID', `restart: ${matches.length > 1 ? `"${name}" is ambiguous, give namespace/name` : `no waypoint "${name}"`}; running: ${have}`);
      }
      const old = r.program;
      const ports = waypointPorts(r.base, r.adminPort === r.base ? 1 : 0);
      const [ns, wpName] = r.key.split('/') as [string, string];
      const args = this.#args(wpName, ns, r.pod, r.pod.node, ports);
      const next = this.#spawn(r.key, args, r.logFile, true);
      say(`waypoint ${r.key}: starting pid ${next.pid} beside pid ${old.pid ?? '-'}`);
      try {
        await this.#ready(r, next, ports.readiness);
      } catch (e) {
        await next.stop(STOP_GRACE_MS, STOP_SIGNAL);
        throw e;
      }
      say(`waypoint ${r.key}: pid ${next.pid} ready`);
      Object.assign(r, { program: next, args, adminPort: ports.admin, metricsPort: ports.metrics, readinessPort: ports.readiness });
      if (old.running) {
        say(`waypoint ${r.key}: draining pid ${old.pid} (its queued connections move to the new instance; requests in flight finish)`);
        await old.stop(STOP_GRACE_MS, STOP_SIGNAL);
        say(`waypoint ${r.key}: pid ${old.pid} exited (${await old.exited})`);
      }
      return `waypoint ${r.key} replaced: pid ${old.pid ?? '-'} -> ${next.pid}`;
    });
    this.#chain = p.then(() => undefined, () => undefined);
    return p;
  }

  async #remove(key: string, r: RunningWaypoint): Promise<void> {
    this.#running.delete(key);
    await r.program.stop(STOP_GRACE_MS, STOP_SIGNAL);
    const c = this.#o.cluster;
    c.removeService(r.service.namespace, r.service.name);
    await c.removePod(r.pod.name);
    const [ns, name] = key.split('/') as [string, string];
    const cur = c.state().namespaces.find((n) => n.name === ns)?.labels;
    if (cur?.[USE_WAYPOINT] === name) {
      const { [USE_WAYPOINT]: _drop, ...rest } = cur;
      c.setNamespaceLabels(ns, rest);
    }
    this.#writeCluster();
  }

  programs(): UpProgram[] {
    return this.running.filter((r) => r.program.running).map((r) => ({
      name: r.program.name, pid: r.program.pid!, ports: { admin: r.adminPort, metrics: r.metricsPort, readiness: r.readinessPort },
    }));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#watcher?.close();
    await this.#chain;
    await Promise.all(this.running.map((r) => r.program.stop(STOP_GRACE_MS, STOP_SIGNAL)));
  }

  killSync(): void { for (const r of this.running) r.program.killSync(); }
}

export interface WaypointListRow extends DeclaredWaypoint {
  /** the waypoint's process under the running ambit up, if any */
  readonly pid: number | null;
}

/** `ambit waypoint list`: the declared waypoints (of `namespace`, or all), with their process from `programs` (state.json). Pure. */
export function waypointRows(declared: readonly DeclaredWaypoint[], programs: ReadonlyArray<{ name: string; pid: number }>, namespace?: string): WaypointListRow[] {
  return declared.filter((w) => namespace === undefined || w.namespace === namespace)
    .map((w) => ({ ...w, pid: programs.find((p) => p.name === `waypoint ${w.namespace}/${w.name}`)?.pid ?? null }))
    .sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
}

/**
 * The YAML `ambit waypoint apply` writes (istioctl waypoint generate's shape). The class is
 * istio-waypoint unless `gatewayClassName` says otherwise (on a cluster: ambit-waypoint, the class
 * `ambit install` adds).
 */
export function waypointGatewayYaml(o: { name: string; namespace: string; for: string; enrollNamespace: boolean; gatewayClassName?: string }): string {
  const gatewayClassName = o.gatewayClassName ?? 'istio-waypoint';
  if (!WAYPOINT_CLASSES.includes(gatewayClassName)) throw new MeshError('AMBIT_BUG', `waypoint: ${gatewayClassName} is not a waypoint class`);
  if (!['service', 'workload', 'all', 'none'].includes(o.for)) throw new MeshError('AMBIT_CONFIG_INVALID', `--for: "${o.for}" is not one of service, workload, all, none`);
  for (const [flag, v] of [['--name', o.name], ['-n', o.namespace]] as const) {
    if (!isDnsLabel(v)) throw new MeshError('AMBIT_CONFIG_INVALID', `${flag}: ${JSON.stringify(v)} is not a DNS label`);
  }
  return [
    'apiVersion: gateway.networking.k8s.io/v1',
    'kind: Gateway',
    'metadata:',
    `  name: ${o.name}`,
    `  namespace: ${o.namespace}`,
    '  labels:',
    `    istio.io/waypoint-for: ${o.for}`,
    ...(o.enrollNamespace ? ['  annotations:', `    ${ENROLL_ANNOTATION}: "true"`] : []),
    'spec:',
    `  gatewayClassName: ${gatewayClassName}`,
    '  listeners:',
    '    - name: mesh',
    '      port: 15008',
    '      protocol: HBONE',
    '',
  ].join('\n');
}
