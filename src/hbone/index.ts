/**
 * HBONE: HTTP/2 CONNECT over mutual TLS 1.3; identities and addresses only.
 *
 * The TypeScript face of the engine (native/README.md, "The engine"): `HboneEndpoint` owns one
 * engine (its own thread: TLS, the SPIFFE identity rules, HTTP/2, the client pool, limits) and
 * hands each CONNECT stream to JavaScript as an `HboneSocket`, a `net.Socket` that `node:http`
 * and `node:http2` take as their connection:
 *
 *   const ep = new HboneEndpoint();                       // settings: HBONE_SETTINGS (settings.ts)
 *   // (a) accept: after mTLS, the client's identity (trust domain) and the CONNECT
 *   const l = ep.listen(listenInNetns(podNetns, { address: '::', port: 15008 }), podNetns, {
 *     trustDomain, certificate: () => bundle, decide: (info) => allowed(info) ? 'accept' : 403 });
 *   l.on('stream', (socket, info) => httpServer.emit('connection', socket));
 *   //   info: { flowId, peer (SPIFFE URI), authority, forwarded, remote, local }
 *   // (b) open: a pooled HBONE connection to ip:15008, CONNECT authority, the server's identity
 *   //     checked against `expect`; returns at once (http.Agent createConnection, http2.connect)
 *   const s = ep.connect({ ip, authority: `${ip}:${port}`, expect: [uri], identity: bundle, netns, mark });
 *
 * A stream that fails ends its socket with an `HboneError` ('error'), never a clean EOF:
 * `failure` connect | tls | status (`status`) | refused | lost | reset | aborted, `retrySafe`
 * when nothing reached the target. 'established' (CONNECT 200) on the socket; 'established' and
 * 'closed' (info, { sent, received, error }) on the endpoint for telemetry. `close()` cuts all.
 */
export { parseAuthority, formatAuthority, validateTarget, AGENT_PORT, AGENT_PORTS } from './authority.js';
export type { HboneTarget, SocketAddress, TargetPolicy, TargetVerdict } from './authority.js';

// The TypeScript face of the engine's HBONE (native/src/engine*.c): see endpoint.ts.
export { HboneEndpoint, HboneListener, HBONE_PORT } from './endpoint.js';
export type { HboneEndpointOptions, HboneListenOptions, HboneConnectOptions } from './endpoint.js';
export { HboneSocket } from './socket.js';
export type { HboneStreamInfo, HboneFlowResult, HboneAddress } from './socket.js';
export { HboneError, hboneFailureOf } from './hbone-error.js';
export type { HboneFailure } from './hbone-error.js';
export { HBONE_SETTINGS, engineOptions } from './settings.js';
export type { HboneSettings } from './settings.js';
export { verifyEnginePeer, serverTag, clientTag } from './peer.js';
