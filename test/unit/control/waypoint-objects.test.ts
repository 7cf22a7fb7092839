/**
 * A waypoint Gateway -> its ServiceAccount, root ConfigMap, Deployment and Service, and the
 * Gateway's status: pure functions, checked for the shape the waypoint and the agents depend on
 * and against the Kubernetes and Gateway API schemas of `kubernetes-models`.
 */
import test from 'ava';
import { ServiceAccount, ConfigMap, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Gateway, GatewayClass } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1';
import { gatewayClassStatus, gatewayStatus, statusDiffers, waypointObjects } from '../../../src/control/kube/index.js';
import type { Desired, WaypointDeploySettings } from '../../../src/control/kube/index.js';
import type { KubeObject } from '../../../src/control/config/types.js';

const SETTINGS: WaypointDeploySettings = {
  image: 'ghcr.io/ambit-mesh/ambit:0.1.0', imagePullPolicy: 'IfNotPresent',
  controlUrl: 'wss://ambit-control.ambit-system.svc:15012', trustDomain: 'cluster.local', tokenAudience: 'ambit',
};
const ROOT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

function gateway(over: Partial<KubeObject['metadata']> = {}, status?: unknown): KubeObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway',
    metadata: { name: 'waypoint', namespace: 'shop', uid: 'uid-gw-1', generation: 3, ...over },
    spec: { gatewayClassName: 'ambit-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    ...(status !== undefined ? { status } : {}),
  };
}

function objects(gw = gateway(), s = SETTINGS): Desired[] {
  const r = waypointObjects(gw, s, ROOT);
  if ('error' in r) throw new Error(r.error);
  return r.objects;
}
/** A JSON tree read in assertions (test-only looseness). */
type Tree = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const byKind = (os: Desired[], kind: string) => os.find((o) => o.kind === kind)!.obj as Tree;

test('every object is named after the Gateway, in its namespace, owned by it and labelled with its name', (t) => {
  const os = objects();
  t.deepEqual(os.map((o) => `${o.kind} ${o.path}`), [
    'ServiceAccount /api/v1/namespaces/shop/serviceaccounts/waypoint',
    'ConfigMap /api/v1/namespaces/shop/configmaps/waypoint-ambit-ca-root',
    'Deployment /apis/apps/v1/namespaces/shop/deployments/waypoint',
    'Service /api/v1/namespaces/shop/services/waypoint',
  ]);
  for (const o of os) {
    const md = o.obj.metadata as Tree;
    t.is(md.namespace, 'shop');
    t.deepEqual(md.ownerReferences, [{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'waypoint', uid: 'uid-gw-1', controller: true }]);
    t.is(md.labels['gateway.networking.k8s.io/gateway-name'], 'waypoint');
    t.is(md.labels['app.kubernetes.io/managed-by'], 'ambit-control');
  }
});

test('the Deployment runs `ambit waypoint` for the Gateway with its identity, the control plane\'s root and the three ports', (t) => {
  const d = byKind(objects(), 'Deployment');
  t.false('replicas' in d.spec, 'left to kubectl scale / an autoscaler');
  t.deepEqual(d.spec.selector, { matchLabels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' } });
  const pod = d.spec.template.spec;
  t.is(d.spec.template.metadata.labels['istio.io/dataplane-mode'], 'none', 'the waypoint is not captured');
  t.is(pod.serviceAccountName, 'waypoint');
  const c = pod.containers[0];
  t.is(c.image, SETTINGS.image);
  t.deepEqual(c.args, ['waypoint', '--name', 'waypoint', '--namespace', 'shop']);
  const env = Object.fromEntries(c.env.map((e: { name: string; value?: string }) => [e.name, e.value]));
  t.is(env.AMBIT_CONTROL_URL, SETTINGS.controlUrl);
  t.is(env.AMBIT_CONTROL_CA_FILE, '/var/run/ambit-ca/root-cert.pem');
  t.is(env.AMBIT_TRUST_DOMAIN, 'cluster.local');
  t.deepEqual(c.ports.map((p: { containerPort: number }) => p.containerPort), [15008, 15020, 15021]);
  t.is(c.readinessProbe.httpGet.port, 15021);
  t.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: ['SYS_ADMIN'] });
  t.deepEqual(pod.volumes, [
    { name: 'token', projected: { sources: [{ serviceAccountToken: { path: 'token', expirationSeconds: 3600, audience: 'ambit' } }] } },
    { name: 'ca-root', configMap: { name: 'waypoint-ambit-ca-root' } },
  ]);
  t.is(byKind(objects(), 'ConfigMap').data['root-cert.pem'], ROOT);
  // without an audience the projected token is the API server's own
  const { tokenAudience: _aud, ...noAudience } = SETTINGS;
  const noAud = byKind(objects(gateway(), noAudience), 'Deployment');
  t.deepEqual(noAud.spec.template.spec.volumes[0].projected.sources[0].serviceAccountToken, { path: 'token', expirationSeconds: 3600 });
});

