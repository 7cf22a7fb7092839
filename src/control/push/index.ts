export { PushServer } from './push-server.js';
export type { PushServerOptions, PushServerEvents, PushMetrics, PeerSyncz } from './push-server.js';
export { BootstrapTokenAuthenticator, TokenReviewAuthenticator } from './authenticator.js';
export type { Authenticator, Principal, PeerRole, TokenReviewOptions } from './authenticator.js';
