/**
 * `ambit install` against the in-test API server (test/helpers/fake-kube-api.ts, the one the
 * control plane's tests use) answering as the real one does for what install uses: bearer-token
 * authentication, CRDs read by name (404 Status when absent), server-side apply (PATCH with
 * application/apply-patch+yaml; fieldManager required; 201 when created, 200 when updated, with a
 * resourceVersion), deletes, and Status objects with a message for refusals.
 */
import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstall, runUninstall } from '../../src/cli/install/install.js';
import { manifestFiles } from '../../src/cli/install/manifests.js';
import { installObjects } from '../../src/cli/install/render.js';
import { applySets, defaultValues } from '../../src/cli/install/values.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';
import { fakeCluster } from '../helpers/kube-cluster.js';
import { runCli } from '../helpers/cli.js';

const TOKEN = 'test-token-1';

interface Applied { path: string; fieldManager: string | null; force: string | null; contentType: string | undefined; body: Record<string, unknown> }

const CRDS = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

/**
 * The shared in-test API server (test/helpers/fake-kube-api.ts), seen as install sees it: what was
 * server-side applied and deleted, with the Gateway API's CRDs (v1 served) in place.
 */
class InstallApi {
  readonly fake = new FakeKubeApi();
  constructor() {
    for (const name of ['gateways.gateway.networking.k8s.io', 'httproutes.gateway.networking.k8s.io', 'grpcroutes.gateway.networking.k8s.io']) {
      this.fake.put(CRDS, { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name }, spec: { versions: [{ name: 'v1', served: true, storage: true }] } });
    }
  }
  /** every server-side apply, refused ones included, in order */
  get applied(): Applied[] {
    return this.fake.seen.filter((s) => s.method === 'PATCH' && s.contentType === 'application/apply-patch+yaml').map((s) => ({
      path: s.path, fieldManager: s.query.get('fieldManager'), force: s.query.get('force'), contentType: s.contentType, body: s.body!,
    }));
  }
  /** object paths deleted (from request index `mark` on) */
  deleted(mark = 0): string[] { return this.fake.seen.slice(mark).filter((s) => s.method === 'DELETE' && s.status === 200).map((s) => s.path); }
}

async function setup(t: import('ava').ExecutionContext) {
  const api = new InstallApi();
  const { dir, kubeconfig } = await fakeCluster(t, { token: TOKEN, api: api.fake });
  const out: string[] = [];
  const install = (set: string[] = []) => runInstall({ version: '0.1.0', dryRun: false, set, env: { KUBECONFIG: kubeconfig, HOME: dir }, print: (s) => { out.push(s); } });
  const uninstall = (o: { removeCrds?: boolean; removeNamespace?: boolean; set?: string[] } = {}) => runUninstall({
    version: '0.1.0', set: o.set ?? [], removeCrds: o.removeCrds ?? false, removeNamespace: o.removeNamespace ?? false,
    env: { KUBECONFIG: kubeconfig, HOME: dir }, print: (s) => { out.push(s); },
  });
  return { api, kubeconfig, out, install, uninstall, dir };
}

const pathOf = (o: Record<string, unknown>): string => {
  const md = o.metadata as { name: string; namespace?: string };
  return `${String(o.kind)}/${md.namespace ?? ''}/${md.name}`;
};

