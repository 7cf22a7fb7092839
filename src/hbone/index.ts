/**
 * HBONE as TypeScript sees it: the data path itself (mutual TLS 1.3, HTTP/2 CONNECT, pooling) is
 * the addon's engine (src/native); here are the pieces around it: authority parsing, the agent's
 * ports, HBONE settings. Identities and addresses only, never the model.
 */
export type { Http2Tuning } from './settings.js';
export { parseAuthority, formatAuthority, canonicalIp, validateTarget, AGENT_PORTS } from './authority.js';
export type { HboneTarget, SocketAddress, TargetPolicy, TargetVerdict } from './authority.js';
