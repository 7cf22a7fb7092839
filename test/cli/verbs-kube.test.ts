/**
 * `ambit namespace enroll|unenroll` and `ambit waypoint apply|list|delete` against a cluster: the
 * command as a child process, pointed by a kubeconfig at the in-test API server
 * (test/helpers/kube-cluster.ts), from a directory without a local mesh (so chooseMesh picks the
 * cluster, as it does for status). What the server stored and received is asserted.
 */
import test, { type ExecutionContext } from 'ava';
import { runCli, type CliRun } from '../helpers/cli.js';
import { fakeCluster } from '../helpers/kube-cluster.js';
import type { Obj } from '../helpers/fake-kube-api.js';

const TOKEN = 'test-token-verbs';
const GW = '/apis/gateway.networking.k8s.io/v1/namespaces';

async function setup(t: ExecutionContext, namespace?: string) {
  const c = await fakeCluster(t, { token: TOKEN, ...(namespace !== undefined ? { namespace } : {}) });
  const cli = (...args: string[]): Promise<CliRun> => runCli(args, c.env, { cwd: c.dir, unset: ['AMBIT_DIR'] });
  const ns = (name: string, labels: Record<string, string> = {}) => c.api.put('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  const gateway = (namespace: string, name: string, cls: string, extra: { labels?: Record<string, string>; status?: unknown } = {}) =>
    c.api.put(`${GW}/${namespace}/gateways`, {
      apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name, namespace, ...(extra.labels ? { labels: extra.labels } : {}) },
      spec: { gatewayClassName: cls, listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] }, ...(extra.status !== undefined ? { status: extra.status } : {}),
    });
  return { ...c, cli, ns, gateway };
}

const labelsOf = (o: Obj | undefined): Record<string, string> | undefined => o?.metadata?.labels;

test('namespace enroll|unenroll on a cluster: a merge patch of the label, the other labels kept; a missing namespace is one line, exit 1', async (t) => {
  const { api, cli, ns } = await setup(t);
  ns('shop', { team: 'a' });
  const on = await cli('namespace', 'enroll', 'shop');
  t.is(on.code, 0, on.stderr);
  t.is(on.stdout, 'namespace shop enrolled: istio.io/dataplane-mode=ambient (the agents capture its running pods)\n');
  t.deepEqual(labelsOf(api.get('/api/v1/namespaces/shop')), { team: 'a', 'istio.io/dataplane-mode': 'ambient' });
  const patch = api.writes().at(-1)!;
  t.is(patch.method, 'PATCH');
  t.is(patch.contentType, 'application/merge-patch+json');
  t.deepEqual(patch.body, { metadata: { labels: { 'istio.io/dataplane-mode': 'ambient' } } });

  const off = await cli('namespace', 'unenroll', 'shop', '--kube');
  t.is(off.code, 0, off.stderr);
  t.regex(off.stdout, /^namespace shop unenrolled: istio\.io\/dataplane-mode removed/);
  t.deepEqual(labelsOf(api.get('/api/v1/namespaces/shop')), { team: 'a' });
  t.deepEqual(api.writes().at(-1)!.body, { metadata: { labels: { 'istio.io/dataplane-mode': null } } });

  const missing = await cli('namespace', 'enroll', 'nope');
  t.is(missing.code, 1);
  t.regex(missing.stderr, /^ambit: namespace nope: not found in http:\/\/127\.0\.0\.1:\d+\n$/);
  t.falsy(api.get('/api/v1/namespaces/nope'), 'a merge patch creates nothing');
});

