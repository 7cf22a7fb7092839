/** The node agent: enrolment, in-pod capture, per-pod proxies, telemetry, CNI hand-off. */
export { createAgent } from './app.js';
export type { Agent, AgentOptions, AgentPorts, EnrollRequest, ControlChannel, AgentCerts } from './app.js';
export { runAgent, agentSettings, runCniUninstall, cniDirs } from './main.js';
export type { AgentSettings, CniDirs } from './main.js';
export { cniPluginMain } from './cni-plugin/main.js';
export { installCni, installCniProgram, uninstallCni, CNI_PROGRAM, CNI_PROGRAM_DIR } from './enrol/cni-install.js';
export type { CniPayload, CniPluginSettings, CniInstallOptions } from './enrol/cni-install.js';
export { runCni, DEFAULT_AGENT_SOCKET } from './enrol/cni.js';
export type { CniResult, CniDeps } from './enrol/cni.js';
export { sendCniRequest } from './enrol/cni-client.js';
export type { CniRequest, CniAdd, CniDel } from './enrol/cni-protocol.js';
export { captureRules, applyCapture, removeCapture, hasCapture, AGENT_MARK, RETURN_MARK } from './enrol/capture.js';
export { buildOutboundRequest } from './proxy/route.js';
export type { OutboundRequest, SocketAddr } from './proxy/route.js';
