/**
 * The waypoint's HTTP layer on loopback: a snapshot with a waypoint, a Service bound to it and
 * its endpoints; a transport whose "HBONE" streams are plain TCP connections (inbound: a
 * loopback listener handing each connection to the proxy with the stream facts a real tunnel
 * would prove; outbound: the endpoint pod IP mapped to a loopback server). HBONE itself is
 * tested with the engine (test/netns/waypoint.test.ts); this is about HTTP.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { MeshError } from '../../src/core/index.js';
import { Snapshot, type Service, type ServicePort, type Waypoint, type Workload } from '../../src/model/index.js';
import type { ServiceL7 } from '../../src/model/l7.js';
import { HttpProxy, UpstreamPools, WaypointTelemetry, type InboundStreamInfo, type OutboundTarget, type ProxyLimits, type WaypointTransport } from '../../src/waypoint/index.js';

export const TD = 'cluster.local';
export const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;

export function workload(name: string, ip: string, o: Partial<Workload> = {}): Workload {
  return {
    uid: `Kubernetes//Pod/default/${name}`, name, namespace: 'default', serviceAccount: o.serviceAccount ?? name, trustDomain: TD, node: 'node-1',
    addresses: [ip], labels: { app: name }, canonicalName: name, canonicalRevision: 'v1', workloadName: name, workloadType: 'pod',
    tunnel: 'hbone', healthy: true, services: [], authorizationPolicies: [], ...o,
  };
}

export const WAYPOINT: Waypoint = { name: 'waypoint', namespace: 'default', service: 'default/waypoint.default.svc.cluster.local', for: 'service', gatewayClass: 'istio-waypoint' };

export class LoopbackTransport implements WaypointTransport {
  readonly servers = new Map<string, number>();
  connects: OutboundTarget[] = [];
  failIps = new Set<string>();
  /** connects to these never complete; they end only when cancelled (counted in `cancelled`) */
  hangIps = new Set<string>();
  cancelled = 0;
  /** every upstream socket connect() made, in order */
  readonly made: Socket[] = [];
  #handler: ((s: Duplex, i: InboundStreamInfo) => void) | undefined;
  async listen(h: (s: Duplex, i: InboundStreamInfo) => void): Promise<void> { this.#handler = h; }
  accept(s: Duplex, i: InboundStreamInfo): void { this.#handler?.(s, i); }
  connect(t: OutboundTarget, signal?: AbortSignal): Promise<Duplex> {
    this.connects.push(t);
    if (this.hangIps.has(t.ip)) {
      return new Promise((_resolve, reject) => {
        signal?.addEventListener('abort', () => { this.cancelled++; reject(new MeshError('AMBIT_CONNECT_TIMEOUT', 'cancelled')); }, { once: true });
      });
    }
    const port = this.servers.get(t.ip);
    if (port === undefined || this.failIps.has(t.ip)) return Promise.reject(new MeshError('AMBIT_CONNECT_REFUSED', `no endpoint ${t.ip}`));
    return new Promise((resolve, reject) => {
      // half-open capable, like the engine's HBONE sockets
      const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      this.made.push(s);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  }
  async stopAccepting(): Promise<void> {}
  async close(): Promise<void> {}
}

export interface Harness {
  proxy: HttpProxy;
  telemetry: WaypointTelemetry;
  transport: LoopbackTransport;
  /** loopback port: each connection reaches the proxy as a stream for `authority` from the client */
  port(authority: string, peer?: string): Promise<number>;
  set(l7: ServiceL7 | undefined, snap?: Snapshot): void;
  service: Service;
  close(): Promise<void>;
}

export async function harness(o: { ports?: ServicePort[]; endpoints: Array<{ name: string; ip: string; port: number; labels?: Record<string, string> }>; limits?: Partial<ProxyLimits> }): Promise<Harness> {
  const key = 'default/echo.default.svc.cluster.local';
  const service: Service = {
    name: 'echo', namespace: 'default', hostname: 'echo.default.svc.cluster.local', vips: ['10.96.0.10'],
    ports: o.ports ?? [{ port: 80, targetPort: 8080, name: 'http', appProtocol: 'http' }], waypoint: { service: WAYPOINT.service, port: 15008 },
  };
  const transport = new LoopbackTransport();
  const eps = o.endpoints.map((e) => {
    transport.servers.set(e.ip, e.port);
    return workload(e.name, e.ip, { services: [key], serviceAccount: 'echo', labels: { app: 'echo', ...e.labels }, canonicalName: 'echo', canonicalRevision: e.labels?.version ?? 'v1' });
  });
  const client = workload('client', '10.244.1.9', { serviceAccount: 'client' });
  let snap = Snapshot.build({ workloads: [...eps, client], services: [service], authorizations: [], waypoints: [WAYPOINT] }, 1);
  let l7: ServiceL7 | undefined;
  const telemetry = new WaypointTelemetry();
  const pools = new UpstreamPools(transport);
  const proxy = new HttpProxy({
    pools, telemetry, snapshot: () => snap, l7: (k) => (k === key ? l7 : undefined), me: () => snap.waypoint('default/waypoint'),
    identity: () => `spiffe://${TD}/ns/default/sa/waypoint`, ...(o.limits ? { limits: o.limits } : {}),
  });
  await transport.listen((s, i) => proxy.accept(s, i));
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  return {
    proxy, telemetry, transport, service,
    set(x, s) { l7 = x; if (s) snap = s; },
    async port(authority, peer = CLIENT_ID) {
      const srv = createServer((s) => {
        sockets.add(s);
        s.once('close', () => sockets.delete(s));
        transport.accept(s, { peerIdentity: peer, authority, remoteIp: client.addresses[0]!, remotePort: s.remotePort ?? 0 });
      });
      servers.push(srv);
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      return (srv.address() as AddressInfo).port;
    },
    async close() {
      proxy.destroy();
      pools.close();
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    },
  };
}
