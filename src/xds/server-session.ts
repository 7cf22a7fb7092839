/**
 * One peer's side of the control channel on the server: subscriptions, what was sent, what was
 * ACKed, which resources the peer rejected, and certificate requests. Transport-agnostic: it
 * receives decoded frames and emits encoded ones through `send`; the push server owns the socket.
 *
 * Invariant: after the first response of a type, the peer holds exactly the store's table at
 * `gen[type]` (minus what it rejected), so every later step is the store's shared delta frame.
 */
import type { Logger } from '../core/index.js';
import { errorMessage, isMeshError, logger } from '../core/index.js';
import { closeReason, decodeControlMessage, encodeControlMessage, isTypeUrl } from './codec.js';
import type { CertificateRequest, DeltaRequest, TypeUrl, WireResource } from './codec.js';
import type { ResourceStore } from './tables.js';

export interface CertificateGrant { chainPem: string[]; rootsPem: string }

export interface ServerSessionOptions {
  store: ResourceStore;
  /** types this peer may subscribe to; anything else closes the session */
  allowedTypes: readonly TypeUrl[];
  send(frame: Uint8Array): void;
  close(code: number, reason: string): void;
  /** sign a CSR for this peer; throw MeshError to refuse (the code goes back to the peer) */
  signCertificate?(req: { identity: string; csrPem: string; ttlSeconds: number }): Promise<CertificateGrant>;
  /** un-ACKed responses before the peer counts as stuck and is disconnected; default 64 */
  maxPendingResponses?: number;
  /** concurrent certificate requests; default 8 */
  maxInflightCertificates?: number;
  /**
   * Certificate requests this peer may make at once (a token bucket's size); default 128, more
   * than the service accounts of a full node (110 pods). Signing runs on the event loop, so
   * without a budget one peer could keep the control plane busy signing.
   */
  certificateBurst?: number;
  /** requests per second that refill the bucket; default 10 */
  certificateRatePerSecond?: number;
  /** clock for the bucket, ms; default performance.now */
  now?(): number;
  /** called on every ACK or NACK */
  onAck?(type: TypeUrl, version: string, nack: boolean): void;
  /** called when the session closes the peer for being slow or stuck */
  onSlow?(reason: string): void;
  log?: Logger;
}

export interface TypeSyncz {
  typeUrl: string;
  versionSent: string;
  versionAcked: string;
  pendingResponses: number;
  lastNack?: { nonce: string; version: string; message: string; at: string };
  /** resources the peer rejected and that have not changed since */
  rejected: { name: string; message: string }[];
}

interface Pending { version: string; generation: number }
interface TypeSession {
  generation: number;
  versionSent: string;
  versionAcked: string;
  pending: Map<string, Pending>;
  nacked: Map<string, { version: string | undefined; message: string }>;
  lastNack?: TypeSyncz['lastNack'];
}

const MAX_TRACKED_NACKS = 1000;
const MAX_CSR_BYTES = 16 * 1024;

export class ServerSession {
  readonly #o: ServerSessionOptions;
  readonly #log: Logger;
  readonly #types = new Map<TypeUrl, TypeSession>();
  #nonce = 0;
  #inflightCerts = 0;
  #certTokens: number;
  #certRefilledAt: number;
  #closed = false;

  constructor(o: ServerSessionOptions) {
    this.#o = o;
    this.#log = o.log ?? logger('xds.session');
    this.#certTokens = o.certificateBurst ?? 128;
    this.#certRefilledAt = this.#now();
  }

  #now(): number { return this.#o.now ? this.#o.now() : performance.now(); }

  /** Take one certificate request from the bucket; false when the peer is over its budget. */
  #takeCertToken(): boolean {
    const burst = this.#o.certificateBurst ?? 128;
    const rate = this.#o.certificateRatePerSecond ?? 10;
    const now = this.#now();
    this.#certTokens = Math.min(burst, this.#certTokens + ((now - this.#certRefilledAt) / 1000) * rate);
    this.#certRefilledAt = now;
    if (this.#certTokens < 1) return false;
    this.#certTokens--;
    return true;
  }