test('waypoint apply on a cluster: server-side apply of the Gateway (class ambit-waypoint, field manager ambit); --enroll-namespace labels the namespace', async (t) => {
  const { api, cli, ns } = await setup(t);
  ns('shop', { 'istio.io/dataplane-mode': 'ambient' });
  const r = await cli('waypoint', 'apply', '-n', 'shop', '--name', 'wp', '--for', 'all', '--enroll-namespace');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.split('\n'), [
    'Gateway shop/wp created (class ambit-waypoint, listener mesh 15008/HBONE, istio.io/waypoint-for=all, field manager ambit); the control plane creates its Deployment and Service',
    'namespace shop labelled istio.io/use-waypoint=wp',
    '',
  ]);
  const apply = api.seen.find((s) => s.method === 'PATCH' && s.path === `${GW}/shop/gateways/wp`)!;
  t.is(apply.contentType, 'application/apply-patch+yaml');
  t.is(apply.query.get('fieldManager'), 'ambit');
  const gw = api.get(`${GW}/shop/gateways/wp`)!;
  t.deepEqual(gw.spec, { gatewayClassName: 'ambit-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] });
  t.deepEqual(labelsOf(gw), { 'istio.io/waypoint-for': 'all' });
  t.is(gw.metadata?.annotations, undefined, 'the local mesh\'s enroll annotation is not sent: the label is patched');
  t.deepEqual(labelsOf(api.get('/api/v1/namespaces/shop')), { 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'wp' });

  const again = await cli('waypoint', 'apply', '-n', 'shop', '--name', 'wp');
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /^Gateway shop\/wp applied \(.*waypoint-for=service/);
  t.is(labelsOf(api.get(`${GW}/shop/gateways/wp`))!['istio.io/waypoint-for'], 'service');

  const noNs = await cli('waypoint', 'apply', '-n', 'gone', '--enroll-namespace');
  t.is(noNs.code, 1);
  t.regex(noNs.stderr, /^ambit: namespace gone: not found in http:/);
  const bad = await cli('waypoint', 'apply', '--name', 'Bad_Name');
  t.is(bad.code, 1);
  t.is(bad.stderr, 'ambit: --name: "Bad_Name" is not a DNS label\n');
});

test('waypoint apply without -n takes the kubeconfig context\'s namespace, as kubectl does', async (t) => {
  const { api, cli } = await setup(t, 'team-a');
  const r = await cli('waypoint', 'apply');
  t.is(r.code, 0, r.stderr);
  t.truthy(api.get(`${GW}/team-a/gateways/waypoint`));
});

test('waypoint list on a cluster: waypoint classes only, with FOR, PROGRAMMED (or -) and ADDRESS; -n, -A, -o json', async (t) => {
  const { cli, gateway } = await setup(t);
  gateway('shop', 'wp', 'ambit-waypoint', {
    labels: { 'istio.io/waypoint-for': 'workload' },
    status: { conditions: [{ type: 'Accepted', status: 'True' }, { type: 'Programmed', status: 'True', reason: 'Programmed' }], addresses: [{ type: 'IPAddress', value: '10.96.0.42' }] },
  });
  gateway('shop', 'fresh', 'istio-waypoint');
  gateway('shop', 'ingress', 'istio');
  gateway('default', 'broken', 'ambit-waypoint', { status: { conditions: [{ type: 'Programmed', status: 'False', reason: 'Invalid', message: 'Deployment refused' }] } });

  const all = await cli('waypoint', 'list', '-A', '-o', 'json');
  t.is(all.code, 0, all.stderr);
  t.deepEqual(JSON.parse(all.stdout), [
    { namespace: 'default', name: 'broken', class: 'ambit-waypoint', for: 'service', programmed: 'False', reason: 'Invalid: Deployment refused', address: null },
    { namespace: 'shop', name: 'fresh', class: 'istio-waypoint', for: 'service', programmed: null, reason: null, address: null },
    { namespace: 'shop', name: 'wp', class: 'ambit-waypoint', for: 'workload', programmed: 'True', reason: null, address: '10.96.0.42' },
  ]);
  const shop = await cli('waypoint', 'list', '-n', 'shop');
  t.is(shop.code, 0, shop.stderr);
  const lines = shop.stdout.trimEnd().split('\n');
  t.regex(lines[0]!, /^NAMESPACE\s+NAME\s+FOR\s+PROGRAMMED\s+ADDRESS$/);
  t.regex(lines[1]!, /^shop\s+fresh\s+service\s+-\s+-$/);
  t.regex(lines[2]!, /^shop\s+wp\s+workload\s+True\s+10\.96\.0\.42$/);
  t.is(lines.length, 3, 'the Gateway of class istio is not listed');
  const dflt = await cli('waypoint', 'list', '-n', 'default');
  t.regex(dflt.stdout, /^default\s+broken\s+service\s+False \(Invalid: Deployment refused\)\s+-$/m);
  const none = await cli('waypoint', 'list', '-n', 'empty');
  t.is(none.stdout, 'no waypoints (ambit waypoint apply)\n');
  const both = await cli('waypoint', 'list', '-n', 'shop', '-A');
  t.is(both.code, 1);
  t.is(both.stderr, 'ambit: waypoint list: -n and -A: give one\n');
});

test('waypoint delete on a cluster: the Gateway goes; a missing one and a Gateway that is not a waypoint are errors (exit 1), the others still go', async (t) => {
  const { api, cli, gateway } = await setup(t);
  const uid = gateway('shop', 'wp', 'ambit-waypoint').metadata!.uid;
  gateway('shop', 'wp2', 'istio-waypoint');
  gateway('shop', 'ingress', 'istio');
  const r = await cli('waypoint', 'delete', '-n', 'shop', 'wp');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'waypoint shop/wp deleted (the control plane\'s Deployment and Service for it go with it)\n');
  t.is(api.get(`${GW}/shop/gateways/wp`), undefined);
  const del = api.seen.find((s) => s.method === 'DELETE')!;
  t.deepEqual(del.body, { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid } }, 'the Gateway checked is the one deleted');

  const mixed = await cli('waypoint', 'delete', '-n', 'shop', 'ingress', 'nope', 'wp2');
  t.is(mixed.code, 1);
  t.is(mixed.stdout, 'waypoint shop/wp2 deleted (the control plane\'s Deployment and Service for it go with it)\n');
  t.is(mixed.stderr, 'ambit: Gateway shop/ingress is not a waypoint (gatewayClassName "istio", not ambit-waypoint or istio-waypoint); not deleted (kubectl delete gateway deletes any Gateway)\n'
    + 'ambit: waypoint shop/nope: not found (ambit waypoint list)\n');
  t.truthy(api.get(`${GW}/shop/gateways/ingress`), 'the non-waypoint Gateway is kept');
  t.is(api.get(`${GW}/shop/gateways/wp2`), undefined);
  t.is(api.seen.filter((s) => s.method === 'DELETE').length, 2, 'no DELETE for the refused or missing ones');
});

