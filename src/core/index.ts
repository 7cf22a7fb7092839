export { MeshError, ConfigError, isMeshError, errorMessage } from './errors.js';
export type { ErrorCode } from './errors.js';
export { logger, setLogLevel, enableTrace, setLogSink } from './log.js';
export type { Logger, Level } from './log.js';
export { Backoff } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { Drain } from './drain.js';
export { parseIp, formatIp, canonicalIp, parseCidr, compileCidr, cidrContains } from './ip.js';
export type { IpAddr, CompiledCidr } from './ip.js';
