/**
 * The stunnel4 baseline: an mTLS pair on the same pod-to-pod path. Certificates come from the
 * ambit CA (src/identity), TLS 1.3 only, both sides verify the peer's chain against the mesh root.
 *
 *   client pod: app -> 127.0.0.1:2xxxx  stunnel (client)  ==TLS==>  server pod :29xxx stunnel (server) -> 127.0.0.1:app
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Pod } from '../../src/local/index.js';
import { OutputTail, stopChild } from '../common/proc.js';
import { APP_PORTS, waitEcho, waitPort } from './apps.js';
import type { TlsFiles, PairFiles } from './certs.js';
import type { PathTarget } from './measure.js';

/** client-side accept ports (127.0.0.1 in the client pod) */
const CLIENT_PORTS = { iperf: 25201, echo: 27000, http: 28080 } as const;
/** server-side TLS ports (the server pod's address) */
// below the ephemeral range (32768-60999), as haproxy-pair.ts says why
const SERVER_PORTS = { iperf: 29201, echo: 29000, http: 29080 } as const;
const SERVICES = ['iperf', 'echo', 'http'] as const;

export interface StunnelPair {
  readonly target: PathTarget;
  /** the two stunnel processes (their RSS is the path's memory cost) */
  pids(): number[];
  stop(): Promise<void>;
}

type Files = Pick<TlsFiles, 'cert' | 'key' | 'ca'>;

/** stunnel.conf text. Service-level options in the global section are defaults for every service. */
export function stunnelConfig(o: { client: boolean; files: Files; services: ReadonlyArray<{ name: string; accept: string; connect: string }> }): string {
  const lines = [
    'foreground = yes',
    'pid =',
    // errors only: per-connection logging would cost the baseline CPU the agent does not spend
    'debug = 3',
    'syslog = no',
    `client = ${o.client ? 'yes' : 'no'}`,
    `cert = ${o.files.cert}`,
    `key = ${o.files.key}`,
    `CAfile = ${o.files.ca}`,
    // verify the peer's chain up to the mesh root; the server side thereby requires a client cert
    'verifyChain = yes',
    'sslVersionMin = TLSv1.3',
    'socket = l:TCP_NODELAY=1',
    'socket = r:TCP_NODELAY=1',
  ];
  for (const s of o.services) lines.push(`[${s.name}]`, `accept = ${s.accept}`, `connect = ${s.connect}`);
  return lines.join('\n') + '\n';
}

export async function startStunnelPair(o: {
  cluster: Cluster; client: Pod; server: Pod; dir: string; stunnel: string; files: PairFiles;
}): Promise<StunnelPair> {
  const cf = o.files.client;
  const sf = o.files.server;
  const serverCfg = join(o.dir, 'stunnel-server.conf');
  const clientCfg = join(o.dir, 'stunnel-client.conf');
  writeFileSync(serverCfg, stunnelConfig({
    client: false, files: sf,
    services: SERVICES.map((s) => ({ name: s, accept: `${o.server.ip}:${SERVER_PORTS[s]}`, connect: `127.0.0.1:${APP_PORTS[s]}` })),
  }));
  writeFileSync(clientCfg, stunnelConfig({
    client: true, files: cf,
    services: SERVICES.map((s) => ({ name: s, accept: `127.0.0.1:${CLIENT_PORTS[s]}`, connect: `${o.server.ip}:${SERVER_PORTS[s]}` })),
  }));
  const children: ChildProcess[] = [];
  const stop = async () => { await Promise.all(children.map((c) => stopChild(c))); };
  try {
    const srv = o.cluster.spawn(o.server, [o.stunnel, serverCfg]);
    children.push(srv);
    const srvTail = new OutputTail(srv);
    const cli = o.cluster.spawn(o.client, [o.stunnel, clientCfg]);
    children.push(cli);
    const cliTail = new OutputTail(cli);
    try {
      await waitPort(o.cluster, o.server, o.server.ip, SERVER_PORTS.echo, 'stunnel server');
      await waitPort(o.cluster, o.client, '127.0.0.1', CLIENT_PORTS.echo, 'stunnel client');
      // one exchange through both stunnels proves the handshake and chain checks work
      await waitEcho(o.cluster, o.client, '127.0.0.1', CLIENT_PORTS.echo, 'stunnel path', 10_000);
    } catch (e) {
      const why = `server: ${srvTail.last(3)} | client: ${cliTail.last(3)}`;
      throw new Error(`${e instanceof Error ? e.message : String(e)} (${why})`, { cause: e });
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    target: { host: '127.0.0.1', ports: CLIENT_PORTS },
    pids: () => children.map((c) => c.pid!).filter((p) => p !== undefined),
    stop,
  };
}
