/**
 * Installing ambit's CNI plugin onto the node, and taking it off again.
 *
 * A host has no Node and none of ambit's files, so what the container runtime executes is made
 * of files the agent copies into the node's CNI bin dir:
 *
 *   <binDir>/ambit-cni                      a `#!/bin/sh` launcher naming the three files below
 *   <binDir>/ambit-cni.d/node-<hash>        the agent's own Node executable (process.execPath)
 *   <binDir>/ambit-cni.d/plugin-<hash>.mjs  the plugin bundled into one file (scripts/bundle-cni.ts)
 *   <binDir>/ambit-cni.d/addon-<hash>.node  the native addon (fd passing; it binds to the OpenSSL
 *                                           and nghttp2 Node exports and links only libc)
 *
 * The payload files are named by their content (sha256), written under a temporary name in the
 * same directory and renamed, and never changed afterwards; the launcher is replaced the same way,
 * last. So the runtime never executes half a file, an upgrade is one rename, and a runtime still
 * running the previous launcher finds the previous files: those the replaced launcher named are
 * kept until the next install (older ones are removed). That is what makes the plugin's own
 * upgrade never block (nor unmesh) a pod.
 *
 * Then the plugin is chained into the runtime's network configuration (cni-conflist.ts), with
 * what it needs: the agent socket and the extra exempt namespaces. `uninstallCni` unchains first
 * (so the runtime stops calling it) and then removes the launcher and its directory, nothing else.
 *
 * The decisions (`planInstall`, `launcherText`, `launcherRefs`, `cniPluginEntry`) are pure; the
 * file work around them is thin. Every failure is AMBIT_CNI_INSTALL naming the file.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, watch, type FSWatcher } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MeshError, errorMessage } from '../../core/index.js';
import { AMBIT_CNI_TYPE, chainInDir, primaryConfFile, unchainInDir } from './cni-conflist.js';

/** The launcher's name in the CNI bin dir (the `type` of ambit's conflist entry). */
export const CNI_PROGRAM = AMBIT_CNI_TYPE;
/** The directory next to it holding Node, the bundle and the addon. */
export const CNI_PROGRAM_DIR = `${AMBIT_CNI_TYPE}.d`;
/** Where the bundle is in ambit's package: `npm run bundle-cni` writes it (the image build runs it). */
export const CNI_BUNDLE_RELATIVE = join('dist', 'cni', 'ambit-cni.mjs');

/** The files the installed program is made of, as paths on this machine (in the agent's image). */
export interface CniPayload {
  /** a Node executable; default process.execPath */
  node: string;
  /** the bundled plugin (scripts/bundle-cni.ts) */
  plugin: string;
  /** the native addon (src/native addonFile()) */
  addon: string;
}

/** What ambit's conflist entry tells the plugin. */
export interface CniPluginSettings {
  /** the agent's CNI socket as the host sees it */
  agentSocket: string;
  /** namespaces whose pods never wait for the agent, beyond kube-system and ambit-system */
  exemptNamespaces?: readonly string[];
}

export type PayloadKind = keyof CniPayload;
/** Content-addressed names of one payload, in ambit-cni.d. */
export type PayloadNames = Readonly<Record<PayloadKind, string>>;

const KINDS: readonly PayloadKind[] = ['node', 'plugin', 'addon'];
const SUFFIX: Readonly<Record<PayloadKind, string>> = { node: '', plugin: '.mjs', addon: '.node' };
const NAME_RE = /\b(?:node|plugin|addon)-[0-9a-f]{16}(?:\.mjs|\.node)?(?![\w.-])/g;
/** Temporary names (ours, of any pid): removed by the next install. */
const TEMP_PREFIX = '.ambit-tmp-';

function fail(file: string, what: string, e?: unknown): MeshError {
  return new MeshError('AMBIT_CNI_INSTALL', `cni install: ${file}: ${what}${e === undefined ? '' : `: ${errorMessage(e)}`}`, e === undefined ? undefined : { cause: e });
}

