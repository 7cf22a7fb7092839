/** `ambit exec TARGET -- CMD...`: run a command inside a pod (or node) of the running `ambit up`. */
import { spawn } from 'node:child_process';
import { MeshError } from '../core/index.js';
import { pidAlive } from '../local/index.js';
import { readState, statePath, type UpState } from './state-file.js';

/**
 * The namespace of TARGET: a pod name, `node/<name>` or `underlay`. Errors list what exists so
 * the user can pick.
 */
export function targetNetns(state: UpState, target: string): string {
  const c = state.cluster;
  if (target === 'underlay') return c.underlay.netnsName;
  if (target.startsWith('node/')) {
    const n = c.nodes.find((x) => x.name === target.slice(5));
    if (!n) throw new MeshError('AMBIT_CONFIG_INVALID', `exec: no node "${target.slice(5)}"; nodes: ${c.nodes.map((x) => x.name).join(', ')}`);
    return n.netnsName;
  }
  const p = c.pods.find((x) => x.name === target);
  if (!p) {
    throw new MeshError('AMBIT_CONFIG_INVALID',
      `exec: no pod "${target}"; pods: ${c.pods.map((x) => x.name).join(', ')} (or node/<name>, underlay)`);
  }
  return p.netnsName;
}

/** Loads the state of a live `ambit up`, or explains why there is none. */
export function liveState(dir: string): UpState {
  const state = readState(dir);
  if (!state) throw new MeshError('AMBIT_NETNS', `no running cluster: ${statePath(dir)} does not exist (start one with: ambit up)`);
  if (!pidAlive(state.pid)) {
    throw new MeshError('AMBIT_NETNS', `the ambit up that wrote ${statePath(dir)} (pid ${state.pid}) is gone; run ambit down, then ambit up`);
  }
  return state;
}

/** Runs the command with the terminal attached; resolves with its exit code. */
export function runExec(dir: string, target: string, cmd: readonly string[]): Promise<number> {
  if (cmd.length === 0) return Promise.reject(new MeshError('AMBIT_CONFIG_INVALID', 'exec: no command; usage: ambit exec POD -- CMD...'));
  const netns = targetNetns(liveState(dir), target);
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, ...cmd], { stdio: 'inherit' });
    child.once('error', (e) => reject(new MeshError('AMBIT_NETNS', `exec: ${e.message}`)));
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + 15 : 1)));
  });
}
