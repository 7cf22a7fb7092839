/**
 * `ambit status` (istioctl proxy-status): what the control plane's /debug/syncz says about each
 * connected agent and waypoint, as rows. Pure: the syncz JSON and the time in, rows and text out.
 *
 * Per config type a peer is
 *   SYNCED    it ACKed the last version sent to it;
 *   STALE     a version was sent and is not answered yet (sent != acked, or responses pending);
 *   NACK      it rejected the version it holds (the last NACK names that version), or some of its
 *             resources are still rejected; the reason is the last NACK's message;
 *   NOT SENT  it subscribed and nothing was sent yet.
 * A type the peer did not subscribe to is "-" (agents take no waypoint config).
 */
import { MeshError } from '../core/index.js';
import { renderTable } from './output.js';

/** One peer of /debug/syncz (src/control/push PeerSyncz), as far as status reads it. */
export interface SynczPeer {
  node: string;
  role: string;
  subject?: string;
  identity?: string;
  connectedSince: string;
  types: Array<{
    typeUrl: string;
    versionSent: string;
    versionAcked: string;
    pendingResponses: number;
    lastNack?: { version: string; message: string; at: string };
    rejected?: Array<{ name: string; message: string }>;
  }>;
  certificates?: Array<{ identity: string; notAfter: string }>;
  /** the control plane replica that answered for this peer (a cluster runs several; added by the CLI) */
  controlPlane?: string;
}

export type SyncState = 'SYNCED' | 'STALE' | 'NACK' | 'NOT SENT';

export interface TypeStatus {
  state: SyncState;
  sent: string;
  acked: string;
  pending: number;
  /** resources of this type the peer still rejects */
  rejected: number;
  lastNack?: { version: string; message: string; at: string };
}

export interface StatusRow {
  /** agents: the node; waypoints: namespace/name (from the identity), else the node */
  name: string;
  role: string;
  node: string;
  connectedSince: string;
  /** by short type name: Address, Authorization, WaypointConfig */
  types: Record<string, TypeStatus>;
  certificates: number;
  /** the soonest notAfter of the certificates issued to this peer (ISO), if any */
  certExpiry?: string;
  /** the control plane replica it is connected to (cluster) */
  controlPlane?: string;
}

/** The config types in the order of the table's columns. */
export const STATUS_TYPES = ['Address', 'Authorization', 'WaypointConfig'] as const;

const MAX_PEERS = 100_000;

/** `type.googleapis.com/ambit.v1.Address` -> `Address` */
export function shortType(typeUrl: string): string {
  return typeUrl.slice(Math.max(typeUrl.lastIndexOf('/'), typeUrl.lastIndexOf('.')) + 1);
}

function bad(what: string): never {
  throw new MeshError('AMBIT_CONFIG_INVALID', `status: the control plane's /debug/syncz is not what this ambit reads (${what}); are the CLI and control plane of one version?`);
}

/** Checks the parts of the syncz answer status relies on; anything else passes through. */
export function parseSyncz(v: unknown): SynczPeer[] {
  if (!Array.isArray(v)) bad('not a list');
  if (v.length > MAX_PEERS) bad(`more than ${MAX_PEERS} peers`);
  for (const [i, p] of v.entries()) {
    const o = p as Partial<SynczPeer> | null;
    if (!o || typeof o !== 'object') bad(`peer ${i} is not an object`);
    if (typeof o.node !== 'string' || typeof o.role !== 'string' || typeof o.connectedSince !== 'string') bad(`peer ${i}: node, role or connectedSince missing`);
    if (!Array.isArray(o.types)) bad(`peer ${i}: no types`);
    for (const t of o.types) {
      if (!t || typeof t.typeUrl !== 'string' || typeof t.versionSent !== 'string' || typeof t.versionAcked !== 'string') bad(`peer ${i}: a type without typeUrl/versionSent/versionAcked`);
    }
  }
  return v as SynczPeer[];
}