/** The name of a payload file with content hash `sha256` (hex). */
export function payloadName(kind: PayloadKind, sha256: string): string {
  if (!/^[0-9a-f]{16,}$/.test(sha256)) throw new MeshError('AMBIT_BUG', `cni install: bad hash ${JSON.stringify(sha256)}`);
  return `${kind}-${sha256.slice(0, 16)}${SUFFIX[kind]}`;
}

/**
 * The launcher. It runs the copied Node on the bundle with the addon named explicitly, and with
 * NODE_OPTIONS cleared: whatever the runtime's environment holds must not change how the plugin
 * runs. Relative to its own path, so the bin dir may be mounted anywhere.
 */
export function launcherText(n: PayloadNames): string {
  for (const k of KINDS) if (!n[k].match(NAME_RE)) throw new MeshError('AMBIT_BUG', `cni install: bad ${k} name ${JSON.stringify(n[k])}`);
  return [
    '#!/bin/sh',
    '# ambit-cni: the CNI plugin of the ambit node agent. Written by the agent; replaced whole on upgrade,',
    '# removed by `ambit agent --cni-uninstall`. The files it names are never changed once written.',
    `d="$(dirname "$0")/${CNI_PROGRAM_DIR}"`,
    `NODE_OPTIONS= AMBIT_NATIVE_ADDON="$d/${n.addon}" exec "$d/${n.node}" "$d/${n.plugin}" "$@"`,
    '',
  ].join('\n');
}

/** The payload files a launcher names (none for a text that is not ours). */
export function launcherRefs(text: string | undefined): string[] {
  return text === undefined ? [] : [...new Set(text.match(NAME_RE) ?? [])];
}

export interface InstallPlan {
  /** payload files to copy in (not there yet) */
  readonly copy: readonly PayloadKind[];
  /** the launcher to write, or undefined when the installed one is already it */
  readonly launcher: string | undefined;
  /** names in ambit-cni.d to remove: neither the new launcher's nor the replaced one's, or temporaries */
  readonly remove: readonly string[];
}

/**
 * From what is installed (the launcher's text, the names in ambit-cni.d) and the wanted payload:
 * what to copy, whether to replace the launcher, and what to remove. Files the replaced launcher
 * names stay (a runtime may be running it right now); anything older goes.
 */
export function planInstall(installed: { launcher: string | undefined; files: readonly string[] }, wanted: PayloadNames): InstallPlan {
  const text = launcherText(wanted);
  const keep = new Set([...KINDS.map((k) => wanted[k]), ...launcherRefs(installed.launcher)]);
  const present = new Set(installed.files);
  return {
    copy: KINDS.filter((k) => !present.has(wanted[k])),
    launcher: installed.launcher === text ? undefined : text,
    remove: installed.files.filter((f) => f.startsWith(TEMP_PREFIX) || !keep.has(f)).sort(),
  };
}

/** ambit's entry in the runtime's plugin list. */
export function cniPluginEntry(s: CniPluginSettings): Record<string, unknown> {
  return {
    type: AMBIT_CNI_TYPE,
    agentSocket: s.agentSocket,
    ...(s.exemptNamespaces && s.exemptNamespaces.length > 0 ? { exemptNamespaces: [...s.exemptNamespaces] } : {}),
  };
}

// === file work ===

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  } catch (e) {
    throw fail(file, 'cannot read', e);
  }
  return h.digest('hex');
}

async function readIfThere(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fail(file, 'cannot read', e);
  }
}

/** `write` fills a temporary file next to `target`; it gets mode 0755 and is renamed over `target`. */
async function replaceExecutable(target: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = join(dirname(target), `${TEMP_PREFIX}${process.pid}-${target.split('/').pop()!}`);
  try {
    await write(tmp);
    await chmod(tmp, 0o755);
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw fail(target, 'cannot write', e);
  }
}

