/**
 * Node agents driven by the real in-process control plane: Kubernetes YAML in, xDS over
 * WebSocket, certificates from its CA. Proves the seed-style resources (namespace label,
 * AuthorizationPolicy, PeerAuthentication) work end to end through capture and HBONE.
 */
import test from 'ava';
import type { Pod } from '../../src/local/index.js';
import { createMesh, type Mesh } from '../helpers/mesh.js';
import { isRoot, rootSerial } from '../helpers/root.js';

const root = isRoot;
const serial = rootSerial;

let mesh: Mesh;
let sleep: Pod;
let legacy: Pod;
let web: Pod;

test.before(async () => {
  if (!root) return;
  mesh = await createMesh(undefined, { nodes: 2, control: 'real' });
  await mesh.setNamespaceLabels('shop', { 'istio.io/dataplane-mode': 'ambient' });
  sleep = await mesh.pod({ name: 'sleep', node: 'node-1', namespace: 'shop', serviceAccount: 'sleep' });
  legacy = await mesh.pod({ name: 'legacy', node: 'node-1', namespace: 'default' });
  web = await mesh.pod({ name: 'web', node: 'node-2', namespace: 'shop', serviceAccount: 'web' });
  await mesh.echo(web);
});
test.after.always(async () => { await mesh?.destroy(); });

serial('a namespace labelled ambient is enrolled and talks over HBONE with certificates from the control plane', async (t) => {
  t.deepEqual(mesh.agent('node-1').enrolledPods().map((p) => p.name), ['sleep']);
  const r = await mesh.http(sleep, web.ip, 8080);
  t.true(r.ok, r.error);
  t.is(r.body?.remoteAddress, sleep.ip);
  const m = await mesh.agent('node-2').telemetry.metrics();
  t.regex(m, /source_principal="spiffe:\/\/cluster.local\/ns\/shop\/sa\/sleep".*connection_security_policy="mutual_tls"/);
});

serial('PeerAuthentication STRICT refuses plaintext; mesh traffic still flows', async (t) => {
  t.true((await mesh.http(legacy, web.ip, 8080)).ok, 'PERMISSIVE by default');
  await mesh.applyYaml(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: shop
spec:
  mtls:
    mode: STRICT
`);
  t.false((await mesh.http(legacy, web.ip, 8080)).ok);
  t.true((await mesh.http(sleep, web.ip, 8080)).ok);
});

serial('AuthorizationPolicy ALLOW by principal, written as users write it', async (t) => {
  await mesh.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: web-allow-nobody-but-ghost
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/ghost"]
`);
  t.false((await mesh.http(sleep, web.ip, 8080)).ok);
  await mesh.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: web-allow-sleep
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/sleep"]
`);
  t.true((await mesh.http(sleep, web.ip, 8080)).ok);
});
