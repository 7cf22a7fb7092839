/**
 * `ambit control`, `ambit agent` and `ambit cni`: thin yargs front ends for the programs' own
 * entry points. The CLI parses and checks flags (naming the flag on bad input); the programs'
 * main functions read the environment for anything left unset, bind ports and own signals.
 */
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { MeshError, errorMessage } from '../core/index.js';
// Types only: the programs (and the native addon, the Kubernetes client) are loaded by the
// command that runs them, so `ambit exec` or `ambit --help` never pay for them.
import type { ControlSettings } from '../control/index.js';
import type { AgentSettings } from '../node-agent/index.js';
import { resolveDir } from './state-file.js';

/** A TCP port flag: an integer 0..65535 (0 = any free port), or undefined when not given. */
export function checkPort(flag: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--${flag}: ${JSON.stringify(v)} is not a port number (0..65535)`);
  }
  return v;
}

/** A typo in --token-file fails at start; the agent itself re-reads the file on every connect. */
function tokenFile(path: string): string {
  const abs = resolve(path);
  try {
    accessSync(abs, fsConstants.R_OK);
  } catch (e) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--token-file ${path}: cannot read: ${errorMessage(e)}`);
  }
  return abs;
}

function readPem(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--${flag} ${path}: cannot read: ${(e as Error).message}`);
  }
}

// === ambit control ===

export function controlOptions<T>(y: Argv<T>) {
  // No yargs defaults for what the program can also take from its environment (AMBIT_WS_PORT...):
  // a default here would silently override the environment. The defaults are in the text.
  return y
    .option('config-dir', { type: 'string', describe: 'directory of YAML to watch (files mode); default $AMBIT_CONFIG_DIR or <dir>/config' })
    .option('state-dir', { type: 'string', describe: 'CA, bootstrap token; default $AMBIT_STATE_DIR or <dir>/control' })
    .option('trust-domain', { type: 'string', describe: 'SPIFFE trust domain of issued certificates; default cluster.local' })
    .option('root-namespace', { type: 'string', describe: 'namespace of mesh-wide policies; default istio-system' })
    .option('cluster-id', { type: 'string', describe: 'cluster name in workload uids and metrics' })
    .option('listen', { type: 'string', describe: 'listen address; default 127.0.0.1 (files) or 0.0.0.0 (--kube)' })
    .option('ws-port', { type: 'number', describe: 'plain WebSocket control channel; default 15010 (0 = any free port)' })
    .option('wss-port', { type: 'number', describe: 'TLS WebSocket control channel and CA; default 15012' })
    .option('status-port', { type: 'number', describe: '/ready, /metrics, /debug/config_dump; default 15014' })
    .option('debounce-ms', { type: 'number', describe: 'coalesce config changes for this long before pushing, ms; default 100' })
    .option('max-connections', { type: 'number', describe: 'open connections per listener (ws, wss, status), peers included; default $AMBIT_MAX_CONNECTIONS or 10000' })
    .option('token-audiences', { type: 'string', describe: 'comma list of audiences agent and waypoint tokens must be minted for (--kube); replaces $AMBIT_TOKEN_AUDIENCES' })
    .option('kube', { type: 'boolean', default: false, describe: 'read config from the Kubernetes API (kubeconfig or in-cluster) instead of files' });
}

interface ControlArgs {
  dir?: string | undefined;
  'config-dir'?: string | undefined;
  'state-dir'?: string | undefined;
  'trust-domain'?: string | undefined;
  'root-namespace'?: string | undefined;
  'cluster-id'?: string | undefined;
  listen?: string | undefined;
  'ws-port'?: number | undefined;
  'wss-port'?: number | undefined;
  'status-port'?: number | undefined;
  'debounce-ms'?: number | undefined;
  /** yargs makes a repeated flag an array; that is refused */
  'max-connections'?: number | number[] | undefined;
  /** repeated: the lists are joined */
  'token-audiences'?: string | string[] | undefined;
  kube?: boolean | undefined;
}

/** Same bounds as AMBIT_MAX_CONNECTIONS. */
const MAX_CONNECTIONS_LIMIT = 1_000_000;

/**
 * Flags -> control plane settings: only what was given (runControl fills the rest from its
 * environment and defaults), except the directories, which follow --dir unless the environment
 * names them.
 */
export function controlFlags(a: ControlArgs, env: Readonly<Record<string, string | undefined>> = {}): Partial<ControlSettings> {
  const dir = resolveDir(a.dir);
  const out: Partial<ControlSettings> = {};
  const configDir = a['config-dir'] ?? (env.AMBIT_CONFIG_DIR ? undefined : join(dir, 'config'));
  const stateDir = a['state-dir'] ?? (env.AMBIT_STATE_DIR ? undefined : join(dir, 'control'));
  if (configDir !== undefined) out.configDir = resolve(configDir);
  if (stateDir !== undefined) out.stateDir = resolve(stateDir);
  const debounce = a['debounce-ms'];
  if (debounce !== undefined) {
    if (!Number.isInteger(debounce) || debounce < 0 || debounce > 60_000) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `--debounce-ms: ${JSON.stringify(debounce)} is not an integer 0..60000`);
    }
    out.debounceMs = debounce;
  }
  const td = a['trust-domain'];
  if (td !== undefined) {
    if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(td)) throw new MeshError('AMBIT_CONFIG_INVALID', `--trust-domain: ${JSON.stringify(td)} is not a DNS name`);
    out.trustDomain = td;
  }
  if (a['root-namespace'] !== undefined) out.rootNamespace = a['root-namespace'];
  if (a['cluster-id'] !== undefined) out.clusterId = a['cluster-id'];
  if (a.kube) out.source = 'kubernetes';
  else if (a.kube === false && env.AMBIT_CONFIG_SOURCE === undefined) out.source = 'files';
  if (a.listen !== undefined) out.host = a.listen;
  const ws = checkPort('ws-port', a['ws-port']);
  const wss = checkPort('wss-port', a['wss-port']);
  const status = checkPort('status-port', a['status-port']);
  if (ws !== undefined) out.wsPort = ws;
  if (wss !== undefined) out.wssPort = wss;
  if (status !== undefined) out.statusPort = status;
  const maxConns = a['max-connections'];
  if (maxConns !== undefined) {
    if (typeof maxConns !== 'number' || !Number.isInteger(maxConns) || maxConns < 1 || maxConns > MAX_CONNECTIONS_LIMIT) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `--max-connections: ${JSON.stringify(maxConns)} is not an integer 1..${MAX_CONNECTIONS_LIMIT}`);
    }
    out.maxConnections = maxConns;
  }
  const audiences = a['token-audiences'];
  if (audiences !== undefined) {
    // only split here: controlSettings checks each one (parseAudiences, naming --token-audiences)
    // when the program starts, before it binds anything; importing it here would load the
    // control plane and the Kubernetes client into every CLI command
    const raw = Array.isArray(audiences) ? audiences.join(',') : audiences;
    out.tokenAudiences = raw.split(',').map((x) => x.trim()).filter(Boolean);
  }
  return out;
}

export async function controlCommand(a: ControlArgs): Promise<void> {
  const flags = controlFlags(a, process.env);
  const { runControl } = await import('../control/index.js');
  await runControl(process.env, flags);
}

// === ambit agent ===

export function agentOptions<T>(y: Argv<T>) {
  return y
    .option('node', { type: 'string', describe: 'this node\'s name; default $AMBIT_NODE_NAME or $NODE_NAME' })
    .option('control-url', { type: 'string', describe: 'ws:// or wss:// URL of the control plane; default $AMBIT_CONTROL_URL' })
    .option('token-file', { type: 'string', describe: 'file holding the bearer token for the control plane; default $AMBIT_TOKEN(_FILE)' })
    .option('control-ca-file', { type: 'string', describe: 'PEM roots to verify a wss:// control plane' })
    .option('state-dir', { type: 'string', describe: 'holds agent.sock (the CNI socket); default $AMBIT_STATE_DIR or /var/run/ambit' })
    .option('trust-domain', { type: 'string', describe: 'SPIFFE trust domain; default cluster.local' })
    .option('admin-port', { type: 'number', describe: 'admin (/config_dump) on 127.0.0.1; default 15000' })
    .option('metrics-port', { type: 'number', describe: 'Prometheus /metrics; default 15020' })
    .option('readiness-port', { type: 'number', describe: '/healthz/ready; default 15021' })
    .option('public-host', { type: 'string', describe: 'address for metrics and readiness; default 0.0.0.0' })
    .option('drain-ms', { type: 'number', describe: 'on SIGTERM, let connections finish for this long, ms; default 25000' })
    .option('cni-bin-dir', { type: 'string', describe: 'install the CNI plugin into this dir (the node\'s /opt/cni/bin as mounted); default $AMBIT_CNI_BIN_DIR, unset: no install' })
    .option('cni-conf-dir', { type: 'string', describe: 'chain the CNI plugin into the network configuration here (the node\'s /etc/cni/net.d); default $AMBIT_CNI_CONF_DIR' })
    .option('cni-uninstall', { type: 'boolean', describe: 'take the CNI plugin off the node (out of the conflist, then the program) and exit; the agent never does it when it stops' })
    .option('netns-prefix', {
      type: 'string',
      describe: 'only scan named network namespaces starting with this (/var/run/netns/<prefix>*) for pods that were not handed over by CNI',
    });
}

interface AgentArgs {
  node?: string | undefined;
  'control-url'?: string | undefined;
  'token-file'?: string | undefined;
  'control-ca-file'?: string | undefined;
  'state-dir'?: string | undefined;
  'trust-domain'?: string | undefined;
  'admin-port'?: number | undefined;
  'metrics-port'?: number | undefined;
  'readiness-port'?: number | undefined;
  'public-host'?: string | undefined;
  'drain-ms'?: number | undefined;
  'netns-prefix'?: string | undefined;
  'cni-bin-dir'?: string | undefined;
  'cni-conf-dir'?: string | undefined;
  'cni-uninstall'?: boolean | undefined;
}

/** Named namespaces whose names start with `prefix` (the local cluster's own, not a neighbour's). */
export function prefixedNetnsCandidates(prefix: string): () => Promise<string[]> {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(prefix)) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--netns-prefix: ${JSON.stringify(prefix)} must be 1..64 of [A-Za-z0-9._-]`);
  }
  return async () => {
    let names: string[];
    try { names = await readdir('/var/run/netns'); } catch { return []; }
    return names.filter((n) => n.startsWith(prefix)).map((n) => `/var/run/netns/${n}`);
  };
}

