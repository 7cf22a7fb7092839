/** Kubernetes object names, checked once here. */

/** A DNS-1123 label: namespaces, most object names (a-z, 0-9, '-', at most 63, alphanumeric at both ends). */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function isDnsLabel(s: string): boolean {
  return DNS_LABEL.test(s);
}
