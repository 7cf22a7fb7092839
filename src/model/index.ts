export * from './types.js';
// L7 (waypoint) configuration: routes, traffic policies, L7 authorization
export * from './l7.js';
export { Snapshot } from './snapshot.js';
export type { SnapshotInput } from './snapshot.js';
export { parseIp, formatIp, canonicalIp, parseCidr, compileCidr, cidrContains } from '../core/index.js';
export type { IpAddr, CompiledCidr } from '../core/index.js';