/** Flags -> agent settings (what was given; runAgent fills the rest from env and defaults). */
export function agentFlags(a: AgentArgs): Partial<AgentSettings> {
  const ports: NonNullable<AgentSettings['ports']> = {};
  const admin = checkPort('admin-port', a['admin-port']);
  const metrics = checkPort('metrics-port', a['metrics-port']);
  const readiness = checkPort('readiness-port', a['readiness-port']);
  if (admin !== undefined) ports.admin = admin;
  if (metrics !== undefined) ports.metrics = metrics;
  if (readiness !== undefined) ports.readiness = readiness;
  const drain = a['drain-ms'];
  if (drain !== undefined && (!Number.isInteger(drain) || drain < 0 || drain > 3_600_000)) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--drain-ms: ${JSON.stringify(drain)} is not an integer 0..3600000`);
  }
  const url = a['control-url'];
  if (url !== undefined && !/^wss?:\/\/[^\s]+$/.test(url)) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--control-url: ${JSON.stringify(url)} is not a ws:// or wss:// URL`);
  }
  return {
    ...(a.node !== undefined ? { node: a.node } : {}),
    ...(url !== undefined ? { controlUrl: url } : {}),
    // the agent re-reads the file on every connect: projected ServiceAccount tokens rotate
    ...(a['token-file'] !== undefined ? { tokenFile: tokenFile(a['token-file']) } : {}),
    ...(a['control-ca-file'] !== undefined ? { controlCaPem: readPem('control-ca-file', a['control-ca-file']) } : {}),
    ...(a['state-dir'] !== undefined ? { stateDir: resolve(a['state-dir']) } : {}),
    ...(a['trust-domain'] !== undefined ? { trustDomain: a['trust-domain'] } : {}),
    ...(a['public-host'] !== undefined ? { publicHost: a['public-host'] } : {}),
    ...(drain !== undefined ? { drainMs: drain } : {}),
    ...(a['netns-prefix'] !== undefined ? { netnsCandidates: prefixedNetnsCandidates(a['netns-prefix']) } : {}),
    ...(Object.keys(ports).length > 0 ? { ports } : {}),
    ...(a['cni-bin-dir'] !== undefined || a['cni-conf-dir'] !== undefined ? {
      cni: {
        ...(a['cni-bin-dir'] !== undefined ? { binDir: resolve(a['cni-bin-dir']) } : {}),
        ...(a['cni-conf-dir'] !== undefined ? { confDir: resolve(a['cni-conf-dir']) } : {}),
      } as NonNullable<AgentSettings['cni']>,
    } : {}),
  };
}

export async function agentCommand(a: AgentArgs): Promise<void> {
  const flags = agentFlags(a);
  if (a['cni-uninstall']) {
    const { runCniUninstall } = await import('../node-agent/index.js');
    const r = await runCniUninstall(process.env, flags.cni ?? {});
    process.stdout.write(`cni plugin: ${r.conf !== undefined ? `unchained from ${r.conf}` : 'not chained'}; ${r.removed.length > 0 ? `removed ${r.removed.join(', ')}` : 'no program installed'}\n`);
    return;
  }
  const { runAgent } = await import('../node-agent/index.js');
  await runAgent(process.env, flags);
}

// === ambit cni ===

/**
 * The CNI plugin (src/node-agent/cni-plugin/main.ts, the same code the agent installs on a node as
 * `ambit-cni`): CNI_* from the environment, the network configuration on stdin, the result (or
 * the CNI error object) on stdout, and the exit code the spec asks for.
 */
export async function cniCommand(): Promise<void> {
  const { cniPluginMain } = await import('../node-agent/index.js');
  await cniPluginMain();
}
