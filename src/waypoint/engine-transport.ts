/**
 * HBONE for the waypoint through the addon's engine (src/hbone's HboneEndpoint): each accepted
 * CONNECT stream and each dialled one is a Node socket whose bytes the engine carries; TLS,
 * HTTP/2 and the peer-identity rules stay in the engine. Listener and upstream connections live
 * in the waypoint pod's netns when one is named (the local mesh), else in this process's.
 */
import type { Duplex } from 'node:stream';
import { MeshError } from '../core/index.js';
import { HboneEndpoint, type HboneListener, type HboneSocket } from '../hbone/index.js';
import { listenInNetns } from '../native/index.js';
import type { TransportContext } from './app.js';
import type { InboundHandler, OutboundTarget, WaypointTransport } from './transport.js';

const SELF_NETNS = '/proc/self/ns/net';

export function createEngineTransport(ctx: TransportContext): WaypointTransport {
  const endpoint = new HboneEndpoint();
  const netns = ctx.netns ?? SELF_NETNS;
  // a pod netns in the local mesh may carry capture rules that skip the agent's mark; in its own
  // netns (Kubernetes) nothing captures, and setting a mark would take CAP_NET_ADMIN
  const mark = ctx.netns !== undefined ? ctx.mark : 0;
  let listener: HboneListener | undefined;
  return {
    async listen(handler: InboundHandler): Promise<void> {
      const fd = listenInNetns(netns, { address: '::', port: ctx.hbonePort, mark, reusePort: true, backlog: 511 });
      listener = endpoint.listen(fd, netns, {
        trustDomain: ctx.identity.trustDomain,
        certificate: () => ctx.certificate() ?? null,
        decide: (info) => ctx.decide(info.authority, info.peer ?? ''),
        mark,
      });
      listener.on('stream', (s: HboneSocket) => {
        const i = s.info;
        handler(s, { peerIdentity: i.peer ?? '', authority: i.authority, remoteIp: i.remote.ip, remotePort: i.remote.port, forwarded: i.forwarded });
      });
    },
    connect(t: OutboundTarget, signal?: AbortSignal): Promise<Duplex> {
      const identity = ctx.certificate();
      if (!identity) return Promise.reject(new MeshError('AMBIT_CERT_INVALID', 'waypoint: no certificate yet'));
      let s: HboneSocket;
      try {
        s = endpoint.connect({
          ip: t.ip, port: t.port, authority: t.authority, expect: [t.expectedIdentity], identity,
          ...(t.headers ? { headers: t.headers } : {}), netns, mark,
        });
      } catch (e) {
        return Promise.reject(e);
      }
      return new Promise<Duplex>((resolve, reject) => {
        const onErr = (e: Error): void => { signal?.removeEventListener('abort', onAbort); reject(e); };
        const onAbort = (): void => { s.destroy(); reject(new MeshError('AMBIT_CONNECT_TIMEOUT', 'upstream connect cancelled')); };
        signal?.addEventListener('abort', onAbort, { once: true });
        s.once('error', onErr);
        s.once('established', () => { s.off('error', onErr); signal?.removeEventListener('abort', onAbort); resolve(s); });
      });
    },
    async stopAccepting(): Promise<void> { listener?.close(); listener = undefined; },
    async close(): Promise<void> { endpoint.close(); },
    stats: () => ({ ...endpoint.stats() }),
  };
}
