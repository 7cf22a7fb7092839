/** The `ambit` command from the sources, as a child process: exit code and both outputs. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { ExecutionContext } from 'ava';
import { fileURLToPath } from 'node:url';

export const MAIN_TS = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface CliRun { code: number | null; stdout: string; stderr: string }

export interface CliOptions {
  /** its working directory (where ./.ambit is looked for); default this process's */
  readonly cwd?: string;
  /** variables of this process's environment the child does not get */
  readonly unset?: readonly string[];
}

/** `env` is added to this process's environment. */
export function runCli(args: readonly string[], env: Readonly<Record<string, string>> = {}, o: CliOptions = {}): Promise<CliRun> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of o.unset ?? []) delete childEnv[k];
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), MAIN_TS, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], env: childEnv, ...(o.cwd !== undefined ? { cwd: o.cwd } : {}),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A running `ambit up` of a test: its process, and its output waited on by pattern. */
export interface UpRun {
  readonly child: ChildProcess;
  /** resolves when up exits */
  readonly exited: Promise<unknown>;
  /** all stdout so far */
  out(): string;
  /** resolves once stdout matched `re`; rejects if up exits first */
  printed(re: RegExp): Promise<void>;
}

/**
 * Starts `ambit up --dir DIR --port-base BASE` and waits for its ready line ("Press Ctrl-C").
 * A teardown of `t` stops it (SIGINT, its own clean-up) if it still runs, then runs
 * `ambit down --dir`, which also removes what a failed start left.
 */
export async function startUp(t: ExecutionContext, dir: string, portBase: number): Promise<UpRun> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), MAIN_TS, 'up', '--dir', dir, '--port-base', String(portBase)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  child.stderr.resume();
  let out = '';
  const waiters = new Set<{ re: RegExp; resolve: () => void }>();
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (c: string) => {
    out += c;
    for (const w of [...waiters]) if (w.re.test(out)) { waiters.delete(w); w.resolve(); }
  });
  const printed = (re: RegExp): Promise<void> => (re.test(out) ? Promise.resolve() : Promise.race([
    new Promise<void>((resolve) => waiters.add({ re, resolve })),
    exited.then(() => { throw new Error(`ambit up exited while waiting for ${re}:\n${out}`); }),
  ]));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) { child.kill('SIGINT'); await exited; }
    await runCli(['down', '--dir', dir]);
  });
  await printed(/Press Ctrl-C/);
  return { child, exited, out: () => out, printed };
}
