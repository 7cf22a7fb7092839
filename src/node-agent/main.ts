/**
 * Entry point of the node agent process (`ambit agent`): reads its settings, starts the agent
 * (taking over from a running agent of the same state directory, if there is one) and ends it on
 * SIGTERM (serve until a successor took over or the drain deadline, then drain) or SIGINT (stop
 * accepting, let connections finish until the deadline, close).
 */
import { readFileSync } from 'node:fs';
import { MeshError, enableTrace, errorMessage, logger, setLogLevel, type Level } from '../core/index.js';
import { raiseFdLimit } from '../native/index.js';
import { checkToken, tokenFromFile } from '../xds/index.js';
import { createAgent, type Agent, type AgentOptions } from './app.js';

const log = logger('node-agent');

export interface AgentSettings extends AgentOptions {
  /** drain deadline on SIGTERM, ms; default 25_000 */
  drainMs: number;
  /**
   * file holding the bearer token, re-read on every (re)connect to the control plane: Kubernetes
   * rotates projected service-account tokens. Used when no fixed `token` is given.
   */
  tokenFile?: string;
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
 * AMBIT_ADMIN_PORT, AMBIT_METRICS_PORT, AMBIT_READINESS_PORT, AMBIT_DRAIN_MS.
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
  const agent: Agent = createAgent(settings);
  let stopped: Promise<void> | undefined;
  // SIGTERM (Kubernetes, a rolling update): keep serving until a successor takes over or the
  // drain deadline. SIGINT (Ctrl-C, `ambit up` tearing down): stop accepting now and drain.
  const drain = (signal: string) => {
    log.info(signal === 'SIGTERM' ? 'terminating: serving until a successor takes over' : 'draining', { signal, deadlineMs: settings.drainMs });
    stopped ??= signal === 'SIGTERM' ? agent.terminate(settings.drainMs) : agent.stop(settings.drainMs);
  };
  const done = new Promise<void>((resolve) => {
    const on = (sig: NodeJS.Signals) => { drain(sig); void stopped!.then(resolve, resolve); };
    process.once('SIGTERM', () => on('SIGTERM'));
    process.once('SIGINT', () => on('SIGINT'));
  });
  try {
    await agent.start();
  } catch (e) {
    log.error('agent failed to start', { error: errorMessage(e) });
    await agent.stop(0);
    throw e;
  }
  await done;
}
