/**
 * Configuration from a directory of YAML files (the local default). Every `*.yaml`/`*.yml` file at the top
 * of the directory is read (multi-document, `kind: List` expanded); the complete set is reported after the
 * initial load and after every change, debounced.
 *
 * Change detection: fs.watch for speed, plus a cheap periodic rescan (names, mtime and size only) because
 * fs.watch misses events on some file systems and after the directory is replaced.
 *
 * A broken file never takes good config away: when a file has a syntax error or a document that is not a
 * Kubernetes object, the error is reported and the objects that file last produced keep serving.
 */
import { constants as fsConstants, watch as fsWatch, type FSWatcher } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { ConfigError, MeshError, errorMessage, logger } from '../../core/index.js';
import { notAnObjectReason, objectKey, watchedKindOf } from './kinds.js';
import type { ConfigSource, KubeObject, Rejection } from './types.js';

const log = logger('control.config.file');

export interface FileSourceOptions {
  /** directory holding the YAML files (not recursive) */
  dir: string;
  /** quiet time after the last change before the set is re-read and reported, ms; default 100 */
  debounceMs?: number;
  /** larger files are refused (their previous objects keep serving), bytes; default 4 MiB */
  maxFileBytes?: number;
  /** at most this many YAML files are read, in lexical order; default 10 000 */
  maxFiles?: number;
  /** interval of the fallback rescan, ms; default 3000 */
  rescanMs?: number;
  /** use fs.watch in addition to the rescan; default true (tests turn it off to exercise the rescan) */
  fsWatch?: boolean;
  /** called for every problem: a Rejection for one object, an Error (ConfigError) for a file or document */
  onError?: (e: Rejection | Error) => void;
}

interface FileState {
  mtimeMs: number;
  size: number;
  /** last good objects of this file, already filtered to watched kinds and namespace-defaulted */
  objects: KubeObject[];
}

type Parsed = { ok: true; objects: KubeObject[] } | { ok: false; errors: Error[] };

export class FileSource implements ConfigSource {
  readonly #dir: string;
  readonly #debounceMs: number;
  readonly #maxFileBytes: number;
  readonly #maxFiles: number;
  readonly #rescanMs: number;
  readonly #fsWatch: boolean;
  readonly #onError: (e: Rejection | Error) => void;
  readonly #files = new Map<string, FileState>();
  #onChange: ((objects: readonly KubeObject[], origin: string) => void) | undefined;
  #watcher: FSWatcher | undefined;
  #rescanTimer: NodeJS.Timeout | undefined;
  #debounceTimer: NodeJS.Timeout | undefined;
  #running = false;
  /** a reload is in progress; another change meanwhile sets #again so nothing is missed */
  #loading: Promise<void> | undefined;
  #again = false;
  #lastEmitted: string | undefined;

  constructor(o: FileSourceOptions) {
    if (!o.dir) throw new ConfigError('FileSource', 'dir', 'is required');
    this.#dir = o.dir;
    this.#debounceMs = o.debounceMs ?? 100;
    this.#maxFileBytes = o.maxFileBytes ?? 4 * 1024 * 1024;
    this.#maxFiles = o.maxFiles ?? 10_000;
    this.#rescanMs = o.rescanMs ?? 3000;
    this.#fsWatch = o.fsWatch ?? true;
    this.#onError = o.onError ?? ((e) => log.warn('config problem', { error: 'message' in e ? e.message : String(e) }));
  }

  get origin(): string { return `file:${this.#dir}`; }