test('the Service: port 15008 named mesh, selecting the waypoint pods', (t) => {
  const s = byKind(objects(), 'Service');
  t.deepEqual(s.spec, {
    selector: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' },
    ports: [{ name: 'mesh', port: 15008, targetPort: 15008, protocol: 'TCP' }],
  });
});

test('every object is valid against its schema (kubernetes-models)', (t) => {
  const models: Record<string, new (o: Tree) => { validate(): void }> = { ServiceAccount, ConfigMap, Deployment, Service };
  for (const o of objects()) t.notThrows(() => new models[o.kind]!(o.obj).validate(), o.kind);
  const st = gatewayStatus(gateway(), { clusterIP: '10.96.0.7' }, '2026-01-01T00:00:00Z');
  t.notThrows(() => new Gateway({ ...gateway(), status: st } as ConstructorParameters<typeof Gateway>[0]).validate());
});

test('a Gateway whose name cannot name a Service, or without a uid, gets no objects but a reason', (t) => {
  t.deepEqual(waypointObjects(gateway({ name: 'a'.repeat(64) }), SETTINGS, ROOT), { error: `the name "${'a'.repeat(64)}" cannot name a Service (a DNS-1035 label: a-z, 0-9, '-', at most 63, starting with a letter)` });
  t.regex((waypointObjects(gateway({ name: '1wp' }), SETTINGS, ROOT) as { error: string }).error, /cannot name a Service/);
  t.deepEqual(waypointObjects(gateway({ uid: undefined }), SETTINGS, ROOT), { error: 'the Gateway has no metadata.uid to own its objects by' });
});

test('status: Accepted and Programmed for the current generation, the Service\'s address; times move only on a change', (t) => {
  const t0 = '2026-01-01T00:00:00Z';
  const t1 = '2026-01-01T00:05:00Z';
  const pending = gatewayStatus(gateway(), { notProgrammed: 'Service shop/waypoint has no ClusterIP' }, t0);
  t.deepEqual(pending, {
    conditions: [
      { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'accepted by ambit', observedGeneration: 3, lastTransitionTime: t0 },
      { type: 'Programmed', status: 'False', reason: 'Pending', message: 'Service shop/waypoint has no ClusterIP', observedGeneration: 3, lastTransitionTime: t0 },
    ],
    addresses: [],
    listeners: [{
      name: 'mesh', supportedKinds: [], attachedRoutes: 0,
      conditions: [
        { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'the waypoint\'s HBONE listener', observedGeneration: 3, lastTransitionTime: t0 },
        { type: 'Programmed', status: 'False', reason: 'Pending', message: 'the waypoint is not programmed yet', observedGeneration: 3, lastTransitionTime: t0 },
        { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'no references to resolve', observedGeneration: 3, lastTransitionTime: t0 },
      ],
    }],
  });
  const other = { type: 'Ready', status: 'True', reason: 'X', message: '', lastTransitionTime: t0 };
  const gw = gateway({}, { ...pending, conditions: [...(pending.conditions as object[]), other] });
  const ok = gatewayStatus(gw, { clusterIP: '10.96.0.7' }, t1);
  const conds = ok.conditions as Array<Record<string, unknown>>;
  t.is(conds[0]!.lastTransitionTime, t0, 'Accepted stayed True: its time stays');
  t.deepEqual(conds[1], { type: 'Programmed', status: 'True', reason: 'Programmed', message: 'the waypoint Deployment and Service waypoint are applied', observedGeneration: 3, lastTransitionTime: t1 });
  t.deepEqual(conds[2], other, 'a condition of another writer is kept');
  t.deepEqual(ok.addresses, [{ type: 'IPAddress', value: '10.96.0.7' }]);
  const [la, lp] = (ok.listeners as Array<{ conditions: Array<Record<string, unknown>> }>)[0]!.conditions;
  t.like(la, { type: 'Accepted', status: 'True', lastTransitionTime: t0 });
  t.like(lp, { type: 'Programmed', status: 'True', reason: 'Programmed', lastTransitionTime: t1 });
  t.true(statusDiffers(gw, ok));
  // the same state later: nothing to write
  const written = gateway({}, ok);
  t.false(statusDiffers(written, gatewayStatus(written, { clusterIP: '10.96.0.7' }, '2026-01-02T00:00:00Z')));
  // a new generation is a change
  t.true(statusDiffers(gateway({ generation: 4 }, ok), gatewayStatus(gateway({ generation: 4 }, ok), { clusterIP: '10.96.0.7' }, t1)));
});

