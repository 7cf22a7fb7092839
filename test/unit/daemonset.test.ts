/**
 * The Kubernetes manifests in daemonset/: they are what `ambit install --dry-run` renders with the
 * defaults (src/cli/install), parse as Kubernetes parses them (YAML 1.1), carry the expected kinds,
 * the agent keeps the hardening and the upgrade strategy the reference asks for, the RBAC is
 * exactly what the control plane uses, and the manifests and the programs agree with each other
 * (env names the programs read, token audience, token and CA paths on mounted volumes, the CNI
 * socket on the host path, service accounts, ports, drain deadline and grace period).
 */
import test from 'ava';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { DEFAULT_AGENT_SOCKET } from '../../src/node-agent/enrol/cni.js';
import { WATCHED_KINDS } from '../../src/control/config/types.js';
import { identify } from '../../src/control/translate/kinds.js';
import { GRACE_MARGIN_SECONDS, manifestFiles } from '../../src/cli/install/manifests.js';
import { fileText, installText, kustomizationText } from '../../src/cli/install/render.js';
import { applySets, defaultValues } from '../../src/cli/install/values.js';
import { packageVersion } from '../../src/cli/version.js';
import { WAYPOINT_GATEWAY_CLASS, waypointObjects } from '../../src/control/kube/index.js';
import type { KubeObject } from '../../src/control/config/types.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIR = join(ROOT, 'daemonset');

type Obj = Record<string, unknown>;
interface Doc { file: string; kind: string; name: string; namespace?: string; body: Obj }

function obj(v: unknown, what: string): Obj {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what}: not a mapping`);
  return v as Obj;
}
function arr(v: unknown): Obj[] { return Array.isArray(v) ? (v as Obj[]) : []; }

function load(file: string): Doc[] {
  // Kubernetes reads manifests as YAML 1.1 (sigs.k8s.io/yaml): 0440 is octal there
  const docs = parseAllDocuments(readFileSync(join(DIR, file), 'utf8'), { version: '1.1' });
  if (!Array.isArray(docs)) throw new Error(`${file}: no documents`);
  return docs.filter((d) => d.contents !== null).map((d, i) => {
    if (d.errors.length > 0) throw new Error(`${file} document ${i}: ${d.errors[0]!.message}`);
    const body = obj(d.toJS(), `${file} document ${i}`);
    const meta = obj(body.metadata ?? {}, `${file} document ${i} metadata`);
    return { file, kind: String(body.kind), name: String(meta.name), ...(meta.namespace ? { namespace: String(meta.namespace) } : {}), body };
  });
}

const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml')).sort();
const all = files.flatMap(load);
const find = (kind: string, name: string): Doc => {
  const d = all.find((x) => x.kind === kind && x.name === name);
  if (!d) throw new Error(`no ${kind} ${name} in daemonset/`);
  return d;
};

/**
 * The waypoint Deployment the control plane makes for the example Gateway, with the settings the
 * control plane's manifest gives it (src/control/main.ts: image from AMBIT_WAYPOINT_IMAGE, the
 * first token audience, the Service's wss URL in its namespace).
 */
function waypointDeployment(): Doc {
  const control = find('Deployment', 'ambit-control');
  const gw = find('Gateway', 'waypoint');
  const r = waypointObjects({ ...(gw.body as unknown as KubeObject), metadata: { ...(gw.body.metadata as KubeObject['metadata']), uid: 'u1' } }, {
    image: envValue(control, 'AMBIT_WAYPOINT_IMAGE'),
    imagePullPolicy: envValue(control, 'AMBIT_WAYPOINT_IMAGE_PULL_POLICY') as 'IfNotPresent',
    controlUrl: `wss://ambit-control.${control.namespace!}.svc:15012`,
    trustDomain: envValue(control, 'AMBIT_TRUST_DOMAIN'),
    tokenAudience: envValue(control, 'AMBIT_TOKEN_AUDIENCES').split(',')[0]!,
  }, 'root');
  if ('error' in r) throw new Error(r.error);
  const d = r.objects.find((o) => o.kind === 'Deployment')!.obj;
  return { file: '(made by the control plane)', kind: 'Deployment', name: 'waypoint', namespace: 'default', body: d };
}

