/**
 * `ambit apply -f FILE|-` and `ambit delete -f FILE|-` for the local mesh: the objects of a
 * manifest go into the directory the local control plane watches, one file per object, named by
 * the object's identity (group, kind, namespace, name) and not by the file it came from, so
 * applying the same object again replaces it wherever it came from, and two applies from stdin
 * do not overwrite each other.
 *
 * Before anything is stored, the objects are judged by the control plane's own translator
 * (src/control validateObjects) together with what the directory already holds: an object it
 * would reject (an AuthorizationPolicy with `action: DENYY`) is refused with its message,
 * prefixed with the file, the document and the line of the field, and nothing is stored.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, isMap, isScalar, isSeq, parseAllDocuments, stringify, type Document } from 'yaml';
import { DNS_LABEL, ConfigError, MeshError, errorMessage } from '../core/index.js';
import { configDir, writeFileAtomic } from './state-file.js';

/** Same cap as the control plane's file source: larger files would be refused there anyway. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_OBJECTS = 10_000;
/** Files ambit apply stores start with this; they sort before `up`'s cluster.yaml, so an applied object wins over its demo version. */
export const APPLIED_PREFIX = 'applied_';

/** Kinds without a namespace (the rest are namespaced, as kubectl assumes for kinds it knows). */
const CLUSTER_SCOPED = new Set([
  '/Namespace', '/Node', '/PersistentVolume', '/ComponentStatus',
  'rbac.authorization.k8s.io/ClusterRole', 'rbac.authorization.k8s.io/ClusterRoleBinding',
  'apiextensions.k8s.io/CustomResourceDefinition', 'apiregistration.k8s.io/APIService',
  'storage.k8s.io/StorageClass', 'storage.k8s.io/CSIDriver', 'storage.k8s.io/CSINode', 'storage.k8s.io/VolumeAttachment',
  'scheduling.k8s.io/PriorityClass', 'node.k8s.io/RuntimeClass', 'networking.k8s.io/IngressClass',
  'admissionregistration.k8s.io/ValidatingWebhookConfiguration', 'admissionregistration.k8s.io/MutatingWebhookConfiguration',
  'gateway.networking.k8s.io/GatewayClass', 'certificates.k8s.io/CertificateSigningRequest',
]);

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const KIND = /^[A-Za-z][A-Za-z0-9]{0,62}$/;
const VERSION = /^v[0-9][a-z0-9]{0,30}$/;

