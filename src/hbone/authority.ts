/**
 * The CONNECT `:authority`: where the client asks the tunnel to go. It is untrusted input on the
 * server, so parsing is strict (one canonical spelling per address, bounded length) and the
 * target-policy helper is pure, so the node agent decides, then dials.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { canonicalIp, MeshError } from '../core/index.js';

/** An IP literal target (`ip:port`, `[v6]:port`) or a hostname target (`host:port`, double HBONE / waypoints). */
export type HboneTarget = { address: string; port: number } | { host: string; port: number };

/** A TCP address: canonical IP text and port. */
export interface SocketAddress {
  address: string;
  port: number;
}

/**
 * The node agent's listeners in every pod netns: outbound capture, inbound plaintext, inbound HBONE
 * (the HBONE port of every mesh pod). The one definition; the capture rules, the pod proxy and
 * the routing read it.
 */
export const AGENT_PORT = Object.freeze({ outbound: 15001, inboundPlain: 15006, hbone: 15008 });

/** Ports of the agent itself; a tunnel to them would loop (HBONE in HBONE) or bypass capture. */
export const AGENT_PORTS: readonly number[] = Object.freeze([AGENT_PORT.outbound, AGENT_PORT.inboundPlain, AGENT_PORT.hbone]);

/** 253 for the DNS name, 2 brackets, a colon and five digits; IPv6 literals are shorter. */
const MAX_AUTHORITY = 261;
const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;
const PORT = /^[0-9]{1,5}$/;

function bad(authority: string, why: string): never {
  throw new MeshError('AMBIT_HBONE_BAD_REQUEST', `hbone authority ${JSON.stringify(authority.slice(0, 80))}: ${why}`);
}

function parsePort(authority: string, text: string): number {
  if (!PORT.test(text)) bad(authority, 'port must be decimal digits');
  const port = Number(text);
  if (port < 1 || port > 65535) bad(authority, 'port must be 1..65535');
  return port;
}

function isHostname(h: string): boolean {
  if (h.length === 0 || h.length > 253) return false;
  const labels = (h.endsWith('.') ? h.slice(0, -1) : h).split('.');
  // An all-numeric last label would make `1.2.3` look like a host; such names are not DNS names.
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return false;
  return labels.every((l) => HOST_LABEL.test(l));
}

/**
 * Parse `ip:port`, `[v6]:port` or `host:port`. Throws `AMBIT_HBONE_BAD_REQUEST` naming the
 * problem. IP targets come back canonical (`[::FFFF:10.0.0.1]:80` is `10.0.0.1`); hostnames lowercase.
 */
export function parseAuthority(authority: string): HboneTarget {
  if (typeof authority !== 'string' || authority.length === 0) bad(String(authority ?? ''), 'empty');
  if (authority.length > MAX_AUTHORITY) bad(authority, `longer than ${MAX_AUTHORITY} characters`);
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0 || authority[close + 1] !== ':') bad(authority, 'expected [ipv6]:port');
    const literal = authority.slice(1, close);
    if (!isIPv6(literal) || literal.includes('%')) bad(authority, 'not an IPv6 address');
    return { address: canonicalIp(literal)!, port: parsePort(authority, authority.slice(close + 2)) };
  }
  const colon = authority.lastIndexOf(':');
  if (colon < 0) bad(authority, 'missing port');
  const host = authority.slice(0, colon);
  if (host.includes(':')) bad(authority, 'IPv6 addresses must be in brackets');
  const port = parsePort(authority, authority.slice(colon + 1));
  if (isIPv4(host)) return { address: host, port };
  if (!isHostname(host)) bad(authority, 'host is neither an IP address nor a DNS name');
  return { host: host.toLowerCase(), port };
}

/** `ip:port`, `[v6]:port` or `host:port`. */
export function formatAuthority(t: HboneTarget): string {
  if ('host' in t) return `${t.host}:${t.port}`;
  return isIPv6(t.address) ? `[${t.address}]:${t.port}` : `${t.address}:${t.port}`;
}

export interface TargetPolicy {
  /** addresses of the local pod (the one the tunnel arrived for); compared canonically */
  localAddresses: readonly string[];
  /** ports a tunnel may never reach; default AGENT_PORTS */
  forbiddenPorts?: readonly number[];
  /** accept hostname targets (waypoints map them to endpoints themselves); default false */
  allowHostnames?: boolean;
}

export type TargetVerdict = { ok: true } | { ok: false; status: 400; reason: string };

/**
 * The server never dials where the client points beyond the port: an IP target must be one of
 * this pod's own addresses, and never an agent port. Pure; the node agent calls it in onConnect.
 */
export function validateTarget(target: HboneTarget, policy: TargetPolicy): TargetVerdict {
  const forbidden = policy.forbiddenPorts ?? AGENT_PORTS;
  if (forbidden.includes(target.port)) return { ok: false, status: 400, reason: `target port ${target.port} is reserved for the mesh agent` };
  if ('host' in target) {
    return policy.allowHostnames ? { ok: true } : { ok: false, status: 400, reason: `hostname target ${target.host} not accepted here` };
  }
  const want = canonicalIp(target.address);
  if (want === undefined) return { ok: false, status: 400, reason: `target ${target.address} is not an IP address` };
  for (const a of policy.localAddresses) {
    if (canonicalIp(a) === want) return { ok: true };
  }
  return { ok: false, status: 400, reason: `ip mismatch: target ${want} is not an address of this pod` };
}
