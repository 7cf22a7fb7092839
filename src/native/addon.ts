/**
 * Loading the compiled addon. Lazy: importing src/native must not fail on a machine where the
 * addon is not built (pure modules and their tests import the agent's types); only a call does.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MeshError } from '../core/index.js';

/** The addon's exports, exactly as native/src/addon.c defines them (arguments checked in C too). */
export interface RawAddon {
  openNetns(path: string): number;
  netnsId(netns: string | number): string;
  listenInNetns(netns: string | number, opts: object): number;
  connectInNetns(netns: string | number, opts: object): Promise<number>;
  originalDst(fd: number): { address: string; port: number; family: 4 | 6; peer?: { address: string; port: number; family: 4 | 6 } };
  setMark(fd: number, mark: number): void;
  setTransparent(fd: number): void;
  closeFd(fd: number): void;
  raiseFdLimit(): { soft: number; hard: number; before: number };
  setParentDeathSignal(sig: number): number;
  recvWithFds(fd: number, maxBytes: number, maxFds: number, timeoutMs: number): Promise<{ data: Buffer; fds: number[] } | null>;
  sendWithFds(fd: number, data: Buffer, fds: number[]): void;
  unixConnect(path: string, kind?: string): number;
  unixSocketPair(kind?: string): [number, number];
  versions(): NativeVersions;
  versionsCheck(nghttp2Num: number, opensslNum: number): string | null;
}

/** The nghttp2 and OpenSSL the addon binds to (Node's own copies) and the least it needs (checked at load). */
export interface NativeVersions { nghttp2: string; nghttp2Min: string; openssl: string; opensslMin: string }

const RELATIVE = join('native', 'build', 'Release', 'ambit_native.node');

/** Walks up from this file: the same code runs from src/native (tsx) and dist/src/native (tsc). */
function findAddon(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, RELATIVE);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

let cached: RawAddon | undefined;
let loadError: Error | undefined;

/**
 * `AMBIT_NATIVE_ADDON` names another build of the addon (the sanitizer build of `npm run sanitize`).
 * Read here, not passed in by an entry point: the addon is one per process and is loaded before
 * any program's config exists (tests load it directly).
 */
/** The file the addon is (or would be) loaded from; undefined when there is none. The node agent copies it next to the CNI plugin it installs. */
export function addonFile(): string | undefined {
  // eslint-disable-next-line no-restricted-properties -- see the comment above
  const override = process.env['AMBIT_NATIVE_ADDON'];
  return override !== undefined && override !== '' ? override : findAddon();
}


export function addon(): RawAddon {
  if (cached) return cached;
  if (!loadError) {
    const path = addonFile();
    if (path === undefined) {
      loadError = new MeshError('AMBIT_NATIVE_UNAVAILABLE',
        `native addon: ${RELATIVE} not found; build it with \`npm run install\` (node-gyp rebuild --directory native)`);
    } else {
      try {
        cached = createRequire(import.meta.url)(path) as RawAddon;
        return cached;
      } catch (e) {
        loadError = new MeshError('AMBIT_NATIVE_UNAVAILABLE', `native addon: cannot load ${path}: ${(e as Error).message}`, { cause: e });
      }
    }
  }
  throw loadError;
}

/** True when the addon can be loaded (Linux, built). */
export function nativeAvailable(): boolean {
  try {
    addon();
    return true;
  } catch {
    return false;
  }
}