test('install checks the Gateway API prerequisite, then server-side applies every rendered object in order; again: applied', async (t) => {
  const { api, out, install } = await setup(t);
  await install();
  const expected = installObjects(manifestFiles(defaultValues('0.1.0')));
  t.deepEqual(api.applied.map((a) => pathOf(a.body)), expected.map(pathOf));
  t.deepEqual(api.applied.map((a) => a.body), expected, 'the objects --dry-run prints, unchanged');
  for (const a of api.applied) {
    t.is(a.fieldManager, 'ambit');
    t.is(a.force, 'true');
  }
  t.deepEqual(api.applied.slice(0, 3).map((a) => a.path), [
    '/api/v1/namespaces/ambit-system',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/authorizationpolicies.security.istio.io',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/peerauthentications.security.istio.io',
  ]);
  t.true(api.applied.some((a) => a.path === '/apis/apps/v1/namespaces/ambit-system/daemonsets/ambit-agent'));
  t.true(api.applied.some((a) => a.path === '/apis/policy/v1/namespaces/ambit-system/poddisruptionbudgets/ambit-control'));
  const text = out.join('');
  t.regex(text, /^installing into http:\/\/127\.0\.0\.1:\d+ /);
  t.regex(text, /Namespace ambit-system created\n/);
  t.regex(text, /DaemonSet ambit-system\/ambit-agent created\n/);
  t.regex(text, new RegExp(`installed ${expected.length} objects\\n$`));

  out.length = 0;
  await install();
  t.regex(out.join(''), /DaemonSet ambit-system\/ambit-agent applied\n/);
  t.notRegex(out.join(''), / created\n/);
});

test('an Istio CRD that is not ambit\'s is kept as it is; the rest is applied', async (t) => {
  const { api, out, install } = await setup(t);
  const istio = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io';
  api.fake.put(CRDS, { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: 'virtualservices.networking.istio.io', labels: { app: 'istiod' } } });
  await install();
  t.false(api.applied.some((a) => a.path === istio));
  t.regex(out.join(''), /CustomResourceDefinition virtualservices\.networking\.istio\.io kept: it exists and is not ambit's \(no app\.kubernetes\.io\/part-of=ambit\)\n/);
  t.true(api.applied.some((a) => a.path.endsWith('/destinationrules.networking.istio.io')));
});

test('uninstall removes what install added, newest first, and nothing else; CRDs and the namespace only when asked', async (t) => {
  const { api, out, install, uninstall } = await setup(t);
  await install(['namespace=mesh']);
  // something install did not add, under a name install uses: not ambit's, so kept
  const sa = '/api/v1/namespaces/mesh/serviceaccounts/ambit-agent';
  api.fake.put('/api/v1/namespaces/mesh/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'ambit-agent', namespace: 'mesh' } });
  out.length = 0;
  let mark = api.fake.seen.length;
  await uninstall({ set: ['namespace=mesh'] });
  t.deepEqual(api.deleted(mark), [
    '/apis/apps/v1/namespaces/mesh/daemonsets/ambit-agent',
    '/apis/policy/v1/namespaces/mesh/poddisruptionbudgets/ambit-control',
    '/api/v1/namespaces/mesh/services/ambit-control',
    '/apis/apps/v1/namespaces/mesh/deployments/ambit-control',
    '/apis/rbac.authorization.k8s.io/v1/namespaces/mesh/rolebindings/ambit-control',
    '/apis/rbac.authorization.k8s.io/v1/namespaces/mesh/roles/ambit-control',
    '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/ambit-control',
    '/apis/rbac.authorization.k8s.io/v1/clusterroles/ambit-control',
    '/api/v1/namespaces/mesh/serviceaccounts/ambit-control',
    '/apis/gateway.networking.k8s.io/v1/gatewayclasses/ambit-waypoint',
  ]);
  const text = out.join('');
  t.regex(text, /ServiceAccount mesh\/ambit-agent kept: it is not ambit's/);
  t.regex(text, /CustomResourceDefinition authorizationpolicies\.security\.istio\.io kept \(--remove-crds deletes it and all authorizationpolicies of the cluster\)/);
  t.regex(text, /Namespace mesh kept \(--remove-namespace/);
  t.truthy(api.fake.get(sa));
  t.truthy(api.fake.get('/api/v1/namespaces/mesh'));

  mark = api.fake.seen.length;
  await uninstall({ set: ['namespace=mesh'], removeCrds: true, removeNamespace: true });
  t.is(api.deleted(mark).length, 5, 'the four CRDs and the namespace');
  t.is(api.deleted(mark).at(-1), '/api/v1/namespaces/mesh');
});

test('uninstall first asks every running agent to take its CNI plugin off its node, then deletes; a node it cannot ask is named with what to run', async (t) => {
  const { api, out, install, uninstall } = await setup(t);
  await install();
  // node-1's agent admin port (loopback in the pod): answers POST /cni/uninstall
  const asked: string[] = [];
  const admin = http.createServer((req, res) => {
    asked.push(`${req.method ?? ''} ${req.url ?? ''} at request ${api.fake.seen.length}`);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ node: 'node-1', conf: '/host/etc/cni/net.d/10-calico.conflist', removed: ['/host/opt/cni/bin/ambit-cni', '/host/opt/cni/bin/ambit-cni.d'] }));
  });
  await new Promise<void>((r) => admin.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { admin.close(() => r()); admin.closeAllConnections(); }));
  const pod = (name: string, node: string, phase: string) => api.fake.put('/api/v1/namespaces/ambit-system/pods', {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'ambit-system', labels: { app: 'ambit-agent' } }, spec: { nodeName: node }, status: { phase },
  });
  pod('ambit-agent-a', 'node-1', 'Running');
  api.fake.forwardPort('ambit-system', 'ambit-agent-a', 15000, (admin.address() as AddressInfo).port);
  pod('ambit-agent-b', 'node-2', 'Running'); // its port-forward fails
  pod('ambit-agent-c', 'node-3', 'Pending');
  out.length = 0;
  const mark = api.fake.seen.length;
  await uninstall();
  t.is(asked.length, 1);
  t.regex(asked[0]!, /^POST \/cni\/uninstall at request /);
  const firstDelete = api.fake.seen.findIndex((s, i) => i >= mark && s.method === 'DELETE');
  t.true(Number(/at request (\d+)/.exec(asked[0]!)![1]) < firstDelete, 'before any object is deleted');
  const text = out.join('');
  t.regex(text, /node node-1 \(agent ambit-system\/ambit-agent-a\): CNI plugin removed \(unchained from \/host\/etc\/cni\/net\.d\/10-calico\.conflist; 2 files removed\)\n/);
  t.regex(text, /node node-2 \(agent ambit-system\/ambit-agent-b\): CNI plugin not removed: .*; run `ambit agent --cni-uninstall/);
  t.regex(text, /node node-3 \(agent ambit-system\/ambit-agent-c\): not running, its CNI plugin stays; run `ambit agent --cni-uninstall/);
  t.regex(text, /DaemonSet ambit-system\/ambit-agent deleted\n/);
});

