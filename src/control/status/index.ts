export { ControlMetrics } from './metrics.js';
export { createStatusServer } from './status-server.js';
export type { StatusSources, StatusServerOptions } from './status-server.js';
