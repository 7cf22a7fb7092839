/**
 * Entry point of the waypoint process (`ambit waypoint`): reads its settings, starts it and
 * drains it on SIGTERM/SIGINT (stop accepting, finish requests until the deadline, close).
 */
import { readFileSync } from 'node:fs';
import { collectDefaultMetrics } from 'prom-client';
import { DNS_LABEL, MeshError, enableTrace, errorMessage, logger, setLogLevel, type Level } from '../core/index.js';
import { checkToken, tokenFromFile } from '../xds/index.js';
import { createWaypoint, type TransportContext, type WaypointOptions } from './app.js';
import type { WaypointTransport } from './transport.js';

const log = logger('waypoint');

export interface WaypointSettings extends Omit<WaypointOptions, 'transport'> {
  /** drain deadline after SIGINT, or after the grace of SIGTERM, ms; default 20_000 */
  drainMs: number;
  /** after SIGTERM: not ready but still serving for this long, ms; default 5_000 (Istio's terminationDrainDuration) */
  terminationGraceMs: number;
  tokenFile?: string;
}

function num(env: Readonly<Record<string, string | undefined>>, key: string): number | undefined {
  const v = env[key];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535 * 1000) throw new MeshError('AMBIT_CONFIG_INVALID', `${key}: ${JSON.stringify(v)} is not a non-negative integer`);
  return n;
}


/**
 * Settings from flags over the environment: AMBIT_WAYPOINT_NAME, AMBIT_NAMESPACE (or
 * POD_NAMESPACE), AMBIT_SERVICE_ACCOUNT, AMBIT_NODE_NAME (or NODE_NAME), AMBIT_CONTROL_URL,
 * AMBIT_TOKEN or AMBIT_TOKEN_FILE, AMBIT_CONTROL_CA_FILE, AMBIT_TRUST_DOMAIN, AMBIT_NETNS,
 * AMBIT_HBONE_PORT, AMBIT_ADMIN_PORT, AMBIT_METRICS_PORT, AMBIT_READINESS_PORT, AMBIT_DRAIN_MS,
 * AMBIT_TERMINATION_GRACE_MS.
 */
