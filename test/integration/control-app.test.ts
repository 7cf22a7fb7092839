/**
 * The whole control plane in-process: config source -> translator -> push over wss, CA on the
 * channel, status server on its own port; plus the YAML directory source end to end.
 */
import test from 'ava';
import { once } from 'node:events';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KubeObject } from '../../src/control/config/types.js';
import type { ConfigSource } from '../../src/control/config/types.js';
import { FileSource } from '../../src/control/config/file-source.js';
import { createControlPlane } from '../../src/control/app.js';
import type { ControlPlane } from '../../src/control/app.js';
import { BootstrapTokenAuthenticator } from '../../src/control/push/index.js';
import { generateKeyAndCsr } from '../../src/identity/index.js';
import type { Snapshot } from '../../src/model/index.js';
import { XdsClient } from '../../src/xds/index.js';
import { makeTestPki } from '../helpers/pki.js';

const TD = 'cluster.local';
const pki = makeTestPki({ trustDomain: TD });

/** A config source the test drives by hand. */
class ManualSource implements ConfigSource {
  #fn: ((o: readonly KubeObject[], origin: string) => void) | undefined;
  constructor(readonly initial?: KubeObject[]) {}
  async start(fn: (o: readonly KubeObject[], origin: string) => void): Promise<void> {
    this.#fn = fn;
    if (this.initial) fn(this.initial, 'test');
  }
  async stop(): Promise<void> { this.#fn = undefined; }
  emit(objects: KubeObject[]): void { this.#fn?.(objects, 'test'); }
}

const ns: KubeObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } };
function pod(name: string, ip: string, node = 'node-a'): KubeObject {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels: { app: 'web' } },
    spec: { nodeName: node, serviceAccountName: 'web', containers: [{ name: 'app' }] },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
  };
}
const svc: KubeObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { selector: { app: 'web' }, clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80, targetPort: 8080 }] } };
const badPolicy: KubeObject = { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'broken', namespace: 'shop' }, spec: { action: 'EXPLODE' } };

async function plane(t: import('ava').ExecutionContext, source: ConfigSource): Promise<{ cp: ControlPlane; token: string; status: string; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-control-'));
  const { authenticator, token } = await BootstrapTokenAuthenticator.loadOrCreate(dir, TD);
  const cp = createControlPlane({
    source, ca: pki.ca, trustDomain: TD, stateDir: dir, authenticator, debounceMs: 5,
    listen: { host: '127.0.0.1', plainPort: 0, tlsPort: 0, statusPort: 0 },
  });
  t.teardown(async () => { await cp.stop(); await rm(dir, { recursive: true, force: true }); });
  await cp.start();
  return { cp, token, status: `http://127.0.0.1:${cp.addresses.status!.port}`, dir };
}

async function until(c: XdsClient, pred: (s: Snapshot) => boolean): Promise<Snapshot> {
  if (pred(c.snapshot)) return c.snapshot;
  return new Promise((resolve) => {
    const on = (s: Snapshot) => { if (pred(s)) { c.off('snapshot', on); resolve(s); } };
    c.on('snapshot', on);
  });
}

