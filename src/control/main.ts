/**
 * Entry point of the control plane (`ambit control`): reads its settings, loads or creates the CA
 * and the bootstrap token, starts the plane and stops it on SIGTERM/SIGINT.
 *
 * Environment (flags, parsed by the CLI, win): AMBIT_CONFIG_DIR (default .ambit/config),
 * AMBIT_STATE_DIR (default .ambit/control), AMBIT_TRUST_DOMAIN (cluster.local), AMBIT_ROOT_NAMESPACE
 * (istio-system), AMBIT_CLUSTER_ID, AMBIT_CONFIG_SOURCE (files | kubernetes; default files),
 * AMBIT_LISTEN_HOST (127.0.0.1 for files, 0.0.0.0 for kubernetes), AMBIT_WS_PORT (15010),
 * AMBIT_WSS_PORT (15012), AMBIT_STATUS_PORT (15014), AMBIT_DEBOUNCE_MS (100), AMBIT_MAX_CONNECTIONS
 * (open connections per listener: 15010, 15012 and the status port, each counted on its own, peers included; 10000),
 * AMBIT_AGENT_SERVICE_ACCOUNTS (comma list of ns/sa; kubernetes), AMBIT_TOKEN_AUDIENCES (comma
 * list; kubernetes: the audiences agents' and waypoints' tokens must be minted for, e.g. `ambit`,
 * matching `audience` of their projected serviceAccountToken; default none, i.e. the API server's
 * own audience), AMBIT_LOG_LEVEL, AMBIT_TRACE.
 *
 * Kubernetes mode only: AMBIT_NAMESPACE (or POD_NAMESPACE; default ambit-system), the control
 * plane's own namespace, where the CA lives: Secret `cacerts` (Istio's plug-in CA) if present,
 * else Secret `ambit-ca`, created on the first start (src/control/kube/ca-secret.ts); its root is
 * published in ConfigMap `ambit-ca-root` there. AMBIT_WAYPOINT_IMAGE (the image of `ambit`): when
 * set, every Gateway of class ambit-waypoint or istio-waypoint gets a ServiceAccount, ConfigMap,
 * Deployment and Service and its status written (src/control/kube/waypoint-reconciler.ts);
 * AMBIT_WAYPOINT_IMAGE_PULL_POLICY, AMBIT_WAYPOINT_CONTROL_URL (default
 * wss://ambit-control.<namespace>.svc:15012). Those writes are made by one replica at a time, the
 * holder of the Lease ambit-control in AMBIT_NAMESPACE (src/control/kube/leader.ts), named by
 * AMBIT_POD_NAME (or HOSTNAME).
 *
 * Waypoint sessions are admitted in both modes only for an identity that runs a waypoint pod of
 * the current config (in bootstrap-token mode: the identity the waypoint names).
 */
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { collectDefaultMetrics } from 'prom-client';
import { DNS_LABEL, enableTrace, errorMessage, logger, setLogLevel } from '../core/index.js';
import type { Level } from '../core/index.js';
import { CertificateAuthority } from '../identity/index.js';
import { DEFAULT_MAX_CONNECTIONS, createControlPlane } from './app.js';
import type { ControlPlane } from './app.js';
import { FileSource } from './config/file-source.js';
import { KubeSource } from './config/kube-source.js';
import type { ConfigSource } from './config/types.js';
import { KubeApi, LeaderElector, WaypointReconciler, loadOrCreateKubeCa } from './kube/index.js';
import type { CaSigner } from './ca/index.js';
import type { ConfigReconciler } from './app.js';
import { BootstrapTokenAuthenticator, TokenReviewAuthenticator } from './push/index.js';
import type { Authenticator } from './push/index.js';

const log = logger('control');

type Env = Readonly<Record<string, string | undefined>>;

export interface ControlSettings {
  configDir: string;
  stateDir: string;
  trustDomain: string;
  rootNamespace: string;
  clusterId?: string;
  source: 'files' | 'kubernetes';
  host: string;
  wsPort: number | null;
  wssPort: number | null;
  statusPort: number | null;
  debounceMs: number;
  /** open connections per listener (15010, 15012, status), each counted on its own, peers included */
  maxConnections: number;
  agentServiceAccounts: string[];
  /** TokenReview audiences (kubernetes); empty: the API server's default audience */
  tokenAudiences: string[];
  /** the control plane's namespace (kubernetes): the CA Secret and its root ConfigMap live there */
  namespace: string;
  /** image of waypoint Deployments (kubernetes); undefined: waypoints are not deployed */
  waypointImage?: string;
  waypointImagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** the URL waypoint pods reach the control plane at; default wss://ambit-control.<namespace>.svc:15012 */
  waypointControlUrl?: string;
  /** this replica's name in the leader Lease (kubernetes): AMBIT_POD_NAME, else HOSTNAME, else random */
  podName: string;
}

const PULL_POLICIES = ['Always', 'IfNotPresent', 'Never'];

