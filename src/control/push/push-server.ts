/**
 * The push server: WebSocket in noServer mode on the control plane's HTTP(S) listeners. It
 * authenticates each upgrade, runs one ServerSession per peer, debounces config changes into one
 * push per peer, tracks convergence (config change -> every peer ACKed) and cuts off peers that
 * stop reading, so one slow client can never grow the control plane's memory.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type WebSocket from 'ws';
import { errorMessage, isMeshError, logger } from '../../core/index.js';
import { certValidity, pemToDers, spiffeUri } from '../../identity/index.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, ResourceStore, ServerSession, WAYPOINT_CONFIG_TYPE, closeReason } from '../../xds/index.js';
import type { CertificateGrant, ResourceTables, TypeSyncz, TypeUrl } from '../../xds/index.js';
import type { Authenticator, PeerRole, Principal } from './authenticator.js';

export interface PushMetrics {
  connected(role: PeerRole, delta: number): void;
  pushed(type: TypeUrl): void;
  nack(type: TypeUrl): void;
  slowDisconnect(): void;
  converged(seconds: number): void;
  /** an upgrade was refused (no session); see RefusalReason */
  refused?(reason: RefusalReason): void;
}

/** Why an upgrade got no session; a metric label, so a closed set. */
export type RefusalReason = 'shutting_down' | 'too_many' | 'not_ready' | 'unauthenticated' | 'auth_timeout' | 'forbidden' | 'admission_error';

export interface PushServerOptions {
  authenticator: Authenticator;
  /** signs CSRs for an authenticated peer; absent => certificate requests are refused */
  signCertificate?(p: Principal, req: { identity: string; csrPem: string; ttlSeconds: number }): Promise<CertificateGrant>;
  /** quiet time after the last config change before pushing, ms; default 100 */
  debounceMs?: number;
  /** a push happens at the latest this long after the first change of a burst, ms; default max(1000, 10 × debounceMs) */
  maxDelayMs?: number;
  /** largest frame accepted from a peer, bytes; default 16 MiB */
  maxPayload?: number;
  /** bytes queued to one peer before it counts as slow and is disconnected; default 32 MiB */
  maxBufferedBytes?: number;
  /** un-ACKed responses per type before a peer is disconnected; default 64 */
  maxPendingResponses?: number;
  /** certificate requests one peer may make at once; default 128 (see ServerSessionOptions) */
  certificateBurst?: number;
  /** certificate requests per second refilling each peer's budget; default 10 */
  certificateRatePerSecond?: number;
  /**
   * how long authenticating one upgrade may take (a TokenReview against a stalled API server), ms;
   * default 10_000. Without it, stalled reviews would hold every pending-upgrade slot and lock
   * all peers out.
   */
  authTimeoutMs?: number;
  /**
   * May this authenticated peer have a session? Throw (MeshError AMBIT_XDS_FORBIDDEN) to refuse
   * the upgrade with 403. Called once per upgrade, after the first config set, so it can read
   * the current snapshot. Absent: every authenticated peer is admitted (the control plane
   * always sets it; see admitPeer).
   */
  admit?(p: Principal): void;
  /** concurrent peers; default 20_000 */
  maxConnections?: number;
  metrics?: PushMetrics;
}

export interface PeerSyncz {
  id: number;
  node: string;
  role: PeerRole;
  subject: string;
  /** the peer's workload identity (SPIFFE URI), when it has one (waypoints) */
  identity?: string;
  remote: string;
  connectedSince: string;
  types: TypeSyncz[];
  /**
   * The certificates this control plane issued to the peer on this connection, the latest per
   * identity (at most MAX_TRACKED_CERTS identities), soonest expiry first.
   */
  certificates: PeerCertificate[];
}

export interface PeerCertificate {
  identity: string;
  /** ISO time */
  notAfter: string;
  /** ISO time the certificate was issued */
  issuedAt: string;
}

/** identities whose latest certificate one peer's syncz remembers (an agent holds one per service account on its node) */
const MAX_TRACKED_CERTS = 1024;

/** The leaf's notAfter (ISO), or undefined when the chain cannot be read (syncz is no place to fail). */
function leafNotAfter(chainPem: readonly string[]): string | undefined {
  try {
    const leaf = pemToDers(chainPem[0] ?? '', 'certificate')[0];
    return leaf ? new Date(certValidity(leaf).notAfter).toISOString() : undefined;
  } catch {
    return undefined;
  }
}

interface Peer {
  id: number;
  principal: Principal;
  ws: WebSocket;
  session: ServerSession;
  remote: string;
  since: Date;
  /** identity -> the latest certificate issued to this peer for it */
  certs: Map<string, PeerCertificate>;
}

const TYPES_BY_ROLE: Record<PeerRole, readonly TypeUrl[]> = {
  agent: [ADDRESS_TYPE, AUTHORIZATION_TYPE],
  waypoint: [ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_CONFIG_TYPE],
};

const MAX_PENDING_UPGRADES = 256;
const AUTH_TIMEOUT = new Error('authentication timed out');