  async start(onChange: (objects: readonly KubeObject[], origin: string) => void): Promise<void> {
    if (this.#running) throw new MeshError('AMBIT_BUG', 'FileSource already started');
    // The directory must exist at start: a typo in --config-dir should fail loudly, not serve nothing.
    const st = await stat(this.#dir).catch((e: unknown) => {
      throw new ConfigError('FileSource', 'dir', `${this.#dir}: ${errorMessage(e)}`);
    });
    if (!st.isDirectory()) throw new ConfigError('FileSource', 'dir', `${this.#dir}: not a directory`);
    this.#running = true;
    this.#onChange = onChange;
    await this.#reload(true);
    if (this.#fsWatch) try {
      this.#watcher = fsWatch(this.#dir, { persistent: false }, () => this.#schedule());
      this.#watcher.on('error', (e) => log.warn('fs.watch failed; relying on rescan', { dir: this.#dir, error: e }));
    } catch (e) {
      log.warn('fs.watch unavailable; relying on rescan', { dir: this.#dir, error: errorMessage(e) });
    }
    this.#rescanTimer = setInterval(() => { void this.#rescan(); }, this.#rescanMs);
    this.#rescanTimer.unref();
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#watcher?.close();
    this.#watcher = undefined;
    clearInterval(this.#rescanTimer);
    clearTimeout(this.#debounceTimer);
    await this.#loading;
  }

  #schedule(): void {
    if (!this.#running) return;
    clearTimeout(this.#debounceTimer);
    this.#debounceTimer = setTimeout(() => { void this.#reload(false); }, this.#debounceMs);
  }

  /** Cheap check: did any file appear, vanish, or change size/mtime? Then schedule a reload. */
  async #rescan(): Promise<void> {
    if (!this.#running || this.#loading) return;
    try {
      const names = await this.#list();
      if (names.length !== this.#files.size || names.some((n) => !this.#files.has(n))) return this.#schedule();
      for (const n of names) {
        const st = await stat(join(this.#dir, n));
        const prev = this.#files.get(n);
        if (!prev || prev.mtimeMs !== st.mtimeMs || prev.size !== st.size) return this.#schedule();
      }
    } catch (e) {
      log.debug('rescan failed', { error: errorMessage(e) });
    }
  }

  async #list(): Promise<string[]> {
    const entries = await readdir(this.#dir, { withFileTypes: true });
    const names = entries
      .filter((e) => (e.isFile() || e.isSymbolicLink()) && /\.ya?ml$/i.test(e.name) && !e.name.startsWith('.'))
      .map((e) => e.name)
      .sort();
    if (names.length > this.#maxFiles) {
      this.#onError(new ConfigError(`directory ${this.#dir}`, 'files', `${names.length} YAML files; only the first ${this.#maxFiles} are read`));
      return names.slice(0, this.#maxFiles);
    }
    return names;
  }

  async #reload(initial: boolean): Promise<void> {
    if (this.#loading) { this.#again = true; return this.#loading; }
    this.#loading = (async () => {
      do {
        this.#again = false;
        try {
          await this.#readAll(initial);
        } catch (e) {
          // Listing the directory failed (removed, permissions): keep serving what we have.
          if (initial) throw new ConfigError('FileSource', 'dir', `${this.#dir}: ${errorMessage(e)}`);
          this.#onError(new ConfigError(`directory ${this.#dir}`, 'files', errorMessage(e)));
        }
        initial = false;
      } while (this.#again && this.#running);
    })();
    try { await this.#loading; } finally { this.#loading = undefined; }
  }

  async #readAll(force: boolean): Promise<void> {
    const names = await this.#list();
    const seen = new Set(names);
    for (const n of [...this.#files.keys()]) if (!seen.has(n)) this.#files.delete(n);
    for (const n of names) {
      const path = join(this.#dir, n);
      let st;
      try { st = await stat(path); } catch { this.#files.delete(n); continue; }
      const prev = this.#files.get(n);
      if (!force && prev && prev.mtimeMs === st.mtimeMs && prev.size === st.size) continue;
      const parsed = await readBounded(path, this.#maxFileBytes).then(
        (text) => this.#parse(n, text),
        (e: unknown) => ({ ok: false as const, errors: [e instanceof ConfigError ? e : new ConfigError(`file ${n}`, 'read', errorMessage(e))] }),
      );
      if (parsed.ok) {
        this.#files.set(n, { mtimeMs: st.mtimeMs, size: st.size, objects: parsed.objects });
      } else {
        for (const e of parsed.errors) this.#onError(e);
        if (prev) log.warn('keeping the previous objects of a broken file', { file: n, objects: prev.objects.length });
        // Remember mtime/size so the rescan does not re-report the same broken content every few seconds.
        this.#files.set(n, { mtimeMs: st.mtimeMs, size: st.size, objects: prev?.objects ?? [] });
      }
    }
    this.#emit();
  }

  /** All documents of one file, or the reasons the file is refused as a whole. */
  #parse(file: string, text: string): Parsed {
    const lines = new LineCounter();
    const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false });
    const errors: Error[] = [];
    const objects: KubeObject[] = [];
    if (!Array.isArray(docs)) return { ok: true, objects }; // empty file
    docs.forEach((doc, i) => {
      if (doc.errors.length > 0) {
        const e = doc.errors[0]!;
        const line = e.linePos?.[0].line ?? lines.linePos(doc.range[0]).line;
        errors.push(new ConfigError(`file ${file} document ${i}`, `line ${line}`, e.message.split('\n')[0]!));
        return;
      }
      let value: unknown;
      try {
        value = doc.toJS({ maxAliasCount: 100 });
      } catch (e) {
        errors.push(new ConfigError(`file ${file} document ${i}`, `line ${lines.linePos(doc.range[0]).line}`, errorMessage(e)));
        return;
      }
      if (value === null || value === undefined) return; // empty document (e.g. a trailing `---`)
      const line = lines.linePos(doc.contents?.range[0] ?? doc.range[0]).line;
      const items = isList(value) ? value.items : [value];
      items.forEach((item, j) => {
        const where = isList(value) ? `file ${file} document ${i} item ${j}` : `file ${file} document ${i}`;
        const why = notAnObjectReason(item);
        if (why) { errors.push(new ConfigError(where, `line ${line}`, `not a Kubernetes object: ${why}`)); return; }
        const obj = item as KubeObject;
        const wk = watchedKindOf(obj);
        if (!wk) { log.debug('ignoring unwatched kind', { file, kind: obj.kind, apiVersion: obj.apiVersion, name: obj.metadata.name }); return; }
        // kubectl puts namespaced objects without a namespace into `default`; do the same so files behave alike.
        if (wk.namespaced && !obj.metadata.namespace) obj.metadata = { ...obj.metadata, namespace: 'default' };
        if (!wk.namespaced && obj.metadata.namespace) {
          const { namespace: _ns, ...rest } = obj.metadata;
          obj.metadata = rest as KubeObject['metadata'];
        }
        objects.push(obj);
      });
    });
    return errors.length > 0 ? { ok: false, errors } : { ok: true, objects };
  }

  #emit(): void {
    if (!this.#running || !this.#onChange) return;
    const out: KubeObject[] = [];
    const owner = new Map<string, string>();
    for (const [file, st] of [...this.#files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      for (const obj of st.objects) {
        const key = objectKey(obj);
        const first = owner.get(key);
        if (first !== undefined) {
          this.#onError({
            kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field: 'metadata.name',
            message: `defined again in ${file}; the definition in ${first} is used`,
          });
          continue;
        }
        owner.set(key, file);
        out.push(obj);
      }
    }
    // Rescans and editor double-writes often produce the same set: do not wake the translator for nothing.
    const fingerprint = JSON.stringify(out);
    if (fingerprint === this.#lastEmitted) return;
    this.#lastEmitted = fingerprint;
    this.#onChange(out, this.origin);
  }
}

/**
 * Read a config file, refusing anything but a regular file of at most `max` bytes. `*.yaml` may be
 * a symlink to a FIFO (reading blocks a thread-pool thread forever) or to /dev/zero (never ends),
 * and a file may grow after its stat; so the type is checked on the opened descriptor (opened
 * non-blocking, so a FIFO swapped in after the stat cannot block the open) and the read stops at
 * max + 1 bytes.
 */
async function readBounded(path: string, max: number): Promise<string> {
  const file = path.slice(path.lastIndexOf('/') + 1);
  const fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ConfigError(`file ${file}`, 'type', 'not a regular file');
    if (st.size > max) throw new ConfigError(`file ${file}`, 'size', `${st.size} bytes exceeds the limit of ${max}`, 'AMBIT_LIMIT');
    const buf = Buffer.alloc(Math.min(max + 1, st.size + 64 * 1024));
    let len = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, len);
      if (bytesRead === 0) break;
      len += bytesRead;
      if (len > max) throw new ConfigError(`file ${file}`, 'size', `more than ${max} bytes (the file grew while being read)`, 'AMBIT_LIMIT');
      // grew past its stat size: a half-written file must not serve a truncated config; the
      // rescan sees the new size and reads it again
      if (len === buf.length) throw new ConfigError(`file ${file}`, 'read', 'changed while being read');
    }
    return buf.subarray(0, len).toString('utf8');
  } finally {
    await fh.close();
  }
}

function isList(v: unknown): v is { kind: 'List'; items: unknown[] } {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'List' && Array.isArray((v as { items?: unknown }).items);
}
