/**
 * What a pod proxy is given: the agent-wide context every pod proxy shares, and the pod itself.
 * Types only (and the pod's identity), so the lifecycle (pod-proxy.ts) and the flows it carries
 * (pod-flows.ts) read one definition.
 */
import type { CertBundle, Identity } from '../../identity/index.js';
import type { Snapshot, Workload } from '../../model/index.js';
import { AGENT_PORT } from '../../hbone/index.js';
import type { NetnsHandle, NetnsSockets } from '../deps.js';
import type { AgentTelemetry } from '../admin/telemetry.js';
import type { ConnectionRegistry } from './connections.js';
import type { AgentEngine } from './engine-adapter.js';

export interface PodPorts {
  /** default 15001 */
  outbound: number;
  /** default 15006 */
  inboundPlain: number;
  /** default 15008 */
  hbone: number;
}

export const DEFAULT_POD_PORTS: PodPorts = AGENT_PORT;

/** The three listening sockets of a pod proxy (fds), as a handover passes them on. */
export type ListenerFds = Readonly<Record<keyof PodPorts, number>>;

/** What every pod proxy of an agent shares. Narrow: no model writers, no CA. */
export interface ProxyContext {
  native: NetnsSockets;
  snapshot(): Snapshot;
  /** synchronous certificate lookup; undefined means no valid certificate (fail closed) */
  cert(id: Identity): CertBundle | undefined;
  /** fetch the certificate (used once at start, so the HBONE listener comes up with it) */
  fetchCert?(id: Identity): Promise<CertBundle>;
  /** how long start waits for the first certificate, ms; default 5_000 (then starts without: fail closed) */
  certWaitMs?: number;
  /** the addon's data-path engine: it carries 15001 and 15008; 15006 stays in Node */
  engine: AgentEngine;
  telemetry: AgentTelemetry;
  connections: ConnectionRegistry;
  trustDomain: string;
  ports: PodPorts;
  /** TCP connect timeout for upstreams, ms; default 10_000 */
  connectTimeoutMs?: number;
  random?: () => number;
}

export interface PodInfo {
  /** uid of the workload in the model */
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  ips: readonly string[];
  netns: NetnsHandle;
  /** the return-path routes are installed: inbound upstreams can spoof the client's address */
  spoof: boolean;
  /**
   * Listening sockets taken over from the previous agent (handover): served instead of opening
   * new ones, so no connection queued on them is lost. The proxy owns them from `start` on.
   */
  listenFds?: ListenerFds;
}

export function identityOf(w: Pick<Workload, 'trustDomain' | 'namespace' | 'serviceAccount'>): Identity {
  return { trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount };
}

/** The pod's identity: its workload's in the snapshot, else what the pod itself says (not in the model yet). */
export function podIdentity(ctx: Pick<ProxyContext, 'snapshot' | 'trustDomain'>, pod: PodInfo): Identity {
  const w = ctx.snapshot().workload(pod.uid);
  return w ? identityOf(w) : { trustDomain: ctx.trustDomain, namespace: pod.namespace, serviceAccount: pod.serviceAccount };
}