type Obj = Record<string, unknown>;
function isRecord(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A Kubernetes object of a manifest, where it came from, and the identity it is stored under. */
export interface ManifestObject {
  /** the object, its namespace defaulted to `default` when namespaced (as kubectl does) */
  readonly obj: Obj & { apiVersion: string; kind: string; metadata: Obj & { name: string; namespace?: string } };
  readonly group: string;
  readonly kind: string;
  /** '' when cluster-scoped */
  readonly namespace: string;
  readonly name: string;
  /** `<group>/<kind>/<namespace>/<name>` (the control plane's identity of an object) */
  readonly key: string;
  /** `<source> document <n>` (1-based), with ` items[j]` for an item of a List */
  readonly where: string;
  /** line of the object's first line */
  readonly line: number;
  readonly doc: Document;
  /** path of the object inside its document: [] or ['items', j] */
  readonly path: readonly (string | number)[];
  readonly lines: LineCounter;
}

/** `Kind namespace/name` (`Kind name` when cluster-scoped), for messages. */
export function describeObject(m: Pick<ManifestObject, 'kind' | 'namespace' | 'name'>): string {
  return `${m.kind} ${m.namespace ? `${m.namespace}/` : ''}${m.name}`;
}

function groupOf(apiVersion: string): string {
  const i = apiVersion.indexOf('/');
  return i < 0 ? '' : apiVersion.slice(0, i);
}

function checkShape(where: string, v: unknown): asserts v is ManifestObject['obj'] {
  const bad = (field: string, msg: string): never => { throw new ConfigError(where, field, msg); };
  if (!isRecord(v)) bad('(document)', 'not a mapping; expected a Kubernetes object with apiVersion, kind and metadata');
  const o = v as Obj;
  if (typeof o.apiVersion !== 'string' || o.apiVersion === '') bad('apiVersion', 'missing or not a string');
  if (typeof o.kind !== 'string' || o.kind === '') bad('kind', 'missing or not a string');
  if (!isRecord(o.metadata)) bad('metadata', 'missing or not a mapping');
  const md = o.metadata as Obj;
  if (typeof md.name !== 'string' || md.name === '') bad('metadata.name', 'missing or not a string');
  if (md.namespace !== undefined && md.namespace !== null && typeof md.namespace !== 'string') bad('metadata.namespace', 'not a string');
}

/**
 * What the API server would refuse about an object's identity, and what the one-file-per-object
 * store needs: names that are DNS names (never a path), a kind and a version of the usual shape.
 */
function checkIdentity(where: string, m: { apiVersion: string; group: string; kind: string; namespace: string; name: string }): void {
  const bad = (field: string, msg: string): never => { throw new ConfigError(where, field, msg); };
  const version = m.apiVersion.slice(m.group ? m.group.length + 1 : 0);
  if ((m.group && !DNS_SUBDOMAIN.test(m.group)) || !VERSION.test(version)) bad('apiVersion', `"${m.apiVersion}" is not <group>/<version> or <version>`);
  if (!KIND.test(m.kind)) bad('kind', `"${m.kind}" is not a kind name (letters and digits)`);
  if (m.namespace && !DNS_LABEL.test(m.namespace)) bad('metadata.namespace', `"${m.namespace}" is not a valid namespace name (a DNS label)`);
  if (!DNS_SUBDOMAIN.test(m.name) || m.name.includes('..')) bad('metadata.name', `"${m.name}" is not a valid name (lowercase letters, digits, '-' and '.')`);
}

/**
 * Parses manifest text into objects. Throws a ConfigError naming the source, the document (and
 * line) and the field for YAML errors and for documents that are not Kubernetes objects.
 */
export function parseManifest(text: string, source: string): ManifestObject[] {
  if (Buffer.byteLength(text) > MAX_MANIFEST_BYTES) {
    throw new MeshError('AMBIT_LIMIT', `${source}: larger than ${MAX_MANIFEST_BYTES} bytes`);
  }
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, uniqueKeys: true });
  const out: ManifestObject[] = [];
  for (const [i, doc] of docs.entries()) {
    const err = doc.errors[0];
    if (err) {
      const pos = lines.linePos(err.pos[0]);
      throw new ConfigError(`${source} document ${i + 1}`, `line ${pos.line}`, err.message.split('\n')[0] ?? 'invalid YAML');
    }
    let v: unknown;
    try {
      v = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      throw new ConfigError(`${source} document ${i + 1}`, `line ${lines.linePos(doc.range[0]).line}`, errorMessage(e));
    }
    if (v === null || v === undefined) continue; // empty document (e.g. trailing ---)
    const docLine = lines.linePos(doc.contents?.range[0] ?? doc.range[0]).line;
    const add = (item: unknown, where: string, path: (string | number)[]): void => {
      const line = lineOf(doc, lines, path, []) ?? docLine;
      const at = `${where} (line ${line})`;
      checkShape(at, item);
      const group = groupOf(item.apiVersion);
      const namespaced = !CLUSTER_SCOPED.has(`${group}/${item.kind}`);
      const given = typeof item.metadata.namespace === 'string' ? item.metadata.namespace : '';
      const namespace = namespaced ? (given || 'default') : '';
      const { namespace: _ns, ...meta } = item.metadata;
      const obj = { ...item, metadata: namespaced ? { ...meta, namespace } : meta } as ManifestObject['obj'];
      checkIdentity(at, { apiVersion: item.apiVersion, group, kind: item.kind, namespace, name: item.metadata.name });
      out.push({ obj, group, kind: item.kind, namespace, name: item.metadata.name, key: `${group}/${item.kind}/${namespace}/${item.metadata.name}`, where, line, doc, path, lines });
    };
    const where = `${source} document ${i + 1}`;
    if (isRecord(v) && v.kind === 'List') {
      if (!Array.isArray(v.items)) throw new ConfigError(`${where} (line ${docLine})`, 'items', 'a List needs an items array');
      v.items.forEach((item, j) => add(item, `${where} items[${j}]`, ['items', j]));
    } else {
      add(v, where, []);
    }
    if (out.length > MAX_OBJECTS) throw new MeshError('AMBIT_LIMIT', `${source}: more than ${MAX_OBJECTS} objects`);
  }
  if (out.length === 0) throw new ConfigError(source, '(file)', 'no Kubernetes objects in it');
  const first = new Map<string, ManifestObject>();
  for (const m of out) {
    const f = first.get(m.key);
    if (f) throw new ConfigError(`${m.where} (line ${m.line})`, 'metadata.name', `${describeObject(m)} is already defined in ${f.where}; give each object once`);
    first.set(m.key, m);
  }
  return out;
}

/** Kept for callers that only need the count: validates the shape, returns the number of objects. */
export function validateManifest(text: string, source: string): number {
  return parseManifest(text, source).length;
}

