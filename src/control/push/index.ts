export { PushServer } from './push-server.js';
export type { PushServerOptions, PushServerEvents, PushMetrics, PeerSyncz, PeerCertificate, RefusalReason } from './push-server.js';
export { admitPeer, runsWaypoint, waypointIdentities } from './waypoint-admission.js';
export { BootstrapTokenAuthenticator, TokenReviewAuthenticator } from './authenticator.js';
export type { Authenticator, Principal, PeerRole, TokenReviewOptions } from './authenticator.js';
