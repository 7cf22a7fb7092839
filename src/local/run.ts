/**
 * Running `ip` and friends. Always execFile with an argv array (never a shell), so names can
 * never be interpreted as shell syntax; names are validated before they get here anyway.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { MeshError } from '../core/index.js';

/** Output cap of a command we run for bookkeeping; `ip` output is tiny. */
const MAX_OUTPUT = 4 * 1024 * 1024;

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

export interface RunOptions {
  /** written to the child's stdin, then closed */
  readonly input?: string;
  /** kill the command after this many ms; default 60_000 */
  readonly timeoutMs?: number;
}

/** Runs a command and resolves with its output and exit code (non-zero does not reject). */
export function runCommand(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { maxBuffer: MAX_OUTPUT, timeout: opts.timeoutMs ?? 60_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          // spawn failure (ENOENT), buffer overflow or timeout: there is no exit code to report
          reject(new MeshError('AMBIT_NETNS', `${file} ${args.join(' ')}: ${err.message}`, { cause: err }));
          return;
        }
        resolve({ stdout, stderr, code: err ? (err.code as number) : 0 });
      });
    // A command that exits before reading its input (`ip -n <gone> -batch -`) closes the pipe:
    // the write then fails with EPIPE, an 'error' event that would crash the process unhandled.
    // The exit code already reports the failure.
    child.stdin?.on('error', () => {});
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Runs a command that must succeed; rejects with AMBIT_NETNS naming the command and its stderr. */
export async function mustRun(file: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await runCommand(file, args, opts);
  if (r.code !== 0) {
    const why = r.stderr.trim() || r.stdout.trim() || `exit code ${r.code}`;
    throw new MeshError('AMBIT_NETNS', `${file} ${args.join(' ')} failed: ${why}`);
  }
  return r.stdout;
}

/**
 * Runs `ip` commands as one batch (one process instead of dozens). With `netns`, every command
 * runs inside that namespace (`ip -n`).
 */
export async function ipBatch(netns: string | undefined, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  const args = netns ? ['-n', netns, '-batch', '-'] : ['-batch', '-'];
  await mustRun('ip', args, { input: lines.join('\n') + '\n' });
}

/** Names of all network namespaces on the machine (`ip netns list` prints "name (id: n)"). */
export async function listNetns(): Promise<string[]> {
  const out = await mustRun('ip', ['netns', 'list']);
  return parseNetnsList(out);
}

export function listNetnsSync(): string[] {
  return parseNetnsList(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }));
}

function parseNetnsList(out: string): string[] {
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n.length > 0);
}

/** Deletes a namespace; a namespace that is already gone is fine (another cleaner won the race). */
export async function deleteNetns(name: string): Promise<void> {
  const r = await runCommand('ip', ['netns', 'del', name]);
  if (r.code !== 0 && !/No such file|not found/i.test(r.stderr)) {
    throw new MeshError('AMBIT_NETNS', `ip netns del ${name} failed: ${r.stderr.trim()}`);
  }
}

/** Synchronous delete for 'exit' handlers, where nothing asynchronous runs any more. Never throws. */
export function deleteNetnsSync(name: string): void {
  try { execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' }); } catch { /* already gone */ }
}

/** Runs `argv` inside a namespace and collects its output. */
export function execInNetns(netns: string, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  if (argv.length === 0) return Promise.reject(new MeshError('AMBIT_CONFIG_INVALID', 'exec: empty command'));
  return runCommand('ip', ['netns', 'exec', netns, ...argv], opts);
}

export interface SpawnInNetnsOptions {
  /** default ['ignore', 'pipe', 'pipe'] */
  readonly stdio?: StdioOptions;
  /** working directory of the child; default the current one */
  readonly cwd?: string;
}

/**
 * Starts `argv` inside a namespace as the leader of its own process group, so the whole group
 * can be killed when the namespace goes away. `ip netns exec` execs the command in place, so the
 * child's pid is the command's pid.
 */
export function spawnInNetns(netns: string, argv: readonly string[], opts: SpawnInNetnsOptions = {}): ChildProcess {
  if (argv.length === 0) throw new MeshError('AMBIT_CONFIG_INVALID', 'spawn: empty command');
  return spawn('ip', ['netns', 'exec', netns, ...argv], {
    stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
    detached: true,
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
}

/** True when a process with this pid exists (EPERM means it exists but is not ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