/** `spec.rules[0].from[1]`, `metadata.labels["a.b/c"]` -> path segments. */
export function fieldPath(field: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of field.matchAll(/\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|([^.[\]]+)/g)) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else if (m[3] !== undefined) out.push(m[3]);
  }
  return out;
}

/**
 * The line of the deepest node of `field` that exists in the document (the key's line for a
 * mapping entry), or undefined when not even the object's own node has a position.
 */
export function lineOf(doc: Document, lines: LineCounter, prefix: readonly (string | number)[], field: readonly (string | number)[]): number | undefined {
  let node: unknown = doc.contents;
  let line: number | undefined = node && (node as { range?: [number] }).range ? lines.linePos((node as { range: [number] }).range[0]).line : undefined;
  for (const seg of [...prefix, ...field]) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (!pair) break;
      const at = isScalar(pair.key) ? pair.key.range : undefined;
      if (at) line = lines.linePos(at[0]).line;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (item === undefined) break;
      const at = (item as { range?: [number] }).range;
      if (at) line = lines.linePos(at[0]).line;
      node = item;
    } else {
      break;
    }
  }
  return line;
}

// === the store: one file per object in <dir>/config ===

/** The file an object is stored in: its identity, or a digest of it when that is too long for a file name. */
export function storeFileName(m: Pick<ManifestObject, 'group' | 'kind' | 'namespace' | 'name' | 'key'>): string {
  // '_' is in no kind, group or namespace, and the name comes last: the mapping is one to one
  const name = `${APPLIED_PREFIX}${m.kind}_${m.group || '-'}_${m.namespace || '-'}_${m.name}.yaml`;
  if (Buffer.byteLength(name) <= 250) return name;
  return `${APPLIED_PREFIX}${m.kind}_${createHash('sha256').update(m.key).digest('hex').slice(0, 40)}.yaml`;
}

function objectText(m: ManifestObject): string {
  return `# ${describeObject(m)} (${m.obj.apiVersion}), stored by ambit apply from ${m.where}\n${stringify(m.obj, { lineWidth: 0 })}`;
}

/** The YAML files the control plane's file source reads in `dir`, in its order (names; [] when there is no directory). */
export function configFiles(dir: string): string[] {
  try { return readdirSync(dir).filter((n) => /\.ya?ml$/i.test(n) && !n.startsWith('.')).sort(); } catch { return []; }
}

/** Every object in the YAML files of the directory (broken files are skipped: the control plane reports them). */
export function storedObjects(dir: string): ManifestObject[] {
  const out: ManifestObject[] = [];
  for (const n of configFiles(dir)) {
    try { out.push(...parseManifest(readFileSync(join(dir, n), 'utf8'), n)); } catch { /* reported by the control plane */ }
  }
  return out;
}

