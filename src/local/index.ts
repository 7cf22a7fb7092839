/** The one-machine cluster: nodes and pods as network namespaces (used by `ambit up` and tests). */
export { Cluster, createCluster } from './cluster.js';
export type { ClusterOptions, AddPodOptions, AddServiceOptions, Pod, Node, Service, Place } from './cluster.js';
export type { ClusterState, NodeState, PodState, ServiceState, ServicePortState, NamespaceState } from './state.js';
export { clusterToYaml } from './to-yaml.js';
export { cleanupStale, removeNetns } from './cleanup.js';
export { installExitCleanup } from './exit-cleanup.js';
export { NETNS_PREFIX, pidOfNetns, checkDnsLabel } from './names.js';
export { execInNetns, spawnInNetns, listNetns, pidAlive } from './run.js';
export type { RunResult, RunOptions, SpawnInNetnsOptions } from './run.js';
export { startEchoServer, echoServerCommand } from './echo.js';
export type { EchoOptions, EchoHandle } from './echo.js';
