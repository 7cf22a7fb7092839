export * from './types.js';
export { Snapshot } from './snapshot.js';
export type { SnapshotInput } from './snapshot.js';
