/** HBONE: HTTP/2 CONNECT over mutual TLS 1.3. Client pool and server; identities and addresses only. */
export { HbonePool } from './pool.js';
export type { HbonePoolOptions, HboneOpenRequest, HbonePoolStats } from './pool.js';
export { HboneStatusError, defaultConnector } from './client.js';
export type { Connector, HboneStream } from './client.js';
export { HboneServer } from './server.js';
export type { HboneServerOptions, HboneConnectRequest, ConnectResult, HboneServerStats } from './server.js';
export type { HboneTunnel, TunnelCloseInfo } from './tunnel.js';
export type { Http2Tuning } from './settings.js';
export { parseAuthority, formatAuthority, canonicalIp, validateTarget, AGENT_PORTS } from './authority.js';
export type { HboneTarget, SocketAddress, TargetPolicy, TargetVerdict } from './authority.js';
