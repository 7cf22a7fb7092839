/**
 * Entry point of the node agent process (`ambit agent`): reads its settings, starts the agent
 * (taking over from a running agent of the same state directory, if there is one) and ends it on
 * SIGTERM (serve until a successor took over or the drain deadline, then drain) or SIGINT (stop
 * accepting, let connections finish until the deadline, close).
 */
import { readFileSync } from 'node:fs';
import { collectDefaultMetrics } from 'prom-client';
import { MeshError, enableTrace, errorMessage, isDnsLabel, logger, setLogLevel, type Level } from '../core/index.js';
import { join } from 'node:path';
import { addonFile, raiseFdLimit } from '../native/index.js';
import { checkToken, tokenFromFile } from '../xds/index.js';
import { createAgent, type Agent, type AgentOptions } from './app.js';
import { DEFAULT_EXEMPT_NAMESPACES } from './enrol/cni-admission.js';
import { defaultPluginBundle, installCniProgram, keepChained, uninstallCni, verifyCniProgram, type CniPayload, type CniPluginSettings } from './enrol/cni-install.js';

const log = logger('node-agent');

export interface AgentSettings extends AgentOptions {
  /** drain deadline on SIGTERM, ms; default 25_000 */
  drainMs: number;
  /**
   * file holding the bearer token, re-read on every (re)connect to the control plane: Kubernetes
   * rotates projected service-account tokens. Used when no fixed `token` is given.
   */
  tokenFile?: string;
  /**
   * Install the CNI plugin onto the node (AMBIT_CNI_BIN_DIR, AMBIT_CNI_CONF_DIR: the node's CNI
   * bin and conf dirs as mounted in the agent's container). Unset: nothing is installed (`ambit up`,
   * tests; the local cluster hands pods over itself).
   */
  cni?: CniDirs;
}

export interface CniDirs {
  binDir: string;
  confDir: string;
  /** the installed program's files; default this process's Node, the package's bundle, the loaded addon */
  payload?: Partial<CniPayload>;
}

/** AMBIT_EXEMPT_NAMESPACES: a comma list of namespaces never held back, besides kube-system and ambit-system. */
function exemptFromEnv(v: string | undefined): string[] | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const names = v.split(',').map((n) => n.trim()).filter(Boolean);
  if (names.length > 256) throw new MeshError('AMBIT_CONFIG_INVALID', `AMBIT_EXEMPT_NAMESPACES: more than 256 namespaces`);
  for (const n of names) {
    if (!isDnsLabel(n)) throw new MeshError('AMBIT_CONFIG_INVALID', `AMBIT_EXEMPT_NAMESPACES: ${JSON.stringify(n)} is not a namespace name`);
  }
  return names;
}

/** Both CNI dirs or neither, from flags over AMBIT_CNI_BIN_DIR / AMBIT_CNI_CONF_DIR. */
export function cniDirs(env: Readonly<Record<string, string | undefined>>, flags: Partial<CniDirs> = {}): CniDirs | undefined {
  const binDir = flags.binDir ?? (env.AMBIT_CNI_BIN_DIR || undefined);
  const confDir = flags.confDir ?? (env.AMBIT_CNI_CONF_DIR || undefined);
  if (binDir === undefined && confDir === undefined) return undefined;
  if (binDir === undefined || confDir === undefined) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `agent: AMBIT_CNI_BIN_DIR and AMBIT_CNI_CONF_DIR go together (${binDir === undefined ? 'AMBIT_CNI_BIN_DIR' : 'AMBIT_CNI_CONF_DIR'} is missing)`);
  }
  for (const [k, v] of [['AMBIT_CNI_BIN_DIR', binDir], ['AMBIT_CNI_CONF_DIR', confDir]] as const) {
    if (!v.startsWith('/')) throw new MeshError('AMBIT_CONFIG_INVALID', `agent: ${k}: ${JSON.stringify(v)} is not an absolute path`);
  }
  return { binDir, confDir, ...(flags.payload ? { payload: flags.payload } : {}) };
}

function cniPayload(p: Partial<CniPayload> = {}): CniPayload {
  const addon = p.addon ?? addonFile();
  if (addon === undefined) throw new MeshError('AMBIT_NATIVE_UNAVAILABLE', 'agent: the native addon is not built; the CNI plugin needs it');
  return { node: p.node ?? process.execPath, plugin: p.plugin ?? defaultPluginBundle(), addon };
}

/** What ambit's conflist entry tells the plugin: this agent's socket and the exempt namespaces beyond the defaults. */
export function cniPluginSettings(s: Pick<AgentSettings, 'stateDir' | 'exemptNamespaces'>): CniPluginSettings {
  const extra = (s.exemptNamespaces ?? []).filter((n) => !DEFAULT_EXEMPT_NAMESPACES.includes(n));
  return { agentSocket: join(s.stateDir, 'agent.sock'), ...(extra.length > 0 ? { exemptNamespaces: extra } : {}) };
}