export function typeStatus(t: SynczPeer['types'][number]): TypeStatus {
  const rejected = t.rejected?.length ?? 0;
  const pending = t.pendingResponses ?? 0;
  const nackNow = (t.lastNack !== undefined && t.lastNack.version === t.versionAcked) || rejected > 0;
  const state: SyncState = t.versionSent === '' ? 'NOT SENT'
    : pending > 0 || t.versionSent !== t.versionAcked ? 'STALE'
      : nackNow ? 'NACK' : 'SYNCED';
  return {
    state, sent: t.versionSent, acked: t.versionAcked, pending, rejected,
    ...(t.lastNack ? { lastNack: { version: t.lastNack.version, message: t.lastNack.message, at: t.lastNack.at } } : {}),
  };
}

function peerName(p: SynczPeer): string {
  if (p.role === 'waypoint' && p.identity) {
    const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(p.identity);
    if (m) return `${m[1]}/${m[2]}`;
  }
  return p.node || p.subject || '?';
}

/** One row per peer: agents first, then waypoints, each by name (then by connection time: a handover has two). */
export function statusRows(peers: readonly SynczPeer[]): StatusRow[] {
  const rows = peers.map((p): StatusRow => {
    const certs = p.certificates ?? [];
    const soonest = certs.map((c) => c.notAfter).filter((x) => typeof x === 'string').sort()[0];
    return {
      name: peerName(p), role: p.role, node: p.node, connectedSince: p.connectedSince,
      types: Object.fromEntries(p.types.map((t) => [shortType(t.typeUrl), typeStatus(t)])),
      certificates: certs.length,
      ...(soonest !== undefined ? { certExpiry: soonest } : {}),
      ...(p.controlPlane !== undefined ? { controlPlane: p.controlPlane } : {}),
    };
  });
  const roleOrder = (r: string): number => (r === 'agent' ? 0 : r === 'waypoint' ? 1 : 2);
  return rows.sort((a, b) => roleOrder(a.role) - roleOrder(b.role) || a.name.localeCompare(b.name) || a.connectedSince.localeCompare(b.connectedSince));
}

/** `3d4h`, `5h12m`, `4m9s`, `7s`: the two largest units of a duration. */
export function shortDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s % 60}s`;
  return `${s}s`;
}

export function typeCell(t: TypeStatus | undefined): string {
  if (!t) return '-';
  switch (t.state) {
    case 'SYNCED': return `SYNCED (${t.acked})`;
    case 'NOT SENT': return 'NOT SENT';
    case 'STALE': return `STALE (sent ${t.sent}, acked ${t.acked || '-'})`;
    case 'NACK': {
      const why = t.lastNack ? `: ${t.lastNack.message}` : '';
      const which = t.rejected > 0 ? `${t.rejected} rejected` : `v${t.acked}`;
      return `NACK (${which}${why})`;
    }
  }
}

export function certCell(row: StatusRow, nowMs: number): string {
  if (row.certExpiry === undefined) return '-';
  const left = Date.parse(row.certExpiry) - nowMs;
  const when = Number.isNaN(left) ? row.certExpiry : left <= 0 ? 'EXPIRED' : `in ${shortDuration(left)}`;
  return row.certificates > 1 ? `${when} (${row.certificates} certs)` : when;
}

export function statusTable(rows: readonly StatusRow[], nowMs: number): string {
  if (rows.length === 0) return 'no agent or waypoint is connected to the control plane\n';
  // the replica column only where there are replicas to tell apart (a cluster)
  const replicas = rows.some((r) => r.controlPlane !== undefined);
  const headers = ['NAME', 'ROLE', 'NODE', 'CONNECTED', ...STATUS_TYPES.map((t) => t.toUpperCase()), 'CERT EXPIRY', ...(replicas ? ['CONTROL PLANE'] : [])];
  return renderTable(headers, rows.map((r) => {
    const since = Date.parse(r.connectedSince);
    return [
      r.name, r.role, r.node || '-', Number.isNaN(since) ? r.connectedSince : `${shortDuration(nowMs - since)} ago`,
      ...STATUS_TYPES.map((t) => typeCell(r.types[t])), certCell(r, nowMs), ...(replicas ? [r.controlPlane ?? '-'] : []),
    ];
  }));
}