export interface PushServerEvents {
  /** a push converged: every peer it went to ACKed it, `ms` after the first config change of its burst */
  converged: [version: string, ms: number];
  connected: [peer: PeerSyncz];
  disconnected: [peer: PeerSyncz];
  pushed: [version: string, types: TypeUrl[]];
  /** a peer ACKed (nack=false) or NACKed a response */
  ack: [peerId: number, type: TypeUrl, version: string, nack: boolean];
}

export class PushServer extends EventEmitter<PushServerEvents> {
  readonly store = new ResourceStore();
  readonly #o: PushServerOptions;
  readonly #wss: WebSocketServer;
  readonly #peers = new Set<Peer>();
  readonly #log = logger('control.push');
  #nextId = 0;
  #pendingUpgrades = 0;
  #closed = false;
  #initialized = false;
  // debounce state
  #next: ResourceTables | undefined;
  #firstChangeAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #maxTimer: NodeJS.Timeout | undefined;
  // convergence of the latest push
  #waiting = new Set<Peer>();
  #waitingSince = 0;
  #waitingVersion = '';
  #waitingAny = false;

  constructor(o: PushServerOptions) {
    super();
    this.#o = o;
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: o.maxPayload ?? 16 * 1024 * 1024, perMessageDeflate: false, clientTracking: false });
  }

  /** Route the upgrade requests of `server` to this push server. */
  attach(server: HttpServer | HttpsServer): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket, head));
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const refuse = (status: number, text: string, reason: RefusalReason, why: string) => {
      this.#o.metrics?.refused?.(reason);
      this.#log.warn('refused control connection', { status, reason, why, remote: req.socket.remoteAddress ?? '' });
      socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(why) + 1}\r\n\r\n${why}\n`);
    };
    if (this.#closed) return refuse(503, 'Service Unavailable', 'shutting_down', 'control plane shutting down');
    if (this.#pendingUpgrades >= MAX_PENDING_UPGRADES || this.#peers.size >= (this.#o.maxConnections ?? 20_000)) {
      return refuse(503, 'Service Unavailable', 'too_many', 'too many connections');
    }
    this.#pendingUpgrades++;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(AUTH_TIMEOUT), this.#o.authTimeoutMs ?? 10_000);
    });
    Promise.race([this.#o.authenticator.authenticate(req), timeout]).finally(() => clearTimeout(timer)).then(
      (principal) => {
        this.#pendingUpgrades--;
        if (this.#closed || socket.destroyed) { socket.destroy(); return; }
        // before the first config set a client would get an empty mesh and call itself ready
        if (!this.#initialized) { refuse(503, 'Service Unavailable', 'not_ready', 'control plane has no configuration yet'); return; }
        try {
          this.#o.admit?.(principal);
        } catch (e) {
          // authenticated but not entitled: 403, so the client knows a new token will not help;
          // it backs off and retries (a waypoint pod may simply not be in the snapshot yet)
          if (isMeshError(e, 'AMBIT_XDS_FORBIDDEN')) refuse(403, 'Forbidden', 'forbidden', `${principal.subject}: ${e.message}`);
          else { this.#log.error('admission check failed', { subject: principal.subject, error: errorMessage(e) }); refuse(503, 'Service Unavailable', 'admission_error', 'admission check failed'); }
          return;
        }
        this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, principal, req));
      },
      (e: unknown) => {
        this.#pendingUpgrades--;
        // a stalled authenticator is no verdict on the caller: it may try again later
        if (e === AUTH_TIMEOUT) refuse(503, 'Service Unavailable', 'auth_timeout', 'authentication timed out');
        else refuse(401, 'Unauthorized', 'unauthenticated', errorMessage(e));
      },
    );
  }

  #accept(ws: WebSocket, principal: Principal, req: IncomingMessage): void {
    const maxBuffered = this.#o.maxBufferedBytes ?? 32 * 1024 * 1024;
    const peer: Peer = {
      id: ++this.#nextId, principal, ws, remote: `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? ''}`, since: new Date(), certs: new Map(),
      session: undefined as unknown as ServerSession,
    };
    const cutOff = (reason: string) => {
      this.#o.metrics?.slowDisconnect();
      this.#log.warn('disconnecting slow client', { node: principal.node, role: principal.role, reason });
      ws.close(4008, closeReason(reason));
      // a peer that does not read will not read the close frame either
      setTimeout(() => ws.terminate(), 1000).unref();
    };
    peer.session = new ServerSession({
      store: this.store,
      allowedTypes: TYPES_BY_ROLE[principal.role],
      maxPendingResponses: this.#o.maxPendingResponses,
      certificateBurst: this.#o.certificateBurst,
      certificateRatePerSecond: this.#o.certificateRatePerSecond,
      log: this.#log.child(`${principal.role}.${principal.node || peer.id}`),
      send: (frame) => {
        if (ws.readyState !== ws.OPEN) return;
        ws.send(frame, { binary: true });
        if (ws.bufferedAmount > maxBuffered) {
          peer.session.closed();
          cutOff(`slow client: ${ws.bufferedAmount} bytes queued (limit ${maxBuffered})`);
        }
      },
      close: (code, reason) => {
        if (code === 4008) { cutOff(reason); return; }
        ws.close(code, closeReason(reason));
      },
      signCertificate: this.#o.signCertificate ? async (r) => {
        const grant = await this.#o.signCertificate!(principal, r);
        const notAfter = leafNotAfter(grant.chainPem);
        if (notAfter !== undefined && (peer.certs.has(r.identity) || peer.certs.size < MAX_TRACKED_CERTS)) {
          peer.certs.set(r.identity, { identity: r.identity, notAfter, issuedAt: new Date().toISOString() });
        }
        return grant;
      } : undefined,
      onAck: (type, version, nack) => {
        if (nack) this.#o.metrics?.nack(type);
        this.emit('ack', peer.id, type, version, nack);
        this.#checkConverged(peer);
      },
    });
    this.#peers.add(peer);
    this.#o.metrics?.connected(principal.role, 1);
    this.#log.info('peer connected', { id: peer.id, node: principal.node, role: principal.role, subject: principal.subject });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) { ws.close(1003, 'binary frames only'); return; }
      peer.session.receive(data);
    });
    ws.on('error', (e) => this.#log.warn('peer socket error', { id: peer.id, error: e.message }));
    ws.on('close', (code, reason) => {
      peer.session.closed();
      this.#peers.delete(peer);
      this.#o.metrics?.connected(principal.role, -1);
      this.#log.info('peer disconnected', { id: peer.id, node: principal.node, code, reason: reason.toString() });
      this.#checkConverged(peer, true);
      this.emit('disconnected', this.#syncz(peer));
    });
    this.emit('connected', this.#syncz(peer));
  }

  /** New desired state. Pushed after the debounce; a burst of updates becomes one push. */
  update(tables: ResourceTables): void {
    if (this.#closed) return;
    this.#next = tables;
    const debounce = this.#o.debounceMs ?? 100;
    if (!this.#timer) {
      this.#firstChangeAt = performance.now();
      const maxDelay = this.#o.maxDelayMs ?? Math.max(1000, 10 * debounce);
      this.#maxTimer = setTimeout(() => this.flush(), maxDelay);
    } else {
      clearTimeout(this.#timer);
    }
    this.#timer = setTimeout(() => this.flush(), debounce);
  }

  /** Push whatever is pending now (tests and shutdown; normally the debounce timer calls it). */
  flush(): void {
    clearTimeout(this.#timer);
    clearTimeout(this.#maxTimer);
    this.#timer = this.#maxTimer = undefined;
    const tables = this.#next;
    this.#next = undefined;
    if (!tables) return;
    this.#initialized = true;
    const changed = this.store.update(tables);
    if (changed.length === 0) return;
    for (const t of changed) this.#o.metrics?.pushed(t);
    this.#waiting = new Set();
    this.#waitingSince = this.#firstChangeAt;
    this.#waitingVersion = this.store.version;
    for (const peer of this.#peers) {
      const relevant = peer.session.types.some((t) => changed.includes(t));
      peer.session.push(changed);
      if (relevant) this.#waiting.add(peer);
    }
    this.#waitingAny = this.#waiting.size > 0;
    this.emit('pushed', this.store.version, changed);
    this.#checkConverged();
  }

  #checkConverged(peer?: Peer, gone = false): void {
    if (!this.#waitingVersion) return;
    if (peer && (gone || peer.session.caughtUp)) this.#waiting.delete(peer);
    if (this.#waiting.size) return;
    const ms = performance.now() - this.#waitingSince;
    const version = this.#waitingVersion;
    this.#waitingVersion = '';
    // a push that reached nobody converges trivially; it would only skew the histogram
    if (this.#waitingAny) this.#o.metrics?.converged(ms / 1000);
    this.emit('converged', version, ms);
  }

  get peerCount(): number { return this.#peers.size; }

  /** Close one peer's connection (it will reconnect and resync). Returns false if no such peer. */
  disconnect(id: number, reason = 'disconnected by the control plane'): boolean {
    for (const p of this.#peers) {
      if (p.id === id) { p.ws.close(1012, closeReason(reason)); return true; }
    }
    return false;
  }

  #syncz(p: Peer): PeerSyncz {
    return {
      id: p.id, node: p.principal.node, role: p.principal.role, subject: p.principal.subject,
      ...(p.principal.identity ? { identity: spiffeUri(p.principal.identity) } : {}), remote: p.remote,
      connectedSince: p.since.toISOString(), types: p.session.syncz,
      certificates: [...p.certs.values()].sort((a, b) => a.notAfter.localeCompare(b.notAfter)),
    };
  }

  syncz(): PeerSyncz[] { return [...this.#peers].map((p) => this.#syncz(p)); }

  /** Close every peer (1001 going away) and refuse new ones. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#maxTimer);
    const closing = [...this.#peers].map((p) => new Promise<void>((resolve) => {
      p.ws.once('close', () => resolve());
      p.ws.close(1001, 'control plane shutting down');
      setTimeout(() => { p.ws.terminate(); }, 2000).unref();
    }));
    await Promise.all(closing);
    this.#wss.close();
  }
}