/**
 * `ambit agent --cni-uninstall`: takes the plugin off the node (out of the conflist, then the
 * program) and returns. The agent itself never does this when it stops: a rolling update or a
 * restart stops it too, and removing the plugin then would let pods start outside the mesh.
 */
export async function runCniUninstall(env: Readonly<Record<string, string | undefined>> = process.env, flags: Partial<CniDirs> = {}): Promise<{ conf: string | undefined; removed: string[] }> {
  const dirs = cniDirs(env, flags);
  if (!dirs) throw new MeshError('AMBIT_CONFIG_INVALID', 'agent --cni-uninstall: AMBIT_CNI_BIN_DIR and AMBIT_CNI_CONF_DIR (or --cni-bin-dir and --cni-conf-dir) name the dirs to clean');
  return uninstallAndLog(dirs);
}

async function uninstallAndLog(dirs: CniDirs): Promise<{ conf: string | undefined; removed: string[] }> {
  const r = await uninstallCni(dirs);
  log.info('cni plugin uninstalled', { conf: r.conf ?? '(not chained)', removed: r.removed });
  return r;
}

function num(env: Readonly<Record<string, string | undefined>>, key: string): number | undefined {
  const v = env[key];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535 * 1000) throw new Error(`${key}: ${JSON.stringify(v)} is not a non-negative integer`);
  return n;
}

/**
 * Settings from flags (already parsed by the CLI) over environment variables:
 * AMBIT_NODE_NAME (or NODE_NAME), AMBIT_CONTROL_URL, AMBIT_TOKEN or AMBIT_TOKEN_FILE,
 * AMBIT_CONTROL_CA_FILE, AMBIT_STATE_DIR (default /var/run/ambit), AMBIT_TRUST_DOMAIN,
 * AMBIT_ADMIN_PORT, AMBIT_METRICS_PORT, AMBIT_READINESS_PORT, AMBIT_DRAIN_MS, AMBIT_CNI_BIN_DIR and
 * AMBIT_CNI_CONF_DIR (install the CNI plugin; both or neither), AMBIT_EXEMPT_NAMESPACES (a comma list of
 * namespaces whose pods are never held back, besides kube-system and ambit-system).
 *
 * A token file is not read here: the control channel reads it on every connect, so a rotated
 * service-account token is used from the next reconnect on, and a missing or empty file makes that
 * attempt fail and back off instead of stopping the agent.
 */
export function agentSettings(env: Readonly<Record<string, string | undefined>>, flags: Partial<AgentSettings> = {}): AgentSettings {
  const node = flags.node ?? env.AMBIT_NODE_NAME ?? env.NODE_NAME;
  if (!node) throw new Error('agent: node name missing (--node or AMBIT_NODE_NAME)');
  const controlUrl = flags.controlUrl ?? env.AMBIT_CONTROL_URL;
  if (!controlUrl) throw new Error('agent: control plane URL missing (--control-url or AMBIT_CONTROL_URL)');
  // flags before the environment; a fixed token before a file at the same level
  const fixed = flags.token ?? (flags.tokenFile ? undefined : env.AMBIT_TOKEN || undefined);
  const tokenFile = fixed === undefined ? flags.tokenFile ?? (env.AMBIT_TOKEN_FILE || undefined) : undefined;
  if (fixed === undefined && tokenFile === undefined) throw new Error('agent: token missing (AMBIT_TOKEN or AMBIT_TOKEN_FILE)');
  if (typeof fixed === 'string') checkToken(fixed, flags.token !== undefined ? 'agent: token' : 'AMBIT_TOKEN');
  const caFile = env.AMBIT_CONTROL_CA_FILE;
  let controlCaPem = flags.controlCaPem;
  if (controlCaPem === undefined && caFile) {
    try {
      controlCaPem = readFileSync(caFile, 'utf8');
    } catch (e) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `AMBIT_CONTROL_CA_FILE ${caFile}: cannot read: ${errorMessage(e)}`, { cause: e });
    }
  }
  const admin = num(env, 'AMBIT_ADMIN_PORT');
  const metrics = num(env, 'AMBIT_METRICS_PORT');
  const readiness = num(env, 'AMBIT_READINESS_PORT');
  const cni = cniDirs(env, flags.cni);
  const extraExempt = flags.exemptNamespaces === undefined ? exemptFromEnv(env.AMBIT_EXEMPT_NAMESPACES) : undefined;
  return {
    ...flags,
    node,
    controlUrl,
    // a token file is re-read on every connect: projected ServiceAccount tokens rotate
    token: fixed ?? tokenFromFile(tokenFile!),
    ...(tokenFile !== undefined ? { tokenFile } : {}),
    stateDir: flags.stateDir ?? env.AMBIT_STATE_DIR ?? '/var/run/ambit',
    trustDomain: flags.trustDomain ?? env.AMBIT_TRUST_DOMAIN ?? 'cluster.local',
    ...(controlCaPem !== undefined ? { controlCaPem } : {}),
    ports: {
      ...(admin !== undefined ? { admin } : {}), ...(metrics !== undefined ? { metrics } : {}), ...(readiness !== undefined ? { readiness } : {}),
      ...flags.ports,
    },
    drainMs: flags.drainMs ?? num(env, 'AMBIT_DRAIN_MS') ?? 25_000,
    ...(cni ? { cni } : {}),
    ...(extraExempt ? { exemptNamespaces: [...new Set([...DEFAULT_EXEMPT_NAMESPACES, ...extraExempt])] } : {}),
  };
}

