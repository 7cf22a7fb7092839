/** The node agent: enrolment, in-pod capture, per-pod proxies, telemetry, CNI hand-off. */
export { createAgent } from './app.js';
export type { Agent, AgentOptions, AgentPorts, EnrollRequest, ControlChannel, AgentCerts } from './app.js';
export { runAgent, agentSettings } from './main.js';
export type { AgentSettings } from './main.js';
export { runCni, DEFAULT_AGENT_SOCKET } from './cni.js';
export type { CniResult, CniDeps } from './cni.js';
export { sendCniRequest } from './cni-client.js';
export type { CniRequest, CniAdd, CniDel } from './cni-protocol.js';
export { captureRules, applyCapture, removeCapture, hasCapture, AGENT_MARK, RETURN_MARK } from './capture.js';
export { buildOutboundRequest } from './route.js';
export type { OutboundRequest, SocketAddr } from './route.js';
