/**
 * A real waypoint in a netns-tier mesh (test/helpers/mesh.ts with `control: 'real'`): its
 * Gateway, its pod (a netns on a node, outside the capture), its Service, and the waypoint
 * program in this process with the engine transport, listening in the pod's netns. Also used
 * by bench/l7 for the client -> agent -> waypoint -> agent -> server path.
 *
 *   const mesh = await createMesh(t, { nodes: 2, control: 'real' });
 *   const wp = await addWaypoint(mesh, { node: 'node-2' });
 *   await mesh.applyYaml(wp.yaml + routes);    // the Gateway must stay in the applied YAML
 */
import type { Pod } from '../../src/local/index.js';
import { createWaypoint, type WaypointApp } from '../../src/waypoint/index.js';
import { createEngineTransport } from '../../src/waypoint/engine-transport.js';
import type { Mesh } from './mesh.js';

export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';

export interface TestWaypoint {
  readonly app: WaypointApp;
  readonly pod: Pod;
  /** the Gateway; keep it in every mesh.applyYaml() */
  readonly yaml: string;
  stop(deadlineMs?: number): Promise<void>;
}

export function waypointYaml(name = 'waypoint', namespace = 'default', forWhat = 'service'): string {
  return `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: ${name}, namespace: ${namespace}, labels: { istio.io/waypoint-for: ${forWhat} } }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
---
`;
}

/**
 * Adds and starts a waypoint; resolves once it is ready (certificate, config, listening).
 * `extraYaml` is applied together with the Gateway (routes, policies).
 */
export async function addWaypoint(mesh: Mesh, o: { name?: string; namespace?: string; node: string; extraYaml?: string; for?: string }): Promise<TestWaypoint> {
  const real = mesh.real;
  if (!real) throw new Error('addWaypoint needs createMesh({ control: "real" })');
  const name = o.name ?? 'waypoint';
  const namespace = o.namespace ?? 'default';
  const yaml = waypointYaml(name, namespace, o.for ?? 'service');
  await mesh.applyYaml(yaml + (o.extraYaml ?? ''));
  const pod = await mesh.pod({
    name: `${name}-wp`, node: o.node, namespace, serviceAccount: name, cni: false,
    labels: { [GATEWAY_NAME_LABEL]: name, 'istio.io/dataplane-mode': 'none' },
  });
  mesh.cluster.addService({ name, namespace, selector: { [GATEWAY_NAME_LABEL]: name }, ports: [{ name: 'mesh', port: 15008, targetPort: 15008 }] });
  await mesh.publish();
  const app = createWaypoint({
    name, namespace, serviceAccount: name, controlUrl: real.url, token: real.token, trustDomain: mesh.trustDomain, netns: pod.netnsPath,
    ports: { admin: 0, metrics: 0, readiness: 0 }, adminHost: '127.0.0.1', publicHost: '127.0.0.1', transport: createEngineTransport,
  });
  await app.start();
  await app.whenReady();
  return { app, pod, yaml, stop: (ms = 1000) => app.stop(ms) };
}
