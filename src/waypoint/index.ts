/** The waypoint (L7 proxy) program. */
export { createWaypoint, spiffeOf } from './app.js';
export type { WaypointApp, WaypointOptions, WaypointPorts, WaypointControl, WaypointCerts, TransportContext } from './app.js';
export { runWaypoint, waypointSettings } from './main.js';
export type { WaypointSettings } from './main.js';
export type { WaypointTransport, InboundStreamInfo, OutboundTarget, InboundHandler } from './transport.js';
export { HttpProxy, DEFAULT_PROXY_LIMITS } from './proxy.js';
export type { ProxyLimits, ProxyDeps } from './proxy.js';
export { resolveBinding, portProtocol, parseIpAuthority } from './bindings.js';
export type { Binding, BindingVerdict, PortProtocol } from './bindings.js';
export { WaypointTelemetry, requestLabels, REQUEST_LABELS } from './telemetry.js';
export { propagateTrace } from './trace.js';
export { forwardableRequestHeaders, forwardableResponseHeaders, headerListTooLarge, isInternalHeader } from './headers.js';
export { UpstreamPools } from './upstream.js';