export function readSource(file: string): string {
  try {
    return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (e) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${file}: cannot read: ${(e as Error).message}`);
  }
}

export interface ControlCheckOptions {
  /** default $AMBIT_TRUST_DOMAIN or cluster.local, as the control plane */
  readonly trustDomain?: string;
  /** default $AMBIT_ROOT_NAMESPACE or istio-system, as the control plane */
  readonly rootNamespace?: string;
}

/**
 * Judges `objects` with the control plane's translator, in the company of `context` (what is
 * already stored, minus what `objects` replace). Throws a MeshError listing every rejection of
 * one of `objects`, each as `<source> document <n> (line <l>): <the control plane's message>`;
 * returns the warnings about them in the same form.
 */
export async function checkWithControlPlane(objects: readonly ManifestObject[], context: readonly ManifestObject[], o: ControlCheckOptions = {}): Promise<string[]> {
  // loaded here, not at the top: every other command would otherwise load the control plane
  const { validateObjects } = await import('../control/index.js');
  const replaced = new Set(objects.map((m) => m.key));
  const all = [...context.filter((m) => !replaced.has(m.key)), ...objects];
  const r = validateObjects(all.map((m) => m.obj), {
    trustDomain: o.trustDomain ?? process.env.AMBIT_TRUST_DOMAIN ?? 'cluster.local',
    rootNamespace: o.rootNamespace ?? process.env.AMBIT_ROOT_NAMESPACE ?? 'istio-system',
  });
  const mine = (x: { kind: string; namespace: string; name: string }): ManifestObject | undefined =>
    objects.find((m) => m.kind === x.kind && m.name === x.name && (m.namespace === x.namespace || (m.namespace === '' && x.namespace === '')));
  const place = (m: ManifestObject, field: string): string => `${m.where} (line ${lineOf(m.doc, m.lines, m.path, fieldPath(field)) ?? m.line})`;
  const errors: string[] = [];
  for (const x of r.rejected) {
    const m = mine(x);
    if (m) errors.push(`${place(m, x.field)}: ${x.message}`);
  }
  if (errors.length > 0) {
    throw new MeshError('AMBIT_CONFIG_INVALID', `${errors.join('\n')}\n${errors.length === 1 ? 'the control plane would reject it' : `the control plane would reject ${errors.length} of them`}; nothing was applied`);
  }
  const warnings: string[] = [];
  for (const x of r.warnings) {
    const m = mine(x);
    if (m) warnings.push(`${place(m, x.field)}: ${x.message}`);
  }
  return warnings;
}

export type ApplyOutcome = 'created' | 'configured' | 'unchanged';

export interface ApplyResult {
  readonly objects: ReadonlyArray<{ readonly object: string; readonly outcome: ApplyOutcome; readonly dest: string }>;
  /** the control plane's caveats about the applied objects */
  readonly warnings: readonly string[];
}

/** Stores already-judged objects; returns what happened to each. */
function store(objects: readonly ManifestObject[], dir: string): ApplyResult['objects'] {
  const out = configDir(dir);
  mkdirSync(out, { recursive: true });
  return objects.map((m) => {
    const dest = join(out, storeFileName(m));
    const text = objectText(m);
    let before: string | undefined;
    try { before = readFileSync(dest, 'utf8'); } catch { before = undefined; }
    // the comment names where it came from: an unchanged object from another file is still unchanged
    const body = (s: string): string => s.slice(s.indexOf('\n') + 1);
    const outcome: ApplyOutcome = before === undefined ? 'created' : body(before) === body(text) ? 'unchanged' : 'configured';
    if (outcome !== 'unchanged') writeFileAtomic(dest, text);
    return { object: describeObject(m), outcome, dest };
  });
}

/**
 * `ambit apply -f FILE` ('-' reads stdin): parses, judges every object with the control plane's
 * translator against what `<dir>/config` holds, then stores each object under its identity.
 * Nothing is stored when any object is refused.
 * Several files are judged together and stored together.
 */
export async function applyFile(files: string | readonly string[], dir: string, o: ControlCheckOptions = {}): Promise<ApplyResult> {
  const objects = readManifests(files);
  const warnings = await checkWithControlPlane(objects, storedObjects(configDir(dir)), o);
  return { objects: store(objects, dir), warnings };
}

/** The objects of every file ('-' is stdin), each object once across them. */
function readManifests(files: string | readonly string[]): ManifestObject[] {
  const list = typeof files === 'string' ? [files] : files;
  if (list.length === 0) throw new MeshError('AMBIT_CONFIG_INVALID', '-f: give a file, or - for stdin');
  const all: ManifestObject[] = [];
  const first = new Map<string, ManifestObject>();
  for (const f of list) {
    for (const m of parseManifest(readSource(f), f === '-' ? 'stdin' : f)) {
      const prev = first.get(m.key);
      if (prev) throw new ConfigError(`${m.where} (line ${m.line})`, 'metadata.name', `${describeObject(m)} is already defined in ${prev.where}; give each object once`);
      first.set(m.key, m);
      all.push(m);
    }
  }
  return all;
}

/**
 * Stores generated manifest text (`ambit waypoint apply`) the way `ambit apply` stores objects;
 * `source` names it in errors. Returns the path of the first object's file.
 */
export function applyText(text: string, source: string, dir: string): string {
  const stored = store(parseManifest(text, source), dir);
  return stored[0]!.dest;
}

export interface DeleteResult {
  readonly deleted: readonly string[];
  /** objects of the file that `ambit apply` never stored (or that were deleted already) */
  readonly notFound: readonly string[];
}

/**
 * `ambit delete -f FILE` ('-' reads stdin): removes the stored version of every object the file
 * names (by identity; the rest of each object is not looked at, so a broken object can be
 * deleted). Objects not found are reported; the others are still deleted.
 */
export function deleteFile(files: string | readonly string[], dir: string): DeleteResult {
  const deleted: string[] = [];
  const notFound: string[] = [];
  for (const m of readManifests(files)) (deleteObject(m, dir) ? deleted : notFound).push(describeObject(m));
  return { deleted, notFound };
}

/** Removes the stored version of one object (by identity); false when there is none. */
export function deleteObject(m: Pick<ManifestObject, 'group' | 'kind' | 'namespace' | 'name'>, dir: string): boolean {
  const path = join(configDir(dir), storeFileName({ ...m, key: `${m.group}/${m.kind}/${m.namespace}/${m.name}` }));
  try {
    rmSync(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new MeshError('AMBIT_CONFIG_INVALID', `${path}: cannot remove: ${errorMessage(e)}`);
    return false;
  }
}
