/**
 * Chaining `ambit cni` into a node's CNI network configuration, and taking it out again.
 *
 * The container runtime uses the lexically first `*.conf`, `*.conflist` or `*.json` file of its
 * configuration directory (containerd, CRI-O). ambit's plugin is appended to that file's plugin
 * list (a single-plugin `.conf` becomes a `.conflist` of it plus ours), everything else in it is
 * kept as it was, and the file is replaced atomically (a temporary file in the same directory,
 * then rename), so the runtime never reads half a file. Chaining again replaces ambit's entry
 * (an upgrade changes its settings); unchaining removes only entries of ambit's type.
 *
 * The decisions (`chainPlugin`, `unchainPlugin`, `primaryConfFile`) are pure; `chainInDir` and
 * `unchainInDir` do the file work; the agent runs them through cni-install.ts (at start, and
 * again whenever the directory changes), with the plugin program installed in the CNI bin dir.
 */
import { readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MeshError } from '../../core/index.js';

/** `type` of ambit's entry in a plugin list (the name of the program in the CNI bin dir). */
export const AMBIT_CNI_TYPE = 'ambit-cni';
/** Network configuration files are small; a larger one is refused rather than rewritten. */
export const MAX_CONF_BYTES = 1024 * 1024;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function bad(file: string, msg: string): MeshError {
  return new MeshError('AMBIT_CONFIG_INVALID', `cni config ${file}: ${msg}`);
}

function parse(file: string, text: string): Obj {
  if (Buffer.byteLength(text) > MAX_CONF_BYTES) throw bad(file, `larger than ${MAX_CONF_BYTES} bytes`);
  let v: unknown;
  try { v = JSON.parse(text); } catch (e) { throw bad(file, `not JSON: ${(e as Error).message}`); }
  if (!isObj(v)) throw bad(file, 'not a JSON object');
  return v;
}

/** The file the runtime reads: the lexically first `.conf`, `.conflist` or `.json` (undefined when none). */
export function primaryConfFile(names: readonly string[]): string | undefined {
  return names.filter((n) => /\.(conf|conflist|json)$/.test(n) && !n.startsWith('.')).sort()[0];
}

/**
 * The network configuration `text` (of `file`) with ambit's plugin appended as the last entry;
 * any earlier ambit entry is dropped first. A single-plugin configuration (`type` at the top)
 * becomes a list of it and ours. Returns the new text (2-space JSON, trailing newline).
 */
export function chainPlugin(file: string, text: string, plugin: Readonly<Obj>): string {
  if (plugin.type !== AMBIT_CNI_TYPE) throw new MeshError('AMBIT_BUG', `cni chain: plugin type must be ${AMBIT_CNI_TYPE}`);
  const conf = parse(file, text);
  let list: Obj;
  if (Array.isArray(conf.plugins)) {
    list = conf;
  } else if (typeof conf.type === 'string') {
    const { cniVersion, name, ...rest } = conf;
    list = { cniVersion, name, plugins: [rest] };
  } else {
    throw bad(file, 'neither a plugin list (plugins) nor a single plugin (type)');
  }
  const plugins = (list.plugins as unknown[]).filter((p) => !(isObj(p) && p.type === AMBIT_CNI_TYPE));
  if (plugins.length === 0) throw bad(file, 'no main plugin to chain after');
  return `${JSON.stringify({ ...list, plugins: [...plugins, { ...plugin }] }, null, 2)}\n`;
}

/** `text` without ambit's entries, or undefined when it holds none (nothing to write). */
export function unchainPlugin(file: string, text: string): string | undefined {
  const conf = parse(file, text);
  if (!Array.isArray(conf.plugins)) return undefined;
  const plugins = (conf.plugins as unknown[]).filter((p) => !(isObj(p) && p.type === AMBIT_CNI_TYPE));
  if (plugins.length === conf.plugins.length) return undefined;
  return `${JSON.stringify({ ...conf, plugins }, null, 2)}\n`;
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.ambit-${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}

/**
 * Chains ambit's plugin into the runtime's configuration file in `dir`. A `.conf` is replaced by a
 * `.conflist` of the same stem (written first, so the directory always holds a usable file).
 * Returns the path written.
 */
export function chainInDir(dir: string, plugin: Readonly<Obj>): string {
  const primary = primaryConfFile(readdirSync(dir));
  if (!primary) throw new MeshError('AMBIT_CONFIG_INVALID', `cni config dir ${dir}: no network configuration yet (the main CNI plugin installs one)`);
  const before = readFileSync(join(dir, primary), 'utf8');
  const text = chainPlugin(primary, before, plugin);
  const target = primary.endsWith('.conf') ? `${primary}list` : primary;
  // already chained as asked: nothing is written (a watcher of the directory sees no change)
  if (target === primary && text === before) return join(dir, target);
  writeAtomic(join(dir, target), text);
  if (target !== primary) rmSync(join(dir, primary), { force: true });
  return join(dir, target);
}

/** Removes ambit's entries from the runtime's configuration file in `dir`; returns the path changed, if any. */
export function unchainInDir(dir: string): string | undefined {
  const primary = primaryConfFile(readdirSync(dir));
  if (!primary) return undefined;
  const text = unchainPlugin(primary, readFileSync(join(dir, primary), 'utf8'));
  if (text === undefined) return undefined;
  writeAtomic(join(dir, primary), text);
  return join(dir, primary);
}
