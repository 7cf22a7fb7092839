/**
 * `ambit analyze`: the control plane's translator over YAML fixtures (test/fixtures/analyze), each
 * problem placed at its file, document, line and field; errors decide the exit status.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { analyze, analyzeExitCode, renderAnalysis, type AnalyzeReport } from '../../../src/cli/analyze.js';
import { isMeshError } from '../../../src/core/index.js';

const FIXTURE = fileURLToPath(new URL('../../fixtures/analyze', import.meta.url));
const main = fileURLToPath(new URL('../../../src/cli/main.ts', import.meta.url));

function rows(r: AnalyzeReport): string[] {
  return r.problems.map((p) => [p.level, basename(p.file), p.document ?? '-', p.line ?? '-', p.object ?? '-', p.field ?? '-'].join(' '));
}

function tempFile(t: { teardown(fn: () => void): void }, text: string): string {
  const d = mkdtempSync(join(tmpdir(), 'ambit-analyze-test-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  const p = join(d, 'input.yaml');
  writeFileSync(p, text);
  return p;
}

test('the watched directory: every problem at its file, document, line and field; rejections are errors', async (t) => {
  const r = await analyze({ files: [], dir: FIXTURE });
  t.deepEqual(rows(r), [
    'warning 10-routes.yaml 2 27 DestinationRule default/echo spec.subsets[1]',
    'warning 10-routes.yaml 3 39 VirtualService default/ghost spec.hosts[0]',
    'warning 10-routes.yaml 4 52 VirtualService default/other spec.hosts',
    'warning 20-policy.yaml 1 6 AuthorizationPolicy default/typo spec',
    'error 20-policy.yaml 1 7 AuthorizationPolicy default/typo spec.action',
    'warning 20-policy.yaml 2 20 AuthorizationPolicy default/missing-target spec.targetRefs[0]',
    'info 30-ignored.yaml 1 2 ConfigMap default/settings kind',
    'warning 30-ignored.yaml 2 10 Gateway default/ingress apiVersion',
    'error 40-broken.yaml 1 8 - -',
  ]);
  const msg = (object: string, field: string): string => r.problems.find((p) => p.object === object && p.field === field)?.message ?? '';
  t.is(msg('AuthorizationPolicy default/typo', 'spec.action'), '"DENYY" is not one of ALLOW, DENY, AUDIT, CUSTOM', 'the translator\'s message, without the object and field it starts with');
  t.regex(msg('DestinationRule default/echo', 'spec.subsets[1]'), /subset "v2" is used by no route/);
  t.regex(msg('VirtualService default/other', 'spec.hosts'), /Service default\/other has no waypoint/);
  t.regex(msg('AuthorizationPolicy default/missing-target', 'spec.targetRefs[0]'), /Service default\/missing does not exist/);
  t.regex(msg('Gateway default/ingress', 'apiVersion'), /read from API group gateway\.networking\.k8s\.io/);
  t.regex(r.problems.find((p) => p.file.endsWith('40-broken.yaml'))!.message, /^Flow sequence/);
  t.like(r, { errors: 2, warnings: 6, objects: 13 });
  t.is(r.files.length, 5);
  t.is(analyzeExitCode(r), 1);
  const table = renderAnalysis(r, 'table');
  t.regex(table, /^LEVEL +FILE +DOC +LINE +OBJECT +FIELD +MESSAGE\n/);
  t.regex(table, /\n2 errors, 6 warnings in 13 objects of 5 files/);
});

test('-f: judged with what the watched directory holds (a file\'s object replaces its stored version); only the files are reported', async (t) => {
  // replaces the directory's VirtualService echo: both subsets are used now, and the Service is known from there
  const f = tempFile(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
spec:
  hosts: [echo]
  http:
    - route:
        - destination: { host: echo, subset: v1 }
          weight: 90
        - destination: { host: echo, subset: v2 }
          weight: 10
`);
  const r = await analyze({ files: [f], dir: FIXTURE });
  t.deepEqual(r.problems, [], 'the directory\'s own errors are not what was asked');
  t.is(analyzeExitCode(r), 0);
  t.is(renderAnalysis(r, 'table'), 'no problems: 1 object of 1 file\n');
  // alone (an empty working directory), the same route names no known Service
  const alone = await analyze({ files: [f], dir: join(FIXTURE, 'no-such-dir') });
  t.deepEqual(rows(alone), [
    'warning input.yaml 1 6 VirtualService default/echo spec.hosts[0]',
    'warning input.yaml 1 9 VirtualService default/echo spec.http[0].route[0].destination.host',
    'warning input.yaml 1 11 VirtualService default/echo spec.http[0].route[1].destination.host',
  ]);
  t.is(analyzeExitCode(alone), 0, 'warnings alone do not fail');
});

test('-o json: the same problems and counts; a rejection in a later document is placed there', async (t) => {
  const f = tempFile(t, `apiVersion: v1
kind: Service
metadata: { name: a, namespace: shop }
spec: { clusterIP: 10.96.1.1, ports: [{ port: 80 }] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: shop }
spec:
  rules:
    - from:
        - source:
            ipBlocks: ["10.0.0.0/33"]
`);
  const r = await analyze({ files: [f, f], dir: join(FIXTURE, 'no-such-dir') });
  const j = JSON.parse(renderAnalysis(r, 'json')) as AnalyzeReport;
  t.is(j.errors, 3, 'the rejected policy, and the second file repeating both objects');
  const policy = j.problems.find((p) => p.field?.startsWith('spec.rules'))!;
  t.like(policy, { level: 'error', document: 2, line: 13, object: 'AuthorizationPolicy shop/p', field: 'spec.rules[0].from[0].source.ipBlocks[0]' });
  t.is(j.problems.filter((p) => /already defined in .* document 1; the first definition applies/.test(p.message)).length, 1);
  t.is(analyzeExitCode(r), 1);
});

test('without -f and without a watched directory the analysis cannot run', async (t) => {
  const e = await t.throwsAsync(analyze({ files: [], dir: join(FIXTURE, 'no-such-dir') }));
  t.true(isMeshError(e, 'AMBIT_CONFIG_INVALID'));
  t.regex(e?.message ?? '', /no watched config directory .*give the files to analyze with -f/);
});

test('the ambit analyze command: exit 1 with errors, 0 without', async (t) => {
  const run = async (args: string[]): Promise<{ code: number | null; out: string }> => {
    const c = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, 'analyze', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const [code] = await once(c, 'close') as [number | null];
    return { code, out };
  };
  const bad = await run(['--dir', FIXTURE]);
  t.is(bad.code, 1);
  t.regex(bad.out, /error +\S*20-policy\.yaml +1 +7 +AuthorizationPolicy default\/typo +spec\.action +"DENYY"/);
  const good = await run(['--dir', FIXTURE, '-f', join(FIXTURE, 'config', '00-cluster.yaml'), '-o', 'json']);
  t.is(good.code, 0, good.out);
  t.like(JSON.parse(good.out) as AnalyzeReport, { errors: 0, warnings: 0, objects: 5 });
});