test('config flows to an agent over wss; status, metrics and debug views tell the truth', async (t) => {
  const source = new ManualSource([ns, pod('web-1', '10.1.0.1'), svc, badPolicy]);
  const { cp, token, status } = await plane(t, source);
  t.is((await fetch(`${status}/ready`)).status, 200);
  const c = new XdsClient({ url: `wss://127.0.0.1:${cp.addresses.tls!.port}`, token, node: 'node-a', role: 'agent', caPem: pki.ca.rootsPem });
  t.teardown(() => c.close());
  c.start();
  await c.ready;
  const w = [...c.snapshot.workloads];
  t.is(w.length, 1);
  t.is(w[0]!.name, 'web-1');
  t.deepEqual(w[0]!.addresses, ['10.1.0.1']);
  t.truthy(c.snapshot.service('shop/web.shop.svc.cluster.local'));

  const dump = await (await fetch(`${status}/debug/config_dump`)).json() as { rejected: { kind: string; name: string; field: string }[]; workloads: unknown[] };
  t.is(dump.workloads.length, 1);
  t.true(dump.rejected.some((r) => r.kind === 'AuthorizationPolicy' && r.name === 'broken'));
  const syncz = await (await fetch(`${status}/debug/syncz`)).json() as { node: string; role: string; types: { versionAcked: string; versionSent: string }[] }[];
  t.is(syncz.length, 1);
  t.is(syncz[0]!.node, 'node-a');
  t.is(syncz[0]!.types.length, 2);

  // a config change reaches the client and converges (every client ACKed)
  const converged = once(cp.push, 'converged');
  source.emit([ns, pod('web-1', '10.1.0.1'), pod('web-2', '10.1.0.2', 'node-b'), svc, badPolicy]);
  await until(c, (s) => s.counts.workloads === 2);
  await converged;
  const metrics = await (await fetch(`${status}/metrics`)).text();
  t.regex(metrics, /ambit_control_connected_clients\{role="agent"\} 1/);
  t.regex(metrics, /ambit_control_rejected_config\{kind="AuthorizationPolicy"\} 1/);
  t.regex(metrics, /ambit_control_push_convergence_seconds_count 1/);
  t.regex(metrics, /ambit_control_pushes_total\{type="Address"\} [1-9]/);

  // node authorization reads the pushed snapshot: web runs on node-a
  const id = pki.id('shop', 'web');
  const cert = await c.requestCertificate((await generateKeyAndCsr(id)).csrPem, id);
  t.true(cert.chainPem.length >= 1);
  t.regex(await (await fetch(`${status}/metrics`)).text(), /ambit_control_certificates_total\{result="issued"\} 1/);
});

test('not ready before the first config set; plain ws works too; stop closes everything', async (t) => {
  const source = new ManualSource();
  const { cp, token, status, dir } = await plane(t, source);
  t.is((await fetch(`${status}/ready`)).status, 503);
  t.is((await stat(join(dir, 'bootstrap-token'))).mode & 0o777, 0o600);
  // until the first config set the channel refuses clients (503): they retry
  const c = new XdsClient({ url: `ws://127.0.0.1:${cp.addresses.plain!.port}`, token, node: 'node-a', role: 'agent' });
  const early = new Promise<Error>((resolve) => c.once('error', resolve));
  t.teardown(() => c.close());
  c.start();
  t.regex((await early).message, /HTTP 503/);
  source.emit([ns, pod('web-1', '10.1.0.1')]);
  await c.ready;
  t.is((await fetch(`${status}/ready`)).status, 200);
  t.is(c.snapshot.counts.workloads, 1);
  const down = once(c, 'disconnected');
  await cp.stop();
  await down;
  await t.throwsAsync(fetch(`${status}/ready`));
});

test('the bootstrap token is created once (0600) and reused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-token-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const a = await BootstrapTokenAuthenticator.loadOrCreate(dir, TD);
  const b = await BootstrapTokenAuthenticator.loadOrCreate(dir, TD);
  t.is(a.token, b.token);
  t.true(a.token.length >= 32);
  t.is((await stat(a.path)).mode & 0o777, 0o600);
});

test('a YAML directory is the local config source, end to end', async (t) => {
  const cfg = await mkdtemp(join(tmpdir(), 'ambit-yaml-'));
  t.teardown(() => rm(cfg, { recursive: true, force: true }));
  await writeFile(join(cfg, 'shop.yaml'), `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, namespace: shop, labels: { app: web } }
spec: { nodeName: node-a, serviceAccountName: web, containers: [{ name: app }] }
status: { phase: Running, podIP: 10.1.0.1, conditions: [{ type: Ready, status: "True" }] }
`);
  const { cp, token } = await plane(t, new FileSource({ dir: cfg, debounceMs: 5 }));
  const c = new XdsClient({ url: `ws://127.0.0.1:${cp.addresses.plain!.port}`, token, node: 'node-a', role: 'agent' });
  t.teardown(() => c.close());
  c.start();
  await c.ready;
  const s = await until(c, (x) => x.counts.workloads === 1);
  t.is([...s.workloads][0]!.serviceAccount, 'web');
  await writeFile(join(cfg, 'more.yaml'), `
apiVersion: v1
kind: Pod
metadata: { name: web-2, namespace: shop, labels: { app: web } }
spec: { nodeName: node-b, serviceAccountName: web, containers: [{ name: app }] }
status: { phase: Running, podIP: 10.1.0.2, conditions: [{ type: Ready, status: "True" }] }
`);
  const s2 = await until(c, (x) => x.counts.workloads === 2);
  t.truthy([...s2.workloads].find((w) => w.name === 'web-2'));
});
