/**
 * The programs `ambit up` runs as child processes (`ambit control`, `ambit agent`): started with
 * this Node binary and this CLI (compiled, or the TypeScript source through tsx), output to a log
 * file, and watched, so that a program that dies is reported instead of silently missing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, openSync, readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { MeshError } from '../core/index.js';
import { childOfThisProcess } from './parent-death.js';

/**
 * argv prefix that runs this CLI with this Node: `node dist/src/cli/main.js`, or from sources
 * `node --import <tsx> src/cli/main.ts` (absolute paths, so the child's cwd does not matter).
 */
export function selfArgv(): string[] {
  const fromSource = import.meta.url.endsWith('.ts');
  const main = new URL(fromSource ? './main.ts' : './main.js', import.meta.url);
  const argv = [process.execPath];
  if (fromSource) argv.push('--import', import.meta.resolve('tsx'));
  argv.push(main.pathname);
  return argv;
}

/** Bytes of a log file shown when its program fails. */
const TAIL_BYTES = 4096;

/** The last lines of a log file (at most TAIL_BYTES), for error messages. */
export function tailFile(path: string, maxBytes = TAIL_BYTES): string {
  try {
    const size = statSync(path).size;
    const buf = readFileSync(path);
    const text = buf.subarray(Math.max(0, size - maxBytes)).toString('utf8');
    const lines = text.split('\n');
    if (size > maxBytes) lines.shift(); // cut mid-line
    return lines.join('\n').trimEnd();
  } catch {
    return '';
  }
}

export interface ProgramOptions {
  /** shown in messages: "control plane", "agent node-1" */
  readonly name: string;
  /** arguments after the CLI (e.g. ['agent', '--node', 'node-1']) */
  readonly args: readonly string[];
  /** stdout and stderr go here (truncated first: one run per file) */
  readonly logFile: string;
  readonly env?: NodeJS.ProcessEnv;
  /** append to the log file instead of truncating it (a restarted program's successor) */
  readonly append?: boolean;
}

/** A program of the mesh that exited on its own. */
export interface ProgramExit {
  /** "control plane", "agent node-1" */
  readonly name: string;
  readonly pid: number | undefined;
  /** "code 1", "signal SIGKILL" */
  readonly how: string;
  readonly logFile: string;
  /** what follows `ambit restart` to start it again: "control", "agent node-1" */
  readonly restart: string;
}

/** A running program. */
export class Program {
  readonly name: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  /** resolves with a description of the exit ("code 1", "signal SIGKILL") */
  readonly exited: Promise<string>;
  #stopping = false;

  constructor(o: ProgramOptions) {
    this.name = o.name;
    this.logFile = o.logFile;
    // O_APPEND always: an old instance draining and its successor write the same file, and a
    // plain offset of the old one would overwrite the new one's lines
    const fd = openSync(o.logFile, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | (o.append ? 0 : constants.O_TRUNC), 0o644);
    const [file, ...pre] = selfArgv();
    try {
      // Own process group: a Ctrl-C in the terminal reaches `ambit up` only, which then stops the
      // programs in order (agents drain first, then the control plane).
      // AMBIT_PARENT_PID: the program ends when this process dies, SIGKILL included (parent-death.ts;
      // spawned here, on the main thread, which is the thread the kernel watches)
      this.child = spawn(file!, [...pre, ...o.args], { stdio: ['ignore', fd, fd], detached: true, env: childOfThisProcess(o.env ?? process.env) });
    } finally {
      closeSync(fd); // the child has its own copy
    }
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `code ${code ?? '?'}`));
      this.child.once('error', (e) => resolve(`error ${e.message}`));
    });
  }

  get pid(): number | undefined { return this.child.pid; }
  get running(): boolean { return this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined; }
  /** true once stop() was called: an exit after that is expected */
  get stopping(): boolean { return this.#stopping; }

  /** The error for an exit nobody asked for, with the end of the log. */
  failure(how: string): MeshError {
    const tail = tailFile(this.logFile);
    return new MeshError('AMBIT_PROCESS_FAILED', `${this.name} exited (${how}); log ${this.logFile}${tail ? `:\n${tail}` : ''}`);
  }

  /**
   * `signal` (default SIGTERM); SIGKILL if it has not exited after `graceMs`. Resolves once it
   * has exited.
   */
  async stop(graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.#stopping = true;
    if (!this.running) return;
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => { this.child.kill('SIGKILL'); resolve(); }, graceMs);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    await this.exited;
  }

  /** Last resort on process exit: no program outlives `ambit up`. */
  killSync(): void {
    this.#stopping = true;
    if (this.running) this.child.kill('SIGKILL');
  }
}

/** GET http://host:port/path; resolves with status and body (bounded), rejects on network errors. */
export function httpGet(host: string, port: number, path: string, timeoutMs = 5000, maxBytes = 4 * 1024 * 1024): Promise<{ status: number; body: string }> {
  return httpGetAt({ host, port }, path, timeoutMs, maxBytes);
}

/** GET `path` from a TCP address or a unix socket (an agent instance's own admin socket). */
export function httpGetAt(where: { host: string; port: number } | { socketPath: string }, path: string, timeoutMs = 5000, maxBytes = 4 * 1024 * 1024): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ ...where, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > maxBytes) { req.destroy(new Error(`response of ${path} larger than ${maxBytes} bytes`)); return; }
        chunks.push(d);
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
    req.once('error', reject);
    req.end();
  });
}

/**
 * Polls `check` every `intervalMs` until it returns a value, the program exits, or `timeoutMs`
 * passes. The programs offer HTTP status endpoints rather than events to subscribe to, so a
 * short poll is the way to wait for them.
 */
export async function waitFor<T>(what: string, programs: readonly Program[], check: () => Promise<T | undefined>,
  o: { timeoutMs: number; intervalMs?: number; cancelled?: () => string | undefined }): Promise<T> {
  const deadline = Date.now() + o.timeoutMs;
  let last = '';
  // set from the exit callbacks (an object, so the checks below are not narrowed away)
  const seen: { exit?: { p: Program; how: string } } = {};
  for (const p of programs) void p.exited.then((how) => { seen.exit ??= { p, how }; });
  const failIfExited = (): void => {
    if (seen.exit) throw seen.exit.p.failure(seen.exit.how);
    const why = o.cancelled?.();
    if (why) throw new MeshError('AMBIT_PROCESS_FAILED', `${what}: interrupted (${why})`);
  };
  for (;;) {
    failIfExited();
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = (e as Error).message;
    }
    failIfExited();
    if (Date.now() > deadline) {
      const logs = programs.map((p) => p.logFile).join(', ');
      throw new MeshError('AMBIT_PROCESS_FAILED', `${what}: not within ${o.timeoutMs} ms${last ? ` (last: ${last})` : ''}; logs: ${logs}`);
    }
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 100));
  }
}