test('missing Gateway API CRDs are named and nothing is applied', async (t) => {
  const { api, install } = await setup(t);
  api.fake.remove(`${CRDS}/grpcroutes.gateway.networking.k8s.io`);
  await t.throwsAsync(install(), { message: /install: the Gateway API \(v1\) is a prerequisite and its CRDs are missing: grpcroutes\.gateway\.networking\.k8s\.io; install its standard channel release first/ });
  t.deepEqual(api.applied, []);
});

const GRPCROUTE_CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: grpcroutes.gateway.networking.k8s.io, annotations: { gateway.networking.k8s.io/bundle-version: v1.2.1 } }
spec:
  group: gateway.networking.k8s.io
  names: { kind: GRPCRoute, plural: grpcroutes }
  scope: Namespaced
  versions: [{ name: v1, served: true, storage: true }]
`;
const RELEASE = `${GRPCROUTE_CRD}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: { name: safe-upgrades.gateway.networking.k8s.io }
---
`;

test('--gateway-api FILE: the release\'s Gateway API CRDs are applied first (with force), other documents skipped; then ambit installs', async (t) => {
  const { api, out, dir, kubeconfig } = await setup(t);
  api.fake.remove(`${CRDS}/grpcroutes.gateway.networking.k8s.io`);
  const file = join(dir, 'standard-install.yaml');
  writeFileSync(file, RELEASE);
  await runInstall({ version: '0.1.0', dryRun: false, set: [], gatewayApi: file, env: { KUBECONFIG: kubeconfig, HOME: dir }, print: (x) => { out.push(x); } });
  const first = api.applied[0]!;
  t.is(first.path, `${CRDS}/grpcroutes.gateway.networking.k8s.io`);
  t.is(first.force, 'true');
  const text = out.join('');
  t.regex(text, /CustomResourceDefinition grpcroutes\.gateway\.networking\.k8s\.io created\n/);
  t.regex(text, /ValidatingAdmissionPolicy safe-upgrades\.gateway\.networking\.k8s\.io skipped: not a Gateway API CRD\n/);
  t.regex(text, /installed \d+ objects\n/);
});

test('--gateway-api URL: downloaded, following a redirect; a file without Gateway API CRDs is refused before anything is applied', async (t) => {
  const { api, out, dir, kubeconfig } = await setup(t);
  api.fake.remove(`${CRDS}/grpcroutes.gateway.networking.k8s.io`);
  const server = http.createServer((req, res) => {
    if (req.url === '/latest') { res.writeHead(302, { location: '/v1.2.1/standard-install.yaml' }); res.end(); return; }
    if (req.url === '/v1.2.1/standard-install.yaml') { res.end(RELEASE); return; }
    res.writeHead(404); res.end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => { server.close(); });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const run = (gatewayApi: string) => runInstall({ version: '0.1.0', dryRun: false, set: [], gatewayApi, env: { KUBECONFIG: kubeconfig, HOME: dir }, print: (x) => { out.push(x); } });
  await t.throwsAsync(run(`${url}/missing`), { message: `--gateway-api ${url}/missing: HTTP 404` });
  const notCrds = join(dir, 'other.yaml');
  writeFileSync(notCrds, 'apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\n');
  await t.throwsAsync(run(notCrds), { message: `${notCrds}: no CustomResourceDefinition of gateway.networking.k8s.io in it (is it a Gateway API release's install file?)` });
  t.deepEqual(api.applied, [], 'nothing applied after a refusal');
  await run(`${url}/latest`);
  t.is(api.applied[0]!.path, `${CRDS}/grpcroutes.gateway.networking.k8s.io`);
  t.regex(out.join(''), new RegExp(`installing the Gateway API CRDs from ${url}/latest`));
});

