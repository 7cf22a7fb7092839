/**
 * The Kubernetes manifests in daemonset/: they parse as Kubernetes parses them (YAML 1.1), carry
 * the expected kinds, the agent keeps the hardening the reference asks for, and the manifests and
 * the programs agree with each other (env names the programs read, token audience, token and CA
 * paths on mounted volumes, the CNI socket on the host path, service accounts, ports).
 */
import test from 'ava';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { DEFAULT_AGENT_SOCKET } from '../../src/node-agent/enrol/cni.js';

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

test('every manifest parses and has the expected kinds', (t) => {
  t.deepEqual(files, ['control.yaml', 'kustomization.yaml', 'namespace.yaml', 'node-agent.yaml', 'rbac.yaml', 'waypoint.yaml']);
  const kinds = (f: string) => all.filter((d) => d.file === f).map((d) => d.kind).sort();
  t.deepEqual(kinds('control.yaml'), ['Deployment', 'Service']);
  t.deepEqual(kinds('node-agent.yaml'), ['DaemonSet']);
  t.deepEqual(kinds('namespace.yaml'), ['Namespace']);
  t.deepEqual(kinds('rbac.yaml'), ['ClusterRole', 'ClusterRoleBinding', 'ServiceAccount', 'ServiceAccount']);
  t.deepEqual(kinds('waypoint.yaml'), ['Deployment', 'Gateway', 'Service', 'ServiceAccount']);
  for (const d of all) t.truthy(d.body.apiVersion, `${d.file} ${d.kind} has an apiVersion`);
  // everything except the per-namespace waypoint example lives in ambit-system
  for (const d of all.filter((x) => x.file !== 'waypoint.yaml' && !['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'Kustomization'].includes(x.kind))) {
    t.is(d.namespace, 'ambit-system', `${d.kind} ${d.name}`);
  }
});

test('kustomization lists every manifest except the waypoint example, and only existing files', (t) => {
  const k = all.find((d) => d.kind === 'Kustomization');
  const resources = (k!.body.resources as string[]).slice().sort();
  t.deepEqual(resources, files.filter((f) => f !== 'kustomization.yaml' && f !== 'waypoint.yaml'));
});

test('the agent DaemonSet keeps the hardening: capabilities, no host network or PID, read-only root, readiness only', (t) => {
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
  t.is(obj(obj(c.readinessProbe, 'readinessProbe').httpGet, 'httpGet').port, 15021);
  t.is(c.livenessProbe, undefined, 'a restart on a slow probe would cut every connection on the node');
  // hostPath and these capabilities need the privileged Pod Security level
  const ns = obj(find('Namespace', 'ambit-system').body.metadata, 'ns metadata');
  t.is(obj(ns.labels, 'labels')['pod-security.kubernetes.io/enforce'], 'privileged');
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
  for (const d of [find('DaemonSet', 'ambit-agent'), find('Deployment', 'waypoint')]) {
    const tokenFile = envValue(d, 'AMBIT_TOKEN_FILE');
    const v = volumeFor(d, tokenFile);
    t.truthy(v, `${d.name}: ${tokenFile} is on a mounted volume`);
    const sources = arr(obj(v!.volume.projected, `${d.name} projected`).sources);
    const sat = sources.map((s) => s.serviceAccountToken as Obj | undefined).find((s) => s?.path === v!.rest);
    t.truthy(sat, `${d.name}: a projected serviceAccountToken at ${v!.rest}`);
    t.true(audiences.includes(String(sat!.audience)), `${d.name}: token audience ${String(sat!.audience)} is one the control plane asks for`);
    t.true(Number(sat!.expirationSeconds) >= 600, 'the API server refuses shorter projected tokens');
  }
  const agent = find('DaemonSet', 'ambit-agent');
  const ca = volumeFor(agent, envValue(agent, 'AMBIT_CONTROL_CA_FILE'));
  t.is(obj(ca!.volume.configMap, 'ca configMap').name, 'ambit-ca-root');
  t.is(ca!.rest, 'root-cert.pem');
  // the control plane's CA Secret is mounted where startControl looks: <state dir>/ca
  const caMount = volumeFor(control, `${envValue(control, 'AMBIT_STATE_DIR')}/ca/ca-key.pem`);
  t.is(obj(caMount!.volume.secret, 'ca secret').secretName, 'ambit-ca');
  t.is(obj(caMount!.volume.secret, 'ca secret').defaultMode, 0o440, 'group-readable only (YAML 1.1 octal)');
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
  for (const d of [agent, find('Deployment', 'waypoint')]) {
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
  for (const d of all.filter((x) => ['Deployment', 'DaemonSet'].includes(x.kind))) {
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
