import test from 'ava';
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile, unlink, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource } from '../../../src/control/config/file-source.js';
import type { KubeObject, Rejection } from '../../../src/control/config/types.js';
import { ConfigError } from '../../../src/core/errors.js';

/** Collects reported sets and problems; `until` waits for the first set (already seen or future) that satisfies a predicate. */
class Recorder {
  sets: (readonly KubeObject[])[] = [];
  errors: (Rejection | Error)[] = [];
  #waiters: { pred: (s: readonly KubeObject[]) => boolean; resolve: (s: readonly KubeObject[]) => void }[] = [];
  #from = 0;
  onChange = (objs: readonly KubeObject[]): void => {
    this.sets.push(objs);
    this.#waiters = this.#waiters.filter((w) => (w.pred(objs) ? (w.resolve(objs), false) : true));
  };
  onError = (e: Rejection | Error): void => { this.errors.push(e); };
  /** waits for a set newer than the last one returned by `until` */
  until(pred: (s: readonly KubeObject[]) => boolean): Promise<readonly KubeObject[]> {
    const hit = this.sets.slice(this.#from).find(pred);
    this.#from = this.sets.length;
    if (hit) return Promise.resolve(hit);
    // The source's rescan timer is unref'd (rightly: a control plane has servers that keep it up),
    // so while a test waits on it alone nothing would keep the process alive: hold a ref'd timer,
    // and give up with a message rather than hang.
    return new Promise((resolve, reject) => {
      const guard = setTimeout(() => reject(new Error('no matching config set within 20 s')), 20_000);
      this.#waiters.push({ pred, resolve: (s) => { clearTimeout(guard); this.#from = this.sets.length; resolve(s); } });
    });
  }
}

const names = (s: readonly KubeObject[]): string[] => s.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort();

async function setup(t: import('ava').ExecutionContext, files: Record<string, string>, opts: { maxFileBytes?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-filesrc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [n, text] of Object.entries(files)) await writeFile(join(dir, n), text);
  const rec = new Recorder();
  const src = new FileSource({ dir, debounceMs: 20, rescanMs: 200, onError: rec.onError, ...opts });
  t.teardown(() => src.stop());
  await src.start(rec.onChange);
  return { dir, rec, src };
}

const svc = (name: string, ns?: string): string =>
  `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\n${ns ? `  namespace: ${ns}\n` : ''}spec:\n  ports: [{port: 80}]\n`;

test('initial load: multi-document files, List items, namespace defaulting, old API versions, unwatched kinds dropped', async (t) => {
  const { rec } = await setup(t, {
    'a.yaml': `${svc('a')}---\n${svc('b', 'prod')}---\n# empty document follows\n---\n`,
    'b.yml': 'apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1beta1\n  kind: VirtualService\n  metadata: {name: vs}\n  spec: {hosts: [a]}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: cm}\n',
    'c.yaml': 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  namespace: ignored\n',
    'notes.txt': svc('txt'),
  });
  t.is(rec.sets.length, 1);
  t.deepEqual(names(rec.sets[0]!), ['Namespace//prod', 'Service/default/a', 'Service/prod/b', 'VirtualService/default/vs']);
  t.deepEqual(rec.errors, []);
});

test('a syntax error is reported with file, document and line, and the file keeps serving its last good objects', async (t) => {
  const { dir, rec } = await setup(t, { 'a.yaml': svc('a'), 'b.yaml': svc('b') });
  await writeFile(join(dir, 'a.yaml'), `${svc('a2')}---\nkind: Service\nmetadata: {name: [\n`);
  await writeFile(join(dir, 'b.yaml'), svc('b2'));
  const s = await rec.until((s) => names(s).includes('Service/default/b2'));
  t.deepEqual(names(s), ['Service/default/a', 'Service/default/b2']);
  const err = rec.errors.find((e): e is ConfigError => e instanceof ConfigError);
  t.truthy(err);
  t.regex(err!.message, /file a\.yaml document 1: line [3-9]/);
  // fixing the file brings its new content in
  await writeFile(join(dir, 'a.yaml'), svc('a3'));
  const fixed = await rec.until((s) => names(s).includes('Service/default/a3'));
  t.deepEqual(names(fixed), ['Service/default/a3', 'Service/default/b2']);
});

test('a document that is not a Kubernetes object is reported and the file keeps its previous objects', async (t) => {
  const { dir, rec } = await setup(t, { 'a.yaml': svc('a'), 'z.yaml': svc('z') });
  await writeFile(join(dir, 'a.yaml'), `${svc('a2')}---\napiVersion: v1\nkind: Service\nmetadata:\n  labels: {x: y}\n`);
  await writeFile(join(dir, 'z.yaml'), svc('z2'));
  const s = await rec.until((s) => names(s).includes('Service/default/z2'));
  t.deepEqual(names(s), ['Service/default/a', 'Service/default/z2']);
  const msgs = rec.errors.map((e) => ('message' in e ? e.message : ''));
  t.true(msgs.some((m) => /file a\.yaml document 1: line 8: not a Kubernetes object: metadata\.name/.test(m)), msgs.join('\n'));
});

test('duplicates across files: the first file in lexical order wins and the duplicate is reported', async (t) => {
  const { rec } = await setup(t, {
    '10-b.yaml': `${svc('x')}  clusterIP: 10.0.0.1\n`,
    '02-a.yaml': `${svc('x')}  clusterIP: 10.0.0.2\n`,
  });
  const s = rec.sets[0]!;
  t.is(s.length, 1);
  t.is((s[0]!.spec as { clusterIP: string }).clusterIP, '10.0.0.2');
  const dup = rec.errors.find((e): e is Rejection => !(e instanceof Error));
  t.like(dup, { kind: 'Service', namespace: 'default', name: 'x', field: 'metadata.name' });
  t.regex(dup!.message, /10-b\.yaml.*02-a\.yaml/);
});

test('files added, replaced by rename and removed are picked up', async (t) => {
  const { dir, rec } = await setup(t, { 'a.yaml': svc('a') });
  await writeFile(join(dir, 'b.yaml'), svc('b'));
  t.deepEqual(names(await rec.until((s) => s.length === 2)), ['Service/default/a', 'Service/default/b']);
  // editors save by writing a temp file and renaming it over the original
  await writeFile(join(dir, '.a.yaml.tmp'), svc('a-renamed'));
  await rename(join(dir, '.a.yaml.tmp'), join(dir, 'a.yaml'));
  t.deepEqual(names(await rec.until((s) => names(s).includes('Service/default/a-renamed'))), ['Service/default/a-renamed', 'Service/default/b']);
  await unlink(join(dir, 'b.yaml'));
  t.deepEqual(names(await rec.until((s) => s.length === 1)), ['Service/default/a-renamed']);
});

test('a file over the size limit is refused and reported', async (t) => {
  const { rec } = await setup(t, { 'a.yaml': svc('a'), 'big.yaml': `${svc('big')}# ${'x'.repeat(2000)}\n` }, { maxFileBytes: 1000 });
  t.deepEqual(names(rec.sets[0]!), ['Service/default/a']);
  t.true(rec.errors.some((e) => e instanceof ConfigError && e.code === 'AMBIT_LIMIT' && /big\.yaml/.test(e.message)));
});

test('start fails clearly when the directory does not exist', async (t) => {
  const src = new FileSource({ dir: '/nonexistent/ambit-config' });
  const e = await t.throwsAsync(src.start(() => undefined), { instanceOf: ConfigError });
  t.regex(e!.message, /FileSource: dir: \/nonexistent\/ambit-config/);
});

test('without fs.watch the periodic rescan notices changes, and a broken file is reported once, not on every rescan', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-filesrc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'a.yaml'), svc('a'));
  const rec = new Recorder();
  const src = new FileSource({ dir, debounceMs: 5, rescanMs: 20, fsWatch: false, onError: rec.onError });
  t.teardown(() => src.stop());
  await src.start(rec.onChange);
  await writeFile(join(dir, 'bad.yaml'), 'kind: [\n');
  await writeFile(join(dir, 'b.yaml'), svc('b'));
  await rec.until((s) => s.length === 2);
  // several more rescans happen while we wait for another change to be picked up
  await writeFile(join(dir, 'c.yaml'), svc('c'));
  await rec.until((s) => s.length === 3);
  await writeFile(join(dir, 'd.yaml'), svc('d'));
  await rec.until((s) => s.length === 4);
  t.is(rec.errors.filter((e) => e instanceof ConfigError && /bad\.yaml/.test(e.message)).length, 1);
});

