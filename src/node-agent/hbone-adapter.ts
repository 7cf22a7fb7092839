/**
 * Adapts src/hbone (client pool and server) to the two seams the pod proxy uses: the proxy keeps
 * deciding (route, policy, target checks), hbone does mTLS, HTTP/2 and the byte copying.
 */
import type { Socket } from 'node:net';
import { HbonePool, HboneServer, type HbonePoolOptions } from '../hbone/index.js';
import type { HboneListenerFactory, TunnelOpener } from './pod-proxy.js';

/**
 * Streams one pooled HBONE connection carries over its life. The pool's own default (100) means a
 * TLS handshake (two signatures, chain checks on both agents) for every 100 new tunnels: at a few
 * hundred connections/s that was the client agent's largest CPU item. Concurrency is still bounded
 * by the server's SETTINGS_MAX_CONCURRENT_STREAMS; rotation still applies to each new connection.
 */
export const AGENT_MAX_STREAMS_PER_CONNECTION = 100_000;

/** One pool per agent; connections are keyed by source identity and source pod, never shared across them. */
export function createTunnelOpener(o: Omit<HbonePoolOptions, 'connect'> = {}): TunnelOpener & { close(): Promise<void> } {
  const pool = new HbonePool({ maxStreamsPerConnection: AGENT_MAX_STREAMS_PER_CONNECTION, ...o });
  return {
    open: (r) => pool.open({
      source: r.source,
      expectedIdentities: r.expected,
      address: { address: r.address.ip, port: r.address.port },
      authority: r.authority,
      headers: r.headers,
      connect: (): Promise<Socket> => r.connect(),
      sourceKey: r.sourceKey,
    }),
    close: () => pool.close(),
  };
}

export const createHboneListener: HboneListenerFactory = (o) => {
  const server = new HboneServer({
    identity: o.cert,
    trustDomain: o.trustDomain,
    onConnect: (req) => o.onConnect({
      authority: req.authority,
      headers: req.headers,
      peer: req.peer,
      remote: { ip: req.remoteAddress, port: req.remotePort },
      local: { ip: req.localAddress, port: req.localPort },
    }),
  });
  return {
    listen: (fd) => server.listen({ fd }),
    close: (deadlineMs) => server.close(deadlineMs),
  };
};
