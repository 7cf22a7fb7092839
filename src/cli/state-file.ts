/**
 * `.ambit/state.json`: what a running `ambit up` built (pods -> namespaces), so `ambit exec` in
 * another terminal can find a pod. Written atomically (temp file + rename): a reader never sees a
 * half-written file.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MeshError } from '../core/index.js';
import type { ClusterState } from '../local/index.js';

export interface UpState {
  readonly version: 1;
  /** pid of the `ambit up` process (the namespaces carry it too) */
  readonly pid: number;
  readonly startedAt: string;
  readonly cluster: ClusterState;
  /**
   * the mesh programs `ambit up` started (own process groups), so `ambit down` can stop orphans;
   * with their ports on 127.0.0.1 (`ambit status` and `ambit config-dump` read them)
   */
  readonly programs?: ReadonlyArray<UpProgram>;
}

export interface UpProgram {
  /** `control plane`, `agent <node>`, `waypoint <namespace>/<name>` (two during a handover) */
  readonly name: string;
  readonly pid: number;
  readonly ports?: ProgramPorts;
}

export interface ProgramPorts {
  /** /config_dump (agents, waypoints) */
  readonly admin?: number;
  readonly metrics?: number;
  readonly readiness?: number;
  /** the control plane's /ready, /metrics, /debug/syncz, /debug/config_dump */
  readonly status?: number;
}

/** The working directory of `ambit`: --dir, else $AMBIT_DIR, else ./.ambit. */
export function resolveDir(dir: string | undefined): string {
  return resolve(dir ?? process.env.AMBIT_DIR ?? '.ambit');
}

export function configDir(dir: string): string {
  return join(dir, 'config');
}

export function statePath(dir: string): string {
  return join(dir, 'state.json');
}

/** Writes `text` to `path` via a temp file and rename, so watchers never read a partial file. */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}

export function writeState(dir: string, state: UpState): void {
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(statePath(dir), JSON.stringify(state, null, 2) + '\n');
}

/** The state of the last `ambit up`, or undefined when there is none. */
export function readState(dir: string): UpState | undefined {
  let text: string;
  try {
    text = readFileSync(statePath(dir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new MeshError('AMBIT_CONFIG_INVALID', `${statePath(dir)}: cannot read: ${(e as Error).message}`);
  }
  let v: unknown;
  try { v = JSON.parse(text); } catch {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${statePath(dir)}: not valid JSON; remove it (ambit down)`);
  }
  const s = v as Partial<UpState>;
  if (s === null || typeof s !== 'object' || s.version !== 1 || typeof s.pid !== 'number' || !s.cluster || !Array.isArray(s.cluster.pods)) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${statePath(dir)}: not an ambit state file (version 1); remove it (ambit down)`);
  }
  return s as UpState;
}

export function removeState(dir: string): void {
  rmSync(statePath(dir), { force: true });
}
