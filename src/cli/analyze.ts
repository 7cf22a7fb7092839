/**
 * `ambit analyze [-f FILE|-]...`: what the control plane would reject or ignore, and why, without
 * applying anything (issue 11). The objects are judged by the control plane's own translator
 * (src/control analyzeObjects, the judge of `ambit apply` with a few cheap checks on top), and each
 * problem is placed at its file, document, line and field.
 *
 * What is analyzed: the given files, judged in the company of what the watched config directory
 * of the local mesh already holds (as `ambit apply` would: a file's object replaces its stored
 * version), so a route to the demo's Service is not called dangling; without -f, every YAML file
 * of the watched directory, as the control plane reads it.
 *
 * Levels: error (the control plane would reject it: the object, or the whole file when it does not
 * parse), warning (accepted, but ignored in whole or part, or with a caveat), info (a kind the control
 * plane never reads). Exit status: 0 without errors (warnings and infos may be printed), 1 with errors.
 */
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ConfigError, MeshError, errorMessage } from '../core/index.js';
import type { Rejection } from '../control/index.js';
import { configFiles, describeObject, fieldPath, lineOf, parseManifest, readSource, storedObjects, type ManifestObject } from './apply.js';
import { render, renderTable, type OutputFormat } from './output.js';
import { configDir } from './state-file.js';

export type ProblemLevel = 'error' | 'warning' | 'info';

export interface Problem {
  readonly level: ProblemLevel;
  readonly file: string;
  /** 1-based document of the file; absent for a problem of the whole file */
  readonly document?: number;
  /** `items[j]` of a List document */
  readonly item?: number;
  readonly line?: number;
  /** `Kind namespace/name` */
  readonly object?: string;
  readonly field?: string;
  readonly message: string;
}

export interface AnalyzeReport {
  /** files analyzed, in order */
  readonly files: readonly string[];
  /** objects analyzed */
  readonly objects: number;
  readonly errors: number;
  readonly warnings: number;
  readonly problems: readonly Problem[];
}

export interface AnalyzeOptions {
  /** files to analyze ('-' is stdin); empty: the watched config directory */
  readonly files: readonly string[];
  /** ambit working directory (its config/ is the watched directory) */
  readonly dir: string;
  /** default $AMBIT_TRUST_DOMAIN or cluster.local, as the control plane */
  readonly trustDomain?: string;
  /** default $AMBIT_ROOT_NAMESPACE or istio-system, as the control plane */
  readonly rootNamespace?: string;
}

const LEVEL_ORDER: Record<ProblemLevel, number> = { error: 0, warning: 1, info: 2 };

/** A path as the user would type it: relative to the cwd when below it. */
function shown(p: string): string {
  const rel = relative(process.cwd(), p);
  return rel && !rel.startsWith('..') ? rel : p;
}

/** `<source> document 2 items[1]` -> 2, 1 */
function documentOf(m: ManifestObject): { document?: number; item?: number } {
  const d = / document (\d+)(?: items\[(\d+)\])?$/.exec(m.where);
  if (!d) return {};
  return { document: Number(d[1]), ...(d[2] !== undefined ? { item: Number(d[2]) } : {}) };
}

/**
 * The problem of a file that does not parse: the control plane refuses the whole file. A file
 * without any object (comments only) is no error: there is nothing to refuse.
 */
function fileProblem(file: string, e: unknown): Problem {
  const message = errorMessage(e);
  if (e instanceof ConfigError && e.field === '(file)') return { level: 'warning', file, message: 'no Kubernetes objects in it' };
  // "<file> document 2 (line 7): metadata.name: ..." or "<file> document 2: line 7: ...": columns here
  const at = /^(?:.*? document (\d+)(?: items\[\d+\])?(?: \(line (\d+)\))?: (?:line (\d+): )?)?/.exec(message.startsWith(file) ? message.slice(file.length) : '');
  const line = at?.[2] ?? at?.[3];
  return {
    level: 'error', file, ...(at?.[1] ? { document: Number(at[1]) } : {}), ...(line ? { line: Number(line) } : {}),
    message: at?.[0] ? message.slice(file.length + at[0].length) : message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message,
  };
}

