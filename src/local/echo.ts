/** Starting echo-server.ts inside a pod and waiting until it listens. */
import type { ChildProcess } from 'node:child_process';
import { MeshError } from '../core/index.js';
import type { Cluster, Place } from './cluster.js';

export interface EchoOptions {
  /** HTTP port; default 8080 */
  readonly port?: number;
  /** raw TCP echo port, 0 for none; default 9090 */
  readonly tcpPort?: number;
  /** reported as `name`; default the pod name */
  readonly name?: string;
  /** reported as `version`; default the name */
  readonly version?: string;
  /** give up waiting for the listening line after this many ms; default 30_000 */
  readonly startTimeoutMs?: number;
}

export interface EchoHandle {
  readonly child: ChildProcess;
  readonly http: number;
  readonly tcp: number;
  /** SIGTERM and wait for the exit */
  stop(): Promise<void>;
}

/**
 * The argv that runs the echo server with this Node binary: the compiled .js next to this file,
 * or, when running from TypeScript sources (tests), the .ts through tsx's loader (resolved to a
 * file URL so the child does not depend on its working directory).
 */
export function echoServerCommand(args: { port?: number; tcpPort?: number; name?: string; version?: string } = {}): string[] {
  const fromSource = import.meta.url.endsWith('.ts');
  const script = new URL(fromSource ? './echo-server.ts' : './echo-server.js', import.meta.url);
  const argv = [process.execPath];
  if (fromSource) argv.push('--import', import.meta.resolve('tsx'));
  argv.push(script.pathname, '--port', String(args.port ?? 8080), '--tcp-port', String(args.tcpPort ?? 9090));
  if (args.name !== undefined) argv.push('--name', args.name);
  if (args.version !== undefined) argv.push('--version', args.version);
  return argv;
}

const MAX_STARTUP_OUTPUT = 64 * 1024;

/** Spawns the echo server in `place` and resolves once it reports that it listens. */
export function startEchoServer(cluster: Cluster, place: Place, opts: EchoOptions = {}): Promise<EchoHandle> {
  const defaultName = typeof place === 'string' ? place : 'name' in place ? place.name : 'echo';
  const name = opts.name ?? defaultName;
  const child = cluster.spawn(place, echoServerCommand({
    port: opts.port ?? 8080, tcpPort: opts.tcpPort ?? 9090, name, version: opts.version ?? name,
  }));
  return new Promise<EchoHandle>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => fail(`did not start within ${opts.startTimeoutMs ?? 30_000} ms`), opts.startTimeoutMs ?? 30_000);
    const fail = (why: string): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new MeshError('AMBIT_NETNS', `echo server ${name}: ${why}${err ? `: ${err.trim()}` : ''}`));
    };
    child.stderr?.on('data', (d: Buffer) => { if (err.length < MAX_STARTUP_OUTPUT) err += d.toString(); });
    child.once('error', (e) => fail(e.message));
    child.once('exit', (code, sig) => fail(`exited (${code ?? sig}) before listening`));
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.length > MAX_STARTUP_OUTPUT) { fail('too much output before the listening line'); return; }
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      let msg: { event?: string; http?: number; tcp?: number };
      try { msg = JSON.parse(out.slice(0, nl)) as typeof msg; } catch { fail(`unexpected output ${out.slice(0, nl)}`); return; }
      if (msg.event !== 'listening') return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      child.stdout?.removeAllListeners('data');
      child.stdout?.resume();
      resolve({
        child, http: msg.http ?? 0, tcp: msg.tcp ?? 0,
        stop: () => new Promise<void>((res) => {
          if (child.exitCode !== null || child.signalCode !== null) { res(); return; }
          child.once('exit', () => res());
          child.kill('SIGTERM');
        }),
      });
    });
  });
}