function podSpec(d: Doc): Obj {
  return obj(obj(obj(d.body.spec, 'spec').template, 'template').spec, `${d.kind} ${d.name} pod spec`);
}
function container(d: Doc): Obj { return arr(podSpec(d).containers)[0]!; }
function env(d: Doc): Map<string, Obj> {
  return new Map(arr(container(d).env).map((e) => [String(e.name), e]));
}
function envValue(d: Doc, name: string): string {
  const v = env(d).get(name)?.value;
  if (typeof v !== 'string') throw new Error(`${d.kind} ${d.name}: env ${name} has no literal value`);
  return v;
}
/** The volume mounted at the longest mount path containing `path`, and the path inside it. */
function volumeFor(d: Doc, path: string): { volume: Obj; rest: string } | undefined {
  const mounts = arr(container(d).volumeMounts)
    .filter((m) => path === m.mountPath || path.startsWith(`${String(m.mountPath)}/`))
    .sort((a, b) => String(b.mountPath).length - String(a.mountPath).length);
  const m = mounts[0];
  if (!m) return undefined;
  const volume = arr(podSpec(d).volumes).find((v) => v.name === m.name);
  return volume ? { volume, rest: path.slice(String(m.mountPath).length + 1) } : undefined;
}

test('daemonset/ is exactly what ambit install renders with the defaults (npm run manifests writes it)', (t) => {
  const rendered = manifestFiles(defaultValues(packageVersion()));
  t.deepEqual(files, [...rendered.map((f) => f.file), 'kustomization.yaml'].sort());
  for (const f of rendered) t.is(readFileSync(join(DIR, f.file), 'utf8'), fileText(f), `daemonset/${f.file} is stale: run npm run manifests`);
  t.is(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'), kustomizationText(rendered));
});

test('ambit install --dry-run prints the objects of the kustomization, in its order', (t) => {
  const text = installText(manifestFiles(defaultValues(packageVersion())));
  const printed = parseAllDocuments(text, { version: '1.1' }).map((d) => d.toJS() as Obj);
  const k = all.find((d) => d.kind === 'Kustomization')!;
  const listed = (k.body.resources as string[]).flatMap((f) => all.filter((d) => d.file === f).map((d) => d.body));
  t.deepEqual(printed, listed);
});

test('--set reaches every place a value is used; unknown keys and bad values are named', (t) => {
  const v = applySets(defaultValues('1.2.3'), ['namespace=mesh', 'agent.drainSeconds=40,control.replicas=3', 'image=reg.example/ambit@sha256:abc', 'crds.istio=false']);
  const text = installText(manifestFiles(v));
  t.false(text.includes('ambit-system'), 'the default namespace is not left anywhere');
  t.false(text.includes('CustomResourceDefinition'));
  const objs = parseAllDocuments(text, { version: '1.1' }).map((d) => d.toJS() as Obj);
  const ds = objs.find((o) => o.kind === 'DaemonSet')!;
  const spec = obj(obj(obj(ds.spec, 'spec').template, 'template').spec, 'pod');
  t.is(spec.terminationGracePeriodSeconds, 40 + GRACE_MARGIN_SECONDS);
  t.is(arr(arr(spec.containers)[0]!.env).find((e) => e.name === 'AMBIT_DRAIN_MS')!.value, '40000');
  t.is(arr(spec.containers)[0]!.image, 'reg.example/ambit@sha256:abc');
  t.is(obj(objs.find((o) => o.kind === 'Deployment')!.spec, 'spec').replicas, 3);
  t.throws(() => applySets(defaultValues('1'), ['agent.drainSecs=4']), { message: /--set: agent\.drainSecs: unknown key \(known: image, .*agent\.drainSeconds/ });
  t.throws(() => applySets(defaultValues('1'), ['agent.drainSeconds=0']), { message: '--set: agent.drainSeconds: "0" is not an integer 1..600' });
  t.throws(() => applySets(defaultValues('1'), ['namespace=Bad_NS']), { message: /--set: namespace: "Bad_NS" is not a namespace name/ });
  t.throws(() => applySets(defaultValues('1'), ['image']), { message: /--set: "image": expected key=value/ });
});

test('every manifest parses and has the expected kinds', (t) => {
  const kinds = (f: string) => all.filter((d) => d.file === f).map((d) => d.kind).sort();
  t.deepEqual(kinds('control.yaml'), ['Deployment', 'PodDisruptionBudget', 'Service']);
  t.deepEqual(kinds('crds.yaml'), ['CustomResourceDefinition', 'CustomResourceDefinition', 'CustomResourceDefinition', 'CustomResourceDefinition']);
  t.deepEqual(kinds('node-agent.yaml'), ['DaemonSet']);
  t.deepEqual(kinds('namespace.yaml'), ['Namespace']);
  t.deepEqual(kinds('gatewayclass.yaml'), ['GatewayClass']);
  t.deepEqual(kinds('rbac.yaml'), ['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ServiceAccount', 'ServiceAccount']);
  t.deepEqual(kinds('waypoint.yaml'), ['Gateway'], 'the control plane makes the rest');
  for (const d of all) t.truthy(d.body.apiVersion, `${d.file} ${d.kind} has an apiVersion`);
  // everything except the per-namespace waypoint example lives in ambit-system
  for (const d of all.filter((x) => x.file !== 'waypoint.yaml' && !['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'Kustomization', 'CustomResourceDefinition', 'GatewayClass'].includes(x.kind))) {
    t.is(d.namespace, 'ambit-system', `${d.kind} ${d.name}`);
  }
});

test('kustomization lists every manifest except the waypoint example, and only existing files', (t) => {
  const k = all.find((d) => d.kind === 'Kustomization');
  const resources = (k!.body.resources as string[]).slice().sort();
  t.deepEqual(resources, files.filter((f) => f !== 'kustomization.yaml' && f !== 'waypoint.yaml'));
});

test('the agent DaemonSet keeps the hardening: capabilities, not privileged, no host network or PID, read-only root, Linux nodes, every taint', (t) => {
  const ds = find('DaemonSet', 'ambit-agent');
  const spec = podSpec(ds);
  t.falsy(spec.hostNetwork, 'the agent runs in its own pod netns; pod namespaces come from /var/run/netns and CNI');
  t.falsy(spec.hostPID);
  t.is(spec.priorityClassName, 'system-node-critical');
  t.deepEqual(arr(spec.tolerations), [{ operator: 'Exists' }]);
  const c = container(ds);
  const sc = obj(c.securityContext, 'agent securityContext');
  t.is(sc.privileged, false);
  t.is(sc.readOnlyRootFilesystem, true);
  // Kubernetes rejects allowPrivilegeEscalation: false with SYS_ADMIN
  t.not(sc.allowPrivilegeEscalation, false);
  const caps = obj(sc.capabilities, 'capabilities');
  t.deepEqual(caps.drop, ['ALL']);
  t.deepEqual((caps.add as string[]).slice().sort(), ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN']);
  t.deepEqual(spec.nodeSelector, { 'kubernetes.io/os': 'linux' });
  t.is(spec.automountServiceAccountToken, false, 'the agent needs no API token');
  // hostPath and these capabilities need the privileged Pod Security level
  const ns = obj(find('Namespace', 'ambit-system').body.metadata, 'ns metadata');
  t.is(obj(ns.labels, 'labels')['pod-security.kubernetes.io/enforce'], 'privileged');
});

test('agent upgrades: a surge pod beside the old one, never none; the grace period covers the drain deadline; probes', (t) => {
  const ds = find('DaemonSet', 'ambit-agent');
  const strategy = obj(obj(ds.body.spec, 'spec').updateStrategy, 'updateStrategy');
  t.is(strategy.type, 'RollingUpdate');
  t.deepEqual(strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
  const drainMs = Number(envValue(ds, 'AMBIT_DRAIN_MS'));
  const grace = Number(podSpec(ds).terminationGracePeriodSeconds);
  t.true(drainMs >= 10_000, 'a new agent can need over 10 s to take over on a loaded node');
  t.is(grace * 1000, drainMs + GRACE_MARGIN_SECONDS * 1000, 'SIGKILL only after the drain deadline and time to exit');
  const c = container(ds);
  const ready = obj(obj(c.readinessProbe, 'readinessProbe').httpGet, 'httpGet');
  t.deepEqual(ready, { path: '/healthz/ready', port: 15021 });
  const live = obj(c.livenessProbe, 'livenessProbe');
  t.not(obj(live.httpGet, 'httpGet').path, '/healthz/ready', 'an agent waiting for the control plane is not restarted');
  t.is(obj(live.httpGet, 'httpGet').port, 15020);
  t.true(Number(live.periodSeconds) * Number(live.failureThreshold) >= 60, 'a slow moment never restarts the agent (and cuts the node\'s connections)');
});

test('Prometheus scrape annotations on the agents, the control plane and waypoints name a port the container declares', (t) => {
  for (const d of [find('DaemonSet', 'ambit-agent'), find('Deployment', 'ambit-control'), waypointDeployment()]) {
    const a = obj(obj(obj(obj(d.body.spec, 'spec').template, 'template').metadata, 'metadata').annotations, `${d.name} annotations`);
    t.is(a['prometheus.io/scrape'], 'true', d.name);
    t.is(a['prometheus.io/path'], '/metrics', d.name);
    t.true(arr(container(d).ports).some((p) => String(p.containerPort) === a['prometheus.io/port']), `${d.name}: port ${String(a['prometheus.io/port'])} declared`);
  }
});

test('control plane: replicas spread over nodes, a PodDisruptionBudget that selects them, probes on its status port', (t) => {
  const dep = find('Deployment', 'ambit-control');
  const labels = obj(obj(obj(obj(dep.body.spec, 'spec').template, 'template').metadata, 'metadata').labels, 'labels');
  const pdb = find('PodDisruptionBudget', 'ambit-control');
  const sel = obj(obj(pdb.body.spec, 'spec').selector, 'selector').matchLabels as Obj;
  for (const [k, v] of Object.entries(sel)) t.is(labels[k], v, 'the PDB selects the control plane pods');
  t.is(obj(pdb.body.spec, 'spec').maxUnavailable, 1, 'a drain can always proceed, one replica at a time');
  t.true(Number(obj(dep.body.spec, 'spec').replicas) >= 2);
  const c = container(dep);
  t.is(obj(obj(c.readinessProbe, 'r').httpGet, 'g').port, 15014);
  t.is(obj(obj(c.livenessProbe, 'l').httpGet, 'g').port, 15014);
});

test('RBAC: the control plane reads exactly the kinds it watches, writes only waypoint objects and Gateway status, reviews tokens, keeps its CA', (t) => {
  const rules = arr(find('ClusterRole', 'ambit-control').body.rules);
  t.false(rules.some((r) => [...(r.apiGroups as string[]), ...(r.resources as string[]), ...(r.verbs as string[])].includes('*')), 'no wildcards');
  const grants = new Set(rules.flatMap((r) => (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g}/${res}:${v}`)))));
  const read = [...grants].filter((g) => /:(get|list|watch)$/.test(g)).map((g) => g.replace(/:(get|list|watch)$/, '')).sort();
  const watched = WATCHED_KINDS.map((k) => `${k.group}/${k.plural}`);
  const waypointKinds = ['/configmaps', '/serviceaccounts', 'apps/deployments'];
  t.deepEqual([...new Set(read)], [...watched, ...waypointKinds, 'gateway.networking.k8s.io/gatewayclasses'].sort(), 'reads: the watched kinds (and what it manages for waypoints, and its GatewayClass)');
  for (const r of watched) for (const v of ['get', 'list', 'watch']) t.true(grants.has(`${r}:${v}`), `${r}:${v}`);
  const writes = [...grants].filter((g) => !/:(get|list|watch)$/.test(g)).sort();
  t.deepEqual(writes, [
    '/configmaps:create', '/configmaps:delete', '/configmaps:patch', '/configmaps:update',
    '/serviceaccounts:create', '/serviceaccounts:delete', '/serviceaccounts:patch', '/serviceaccounts:update',
    '/services:create', '/services:delete', '/services:patch', '/services:update',
    'apps/deployments:create', 'apps/deployments:delete', 'apps/deployments:patch', 'apps/deployments:update',
    'authentication.k8s.io/tokenreviews:create',
    'gateway.networking.k8s.io/gatewayclasses/status:patch',
    'gateway.networking.k8s.io/gateways/status:patch', 'gateway.networking.k8s.io/gateways/status:update',
  ]);
  // its GatewayClass: that one only, read and its status written
  const gc = find('GatewayClass', WAYPOINT_GATEWAY_CLASS.name);
  t.is(obj(gc.body.spec, 'spec').controllerName, WAYPOINT_GATEWAY_CLASS.controllerName, 'the controller name the control plane answers to');
  for (const r of rules.filter((x) => (x.resources as string[]).some((res) => res.startsWith('gatewayclasses')))) t.deepEqual(r.resourceNames, [WAYPOINT_GATEWAY_CLASS.name]);
  t.false([...grants].some((g) => g.startsWith('/secrets')), 'no Secret of the cluster');
  // in its own namespace: the CA (reading only its two Secrets, creating: RBAC cannot limit create to a name)
  // and the leader Lease
  const role = find('Role', 'ambit-control');
  t.is(role.namespace, 'ambit-system');
  t.deepEqual(role.body.rules, [
    { apiGroups: [''], resources: ['secrets'], resourceNames: ['ambit-ca', 'cacerts'], verbs: ['get'] },
    { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['ambit-control'], verbs: ['get', 'update'] },
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
  ]);
  const rb = find('RoleBinding', 'ambit-control');
  t.is(rb.namespace, 'ambit-system');
  t.deepEqual(rb.body.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'ambit-control' });
  t.deepEqual(rb.body.subjects, [{ kind: 'ServiceAccount', name: 'ambit-control', namespace: 'ambit-system' }]);
});

test('CRDs: one per Istio kind the control plane reads, every served version one it accepts, v1 stored, structural schemas', (t) => {
  const crds = all.filter((d) => d.kind === 'CustomResourceDefinition');
  const istio = WATCHED_KINDS.filter((k) => k.group.endsWith('istio.io'));
  t.deepEqual(crds.map((d) => d.name).sort(), istio.map((k) => `${k.plural}.${k.group}`).sort());
  for (const d of crds) {
    const spec = obj(d.body.spec, 'spec');
    const kind = String(obj(spec.names, 'names').kind);
    const versions = arr(spec.versions);
    t.deepEqual(versions.filter((v) => v.storage === true).map((v) => v.name), ['v1'], d.name);
    for (const v of versions) {
      const r = identify({ apiVersion: `${String(spec.group)}/${String(v.name)}`, kind, metadata: { name: 'x', namespace: 'default' } });
      t.true('ok' in r, `${kind} ${String(v.name)} is served but the control plane would not read it`);
      const schema = obj(obj(v.schema, 'schema').openAPIV3Schema, 'openAPIV3Schema');
      t.is(schema.type, 'object');
      t.is(obj(obj(schema.properties, 'p').spec, 'spec').type, 'object');
    }
  }
  const ap = crds.find((d) => d.name === 'authorizationpolicies.security.istio.io')!;
  const action = obj(obj(obj(obj(obj(arr(obj(ap.body.spec, 's').versions)[0]!.schema, 's').openAPIV3Schema, 'o').properties, 'p').spec, 'spec').properties, 'p').action as Obj;
  t.deepEqual(action.enum, ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'], 'the API server itself refuses action: DENYY');
});

test('the agent mounts /var/run/netns from the host with propagation, and its CNI socket sits on the host path the plugin uses', (t) => {
  const ds = find('DaemonSet', 'ambit-agent');
  const netns = arr(container(ds).volumeMounts).find((m) => m.mountPath === '/var/run/netns');
  t.truthy(netns);
  t.is(netns!.mountPropagation, 'HostToContainer', 'namespaces created after the agent started must appear in it');
  t.deepEqual(volumeFor(ds, '/var/run/netns')!.volume.hostPath, { path: '/var/run/netns' });
  // app.ts puts agent.sock in the state dir; the host-side `ambit cni` dials DEFAULT_AGENT_SOCKET
  const stateDir = envValue(ds, 'AMBIT_STATE_DIR');
  t.is(join(stateDir, 'agent.sock'), DEFAULT_AGENT_SOCKET);
  const state = volumeFor(ds, DEFAULT_AGENT_SOCKET);
  t.truthy(state);
  t.is(obj(state!.volume.hostPath, 'state hostPath').path, stateDir, 'the socket path inside the container is the same on the host');
});

test('token audience, token file and CA file agree between the agent, the waypoint and the control plane', (t) => {
  const control = find('Deployment', 'ambit-control');
  const audiences = envValue(control, 'AMBIT_TOKEN_AUDIENCES').split(',').map((s) => s.trim());
  t.deepEqual(audiences, ['ambit']);
  for (const d of [find('DaemonSet', 'ambit-agent'), waypointDeployment()]) {
    const tokenFile = envValue(d, 'AMBIT_TOKEN_FILE');
    const v = volumeFor(d, tokenFile);
    t.truthy(v, `${d.name}: ${tokenFile} is on a mounted volume`);
    const sources = arr(obj(v!.volume.projected, `${d.name} projected`).sources);
    const sat = sources.map((s) => s.serviceAccountToken as Obj | undefined).find((s) => s?.path === v!.rest);
    t.truthy(sat, `${d.name}: a projected serviceAccountToken at ${v!.rest}`);
    t.true(audiences.includes(String(sat!.audience)), `${d.name}: token audience ${String(sat!.audience)} is one the control plane asks for`);
    t.true(Number(sat!.expirationSeconds) >= 600, 'the API server refuses shorter projected tokens');
  }
  // the root ConfigMaps the control plane publishes (src/control/kube): ambit-ca-root in its namespace, one per waypoint
  for (const [d, cm] of [[find('DaemonSet', 'ambit-agent'), 'ambit-ca-root'], [waypointDeployment(), 'waypoint-ambit-ca-root']] as const) {
    const ca = volumeFor(d, envValue(d, 'AMBIT_CONTROL_CA_FILE'));
    t.is(obj(ca!.volume.configMap, 'ca configMap').name, cm);
    t.is(ca!.rest, 'root-cert.pem');
  }
  // the control plane reads its CA through the API, in the namespace it runs in
  t.false(arr(podSpec(control).volumes).some((v) => 'secret' in v), 'no CA Secret mounted');
  t.deepEqual(env(control).get('AMBIT_NAMESPACE')!.valueFrom, { fieldRef: { fieldPath: 'metadata.namespace' } });
  t.deepEqual(env(control).get('AMBIT_POD_NAME')!.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } }, 'its name in the leader Lease');
});

test('service accounts, the agent identity the control plane trusts, and the control URL agree', (t) => {
  const sas = new Set(all.filter((d) => d.kind === 'ServiceAccount').map((d) => `${d.namespace}/${d.name}`));
  for (const d of all.filter((x) => ['Deployment', 'DaemonSet'].includes(x.kind))) {
    t.true(sas.has(`${d.namespace}/${String(podSpec(d).serviceAccountName)}`), `${d.kind} ${d.name} service account exists`);
  }
  const control = find('Deployment', 'ambit-control');
  const agent = find('DaemonSet', 'ambit-agent');
  t.deepEqual(envValue(control, 'AMBIT_AGENT_SERVICE_ACCOUNTS').split(','), [`${agent.namespace}/${String(podSpec(agent).serviceAccountName)}`]);
  const svc = find('Service', 'ambit-control');
  const wss = arr(obj(svc.body.spec, 'svc spec').ports).find((p) => p.name === 'wss');
  for (const d of [agent, waypointDeployment()]) {
    t.is(envValue(d, 'AMBIT_CONTROL_URL'), `wss://${svc.name}.${svc.namespace}.svc:${String(wss!.port)}`, d.name);
  }
  const binding = find('ClusterRoleBinding', 'ambit-control');
  t.deepEqual(arr(binding.body.subjects).map((s) => `${String(s.namespace)}/${String(s.name)}`), ['ambit-system/ambit-control']);
  const rules = arr(find('ClusterRole', 'ambit-control').body.rules);
  t.true(rules.some((r) => (r.apiGroups as string[]).includes('authentication.k8s.io') && (r.resources as string[]).includes('tokenreviews')));
});

/** Where each program reads its environment; a program not written yet has no entry file. */
const PROGRAMS: Record<string, string> = {
  agent: 'src/node-agent/main.ts',
  control: 'src/control/main.ts',
  waypoint: 'src/waypoint/main.ts',
};

test('every env var the manifests set is one the program they run reads', (t) => {
  const cli = readFileSync(join(ROOT, 'src/cli/main.ts'), 'utf8');
  let checked = 0;
  for (const d of [...all.filter((x) => ['Deployment', 'DaemonSet'].includes(x.kind)), waypointDeployment()]) {
    const c = container(d);
    const program = (c.args as string[])[0]!;
    const entry = PROGRAMS[program];
    t.truthy(entry, `${d.name}: args [${program}] is a known program`);
    if (!existsSync(join(ROOT, entry!))) {
      // the waypoint program does not exist yet; the CLI must still say so, and once it exists
      // this test checks its manifest too
      t.true(cli.includes(`notYet('${program}')`), `${d.name}: ${entry} missing but the CLI claims ${program} exists`);
      continue;
    }
    const src = readFileSync(join(ROOT, entry!), 'utf8');
    for (const name of env(d).keys()) {
      // read by Node itself before the program starts (V8 heap flags), not by the program
      if (name === 'NODE_OPTIONS') continue;
      const read = src.includes(`env.${name}`) || src.includes(`'${name}'`) || src.includes(`env['${name}']`);
      t.true(read, `${d.name}: env ${name} is not read by ${entry}`);
      checked++;
    }
  }
  t.true(checked >= 10);
});

test('the agent installs its CNI plugin into the node\'s CNI dirs (host paths, writable), and its own namespace is never held back', (t) => {
  const agent = find('DaemonSet', 'ambit-agent');
  for (const [name, hostDir] of [['AMBIT_CNI_BIN_DIR', '/opt/cni/bin'], ['AMBIT_CNI_CONF_DIR', '/etc/cni/net.d']] as const) {
    const v = volumeFor(agent, envValue(agent, name));
    t.truthy(v, `${name} is on a mounted volume`);
    t.is(v!.rest, '', `${name} is the mount itself`);
    t.is(obj(v!.volume.hostPath, `${name} hostPath`).path, hostDir);
    const mount = arr(container(agent).volumeMounts).find((m) => m.mountPath === envValue(agent, name))!;
    t.not(mount.readOnly, true, `${name}: the agent writes there`);
  }
  t.true(envValue(agent, 'AMBIT_EXEMPT_NAMESPACES').split(',').includes(agent.namespace!), 'the agent\'s pods start while no agent runs');
  // a custom layout (k3s) moves both the mounts and the env
  const k3s = manifestFiles(applySets(defaultValues('0.0.0'), ['cni.binDir=/var/lib/rancher/k3s/data/current/bin', 'cni.confDir=/var/lib/rancher/k3s/agent/etc/cni/net.d']));
  const text = fileText(k3s.find((f) => f.file === 'node-agent.yaml')!);
  t.regex(text, /value: \/host\/var\/lib\/rancher\/k3s\/data\/current\/bin\n/);
  t.regex(text, /path: \/var\/lib\/rancher\/k3s\/agent\/etc\/cni\/net\.d\n/);
  t.throws(() => applySets(defaultValues('0.0.0'), ['cni.binDir=opt/cni']), { message: /cni\.binDir: "opt\/cni" is not an absolute path/ });
});
