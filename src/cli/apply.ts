/**
 * `ambit apply -f FILE`: check that FILE is YAML made of Kubernetes objects, then copy it into the
 * directory the local control plane watches. The control plane does the semantic checks (and
 * reports them in its log); this catches typos before they get there.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { ConfigError, MeshError } from '../core/index.js';
import { configDir, writeFileAtomic } from './state-file.js';

/** Same cap as the control plane's file source: larger files would be refused there anyway. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_OBJECTS = 10_000;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkObject(source: string, where: string, v: unknown): void {
  const bad = (field: string, msg: string): never => { throw new ConfigError(`${source} ${where}`, field, msg); };
  if (!isRecord(v)) bad('(document)', 'not a mapping; expected a Kubernetes object with apiVersion, kind and metadata');
  const o = v as Record<string, unknown>;
  if (typeof o.apiVersion !== 'string' || o.apiVersion === '') bad('apiVersion', 'missing or not a string');
  if (typeof o.kind !== 'string' || o.kind === '') bad('kind', 'missing or not a string');
  if (!isRecord(o.metadata)) bad('metadata', 'missing or not a mapping');
  const md = o.metadata as Record<string, unknown>;
  if (typeof md.name !== 'string' || md.name === '') bad('metadata.name', 'missing or not a string');
  if (md.namespace !== undefined && typeof md.namespace !== 'string') bad('metadata.namespace', 'not a string');
}

/**
 * Validates manifest text; returns the number of objects. Throws a ConfigError naming the source,
 * the document (and line) and the field.
 */
export function validateManifest(text: string, source: string): number {
  if (Buffer.byteLength(text) > MAX_MANIFEST_BYTES) {
    throw new MeshError('AMBIT_LIMIT', `${source}: larger than ${MAX_MANIFEST_BYTES} bytes`);
  }
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true });
  let count = 0;
  for (const [i, doc] of docs.entries()) {
    const err = doc.errors[0];
    if (err) {
      const pos = lc.linePos(err.pos[0]);
      throw new ConfigError(`${source} document ${i + 1}`, `line ${pos.line}`, err.message.split('\n')[0] ?? 'invalid YAML');
    }
    const v: unknown = doc.toJS({ maxAliasCount: 100 });
    if (v === null || v === undefined) continue; // empty document (e.g. trailing ---)
    const where = `document ${i + 1} (line ${lc.linePos(doc.range[0]).line})`;
    if (isRecord(v) && v.kind === 'List') {
      if (!Array.isArray(v.items)) throw new ConfigError(`${source} ${where}`, 'items', 'a List needs an items array');
      v.items.forEach((item, j) => checkObject(source, `${where} items[${j}]`, item));
      count += v.items.length;
    } else {
      checkObject(source, where, v);
      count++;
    }
    if (count > MAX_OBJECTS) throw new MeshError('AMBIT_LIMIT', `${source}: more than ${MAX_OBJECTS} objects`);
  }
  if (count === 0) throw new ConfigError(source, '(file)', 'no Kubernetes objects in it');
  return count;
}

export interface ApplyResult {
  readonly dest: string;
  readonly objects: number;
}

/**
 * Validates `file` ('-' reads stdin) and copies it to `<dir>/config/`. The name is kept (with a
 * .yaml suffix added when missing, since only *.yaml / *.yml files are read), so applying the
 * same file again replaces the earlier version.
 */
export function applyFile(file: string, dir: string): ApplyResult {
  let text: string;
  try {
    text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (e) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${file}: cannot read: ${(e as Error).message}`);
  }
  const objects = validateManifest(text, file === '-' ? 'stdin' : file);
  let name = file === '-' ? 'stdin.yaml' : basename(file);
  if (!/\.ya?ml$/.test(name)) name += '.yaml';
  // Dotfiles would be skipped by nobody but surprise everybody; make the name visible.
  if (name.startsWith('.')) name = `applied${name}`;
  const out = configDir(dir);
  mkdirSync(out, { recursive: true });
  const dest = join(out, name);
  writeFileAtomic(dest, text);
  return { dest, objects };
}

/** Validates generated manifest text and writes it to `<dir>/config/<name>`; returns the path. */
export function applyText(text: string, name: string, dir: string): string {
  validateManifest(text, name);
  const out = configDir(dir);
  mkdirSync(out, { recursive: true });
  const dest = join(out, name);
  writeFileAtomic(dest, text);
  return dest;
}