  /** Feed one received frame. Protocol errors close the session. */
  receive(frame: Uint8Array): void {
    if (this.#closed) return;
    let msg;
    try {
      msg = decodeControlMessage(frame);
    } catch (e) {
      this.#fail(errorMessage(e));
      return;
    }
    if (msg.kind === 'deltaRequest') this.#onRequest(msg.deltaRequest);
    else if (msg.kind === 'certificateRequest') this.#onCertificate(msg.certificateRequest);
    else this.#fail(`unexpected ${msg.kind} from a client`);
  }

  /** Send the store's latest step of each changed type to this peer. */
  push(changed: readonly TypeUrl[]): void {
    for (const type of changed) {
      const ts = this.#types.get(type);
      if (!ts || this.#closed) continue;
      const d = this.#o.store.deltaFrame(type);
      if (!d || d.generation === ts.generation) continue;
      if (d.generation !== ts.generation + 1) {
        // cannot happen while every store update is pushed to every session; recover by resync
        this.#log.error('session missed a step; closing so the peer resyncs', { type, have: ts.generation, delta: d.generation });
        this.#fail('internal: missed a step, reconnect to resync');
        return;
      }
      this.#sendTracked(type, ts, d.frame, d.nonce, d.version, d.generation);
    }
  }

  /** True when every subscribed type has been ACKed (or NACKed) at the store's current version. */
  get caughtUp(): boolean {
    for (const [type, ts] of this.#types) {
      if (ts.versionAcked !== this.#o.store.typeVersion(type) || ts.pending.size) return false;
    }
    return true;
  }

  get types(): TypeUrl[] { return [...this.#types.keys()]; }

  get syncz(): TypeSyncz[] {
    return [...this.#types].map(([typeUrl, ts]) => {
      const out: TypeSyncz = {
        typeUrl, versionSent: ts.versionSent, versionAcked: ts.versionAcked, pendingResponses: ts.pending.size,
        rejected: [...ts.nacked].map(([name, n]) => ({ name, message: n.message })),
      };
      if (ts.lastNack) out.lastNack = ts.lastNack;
      return out;
    });
  }

  /** The transport closed; drop everything. */
  closed(): void { this.#closed = true; }

  #fail(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#log.warn('closing control session', { reason });
    // 1002 protocol error
    this.#o.close(1002, closeReason(reason));
  }

  #onRequest(r: DeltaRequest): void {
    if (!isTypeUrl(r.typeUrl) || !this.#o.allowedTypes.includes(r.typeUrl)) {
      this.#o.close(1008, closeReason(`type not allowed for this peer: ${r.typeUrl}`));
      this.#closed = true;
      return;
    }
    const type = r.typeUrl;
    const ts = this.#types.get(type);
    if (!r.responseNonce) {
      if (ts) { this.#fail(`second subscription to ${type} on one stream`); return; }
      this.#subscribe(type, r.initialResourceVersions);
      return;
    }
    if (!ts) { this.#fail(`ack for ${type} before subscribing`); return; }
    const p = ts.pending.get(r.responseNonce);
    if (!p) {
      // a stale or unknown nonce: xDS ignores it
      this.#log.debug('ignoring unknown nonce', { type, nonce: r.responseNonce });
      return;
    }
    ts.pending.delete(r.responseNonce);
    const table = this.#o.store.table(type);
    // a rejection is cleared once the resource changed (or went away): the peer got a new version
    for (const [name, n] of ts.nacked) if (table.get(name)?.version !== n.version) ts.nacked.delete(name);
    ts.versionAcked = p.version;
    const nack = r.errorDetail !== undefined;
    if (r.errorDetail) {
      ts.lastNack = { nonce: r.responseNonce, version: p.version, message: r.errorDetail.message.slice(0, 4096), at: new Date().toISOString() };
      for (const e of r.errorDetail.resources) {
        if (ts.nacked.size >= MAX_TRACKED_NACKS) break;
        // only names the peer was sent: a made-up name would never be cleared (no version to
        // change) and its length is the peer's choice
        const entry = table.get(e.name);
        if (!entry) continue;
        ts.nacked.set(e.name, { version: entry.version, message: e.message.slice(0, 1024) });
      }
      this.#log.warn('peer rejected resources', { type, version: p.version, message: ts.lastNack.message });
    }
    this.#o.onAck?.(type, p.version, nack);
  }

  #subscribe(type: TypeUrl, initial: Record<string, string>): void {
    const store = this.#o.store;
    const table = store.table(type);
    const resources: WireResource[] = [];
    const removed: string[] = [];
    for (const [name, e] of table) if (initial[name] !== e.version) resources.push({ name, version: e.version, payload: e.payload });
    for (const name of Object.keys(initial)) if (!table.has(name)) removed.push(name);
    const ts: TypeSession = { generation: store.generation(type), versionSent: '', versionAcked: '', pending: new Map(), nacked: new Map() };
    this.#types.set(type, ts);
    const nonce = `i${++this.#nonce}`;
    const version = store.typeVersion(type);
    // always answer, even with nothing: the peer's readiness waits for this first response
    const frame = encodeControlMessage({ kind: 'deltaResponse', deltaResponse: { typeUrl: type, systemVersionInfo: version, nonce, resources, removedResources: removed } });
    this.#sendTracked(type, ts, frame, nonce, version, ts.generation);
  }

  #sendTracked(type: TypeUrl, ts: TypeSession, frame: Uint8Array, nonce: string, version: string, generation: number): void {
    const max = this.#o.maxPendingResponses ?? 64;
    if (ts.pending.size >= max) {
      const reason = `slow client: ${ts.pending.size} responses of ${type.split('.').pop()} not acknowledged`;
      this.#o.onSlow?.(reason);
      this.#closed = true;
      this.#o.close(4008, closeReason(reason));
      return;
    }
    ts.pending.set(nonce, { version, generation });
    ts.generation = generation;
    ts.versionSent = version;
    this.#o.send(frame);
  }

  #onCertificate(r: CertificateRequest): void {
    const reply = (body: { chainPem?: string[]; rootsPem?: string; error?: string; errorCode?: string }) => {
      if (this.#closed) return;
      this.#o.send(encodeControlMessage({
        kind: 'certificateResponse',
        certificateResponse: { requestId: r.requestId, chainPem: body.chainPem ?? [], rootsPem: body.rootsPem ?? '', error: body.error ?? '', errorCode: body.errorCode ?? '' },
      }));
    };
    const sign = this.#o.signCertificate;
    if (!sign) { reply({ error: 'this control plane does not sign certificates', errorCode: 'AMBIT_CSR_FORBIDDEN' }); return; }
    if (r.csrPem.length > MAX_CSR_BYTES) { reply({ error: `csr_pem: larger than ${MAX_CSR_BYTES} bytes`, errorCode: 'AMBIT_CSR_INVALID' }); return; }
    if (this.#inflightCerts >= (this.#o.maxInflightCertificates ?? 8)) { reply({ error: 'too many certificate requests in flight', errorCode: 'AMBIT_LIMIT' }); return; }
    if (!this.#takeCertToken()) { reply({ error: 'too many certificate requests; retry later', errorCode: 'AMBIT_LIMIT' }); return; }
    this.#inflightCerts++;
    sign({ identity: r.identity, csrPem: r.csrPem, ttlSeconds: r.ttlSeconds }).then(
      (g) => reply({ chainPem: g.chainPem, rootsPem: g.rootsPem }),
      (e: unknown) => {
        const code = isMeshError(e) ? e.code : 'AMBIT_CSR_INVALID';
        if (!isMeshError(e)) this.#log.error('certificate signing failed', { identity: r.identity, error: errorMessage(e) });
        reply({ error: errorMessage(e), errorCode: code });
      },
    ).finally(() => { this.#inflightCerts--; });
  }
}
