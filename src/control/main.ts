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
 * Waypoint sessions are admitted in both modes only for an identity that runs a waypoint pod of
 * the current config (in bootstrap-token mode: the identity the waypoint names).
 */
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { enableTrace, errorMessage, logger, setLogLevel } from '../core/index.js';
import type { Level } from '../core/index.js';
import { CertificateAuthority } from '../identity/index.js';
import { DEFAULT_MAX_CONNECTIONS, createControlPlane } from './app.js';
import type { ControlPlane } from './app.js';
import { FileSource } from './config/file-source.js';
import { KubeSource } from './config/kube-source.js';
import type { ConfigSource } from './config/types.js';
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
}

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
    ...flags,
    // a flag replaces the environment's list; either way it is checked
    tokenAudiences: flags.tokenAudiences
      ? parseAudiences('--token-audiences', flags.tokenAudiences.join(','))
      : parseAudiences('AMBIT_TOKEN_AUDIENCES', env.AMBIT_TOKEN_AUDIENCES),
  };
  if (env.AMBIT_CLUSTER_ID && !out.clusterId) out.clusterId = env.AMBIT_CLUSTER_ID;
  return out;
}

/** Start the control plane from settings; returns it running (the caller owns signals). */
export async function startControl(s: ControlSettings): Promise<{ plane: ControlPlane; bootstrapTokenPath?: string; rootCertPath: string }> {
  const caDir = join(s.stateDir, 'ca');
  const ca = await CertificateAuthority.loadOrCreate(caDir, { trustDomain: s.trustDomain });
  let source: ConfigSource;
  let authenticator: Authenticator;
  let bootstrapTokenPath: string | undefined;
  if (s.source === 'kubernetes') {
    const kc = new KubeConfig();
    kc.loadFromDefault();
    source = new KubeSource({ kubeConfig: kc, debounceMs: s.debounceMs });
    authenticator = new TokenReviewAuthenticator({
      kubeConfig: kc, trustDomain: s.trustDomain, agentServiceAccounts: s.agentServiceAccounts,
      ...(s.tokenAudiences.length > 0 ? { audiences: s.tokenAudiences } : {}),
    });
  } else {
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
  });
  await plane.start();
  return { plane, ...(bootstrapTokenPath ? { bootstrapTokenPath } : {}), rootCertPath: join(caDir, 'root-cert.pem') };
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
