/** The control plane's writes to the Kubernetes API: the CA Secret and the waypoints of Gateways. */
export { KubeApi, CONTROL_FIELD_MANAGER, resourcePath } from './api.js';
export type { KubeAnswer, KubeApiOptions, Json } from './api.js';
export { loadOrCreateKubeCa, publishRoot, caSecretObject, CA_SECRET, PLUGIN_CA_SECRET, CA_ROOT_CONFIGMAP } from './ca-secret.js';
export type { KubeCa, KubeCaOptions, KubeCaOrigin } from './ca-secret.js';
export {
  waypointObjects, gatewayStatus, gatewayClassStatus, statusDiffers, caRootName, GATEWAY_NAME_LABEL, MANAGED_BY_LABEL, MANAGED_BY, WAYPOINT_PORTS,
  WAYPOINT_GATEWAY_CLASS,
} from './waypoint-objects.js';
export type { Desired, GatewayState, WaypointDeploySettings } from './waypoint-objects.js';
export { WaypointReconciler, WAYPOINT_CLASSES } from './waypoint-reconciler.js';
export type { WaypointReconcilerOptions } from './waypoint-reconciler.js';
export { LeaderElector, LEASE_NAME, microTime } from './leader.js';
export type { LeaderElectorOptions } from './leader.js';