const MAX_AUDIENCES = 16;
// audiences are opaque strings to Kubernetes; keep them to what fits a comma list and a log line
const AUDIENCE = /^[\x21-\x2b\x2d-\x7e]{1,256}$/;

/** Comma-separated audiences: trimmed, empty items dropped, each checked. */
export function parseAudiences(key: string, v: string | undefined): string[] {
  const list = (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length > MAX_AUDIENCES) throw new Error(`${key}: more than ${MAX_AUDIENCES} audiences`);
  for (const a of list) if (!AUDIENCE.test(a)) throw new Error(`${key}: ${JSON.stringify(a.slice(0, 40))} is not an audience (1..256 visible characters, no spaces or commas)`);
  return list;
}

function port(env: Env, key: string, dflt: number): number | null {
  const v = env[key];
  if (v === undefined || v === '') return dflt;
  if (v === 'off') return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${key}: ${JSON.stringify(v)} is not a port (0..65535, or "off")`);
  return n;
}

export function controlSettings(env: Env, flags: Partial<ControlSettings> = {}): ControlSettings {
  const source = flags.source ?? (env.AMBIT_CONFIG_SOURCE as ControlSettings['source'] | undefined) ?? 'files';
  if (source !== 'files' && source !== 'kubernetes') throw new Error(`AMBIT_CONFIG_SOURCE: ${JSON.stringify(source)} is neither files nor kubernetes`);
  const debounce = Number(env.AMBIT_DEBOUNCE_MS ?? 100);
  if (!Number.isInteger(debounce) || debounce < 0 || debounce > 60_000) throw new Error(`AMBIT_DEBOUNCE_MS: ${JSON.stringify(env.AMBIT_DEBOUNCE_MS)} is not 0..60000`);
  const maxConns = Number(env.AMBIT_MAX_CONNECTIONS ?? DEFAULT_MAX_CONNECTIONS);
  if (!Number.isInteger(maxConns) || maxConns < 1 || maxConns > 1_000_000) throw new Error(`AMBIT_MAX_CONNECTIONS: ${JSON.stringify(env.AMBIT_MAX_CONNECTIONS)} is not 1..1000000`);
  const out: ControlSettings = {
    configDir: resolve(env.AMBIT_CONFIG_DIR ?? '.ambit/config'),
    stateDir: resolve(env.AMBIT_STATE_DIR ?? '.ambit/control'),
    trustDomain: env.AMBIT_TRUST_DOMAIN ?? 'cluster.local',
    rootNamespace: env.AMBIT_ROOT_NAMESPACE ?? 'istio-system',
    source,
    host: env.AMBIT_LISTEN_HOST ?? (source === 'files' ? '127.0.0.1' : '0.0.0.0'),
    wsPort: port(env, 'AMBIT_WS_PORT', 15010),
    wssPort: port(env, 'AMBIT_WSS_PORT', 15012),
    statusPort: port(env, 'AMBIT_STATUS_PORT', 15014),
    debounceMs: debounce,
    maxConnections: maxConns,
    agentServiceAccounts: (env.AMBIT_AGENT_SERVICE_ACCOUNTS ?? 'ambit-system/ambit-node-agent').split(',').map((s) => s.trim()).filter(Boolean),
    namespace: env.AMBIT_NAMESPACE || env.POD_NAMESPACE || 'ambit-system',
    podName: env.AMBIT_POD_NAME || env.HOSTNAME || `ambit-control-${randomBytes(4).toString('hex')}`,
    ...(env.AMBIT_WAYPOINT_IMAGE ? { waypointImage: env.AMBIT_WAYPOINT_IMAGE } : {}),
    ...(env.AMBIT_WAYPOINT_IMAGE_PULL_POLICY ? { waypointImagePullPolicy: env.AMBIT_WAYPOINT_IMAGE_PULL_POLICY as ControlSettings['waypointImagePullPolicy'] } : {}),
    ...(env.AMBIT_WAYPOINT_CONTROL_URL ? { waypointControlUrl: env.AMBIT_WAYPOINT_CONTROL_URL } : {}),
    ...flags,
    // a flag replaces the environment's list; either way it is checked
    tokenAudiences: flags.tokenAudiences
      ? parseAudiences('--token-audiences', flags.tokenAudiences.join(','))
      : parseAudiences('AMBIT_TOKEN_AUDIENCES', env.AMBIT_TOKEN_AUDIENCES),
  };
  if (env.AMBIT_CLUSTER_ID && !out.clusterId) out.clusterId = env.AMBIT_CLUSTER_ID;
  if (!DNS_LABEL.test(out.namespace)) throw new Error(`AMBIT_NAMESPACE: ${JSON.stringify(out.namespace)} is not a namespace name`);
  if (out.waypointImagePullPolicy !== undefined && !PULL_POLICIES.includes(out.waypointImagePullPolicy)) {
    throw new Error(`AMBIT_WAYPOINT_IMAGE_PULL_POLICY: ${JSON.stringify(out.waypointImagePullPolicy)} is not one of ${PULL_POLICIES.join(', ')}`);
  }
  return out;
}

/** Start the control plane from settings; returns it running (the caller owns signals). */
export async function startControl(s: ControlSettings, o: { kubeConfig?: KubeConfig } = {}): Promise<{ plane: ControlPlane; bootstrapTokenPath?: string; rootCertPath?: string }> {
  let ca: CaSigner;
  let source: ConfigSource;
  let authenticator: Authenticator;
  let bootstrapTokenPath: string | undefined;
  let rootCertPath: string | undefined;
  const reconcilers: ConfigReconciler[] = [];
  if (s.source === 'kubernetes') {
    let kc = o.kubeConfig;
    if (!kc) {
      kc = new KubeConfig();
      kc.loadFromDefault();
    }
    const api = new KubeApi(kc);
    // every replica and every restart: the same CA, from the Secret (created by the first one)
    ca = (await loadOrCreateKubeCa({ api, namespace: s.namespace, trustDomain: s.trustDomain })).ca;
    if (s.waypointImage) {
      // one replica writes (the Lease holder); the others take over when it goes
      const reconciler = new WaypointReconciler({
        api, rootsPem: ca.rootsPem, isLeader: () => elector.isLeader,
        settings: {
          image: s.waypointImage,
          ...(s.waypointImagePullPolicy ? { imagePullPolicy: s.waypointImagePullPolicy } : {}),
          controlUrl: s.waypointControlUrl ?? `wss://ambit-control.${s.namespace}.svc:15012`,
          trustDomain: s.trustDomain,
          ...(s.tokenAudiences[0] ? { tokenAudience: s.tokenAudiences[0] } : {}),
        },
      });
      const elector = new LeaderElector({
        api, namespace: s.namespace, identity: s.podName,
        onChange: (leader) => { if (leader) reconciler.resync(); },
      });
      elector.start();
      reconcilers.push({ update: (objs, rejected) => reconciler.update(objs, rejected), stop: async () => { reconciler.stop(); await elector.stop(); } });
    } else {
      log.warn('AMBIT_WAYPOINT_IMAGE is not set: waypoint Gateways get no Deployment, Service or status');
    }
    source = new KubeSource({ kubeConfig: kc, debounceMs: s.debounceMs });
    authenticator = new TokenReviewAuthenticator({
      kubeConfig: kc, trustDomain: s.trustDomain, agentServiceAccounts: s.agentServiceAccounts,
      ...(s.tokenAudiences.length > 0 ? { audiences: s.tokenAudiences } : {}),
    });
  } else {
    const caDir = join(s.stateDir, 'ca');
    ca = await CertificateAuthority.loadOrCreate(caDir, { trustDomain: s.trustDomain });
    rootCertPath = join(caDir, 'root-cert.pem');
    source = new FileSource({ dir: s.configDir, debounceMs: s.debounceMs });
    const b = await BootstrapTokenAuthenticator.loadOrCreate(s.stateDir, s.trustDomain);
    authenticator = b.authenticator;
    bootstrapTokenPath = b.path;
  }
  const plane = createControlPlane({
    source, ca, authenticator, trustDomain: s.trustDomain, rootNamespace: s.rootNamespace, stateDir: s.stateDir,
    debounceMs: s.debounceMs,
    listen: { host: s.host, plainPort: s.wsPort, tlsPort: s.wssPort, statusPort: s.statusPort, maxConnections: s.maxConnections },
    ...(s.clusterId ? { clusterId: s.clusterId } : {}),
    reconcilers,
  });
  // the process's own figures (RSS, heap, external memory, fds, event-loop lag, GC)
  collectDefaultMetrics({ register: plane.metrics.registry });
  await plane.start();
  return { plane, ...(bootstrapTokenPath ? { bootstrapTokenPath } : {}), ...(rootCertPath ? { rootCertPath } : {}) };
}

/** Runs the control plane until SIGTERM/SIGINT. */
export async function runControl(env: Env = process.env, flags: Partial<ControlSettings> = {}): Promise<void> {
  if (env.AMBIT_LOG_LEVEL) setLogLevel(env.AMBIT_LOG_LEVEL as Level);
  if (env.AMBIT_TRACE) enableTrace(env.AMBIT_TRACE);
  const s = controlSettings(env, flags);
  const { plane, bootstrapTokenPath, rootCertPath } = await startControl(s);
  log.info('control plane running', {
    ws: plane.addresses.plain?.port, wss: plane.addresses.tls?.port, status: plane.addresses.status?.port,
    source: s.source, configDir: s.source === 'files' ? s.configDir : undefined, bootstrapTokenPath, rootCertPath,
  });
  await new Promise<void>((resolveStop) => {
    const stop = (sig: string) => {
      log.info('stopping', { signal: sig });
      plane.stop().then(resolveStop, (e: unknown) => { log.error('stop failed', { error: errorMessage(e) }); resolveStop(); });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runControl().catch((e: unknown) => {
    log.error('control plane failed', { error: errorMessage(e) });
    process.exit(1);
  });
}