test('status of a rejected Gateway: Accepted False with the reason, Programmed False', (t) => {
  const st = gatewayStatus(gateway(), { invalid: 'Gateway shop/waypoint: spec.listeners: a waypoint needs a listener {port: 15008, protocol: HBONE}' }, 't');
  const [a, p] = st.conditions as Array<Record<string, unknown>>;
  t.like(a, { type: 'Accepted', status: 'False', reason: 'Invalid', message: 'Gateway shop/waypoint: spec.listeners: a waypoint needs a listener {port: 15008, protocol: HBONE}' });
  t.like(p, { type: 'Programmed', status: 'False', reason: 'Invalid' });
  t.like((st.listeners as Array<{ conditions: unknown[] }>)[0]!.conditions[0], { type: 'Accepted', status: 'False', reason: 'Invalid' });
  t.deepEqual(st.addresses, []);
});

test('listener status: a listener other than HBONE on 15008 is not accepted (UnsupportedProtocol); the HBONE one is', (t) => {
  const gw = gateway();
  (gw.spec as { listeners: unknown[] }).listeners.push({ name: 'web', port: 80, protocol: 'HTTP' });
  const st = gatewayStatus(gw, { clusterIP: '10.96.0.7' }, '2026-01-01T00:00:00Z');
  const ls = st.listeners as Array<{ name: string; conditions: Array<Record<string, unknown>> }>;
  t.deepEqual(ls.map((l) => l.name), ['mesh', 'web']);
  t.like(ls[0]!.conditions[1], { type: 'Programmed', status: 'True' });
  t.like(ls[1]!.conditions[0], { type: 'Accepted', status: 'False', reason: 'UnsupportedProtocol', message: 'a waypoint serves only protocol HBONE on port 15008' });
  t.like(ls[1]!.conditions[1], { type: 'Programmed', status: 'False', reason: 'Invalid' });
  t.notThrows(() => new Gateway({ ...gw, status: st } as ConstructorParameters<typeof Gateway>[0]).validate(), 'valid against the Gateway API schema');
});

test('GatewayClass status: Accepted for our controller and generation, once; another controller\'s class untouched', (t) => {
  const gc = (controllerName: string, generation: number, status?: unknown): KubeObject => ({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GatewayClass', metadata: { name: 'ambit-waypoint', generation }, spec: { controllerName }, ...(status ? { status } : {}),
  });
  const st = gatewayClassStatus(gc('ambit.dev/waypoint-controller', 1), 'ambit.dev/waypoint-controller', 't0')!;
  t.deepEqual(st, { conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'handled by the ambit control plane', observedGeneration: 1, lastTransitionTime: 't0' }] });
  t.is(gatewayClassStatus(gc('ambit.dev/waypoint-controller', 1, st), 'ambit.dev/waypoint-controller', 't1'), undefined, 'already says so');
  const next = gatewayClassStatus(gc('ambit.dev/waypoint-controller', 2, st), 'ambit.dev/waypoint-controller', 't1')!;
  t.like((next.conditions as object[])[0], { observedGeneration: 2, lastTransitionTime: 't0' });
  t.is(gatewayClassStatus(gc('example.com/other', 1), 'ambit.dev/waypoint-controller', 't0'), undefined);
  const real = gatewayClassStatus(gc('ambit.dev/waypoint-controller', 1), 'ambit.dev/waypoint-controller', '2026-01-01T00:00:00Z')!;
  t.notThrows(() => new GatewayClass({ ...gc('ambit.dev/waypoint-controller', 1), status: real } as ConstructorParameters<typeof GatewayClass>[0]).validate());
});