/** The bundle in ambit's package (found by walking up from this file to package.json). */
export function defaultPluginBundle(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, CNI_BUNDLE_RELATIVE);
    const up = dirname(dir);
    if (up === dir) throw fail(fileURLToPath(import.meta.url), 'no package.json above it (where is the plugin bundle?)');
    dir = up;
  }
}

export interface CniInstallOptions {
  /** the node's CNI bin dir as the agent sees it (a hostPath of /opt/cni/bin) */
  binDir: string;
  /** the node's CNI conf dir as the agent sees it (a hostPath of /etc/cni/net.d) */
  confDir: string;
  payload: CniPayload;
  plugin: CniPluginSettings;
}

/**
 * Installs (or upgrades) the program in `binDir`; returns the launcher's path. Idempotent: an
 * unchanged payload writes nothing.
 */
export async function installCniProgram(binDir: string, payload: CniPayload): Promise<string> {
  const dir = join(binDir, CNI_PROGRAM_DIR);
  const launcherPath = join(binDir, CNI_PROGRAM);
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw fail(dir, 'cannot create', e);
  }
  const names = {} as Record<PayloadKind, string>;
  for (const k of KINDS) {
    if (!existsSync(payload[k])) throw fail(payload[k], `the plugin's ${k} file is missing${k === 'plugin' ? ' (build it with `npm run bundle-cni`)' : ''}`);
    names[k] = payloadName(k, await sha256(payload[k]));
  }
  let files: string[];
  try {
    files = await readdir(dir);
  } catch (e) {
    throw fail(dir, 'cannot list', e);
  }
  const plan = planInstall({ launcher: await readIfThere(launcherPath), files }, names);
  for (const k of plan.copy) await replaceExecutable(join(dir, names[k]), (tmp) => copyFile(payload[k], tmp));
  if (plan.launcher !== undefined) {
    const text = plan.launcher;
    await replaceExecutable(launcherPath, (tmp) => writeFile(tmp, text, { mode: 0o755 }));
  }
  for (const f of plan.remove) await rm(join(dir, f), { force: true, recursive: true }).catch(() => undefined);
  return launcherPath;
}

/**
 * Runs the installed program as a runtime would for CNI_COMMAND=VERSION and checks its answer:
 * what was copied runs (no truncated file, no noexec mount, the addon path right). This runs it in
 * the agent's container, not on the host: the host's own libraries are not checked. Throws
 * AMBIT_CNI_INSTALL with what the program printed.
 */
export function verifyCniProgram(program: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(program, [], { env: { CNI_COMMAND: 'VERSION', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, timeout: timeoutMs, maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
      let ok = false;
      try {
        const v = JSON.parse(stdout) as { supportedVersions?: unknown };
        ok = Array.isArray(v.supportedVersions) && v.supportedVersions.length > 0;
      } catch { /* not JSON */ }
      if (err || !ok) {
        reject(fail(program, `CNI_COMMAND=VERSION does not answer as the plugin: ${err ? errorMessage(err) : 'no supportedVersions'}: ${(stdout + stderr).trim().slice(0, 500)}`));
        return;
      }
      resolve();
    });
  });
}

/** Chains the plugin into the runtime's configuration in `confDir`; returns the file's path. */
export function chainCni(confDir: string, plugin: CniPluginSettings): string {
  try {
    return chainInDir(confDir, cniPluginEntry(plugin));
  } catch (e) {
    if (e instanceof MeshError) throw new MeshError('AMBIT_CNI_INSTALL', `cni install: ${e.message}`, { cause: e });
    throw fail(confDir, 'cannot chain the plugin', e);
  }
}

/** Whether `confDir` holds a network configuration the plugin can be chained into. */
export async function hasNetworkConfig(confDir: string): Promise<boolean> {
  try {
    return primaryConfFile(await readdir(confDir)) !== undefined;
  } catch {
    return false;
  }
}

