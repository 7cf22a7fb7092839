/** The control channel: schema, wire <-> model, client, per-peer server session. No protobuf type leaves here. */
export { XdsClient, checkControlIdentity } from './client.js';
export type { XdsClientOptions, XdsClientEvents, XdsClientStats, XdsRole, PeerIdentity } from './client.js';
export { tokenFromFile, checkToken, MAX_TOKEN_BYTES } from './token.js';
export type { TokenSource } from './token.js';
export { ServerSession } from './server-session.js';
export type { ServerSessionOptions, TypeSyncz, CertificateGrant } from './server-session.js';
export { ResourceStore, buildResourceTables } from './tables.js';
export type { ResourceEntry, ResourceTable, ResourceTables, BuildResult } from './tables.js';
export {
  encodeWorkload, encodeService, encodeWaypoint, encodeAuthorization, encodeWaypointConfig,
  decodeAddresses, decodeAuthorizations, decodeWaypointConfigs, waypointResourceName,
} from './convert.js';
export type { AddressValue, Decoded } from './convert.js';
export { ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_CONFIG_TYPE, TYPE_URLS, closeReason } from './codec.js';
export type { TypeUrl, WireResource } from './codec.js';
export { ipToBytes, bytesToIp } from './ip.js';
