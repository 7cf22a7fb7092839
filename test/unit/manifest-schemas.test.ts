/**
 * Every object `ambit install --dry-run` renders (with the defaults and with other settings), and
 * the waypoint example, checked against the Kubernetes, Istio and Gateway API OpenAPI schemas as
 * published in `kubernetes-models` and its `@kubernetes-models/istio` / `gateway-api` companions
 * (generated from the upstream OpenAPI documents and CRDs), two ways:
 * - the models' JSON-schema validators: types, required fields, enums, formats;
 * - the models' TypeScript interfaces, through the TypeScript compiler: an object literal of the
 *   interface's type may hold no field the schema does not know, so a misspelt field (which the
 *   validators, like the API server's default, let through) fails here.
 * An object of a kind with no model fails the test: nothing rendered goes unchecked.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { manifestFiles } from '../../src/cli/install/manifests.js';
import { installText } from '../../src/cli/install/render.js';
import { applySets, defaultValues, type InstallValues } from '../../src/cli/install/values.js';

type Obj = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } };

/** The models' module of an apiVersion. */
function modelModule(apiVersion: string): string {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') as [string, string] : ['', apiVersion];
  if (group === '') return `kubernetes-models/${version}`;
  if (group.endsWith('.istio.io')) return `@kubernetes-models/istio/${group}/${version}`;
  if (group === 'gateway.networking.k8s.io') return `@kubernetes-models/gateway-api/${group}/${version}`;
  return `kubernetes-models/${group}/${version}`;
}

function objects(v: InstallValues, examples: boolean): Obj[] {
  const files = manifestFiles(v);
  const text = installText(examples ? files.map((f) => ({ ...f, installed: true })) : files);
  return parseAllDocuments(text, { version: '1.1' }).map((d) => d.toJS() as Obj);
}

const defaults = defaultValues('0.1.0');
const rendered: Array<{ what: string; objs: Obj[] }> = [
  { what: 'defaults and the waypoint example', objs: objects(defaults, true) },
  { what: 'other settings', objs: objects(applySets(defaults, ['namespace=mesh', 'control.replicas=1', 'agent.drainSeconds=60', 'crds.istio=false', 'imagePullPolicy=Always']), false) },
];

interface Validatable { validate(): void }
type ModelClass = new (data: Obj) => Validatable;

async function model(o: Obj): Promise<ModelClass | undefined> {
  const mod = await import(modelModule(o.apiVersion)).catch(() => undefined) as Record<string, unknown> | undefined;
  return mod?.[o.kind] as ModelClass | undefined;
}

/** Type-checks `const x: I<Kind> = <object>` for every object; returns the compiler's complaints. */
function typeCheck(objs: readonly Obj[]): string[] {
  const dir = fileURLToPath(new URL('.', import.meta.url));
  const file = `${dir}__manifest_types_check.ts`;
  const lines = objs.map((o, i) => `import type { I${o.kind} as T${i} } from '${modelModule(o.apiVersion)}';\n`
    + `export const o${i}: T${i} = ${JSON.stringify(o)};`);
  const source = lines.join('\n');
  const options: ts.CompilerOptions = {
    strict: true, noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, types: [],
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  const exists = host.fileExists.bind(host);
  const get = host.getSourceFile.bind(host);
  host.readFile = (f) => (f === file ? source : read(f));
  host.fileExists = (f) => f === file || exists(f);
  host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, source, lang) : get(f, lang, ...rest));
  const program = ts.createProgram([file], options, host);
  const sf = program.getSourceFile(file)!;
  return ts.getPreEmitDiagnostics(program, sf).map((d) => {
    const at = d.start === undefined ? '' : `line ${sf.getLineAndCharacterOfPosition(d.start).line + 1}: `;
    const line = d.start === undefined ? -1 : sf.getLineAndCharacterOfPosition(d.start).line;
    const o = line >= 0 ? objs[Math.floor(line / 2)] : undefined;
    return `${o ? `${o.kind} ${o.metadata.name}: ` : ''}${at}${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

for (const { what, objs } of rendered) {
  test(`every object rendered (${what}) is valid against its OpenAPI schema`, async (t) => {
    t.true(objs.length >= 9);
    for (const o of objs) {
      const M = await model(o);
      if (!M) { t.fail(`${o.apiVersion} ${o.kind} ${o.metadata.name}: no schema model for this kind`); continue; }
      t.notThrows(() => new M(o).validate(), `${o.kind} ${o.metadata.name}`);
    }
  });

  test(`every object rendered (${what}) has only fields its schema knows, of the right types`, (t) => {
    t.deepEqual(typeCheck(objs), []);
  });
}

test('the checks catch what they are for: a wrong enum, a wrong type, a misspelt field', async (t) => {
  const ds = objects(defaults, false).find((o) => o.kind === 'DaemonSet')!;
  const M = (await model(ds))!;
  const bad = (edit: (spec: Record<string, any>) => void): Obj => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const copy = structuredClone(ds);
    edit(copy.spec as Record<string, unknown>);
    return copy;
  };
  t.throws(() => new M(bad((s) => { s.updateStrategy.type = 'Rolling'; })).validate(), { message: /updateStrategy\/type must be equal to one of the allowed values/ });
  t.throws(() => new M(bad((s) => { s.template.spec.terminationGracePeriodSeconds = '30'; })).validate(), { message: /terminationGracePeriodSeconds must be integer/ });
  const typo = bad((s) => { s.updateStrategy.rollingUpdate.maxSurg = 1; });
  t.notThrows(() => new M(typo).validate(), 'the validators let unknown fields through, as the API server does by default');
  const complaints = typeCheck([typo]);
  t.is(complaints.length, 1);
  t.regex(complaints[0]!, /DaemonSet ambit-agent: line 2: .*'"maxSurg"' does not exist in type 'IRollingUpdateDaemonSet'/);
  const ap = { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'x' }, spec: { action: 'DENYY' } };
  const AP = (await model(ap))!;
  t.throws(() => new AP(ap).validate(), { message: /spec\/action must be equal to one of the allowed values/ });
});