test('a FIFO, a device, a directory and a symlink loop named *.yaml are reported and never block or flood the reload', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-filesrc-'));
  const fifo = join(dir, 'pipe');
  execFileSync('mkfifo', [fifo]);
  t.teardown(async () => {
    // if a reader is stuck on the FIFO, give it EOF so the thread pool gets its thread back
    try { closeSync(openSync(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK)); } catch { /* no reader */ }
    await rm(dir, { recursive: true, force: true });
  });
  await writeFile(join(dir, 'a.yaml'), svc('a'));
  await symlink(fifo, join(dir, 'fifo.yaml'));
  await symlink('/dev/zero', join(dir, 'zero.yaml'));
  await mkdir(join(dir, 'sub'));
  await symlink(join(dir, 'sub'), join(dir, 'dir.yaml'));
  await symlink(join(dir, 'loop2.yaml'), join(dir, 'loop1.yaml'));
  await symlink(join(dir, 'loop1.yaml'), join(dir, 'loop2.yaml'));
  const rec = new Recorder();
  const src = new FileSource({ dir, debounceMs: 5, rescanMs: 50, fsWatch: false, onError: rec.onError });
  t.teardown(() => src.stop());
  await src.start(rec.onChange);
  t.deepEqual(names(rec.sets[0]!), ['Service/default/a']);
  for (const f of ['fifo.yaml', 'zero.yaml', 'dir.yaml']) {
    t.true(rec.errors.some((e) => e instanceof ConfigError && e.message.includes(f) && /not a regular file/.test(e.message)), f);
  }
  // the source keeps working after them
  await writeFile(join(dir, 'b.yaml'), svc('b'));
  t.deepEqual(names(await rec.until((s) => s.length === 2)), ['Service/default/a', 'Service/default/b']);
});