export function waypointSettings(env: Readonly<Record<string, string | undefined>>, flags: Partial<WaypointSettings> = {}): WaypointSettings {
  const name = flags.name ?? env.AMBIT_WAYPOINT_NAME;
  if (!name || !DNS_LABEL.test(name)) throw new MeshError('AMBIT_CONFIG_INVALID', `waypoint: name ${JSON.stringify(name ?? '')} missing or not a DNS label (--name or AMBIT_WAYPOINT_NAME)`);
  const namespace = flags.namespace ?? env.AMBIT_NAMESPACE ?? env.POD_NAMESPACE;
  if (!namespace || !DNS_LABEL.test(namespace)) throw new MeshError('AMBIT_CONFIG_INVALID', `waypoint: namespace ${JSON.stringify(namespace ?? '')} missing or not a DNS label (--namespace or AMBIT_NAMESPACE)`);
  const serviceAccount = flags.serviceAccount ?? (env.AMBIT_SERVICE_ACCOUNT || undefined) ?? name;
  const controlUrl = flags.controlUrl ?? env.AMBIT_CONTROL_URL;
  if (!controlUrl) throw new MeshError('AMBIT_CONFIG_INVALID', 'waypoint: control plane URL missing (--control-url or AMBIT_CONTROL_URL)');
  const fixed = flags.token ?? (flags.tokenFile ? undefined : env.AMBIT_TOKEN || undefined);
  const tokenFile = fixed === undefined ? flags.tokenFile ?? (env.AMBIT_TOKEN_FILE || undefined) : undefined;
  if (fixed === undefined && tokenFile === undefined) throw new MeshError('AMBIT_CONFIG_INVALID', 'waypoint: token missing (AMBIT_TOKEN or AMBIT_TOKEN_FILE)');
  if (typeof fixed === 'string') checkToken(fixed, 'AMBIT_TOKEN');
  let controlCaPem = flags.controlCaPem;
  const caFile = env.AMBIT_CONTROL_CA_FILE;
  if (controlCaPem === undefined && caFile) {
    try { controlCaPem = readFileSync(caFile, 'utf8'); } catch (e) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `AMBIT_CONTROL_CA_FILE ${caFile}: cannot read: ${errorMessage(e)}`, { cause: e });
    }
  }
  const hbone = num(env, 'AMBIT_HBONE_PORT');
  const admin = num(env, 'AMBIT_ADMIN_PORT');
  const metrics = num(env, 'AMBIT_METRICS_PORT');
  const readiness = num(env, 'AMBIT_READINESS_PORT');
  const netns = flags.netns ?? (env.AMBIT_NETNS || undefined);
  const node = flags.node ?? env.AMBIT_NODE_NAME ?? env.NODE_NAME;
  return {
    ...flags,
    name, namespace, serviceAccount, controlUrl,
    token: fixed ?? tokenFromFile(tokenFile!),
    ...(tokenFile !== undefined ? { tokenFile } : {}),
    ...(node ? { node } : {}),
    ...(netns ? { netns } : {}),
    trustDomain: flags.trustDomain ?? env.AMBIT_TRUST_DOMAIN ?? 'cluster.local',
    ...(controlCaPem !== undefined ? { controlCaPem } : {}),
    ports: {
      ...(hbone !== undefined ? { hbone } : {}), ...(admin !== undefined ? { admin } : {}),
      ...(metrics !== undefined ? { metrics } : {}), ...(readiness !== undefined ? { readiness } : {}),
      ...flags.ports,
    },
    drainMs: flags.drainMs ?? num(env, 'AMBIT_DRAIN_MS') ?? 20_000,
    terminationGraceMs: flags.terminationGraceMs ?? num(env, 'AMBIT_TERMINATION_GRACE_MS') ?? 5_000,
  };
}

/** The production transport: HBONE carried by the addon's engine. */
async function engineTransport(): Promise<(ctx: TransportContext) => WaypointTransport> {
  const m = await import('./engine-transport.js');
  return m.createEngineTransport;
}

/** Runs the waypoint until SIGTERM/SIGINT; resolves after the drain. */
export async function runWaypoint(env: Readonly<Record<string, string | undefined>> = process.env, flags: Partial<WaypointSettings> = {}): Promise<void> {
  if (env.AMBIT_LOG_LEVEL) setLogLevel(env.AMBIT_LOG_LEVEL as Level);
  if (env.AMBIT_TRACE) enableTrace(env.AMBIT_TRACE);
  const settings = waypointSettings(env, flags);
  const wp = createWaypoint({ ...settings, transport: await engineTransport() });
  // the process's own figures beside the requests' (RSS, heap, external memory, fds, event-loop lag, GC)
  collectDefaultMetrics({ register: wp.telemetry.registry });
  const done = new Promise<void>((resolve) => {
    // SIGTERM (Kubernetes): not ready, serve through the grace, then drain; SIGINT (Ctrl-C,
    // ambit up), or a second signal: drain now
    const on = (sig: NodeJS.Signals): void => {
      log.info('draining', { signal: sig, graceMs: sig === 'SIGTERM' ? settings.terminationGraceMs : 0, deadlineMs: settings.drainMs });
      const p = sig === 'SIGTERM' ? wp.terminate(settings.terminationGraceMs, settings.drainMs) : wp.stop(settings.drainMs);
      void p.then(resolve, resolve);
    };
    process.once('SIGTERM', () => on('SIGTERM'));
    process.once('SIGINT', () => on('SIGINT'));
  });
  try {
    await wp.start();
  } catch (e) {
    log.error('waypoint failed to start', { error: errorMessage(e) });
    await wp.stop(0);
    throw e;
  }
  await done;
}
