/**
 * `ambit cni`: a chained CNI plugin. The runtime calls it after the main plugin has set up the
 * pod's network; on ADD it opens the pod netns and hands it to the node agent over its unix
 * socket, waits for the ACK, and passes `prevResult` through. A NACK or an unreachable agent
 * fails the sandbox (fail closed: a pod never starts outside the mesh by accident). DEL is
 * best-effort and always succeeds, as the CNI spec wants.
 *
 * Never blocked, and never handed to the agent (so they start even when the agent is down, as
 * on a rebooted node whose agent, CoreDNS or CNI daemon are themselves such pods): pods of
 * kube-system, of ambit's own namespace (ambit-system, and any named in the network
 * configuration's `exemptNamespaces`), and host-network pods (CNI_NETNS is the network namespace
 * the plugin itself runs in, the host's). The agent would let them through anyway; deciding it
 * here means they do not depend on it.
 */
import { statSync } from 'node:fs';
import { errorMessage } from '../../core/index.js';
import { DEFAULT_EXEMPT_NAMESPACES } from './cni-admission.js';
import { sendCniRequest } from './cni-client.js';
import type { FdPassing } from '../deps.js';

export const CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
export const DEFAULT_AGENT_SOCKET = '/var/run/ambit/agent.sock';
/** How long `ambit cni` waits for the agent's answer to an ADD, ms (the agent's own bound is 20 s). */
export const ADD_TIMEOUT_MS = 25_000;

export interface CniResult {
  /** process exit code */
  code: number;
  /** what to print on stdout (CNI result or error JSON) */
  stdout: string;
}

export interface CniDeps {
  native: Pick<FdPassing, 'sendWithFds' | 'socketFd' | 'openNetns' | 'closeFd'>;
  timeoutMs?: number;
  /** the plugin's own (the host's) network namespace; default /proc/self/ns/net. A seam for tests. */
  hostNetns?: string;
}

/** Same namespace file (nsfs inode), whatever path names it; false when either cannot be looked at. */
function sameNamespace(a: string, b: string): boolean {
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

/** Namespaces whose pods are never held back: the defaults plus the configuration's `exemptNamespaces`. */
function exemptNamespaces(conf: Record<string, unknown>): Set<string> {
  const out = new Set(DEFAULT_EXEMPT_NAMESPACES);
  const extra = conf.exemptNamespaces;
  if (Array.isArray(extra)) for (const n of extra.slice(0, 256)) if (typeof n === 'string' && n.length <= 253) out.add(n);
  return out;
}

/** CNI error codes: 4 invalid config, 7 invalid env, 11 try again later, 999 generic. */
function cniError(cniVersion: string, code: number, msg: string, details?: string): CniResult {
  return { code: 1, stdout: JSON.stringify({ cniVersion, code, msg, ...(details ? { details } : {}) }) + '\n' };
}

function parseCniArgs(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!s) return out;
  for (const kv of s.split(';').slice(0, 64)) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

function firstIp(prevResult: unknown): string | undefined {
  if (!prevResult || typeof prevResult !== 'object') return undefined;
  const ips = (prevResult as { ips?: unknown }).ips;
  if (!Array.isArray(ips)) return undefined;
  for (const e of ips) {
    const a = e && typeof e === 'object' ? (e as { address?: unknown }).address : undefined;
    if (typeof a === 'string') return a.split('/')[0];
  }
  return undefined;
}

export async function runCni(env: Readonly<Record<string, string | undefined>>, stdin: string, deps: CniDeps): Promise<CniResult> {
  const command = env.CNI_COMMAND;
  if (command === 'VERSION') {
    return { code: 0, stdout: JSON.stringify({ cniVersion: '1.0.0', supportedVersions: CNI_VERSIONS }) + '\n' };
  }
  let conf: Record<string, unknown>;
  try {
    if (stdin.length > 1 << 20) throw new Error('config larger than 1 MiB');
    const raw: unknown = JSON.parse(stdin);
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('must be a JSON object');
    conf = raw as Record<string, unknown>;
  } catch (e) {
    return cniError('1.0.0', 4, 'invalid network configuration on stdin', errorMessage(e));
  }
  const cniVersion = typeof conf.cniVersion === 'string' ? conf.cniVersion : '1.0.0';
  const socketPath = typeof conf.agentSocket === 'string' ? conf.agentSocket : DEFAULT_AGENT_SOCKET;
  const passThrough = (): CniResult => ({ code: 0, stdout: JSON.stringify({ cniVersion, ...(conf.prevResult as object ?? {}) }) + '\n' });
  const args = parseCniArgs(env.CNI_ARGS);
  const name = args.K8S_POD_NAME;
  const namespace = args.K8S_POD_NAMESPACE;

  switch (command) {
    case 'ADD': {
      if (!conf.prevResult) return cniError(cniVersion, 4, 'ambit cni is a chained plugin: prevResult missing');
      // not a Kubernetes pod (or no netns): nothing for the mesh to do
      if (!name || !namespace || !env.CNI_NETNS) return passThrough();
      if (exemptNamespaces(conf).has(namespace)) return passThrough();
      // a host-network pod: its namespace is the host's, there is nothing to capture
      if (sameNamespace(env.CNI_NETNS, deps.hostNetns ?? '/proc/self/ns/net')) return passThrough();
      let fd: number;
      try {
        fd = deps.native.openNetns(env.CNI_NETNS);
      } catch (e) {
        return cniError(cniVersion, 7, `cannot open CNI_NETNS ${env.CNI_NETNS}`, errorMessage(e));
      }
      try {
        const ip = firstIp(conf.prevResult);
        const uid = args.K8S_POD_UID;
        // the agent answers within its own bound (20 s by default: it waits for the pod to be
        // fit to start in the mesh, then refuses with the reason); this is only a backstop
        await sendCniRequest({ native: deps.native, path: socketPath, timeoutMs: deps.timeoutMs ?? ADD_TIMEOUT_MS },
          { op: 'ADD', name, namespace, ...(uid ? { uid } : {}), ...(ip ? { ip } : {}) }, fd);
      } catch (e) {
        return cniError(cniVersion, 11, `node agent did not enrol pod ${namespace}/${name}`, errorMessage(e));
      } finally {
        deps.native.closeFd(fd);
      }
      return passThrough();
    }
    case 'DEL': {
      if (name && namespace) {
        try {
          await sendCniRequest({ native: deps.native, path: socketPath, timeoutMs: deps.timeoutMs ?? 5_000 }, { op: 'DEL', name, namespace });
        } catch { /* the agent cleans up on its own when the pod leaves the model */ }
      }
      return { code: 0, stdout: '' };
    }
    case 'CHECK':
    case 'GC':
    case 'STATUS':
      return { code: 0, stdout: '' };
    default:
      return cniError(cniVersion, 4, `unsupported CNI_COMMAND ${JSON.stringify(command ?? '')}`);
  }
}
