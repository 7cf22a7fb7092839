/**
 * `ambit apply` / `ambit delete` in process: identity-keyed storage, the control plane's
 * translator as the judge (in the company of what is already stored), and where errors point.
 */
import test from 'ava';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyFile, applyText, deleteFile, fieldPath, parseManifest, storeFileName } from '../../src/cli/apply.js';
import { isMeshError } from '../../src/core/index.js';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'ambit-apply-test-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function file(dir: string, name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

const service = 'apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  clusterIP: 10.96.0.10\n  selector: { app: echo }\n  ports: [{ name: http, port: 80, targetPort: 8080 }]\n';
const route = 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\nspec:\n  hosts: [echo]\n  http:\n  - route:\n    - destination: { host: echo }\n';

test('field paths of control plane messages', (t) => {
  t.deepEqual(fieldPath('spec.rules[0].from[1].source.ipBlocks[2]'), ['spec', 'rules', 0, 'from', 1, 'source', 'ipBlocks', 2]);
  t.deepEqual(fieldPath('metadata.labels["app.kubernetes.io/name"]'), ['metadata', 'labels', 'app.kubernetes.io/name']);
  t.deepEqual(fieldPath(''), []);
});

test('objects are judged together with what is stored: a route to a stored Service has no warning', async (t) => {
  const dir = tempDir(t);
  const first = await applyFile(file(dir, 'route.yaml', route), join(dir, 'state'));
  t.true(first.warnings.some((w) => /route\.yaml document 1 \(line \d+\): .*host "echo" .* is not a known Service/.test(w)), first.warnings.join('\n'));
  await applyFile(file(dir, 'svc.yaml', service), join(dir, 'state'));
  const again = await applyFile(file(dir, 'route2.yaml', route.replace('[echo]', '[echo, echo.default.svc.cluster.local]')), join(dir, 'state'));
  t.deepEqual(again.warnings, []);
  t.deepEqual(again.objects.map((o) => `${o.object} ${o.outcome}`), ['VirtualService default/echo configured']);
  t.is(readdirSync(join(dir, 'state', 'config')).length, 2);
});

test('a rejection deep in a List item points at the item, the document and the line of the field', async (t) => {
  const dir = tempDir(t);
  const list = 'apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: { name: shop }\n'
    + '- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: { name: p, namespace: shop }\n  spec:\n    rules:\n    - from:\n      - source:\n          ipBlocks: ["10.0.0.0/40"]\n';
  const e = await t.throwsAsync(applyFile(file(dir, 'list.yaml', list), join(dir, 'state')));
  t.true(isMeshError(e, 'AMBIT_CONFIG_INVALID'));
  t.regex(e!.message, /list\.yaml document 1 items\[1\] \(line 14\): AuthorizationPolicy shop\/p: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: /);
  t.regex(e!.message, /nothing was applied$/);
  t.deepEqual(readdirSync(dir), ['list.yaml'], 'no state directory was even created');
});

test('one object twice in a file is refused; invalid names never become paths', (t) => {
  const twice = `${service}---\n${service}`;
  t.throws(() => parseManifest(twice, 'x.yaml'), { message: /x\.yaml document 2 \(line 11\): metadata\.name: Service default\/echo is already defined in x\.yaml document 1/ });
  const traversal = 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ../../etc/passwd\n';
  t.throws(() => parseManifest(traversal, 'y.yaml'), { message: /y\.yaml document 1 \(line 1\): metadata\.name: "\.\.\/\.\.\/etc\/passwd" is not a valid name/ });
  const ns = 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: a_b\n';
  t.throws(() => parseManifest(ns, 'z.yaml'), { message: /metadata\.namespace: "a_b" is not a valid namespace name/ });
});

test('store names: namespace defaulted, cluster-scoped kinds without one, long identities hashed and still distinct', (t) => {
  const [svc] = parseManifest('apiVersion: v1\nkind: Service\nmetadata: { name: s }\n', 's');
  t.is(storeFileName(svc!), 'applied_Service_-_default_s.yaml');
  const [ns] = parseManifest('apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, namespace: ignored }\n', 'n');
  t.is(storeFileName(ns!), 'applied_Namespace_-_-_shop.yaml');
  t.is(ns!.obj.metadata.namespace, undefined);
  const long = (n: string) => parseManifest(`apiVersion: v1\nkind: ConfigMap\nmetadata: { name: ${n} }\n`, 'l')[0]!;
  const a = storeFileName(long('a'.repeat(250)));
  const b = storeFileName(long(`${'a'.repeat(249)}b`));
  t.true(a.length <= 255 && b.length <= 255);
  t.not(a, b);
});

test('waypoint apply (applyText) stores by identity too, so delete -f of the same Gateway removes it', (t) => {
  const dir = tempDir(t);
  const gw = 'apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  namespace: default\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]\n';
  const dest = applyText(gw, 'waypoint default/waypoint', join(dir, 'state'));
  t.regex(dest, /applied_Gateway_gateway\.networking\.k8s\.io_default_waypoint\.yaml$/);
  const r = deleteFile(file(dir, 'gw.yaml', gw), join(dir, 'state'));
  t.deepEqual(r, { deleted: ['Gateway default/waypoint'], notFound: [] });
});

test('several files are judged and stored together; the same object in two of them is refused', async (t) => {
  const dir = tempDir(t);
  const svc = file(dir, 'svc.yaml', service);
  const vs = file(dir, 'vs.yaml', route);
  const r = await applyFile([svc, vs], join(dir, 'state'));
  t.deepEqual(r.objects.map((o) => `${o.object} ${o.outcome}`), ['Service default/echo created', 'VirtualService default/echo created']);
  t.deepEqual(r.warnings, [], 'the route was judged with the Service of the other file');
  await t.throwsAsync(applyFile([svc, svc], join(dir, 'state')), { message: /svc\.yaml document 1 \(line 1\): metadata\.name: Service default\/echo is already defined in .*svc\.yaml document 1/ });
  t.deepEqual(deleteFile([svc, vs], join(dir, 'state')).deleted, ['Service default/echo', 'VirtualService default/echo']);
});

test('apply again: unchanged, or configured when the object changed; delete reports what is not stored', async (t) => {
  const dir = tempDir(t);
  const policy = (action: string) => file(dir, `p-${action}.yaml`, `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec:\n  action: ${action}\n  rules: [{}]\n`);
  const outcome = async (f: string) => (await applyFile(f, join(dir, 'state'))).objects.map((o) => `${o.object} ${o.outcome}`);
  t.deepEqual(await outcome(policy('DENY')), ['AuthorizationPolicy default/a created']);
  t.deepEqual(await outcome(policy('DENY')), ['AuthorizationPolicy default/a unchanged'], 'the same object from another file is unchanged');
  t.deepEqual(await outcome(policy('ALLOW')), ['AuthorizationPolicy default/a configured']);
  t.deepEqual(deleteFile(policy('DENY'), join(dir, 'state')), { deleted: ['AuthorizationPolicy default/a'], notFound: [] });
  t.deepEqual(deleteFile(policy('DENY'), join(dir, 'state')), { deleted: [], notFound: ['AuthorizationPolicy default/a'] });
});