/**
 * Keeps the plugin chained while the agent runs: the main CNI plugin (Calico, Cilium, flannel)
 * rewrites its configuration when it restarts or upgrades, and ambit's entry goes with it, which
 * would let pods start outside the mesh. Every change in `confDir` re-chains (a no-op when the
 * entry is there: nothing is written, so its own rename does not loop). Also waits for the first
 * configuration on a node whose main plugin has not written one yet. `onError` gets failures.
 */
export function keepChained(confDir: string, plugin: CniPluginSettings, on: { chained?: (file: string) => void; error: (e: unknown) => void }): { close(): void } {
  let running = false;
  let again = false;
  let closed = false;
  const pass = () => {
    if (closed) return;
    if (running) { again = true; return; }
    running = true;
    void (async () => {
      do {
        again = false;
        if (!(await hasNetworkConfig(confDir))) continue;
        try {
          on.chained?.(chainCni(confDir, plugin));
        } catch (e) {
          on.error(e);
        }
      } while (again && !closed);
      running = false;
    })();
  };
  let w: FSWatcher | undefined;
  try {
    w = watch(confDir, { persistent: false }, pass);
    w.on('error', (e) => on.error(fail(confDir, 'cannot watch', e)));
  } catch (e) {
    on.error(fail(confDir, 'cannot watch', e));
  }
  pass();
  return { close() { closed = true; w?.close(); } };
}

/**
 * Resolves once the plugin is chained into `confDir`: at once when a configuration is there,
 * else when the main plugin writes one. Rejects with the chaining's error (a file that is not
 * JSON, a directory that cannot be written).
 */
export async function waitAndChain(confDir: string, plugin: CniPluginSettings, signal?: AbortSignal): Promise<string> {
  for (;;) {
    if (await hasNetworkConfig(confDir)) return chainCni(confDir, plugin);
    await new Promise<void>((resolve, reject) => {
      let w: FSWatcher;
      const done = () => { w.close(); signal?.removeEventListener('abort', onAbort); resolve(); };
      const onAbort = () => { w.close(); reject(fail(confDir, 'stopped while waiting for the main CNI plugin\'s configuration')); };
      try {
        w = watch(confDir, { persistent: false }, done);
      } catch (e) {
        reject(fail(confDir, 'cannot watch', e));
        return;
      }
      w.on('error', (e) => { w.close(); reject(fail(confDir, 'cannot watch', e)); });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) onAbort();
      // written between the check and the watch
      void hasNetworkConfig(confDir).then((yes) => { if (yes) done(); });
    });
  }
}

/** Installs the program, then chains it (waiting for the main plugin's configuration if needed). */
export async function installCni(o: CniInstallOptions, signal?: AbortSignal): Promise<{ program: string; conf: string }> {
  const program = await installCniProgram(o.binDir, o.payload);
  const conf = await waitAndChain(o.confDir, o.plugin, signal);
  return { program, conf };
}

/**
 * Takes the plugin off the node: out of the runtime's configuration first (from then on no pod
 * waits for the agent), then the launcher and ambit-cni.d. Nothing else in either directory is
 * touched. Returns what was changed.
 */
export async function uninstallCni(o: { binDir: string; confDir: string }): Promise<{ conf: string | undefined; removed: string[] }> {
  let conf: string | undefined;
  try {
    conf = existsSync(o.confDir) ? unchainInDir(o.confDir) : undefined;
  } catch (e) {
    throw e instanceof MeshError ? new MeshError('AMBIT_CNI_INSTALL', `cni uninstall: ${e.message}`, { cause: e }) : fail(o.confDir, 'cannot unchain the plugin', e);
  }
  const removed: string[] = [];
  for (const p of [join(o.binDir, CNI_PROGRAM), join(o.binDir, CNI_PROGRAM_DIR)]) {
    if (!existsSync(p)) continue;
    try {
      await rm(p, { recursive: true, force: true });
    } catch (e) {
      throw fail(p, 'cannot remove', e);
    }
    removed.push(p);
  }
  return { conf, removed };
}
