/**
 * `ambit waypoint` (run the L7 proxy) and `ambit waypoint apply` (istioctl's verb: declare a
 * waypoint Gateway; in the local mesh `ambit up` then starts its pod, Service and process).
 */
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { MeshError } from '../core/index.js';
import type { WaypointSettings } from '../waypoint/index.js';
import { checkPort } from './programs.js';

export function waypointRunOptions<T>(y: Argv<T>) {
  return y
    .option('name', { type: 'string', describe: 'the waypoint Gateway\'s name; default $AMBIT_WAYPOINT_NAME' })
    .option('namespace', { alias: 'n', type: 'string', describe: 'its namespace; default $AMBIT_NAMESPACE' })
    .option('service-account', { type: 'string', describe: 'service account it runs as (its identity); default $AMBIT_SERVICE_ACCOUNT or the name' })
    .option('control-url', { type: 'string', describe: 'ws:// or wss:// URL of the control plane; default $AMBIT_CONTROL_URL' })
    .option('token-file', { type: 'string', describe: 'file holding the bearer token; default $AMBIT_TOKEN(_FILE)' })
    .option('trust-domain', { type: 'string', describe: 'SPIFFE trust domain; default cluster.local' })
    .option('netns', { type: 'string', describe: 'network namespace of the waypoint pod (path); its listener and upstream sockets live there. Default: this process\'s own' })
    .option('node', { type: 'string', describe: 'node name (for the control plane\'s logs); default $AMBIT_NODE_NAME' })
    .option('hbone-port', { type: 'number', describe: 'HBONE listener; default 15008' })
    .option('admin-port', { type: 'number', describe: 'admin (/config_dump) on 127.0.0.1; default 15000' })
    .option('metrics-port', { type: 'number', describe: 'Prometheus /metrics; default 15020' })
    .option('readiness-port', { type: 'number', describe: '/healthz/ready; default 15021' })
    .option('public-host', { type: 'string', describe: 'address for metrics and readiness; default 0.0.0.0' })
    .option('drain-ms', { type: 'number', describe: 'on SIGTERM, let requests finish for this long, ms; default 20000' });
}

export interface WaypointRunArgs {
  name?: string | undefined;
  namespace?: string | undefined;
  'service-account'?: string | undefined;
  'control-url'?: string | undefined;
  'token-file'?: string | undefined;
  'trust-domain'?: string | undefined;
  netns?: string | undefined;
  node?: string | undefined;
  'hbone-port'?: number | undefined;
  'admin-port'?: number | undefined;
  'metrics-port'?: number | undefined;
  'readiness-port'?: number | undefined;
  'public-host'?: string | undefined;
  'drain-ms'?: number | undefined;
}

export function waypointFlags(a: WaypointRunArgs): Partial<WaypointSettings> {
  const ports: NonNullable<WaypointSettings['ports']> = {};
  const hbone = checkPort('hbone-port', a['hbone-port']);
  const admin = checkPort('admin-port', a['admin-port']);
  const metrics = checkPort('metrics-port', a['metrics-port']);
  const readiness = checkPort('readiness-port', a['readiness-port']);
  if (hbone !== undefined) ports.hbone = hbone;
  if (admin !== undefined) ports.admin = admin;
  if (metrics !== undefined) ports.metrics = metrics;
  if (readiness !== undefined) ports.readiness = readiness;
  const drain = a['drain-ms'];
  if (drain !== undefined && (!Number.isInteger(drain) || drain < 0 || drain > 3_600_000)) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `--drain-ms: ${JSON.stringify(drain)} is not an integer 0..3600000`);
  }
  const url = a['control-url'];
  if (url !== undefined && !/^wss?:\/\/[^\s]+$/.test(url)) throw new MeshError('AMBIT_CONFIG_INVALID', `--control-url: ${JSON.stringify(url)} is not a ws:// or wss:// URL`);
  return {
    ...(a.name !== undefined ? { name: a.name } : {}),
    ...(a.namespace !== undefined ? { namespace: a.namespace } : {}),
    ...(a['service-account'] !== undefined ? { serviceAccount: a['service-account'] } : {}),
    ...(url !== undefined ? { controlUrl: url } : {}),
    ...(a['token-file'] !== undefined ? { tokenFile: resolve(a['token-file']) } : {}),
    ...(a['trust-domain'] !== undefined ? { trustDomain: a['trust-domain'] } : {}),
    ...(a.netns !== undefined ? { netns: resolve(a.netns) } : {}),
    ...(a.node !== undefined ? { node: a.node } : {}),
    ...(a['public-host'] !== undefined ? { publicHost: a['public-host'] } : {}),
    ...(drain !== undefined ? { drainMs: drain } : {}),
    ...(Object.keys(ports).length > 0 ? { ports } : {}),
  };
}

export async function waypointCommand(a: WaypointRunArgs): Promise<void> {
  const flags = waypointFlags(a);
  const { runWaypoint } = await import('../waypoint/index.js');
  await runWaypoint(process.env, flags);
}
