/**
 * Kernel object names of the one-machine cluster. Network namespace names are global on the
 * machine, so every name carries the creating process id (base 36) and a per-process cluster
 * sequence number: concurrent test processes, and several clusters inside one process, never
 * collide, and a later run can tell which leftovers belong to a process that is gone.
 *
 *   ambit-<pid36>-<seq>-underlay      the shared L2 segment between nodes
 *   ambit-<pid36>-<seq>-node-<node>   a node (router + bridge for its pods)
 *   ambit-<pid36>-<seq>-pod-<pod>     a pod
 */
import { ConfigError } from '../core/index.js';

export const NETNS_PREFIX = 'ambit-';

/** Kubernetes DNS-1123 label: what pod, node, namespace and service names must look like. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Label keys: optional DNS-subdomain prefix and a name part (Kubernetes rules, simplified). */
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

/** Throws a ConfigError unless `value` is a DNS-1123 label (1..63 chars). */
export function checkDnsLabel(resource: string, field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new ConfigError(resource, field, 'must be a non-empty string');
  }
  if (value.length > 63 || !DNS_LABEL.test(value)) {
    throw new ConfigError(resource, field,
      `"${value}" is not a DNS-1123 label (lowercase letters, digits and '-', at most 63 chars)`);
  }
  return value;
}

/** Validates a label map; returns a frozen copy. */
export function checkLabels(resource: string, field: string, labels: unknown): Readonly<Record<string, string>> {
  if (labels === undefined) return Object.freeze({});
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) {
    throw new ConfigError(resource, field, 'must be a map of strings');
  }
  const out: Record<string, string> = {};
  const entries = Object.entries(labels as Record<string, unknown>);
  if (entries.length > 64) throw new ConfigError(resource, field, `too many labels (${entries.length} > 64)`);
  for (const [k, v] of entries) {
    if (k.length > 316 || !LABEL_KEY.test(k)) throw new ConfigError(resource, `${field}.${k}`, 'invalid label key');
    if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) {
      throw new ConfigError(resource, `${field}.${k}`, `invalid label value ${JSON.stringify(v)}`);
    }
    out[k] = v;
  }
  return Object.freeze(out);
}

let clusterSeq = 0;

/** The `ambit-<pid36>-<seq>-` prefix of a new cluster of this process. */
export function nextClusterPrefix(pid: number = process.pid): string {
  return `${NETNS_PREFIX}${pid.toString(36)}-${clusterSeq++}-`;
}

/**
 * The pid that created an ambit namespace, or undefined when the name is not ours (no prefix, or
 * no parseable pid). Only names of the form `ambit-<base36>-...` count.
 */
export function pidOfNetns(name: string): number | undefined {
  const m = /^ambit-([0-9a-z]{1,12})-./.exec(name);
  if (!m) return undefined;
  const pid = parseInt(m[1]!, 36);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}