test('the API server\'s refusal is one line naming the object and its message', async (t) => {
  const { api, cli } = await setup(t);
  api.fail('PATCH', /\/gateways\/wp$/, 403, 1, 'gateways.gateway.networking.k8s.io "wp" is forbidden: User "u" cannot patch resource "gateways"');
  const r = await cli('waypoint', 'apply', '--name', 'wp');
  t.is(r.code, 1);
  t.is(r.stderr, 'ambit: waypoint apply: Gateway default/wp: HTTP 403: gateways.gateway.networking.k8s.io "wp" is forbidden: User "u" cannot patch resource "gateways"\n');
});

test('the mesh is chosen as for status: --dir names the local mesh (even with a kubeconfig); --kube with --dir is refused', async (t) => {
  const { api, cli, ns, dir } = await setup(t);
  ns('shop');
  const local = await cli('namespace', 'enroll', 'shop', '--dir', `${dir}/nothing`);
  t.is(local.code, 1);
  t.regex(local.stderr, /^ambit: no running cluster: .*nothing\/state\.json does not exist \(start one with: ambit up\)\n$/);
  const both = await cli('waypoint', 'list', '--kube', '--dir', dir);
  t.is(both.code, 1);
  t.is(both.stderr, 'ambit: --kube and --dir: give one (the cluster, or the local mesh of that directory)\n');
  t.deepEqual(api.seen, [], 'the cluster was not asked');
});
