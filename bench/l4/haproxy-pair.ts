/**
 * The haproxy baseline: the strongest event-driven TLS proxy Debian ships, as an mTLS pair in TCP
 * mode on the same pod-to-pod path and with the same certificates as the stunnel pair (certs.ts).
 * TLS 1.3 only; each side requires the peer's certificate and verifies its chain against the mesh
 * root (no name check, like stunnel's `verifyChain` and like the mesh, which checks SPIFFE URIs).
 *
 *   client pod: app -> 127.0.0.1:21xxx haproxy (client) ==TLS 1.3==> server pod :22xxx haproxy (server) -> 127.0.0.1:app
 *
 * haproxy keeps its defaults otherwise: one process, as many threads as the machine has CPUs,
 * TCP_NODELAY on every socket, TLS session reuse towards the server side.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Pod } from '../../src/local/index.js';
import { OutputTail, stopChild } from '../common/proc.js';
import { APP_PORTS, waitEcho, waitPort } from './apps.js';
import type { PairFiles, TlsFiles } from './certs.js';
import type { PathTarget } from './measure.js';

// The ports are below Linux's ephemeral range (32768-60999): a source port of the bench's own
// connections (the stunnel step's thousands before this one) could otherwise hold one and fail
// haproxy's bind (seen: 127.0.0.1:47000 "Address already in use").
/** client-side accept ports (127.0.0.1 in the client pod) */
const CLIENT_PORTS = { iperf: 21201, echo: 21000, http: 21080 } as const;
/** server-side TLS ports (the server pod's address) */
const SERVER_PORTS = { iperf: 22201, echo: 22000, http: 22080 } as const;
const SERVICES = ['iperf', 'echo', 'http'] as const;

export interface HaproxyPair {
  readonly target: PathTarget;
  /** the two haproxy processes (their RSS is the path's memory cost) */
  pids(): number[];
  stop(): Promise<void>;
}

export interface HaproxyService {
  readonly name: string;
  /** address:port to listen on */
  readonly accept: string;
  /** address:port to forward to */
  readonly connect: string;
}

/**
 * haproxy.cfg text of one side of the pair. The server side terminates TLS on its `bind` lines
 * and forwards plaintext; the client side accepts plaintext and originates TLS on its `server`
 * lines. Both demand and verify the peer's certificate.
 */
export function haproxyPairConfig(o: { client: boolean; files: Pick<TlsFiles, 'combined' | 'ca'>; services: readonly HaproxyService[]; maxconn?: number }): string {
  if (o.services.length === 0) throw new RangeError('haproxy pair: no services');
  const tls = `ssl crt ${o.files.combined} ca-file ${o.files.ca} verify required`;
  const lines = [
    'global',
    `  maxconn ${o.maxconn ?? 4096}`,
    '  ssl-default-bind-options ssl-min-ver TLSv1.3',
    '  ssl-default-server-options ssl-min-ver TLSv1.3',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    // idle connections of the memory and latency steps stay open between uses
    '  timeout client 600s',
    '  timeout server 600s',
  ];
  for (const s of o.services) {
    lines.push(
      `frontend ${s.name}`,
      `  bind ${s.accept}${o.client ? '' : ` ${tls}`}`,
      `  default_backend ${s.name}-out`,
      `backend ${s.name}-out`,
      `  server ${s.name} ${s.connect}${o.client ? ` ${tls}` : ''}`,
    );
  }
  return lines.join('\n') + '\n';
}

export async function startHaproxyPair(o: {
  cluster: Cluster; client: Pod; server: Pod; dir: string; haproxy: string; files: PairFiles;
}): Promise<HaproxyPair> {
  const serverCfg = join(o.dir, 'haproxy-pair-server.cfg');
  const clientCfg = join(o.dir, 'haproxy-pair-client.cfg');
  writeFileSync(serverCfg, haproxyPairConfig({
    client: false, files: o.files.server,
    services: SERVICES.map((s) => ({ name: s, accept: `${o.server.ip}:${SERVER_PORTS[s]}`, connect: `127.0.0.1:${APP_PORTS[s]}` })),
  }));
  writeFileSync(clientCfg, haproxyPairConfig({
    client: true, files: o.files.client,
    services: SERVICES.map((s) => ({ name: s, accept: `127.0.0.1:${CLIENT_PORTS[s]}`, connect: `${o.server.ip}:${SERVER_PORTS[s]}` })),
  }));
  const children: ChildProcess[] = [];
  const stop = async () => { await Promise.all(children.map((c) => stopChild(c))); };
  try {
    // -db: foreground, no daemon, one process (its threads) whose RSS the memory step reads
    const srv = o.cluster.spawn(o.server, [o.haproxy, '-db', '-f', serverCfg]);
    children.push(srv);
    const srvTail = new OutputTail(srv);
    const cli = o.cluster.spawn(o.client, [o.haproxy, '-db', '-f', clientCfg]);
    children.push(cli);
    const cliTail = new OutputTail(cli);
    try {
      await waitPort(o.cluster, o.server, o.server.ip, SERVER_PORTS.echo, 'haproxy server');
      await waitPort(o.cluster, o.client, '127.0.0.1', CLIENT_PORTS.echo, 'haproxy client');
      // one exchange through both proves the handshake and both chain checks
      await waitEcho(o.cluster, o.client, '127.0.0.1', CLIENT_PORTS.echo, 'haproxy path', 10_000);
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
