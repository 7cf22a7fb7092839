/**
 * The server side every path talks to, identical for all of them: a TCP echo server (latency,
 * connection rate, memory), iperf3 (throughput) and haproxy with a fixed 1 kB body (wrk). They
 * listen on every address of the server pod, so direct, stunnel (from 127.0.0.1) and the agent
 * (from the client's address) reach the same processes.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Place, Pod } from '../../src/local/index.js';
import { BenchError } from '../common/errors.js';
import { OutputTail, stopChild, waitForLine } from '../common/proc.js';
import { ECHO_PROBE, ECHO_SERVER, PORT_WAIT, haproxyConfig } from './pod-scripts.js';

export const APP_PORTS = { iperf: 5201, echo: 7000, http: 8080 } as const;
/** body of every HTTP response, bytes */
export const HTTP_BODY_BYTES = 1024;

export interface Apps {
  stop(): Promise<void>;
}

/** Waits until `host:port` accepts connections, as seen from `from`. */
export async function waitPort(cluster: Cluster, from: Place, host: string, port: number, what: string, timeoutMs = 15_000): Promise<void> {
  const r = await cluster.exec(from, [process.execPath, '-e', PORT_WAIT, host, String(port), String(timeoutMs)], { timeoutMs: timeoutMs + 10_000 });
  if (r.code !== 0) throw new BenchError(what, `${host}:${port} ${r.stderr.trim() || `exit ${r.code}`}`);
}

/** Waits until one echo exchange through `host:port` works, as seen from `from`. */
export async function waitEcho(cluster: Cluster, from: Place, host: string, port: number, what: string, timeoutMs = 20_000): Promise<void> {
  const r = await cluster.exec(from, [process.execPath, '-e', ECHO_PROBE, host, String(port), String(timeoutMs)], { timeoutMs: timeoutMs + 10_000 });
  if (r.code !== 0) throw new BenchError(what, `${host}:${port} ${r.stderr.trim() || `exit ${r.code}`}`);
}

export async function startApps(cluster: Cluster, pod: Pod, dir: string, tools: Readonly<Record<string, string>>): Promise<Apps> {
  const children: ChildProcess[] = [];
  const tails: OutputTail[] = [];
  const spawn = (argv: string[]) => {
    const c = cluster.spawn(pod, argv);
    children.push(c);
    tails.push(new OutputTail(c));
    return c;
  };
  const stop = async () => { await Promise.all(children.map((c) => stopChild(c))); };
  try {
    const echo = spawn([process.execPath, '-e', ECHO_SERVER, String(APP_PORTS.echo)]);
    const cfg = join(dir, `haproxy-${pod.name}.cfg`);
    writeFileSync(cfg, haproxyConfig(APP_PORTS.http, HTTP_BODY_BYTES));
    spawn([tools.haproxy!, '-db', '-f', cfg]);
    spawn([tools.iperf3!, '-s', '-p', String(APP_PORTS.iperf)]);
    await waitForLine(echo, /^LISTENING/, `${pod.name}: echo server`);
    await waitPort(cluster, pod, '127.0.0.1', APP_PORTS.http, `${pod.name}: haproxy`);
    await waitPort(cluster, pod, '127.0.0.1', APP_PORTS.iperf, `${pod.name}: iperf3 server`);
    for (const [i, c] of children.entries()) {
      if (c.exitCode !== null) throw new BenchError(`${pod.name}: app ${i}`, `exited: ${tails[i]!.last(3)}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { stop };
}