test('a refusal stops the install, naming the object and the API server\'s message', async (t) => {
  const { api, install } = await setup(t);
  api.fake.fail('PATCH', /^\/apis\/apps\/v1\/namespaces\/mesh\/deployments\/ambit-control$/, 422, 1, 'Deployment.apps "ambit-control" is invalid: spec.replicas: Invalid value: -1');
  await t.throwsAsync(install(['namespace=mesh']), { message: 'install: Deployment mesh/ambit-control: HTTP 422: Deployment.apps "ambit-control" is invalid: spec.replicas: Invalid value: -1' });
  const last = api.applied.at(-1)!;
  t.is(pathOf(last.body), 'Deployment/mesh/ambit-control');
  const expected = installObjects(manifestFiles(applySets(defaultValues('0.1.0'), ['namespace=mesh']))).map(pathOf);
  t.deepEqual(api.applied.map((a) => pathOf(a.body)), expected.slice(0, expected.indexOf('Deployment/mesh/ambit-control') + 1), 'nothing after it');
});

test('the ambit install command against the API server: exit 0, one line per object; a wrong token is a one-line error', async (t) => {
  const { kubeconfig, dir } = await setup(t);
  const run = (env: Record<string, string>) => runCli(['install', '--set', 'crds.istio=false'], env);
  const ok = await run({ KUBECONFIG: kubeconfig, HOME: dir });
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /ClusterRole ambit-control created\n[\s\S]*installed 12 objects\n$/);
  const wrong = join(dir, 'wrong');
  writeFileSync(wrong, readFileSync(kubeconfig, 'utf8').replace(TOKEN, 'other'));
  const denied = await run({ KUBECONFIG: wrong, HOME: dir });
  t.is(denied.code, 1);
  t.is(denied.stderr, 'ambit: install: reading CRD gateways.gateway.networking.k8s.io: HTTP 401: Unauthorized\n');
});
