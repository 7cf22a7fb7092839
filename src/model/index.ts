export * from './types.js';
export { Snapshot } from './snapshot.js';
export type { SnapshotInput } from './snapshot.js';
export { parseIp, formatIp, canonicalIp, parseCidr, compileCidr, cidrContains } from '../core/index.js';
export type { IpAddr, CompiledCidr } from '../core/index.js';
