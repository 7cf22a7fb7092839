/**
 * Manifests as text: one daemonset/-style file per component, the kustomization listing the
 * installed ones, and the single stream `ambit install --dry-run` prints. Output is YAML 1.1-safe
 * (Kubernetes reads manifests as YAML 1.1: "on", "0440" and the like stay strings) and carries
 * the comments of manifests.ts.
 */
import { Document, isMap, isScalar, isSeq } from 'yaml';
import { MeshError } from '../../core/index.js';
import { fieldPath } from '../apply.js';
import type { Manifest, ManifestFile, Obj } from './manifests.js';

function commentLines(text: string): string {
  return text.split('\n').map((l) => (l ? `# ${l}` : '#')).join('\n') + '\n';
}

/** `yaml` prints `#` + the comment text: a leading space per line makes `# text`. */
function nodeComment(text: string): string {
  return text.split('\n').map((l) => ` ${l}`).join('\n');
}

function documentText(m: Manifest): string {
  const doc = new Document(m.obj, { version: '1.1', aliasDuplicateObjects: false });
  for (const [path, text] of Object.entries(m.notes ?? {})) {
    const segs = fieldPath(path);
    const last = segs.pop();
    const parent = segs.length === 0 ? doc.contents : doc.getIn(segs, true);
    let target: { commentBefore?: string | null } | undefined;
    if (isMap(parent) && typeof last === 'string') {
      const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === last);
      target = pair && isScalar(pair.key) ? pair.key : undefined;
    } else if (isSeq(parent) && typeof last === 'number') {
      target = parent.items[last] as { commentBefore?: string | null } | undefined;
    }
    // a note on a path that does not exist is a bug in manifests.ts, not something to skip
    if (!target) throw new MeshError('AMBIT_BUG', `manifest note on a missing path: ${String(m.obj.kind)} ${path}`);
    target.commentBefore = nodeComment(text);
  }
  return (m.comment ? commentLines(m.comment) : '') + doc.toString({ lineWidth: 0 });
}

/** The text of one file of daemonset/. */
export function fileText(f: ManifestFile): string {
  // a blank line keeps the file's comment apart from the first object's
  return commentLines(f.comment) + (f.manifests[0]?.comment ? '\n' : '') + f.manifests.map(documentText).join('---\n');
}

export function kustomizationText(files: readonly ManifestFile[]): string {
  const examples = files.filter((f) => !f.installed).map((f) => f.file);
  const header = `Written by \`npm run manifests\` (ambit install --dry-run --output-dir daemonset) from src/cli/install/; edit
those, not this. kubectl apply -k daemonset/ installs what \`ambit install\` installs${examples.length ? `
(${examples.join(', ')}: an example to copy per namespace, not included)` : ''}.`;
  const doc = new Document({ apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', resources: files.filter((f) => f.installed).map((f) => f.file) }, { version: '1.1' });
  return commentLines(header) + doc.toString({ lineWidth: 0 });
}

/** What `ambit install --dry-run` prints: every installed object, in apply order, each file named. */
export function installText(files: readonly ManifestFile[]): string {
  return files.filter((f) => f.installed)
    .flatMap((f) => f.manifests.map((m) => `# daemonset/${f.file}\n${documentText(m)}`))
    .join('---\n');
}

/** The installed objects in apply order, as `installText` prints them (plain data). */
export function installObjects(files: readonly ManifestFile[]): Obj[] {
  return files.filter((f) => f.installed).flatMap((f) => f.manifests.map((m) => structuredClone(m.obj)));
}