/** Runs the agent until SIGTERM/SIGINT; resolves after the drain. */
export async function runAgent(env: Readonly<Record<string, string | undefined>> = process.env, flags: Partial<AgentSettings> = {}): Promise<void> {
  if (env.AMBIT_LOG_LEVEL) setLogLevel(env.AMBIT_LOG_LEVEL as Level);
  if (env.AMBIT_TRACE) enableTrace(env.AMBIT_TRACE);
  const settings = agentSettings(env, flags);
  // Every pod costs fds (listeners, connections, a socket pool): use all the hard limit allows.
  try {
    const l = raiseFdLimit();
    log.info('open-file limit', { soft: l.soft, hard: l.hard, before: l.before });
  } catch (e) {
    log.warn('cannot raise the open-file limit', { error: errorMessage(e) });
  }
  // The CNI plugin: the program is installed before the agent starts (a failure there is a failed
  // start); the conflist entry once the agent serves its socket, and again whenever the main
  // plugin rewrites its configuration. Readiness waits for the first chaining.
  let chained: (() => void) | undefined;
  const cniReady = settings.cni ? new Promise<void>((resolve) => { chained = resolve; }) : undefined;
  if (settings.cni) {
    const program = await installCniProgram(settings.cni.binDir, cniPayload(settings.cni.payload));
    // what was copied runs: a broken install fails the start here, not every pod's sandbox later
    await verifyCniProgram(program);
    log.info('cni plugin installed', { program });
  }
  let keeper: { close(): void } | undefined;
  let uninstalled = false;
  const cni = settings.cni;
  const cniUninstall = cni ? async () => {
    // stop re-chaining first: the watcher would put the entry back
    uninstalled = true;
    keeper?.close();
    keeper = undefined;
    const r = await uninstallAndLog(cni);
    return { node: settings.node, conf: r.conf ?? null, removed: r.removed };
  } : undefined;
  const agent: Agent = createAgent({ ...settings, ...(cniReady ? { readyAfter: cniReady } : {}), ...(cniUninstall ? { cniUninstall } : {}) });
  // the process's own figures beside the mesh's (RSS, heap, external memory, fds, event-loop lag, GC)
  collectDefaultMetrics({ register: agent.telemetry.registry });
  let stopped: Promise<void> | undefined;
  // SIGTERM (Kubernetes, a rolling update): keep serving until a successor takes over or the
  // drain deadline. SIGINT (Ctrl-C, `ambit up` tearing down): stop accepting now and drain.
  const drain = (signal: string) => {
    log.info(signal === 'SIGTERM' ? 'terminating: serving until a successor takes over' : 'draining', { signal, deadlineMs: settings.drainMs });
    stopped ??= signal === 'SIGTERM' ? agent.terminate(settings.drainMs) : agent.stop(settings.drainMs);
  };
  const done = new Promise<void>((resolve) => {
    // the plugin stays installed and chained: see runCniUninstall
    const on = (sig: NodeJS.Signals) => { keeper?.close(); drain(sig); void stopped!.then(resolve, resolve); };
    process.once('SIGTERM', () => on('SIGTERM'));
    process.once('SIGINT', () => on('SIGINT'));
  });
  try {
    await agent.start();
    if (settings.cni && !uninstalled) {
      let first = true;
      keeper = keepChained(settings.cni.confDir, cniPluginSettings(settings), {
        chained: (file) => {
          if (first) log.info('cni plugin chained', { file });
          first = false;
          chained?.();
        },
        error: (e) => log.error('cannot chain the cni plugin', { error: errorMessage(e) }),
      });
      // a successor took this node over (a rolling update): it keeps the entry chained from now on;
      // two watchers with different settings would rewrite the file after each other
      void agent.handedOver.then(() => {
        if (!keeper) return;
        keeper.close();
        keeper = undefined;
        log.info('handed over: the successor keeps the cni plugin chained');
      });
    }
  } catch (e) {
    log.error('agent failed to start', { error: errorMessage(e) });
    await agent.stop(0);
    throw e;
  }
  await done;
}