/** Runs the analysis; throws only when it cannot run (an unreadable file, no config directory). */
export async function analyze(o: AnalyzeOptions): Promise<AnalyzeReport> {
  const cfg = configDir(o.dir);
  const problems: Problem[] = [];
  const subject: ManifestObject[] = [];
  const files: string[] = [];
  const fileOf = new Map<ManifestObject, string>();
  const first = new Map<string, ManifestObject>();
  const add = (file: string, text: string): void => {
    files.push(file);
    let objects: ManifestObject[];
    try {
      objects = parseManifest(text, file);
    } catch (e) {
      problems.push(fileProblem(file, e));
      return;
    }
    for (const m of objects) {
      const prev = first.get(m.key);
      if (prev) {
        problems.push({ level: 'error', file, ...documentOf(m), line: m.line, object: describeObject(m), field: 'metadata.name',
          message: `is already defined in ${prev.where}; the first definition applies` });
        continue;
      }
      first.set(m.key, m);
      fileOf.set(m, file);
      subject.push(m);
    }
  };

  let context: ManifestObject[] = [];
  if (o.files.length > 0) {
    for (const f of o.files) add(f === '-' ? 'stdin' : f, readSource(f));
    context = storedObjects(cfg).filter((m) => !first.has(m.key));
  } else {
    if (!existsSync(cfg)) throw new MeshError('AMBIT_CONFIG_INVALID', `${shown(cfg)}: no watched config directory (ambit up makes it); give the files to analyze with -f`);
    for (const n of configFiles(cfg)) add(shown(join(cfg, n)), readSource(join(cfg, n)));
  }

  // loaded here, not at the top: every other command would otherwise load the control plane
  const { analyzeObjects } = await import('../control/index.js');
  const r = analyzeObjects([...context, ...subject].map((m) => m.obj), {
    trustDomain: o.trustDomain ?? process.env.AMBIT_TRUST_DOMAIN ?? 'cluster.local',
    rootNamespace: o.rootNamespace ?? process.env.AMBIT_ROOT_NAMESPACE ?? 'istio-system',
  });
  const mine = (x: Rejection): ManifestObject | undefined =>
    subject.find((m) => m.kind === x.kind && m.name === x.name && m.namespace === x.namespace);
  const place = (level: ProblemLevel, x: Rejection): void => {
    const m = mine(x);
    if (!m) return; // about an object of the context: not what was asked
    const object = describeObject(m);
    // the translator's own messages start with the object and the field: they have columns here
    const prefix = `${object}: ${x.field}: `;
    const message = x.message.startsWith(prefix) ? x.message.slice(prefix.length) : x.message;
    problems.push({
      level, file: fileOf.get(m)!, ...documentOf(m), line: lineOf(m.doc, m.lines, m.path, fieldPath(x.field)) ?? m.line,
      object, ...(x.field ? { field: x.field } : {}), message,
    });
  };
  for (const x of r.rejected) place('error', x);
  for (const x of r.warnings) place('warning', x);
  for (const x of r.ignored) place('info', x);

  const order = new Map(files.map((f, i) => [f, i]));
  problems.sort((a, b) => (order.get(a.file)! - order.get(b.file)!) || ((a.line ?? 0) - (b.line ?? 0)) || (LEVEL_ORDER[a.level] - LEVEL_ORDER[b.level]));
  return {
    files, objects: subject.length, problems,
    errors: problems.filter((p) => p.level === 'error').length,
    warnings: problems.filter((p) => p.level === 'warning').length,
  };
}

/** Exit status of `ambit analyze`: 1 when the control plane would reject anything, else 0. */
export function analyzeExitCode(r: AnalyzeReport): number {
  return r.errors > 0 ? 1 : 0;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The report as a table (one row per problem and a summary line), JSON or YAML. */
export function renderAnalysis(r: AnalyzeReport, format: OutputFormat): string {
  return render(format, r, () => {
    const summary = `${plural(r.errors, 'error')}, ${plural(r.warnings, 'warning')} in ${plural(r.objects, 'object')} of ${plural(r.files.length, 'file')}`;
    if (r.problems.length === 0) return `no problems: ${plural(r.objects, 'object')} of ${plural(r.files.length, 'file')}\n`;
    const rows = r.problems.map((p) => [
      p.level, p.file, p.document === undefined ? '' : `${p.document}${p.item !== undefined ? ` items[${p.item}]` : ''}`,
      p.line === undefined ? '' : String(p.line), p.object ?? '', p.field ?? '', p.message,
    ]);
    return renderTable(['LEVEL', 'FILE', 'DOC', 'LINE', 'OBJECT', 'FIELD', 'MESSAGE'], rows, 1000)
      + `${summary}${r.errors > 0 ? ' (the control plane would reject what the errors name)' : ''}\n`;
  });
}
