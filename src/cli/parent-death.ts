/**
 * A program `ambit up` started must not outlive it, even when `up` is SIGKILLed (its 'exit'
 * handler, which stops the programs, never runs then). `Program` names `up`'s pid in
 * AMBIT_PARENT_PID; the program asks the kernel for a signal when its parent dies
 * (prctl(PR_SET_PDEATHSIG)) and, if the parent is already gone, does not start at all.
 *
 * PR_SET_PDEATHSIG fires when the parent *thread* that forked the child exits, not the parent
 * process. `up` spawns every program with child_process.spawn on its main JS thread, and libuv's
 * uv_spawn (Node 20: libuv 1.46) calls fork() synchronously on the calling thread (no helper
 * thread, no posix_spawn on Linux): the forking thread is the main thread, which lives exactly
 * as long as the process. A program spawned from a worker thread would get the signal when that
 * worker ends: spawn programs from the main thread only.
 *
 * A program run without the variable (a DaemonSet, by hand) is unaffected.
 */
import { MeshError } from '../core/index.js';

export const PARENT_PID_ENV = 'AMBIT_PARENT_PID';

/**
 * The signal a program gets when `ambit up` dies: SIGINT, as `up`'s own teardown sends the
 * agents (stop accepting now, let open connections finish, clean up, exit). SIGTERM would keep an
 * agent serving until a successor took over, which with `up` gone never comes: it would hold its
 * ports for its whole drain deadline. The control plane and the waypoints treat both alike.
 */
export const PARENT_DEATH_SIGNAL: NodeJS.Signals = 'SIGINT';

/** The environment of a program `ambit up` (this process) starts. */
export function childOfThisProcess(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, [PARENT_PID_ENV]: String(process.pid) };
}

/**
 * In a program started by `ambit up` (AMBIT_PARENT_PID set): arms the parent-death signal and
 * removes the variable from `env` (the program's own children are not `up`'s). Returns why the
 * program must not start (its parent is already gone), or undefined.
 */
export async function bindToParent(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const text = env[PARENT_PID_ENV];
  if (text === undefined) return undefined;
  delete env[PARENT_PID_ENV];
  const want = Number(text);
  if (!/^[1-9][0-9]*$/.test(text) || !Number.isSafeInteger(want)) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${PARENT_PID_ENV}: ${JSON.stringify(text)} is not a process id`);
  }
  // loaded here only: `ambit --help` and the short commands never load the addon
  const { setParentDeathSignal } = await import('../native/index.js');
  const ppid = setParentDeathSignal(PARENT_DEATH_SIGNAL);
  // read after the prctl: a parent that died before it is seen here, one that dies after it signals
  if (ppid !== want) return `the ambit up that started this program (pid ${want}) is gone (parent now pid ${ppid}); not starting`;
  return undefined;
}
