/**
 * The agent's and the waypoint's end of the control channel: one WebSocket, a wildcard delta
 * subscription per type, partial apply (good resources go in, bad ones are NACKed by name), a whole
 * new Snapshot per applied response, certificate requests on the same socket, reconnect with
 * backoff sending the versions it holds (minus the rejected ones, so the server re-sends them).
 */
import { EventEmitter } from 'node:events';
import type { PeerCertificate } from 'node:tls';
import WebSocket from 'ws';
import type { Authorization, Service, Waypoint, Workload } from '../model/index.js';
import { Snapshot } from '../model/index.js';
import type { ServiceL7 } from '../model/index.js';
import type { BackoffOptions, ErrorCode, Logger } from '../core/index.js';
import { Backoff, MeshError, errorMessage, logger } from '../core/index.js';
import { spiffeUri } from '../identity/index.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_CONFIG_TYPE, closeReason, decodeControlMessage, encodeControlMessage } from './codec.js';
import type { CertificateResponse, DeltaResponse, ResourceError, TypeUrl } from './codec.js';
import type { AddressValue, Decoded } from './convert.js';
import { decodeAddresses, decodeAuthorizations, decodeWaypointConfigs } from './convert.js';
import { checkToken } from './token.js';
import type { TokenSource } from './token.js';

/** Structurally the same as identity's `Identity`. */
export interface PeerIdentity { readonly trustDomain: string; readonly namespace: string; readonly serviceAccount: string }


export type XdsRole = 'agent' | 'waypoint';

export interface XdsClientOptions {
  /** ws://host:15010 or wss://host:15012 */
  url: string;
  /**
   * bearer token: the bootstrap token (local) or a service-account token (Kubernetes). A function
   * is called on every (re)connect, so a rotated token is picked up; when it throws, that attempt
   * fails (an `error` event) and the client backs off and asks again.
   */
  token: TokenSource;
  /** node name this client runs on */
  node: string;
  role: XdsRole;
  /** the waypoint's own identity (sent as a hint; the server decides) */
  identity?: PeerIdentity;
  /** PEM roots to verify a wss:// server with; required for wss */
  caPem?: string;
  /** SPIFFE id the server certificate must carry; default: any trust domain, ns ambit-system, sa ambit-control */
  serverIdentity?: string;
  /**
   * reconnect delays; default 10 ms doubling to a 2 s cap, each shortened by up to half at random
   * (so a restarted control plane has every agent back within about 2 s, and agents that lost it
   * together do not return in step). The delay never exceeds the cap.
   */
  backoff?: BackoffOptions;
  /** largest frame accepted, bytes; default 64 MiB */
  maxMessageBytes?: number;
  /** per certificate request, ms; default 10_000 */
  certificateTimeoutMs?: number;
  /** how long a token function may take, ms; default 10_000 */
  tokenTimeoutMs?: number;
  log?: Logger;
}

export interface XdsClientStats {
  connects: number;
  responses: number;
  /** resources received (added or updated) over all responses */
  resources: number;
  removed: number;
  nacks: number;
}

interface Held<T> { version: string; value: T }

const MAX_PENDING_CERTS = 64;
/** Reconnect delays of the control channel (see XdsClientOptions.backoff). */
export const RECONNECT_BACKOFF = Object.freeze({ initialMs: 10, maxMs: 2_000, jitter: 0.5 });
const CONTROL_PATH_SUFFIX = '/ns/ambit-system/sa/ambit-control';

export interface XdsClientEvents {
  /** a new snapshot after an applied Address or Authorization response */
  snapshot: [snap: Snapshot];
  /** the L7 configs after an applied WaypointConfig response (waypoints) */
  l7: [l7: ReadonlyMap<string, ServiceL7>];
  error: [err: Error];
  connected: [];
  disconnected: [];
}

export class XdsClient extends EventEmitter<XdsClientEvents> {
  readonly #o: XdsClientOptions;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  readonly #types: TypeUrl[];
  #ws: WebSocket | undefined;
  #started = false;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #snapshot = Snapshot.empty();
  #versionCounter = 0;
  readonly #addresses = new Map<string, Held<AddressValue>>();
  readonly #authz = new Map<string, Held<Authorization>>();
  readonly #l7 = new Map<string, Held<ServiceL7>>();
  readonly #rejected = new Map<TypeUrl, Set<string>>();
  readonly #acked = new Set<TypeUrl>();
  /** types answered (and ACKed) on the present connection */
  readonly #answered = new Set<TypeUrl>();
  #l7View: ReadonlyMap<string, ServiceL7> = new Map();
  #nextRequestId = 0;
  readonly #certs = new Map<number, { resolve: (g: { chainPem: string[]; rootsPem: string }) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  #readyResolve!: () => void;
  #readyReject!: (e: Error) => void;
  /** resolves at the first ACK of every subscribed type */
  readonly ready: Promise<void>;
  readonly stats: XdsClientStats = { connects: 0, responses: 0, resources: 0, removed: 0, nacks: 0 };

  constructor(o: XdsClientOptions) {
    super();
    this.#o = o;
    this.#log = o.log ?? logger('xds.client');
    this.#backoff = new Backoff({ ...RECONNECT_BACKOFF, ...o.backoff });
    this.#types = o.role === 'waypoint' ? [ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_CONFIG_TYPE] : [ADDRESS_TYPE, AUTHORIZATION_TYPE];
    for (const t of this.#types) this.#rejected.set(t, new Set());
    this.ready = new Promise<void>((res, rej) => { this.#readyResolve = res; this.#readyReject = rej; });
    // nobody may be awaiting readiness when close() rejects it; that must not crash the process
    this.ready.catch(() => {});
  }

  get snapshot(): Snapshot { return this.#snapshot; }
  get l7(): ReadonlyMap<string, ServiceL7> { return this.#l7View; }
  get connected(): boolean { return this.#ws?.readyState === WebSocket.OPEN; }
  /**
   * The snapshot is current: connected, and every subscribed type was answered (and ACKed) on
   * this connection. False while disconnected or between a reconnect and its first answers.
   */
  get current(): boolean { return this.connected && this.#answered.size === this.#types.length; }

  start(): void {
    if (this.#closed || this.#started) return;
    this.#started = true;
    this.#connect();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#readyReject(new MeshError('AMBIT_XDS_PROTOCOL', 'control client closed before it was ready'));
    this.#failCerts('control client closed');
    const ws = this.#ws;
    this.#ws = undefined;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1000, 'client closing');
      // a server that never answers the close handshake must not hold us
      setTimeout(() => { ws.terminate(); }, 1000).unref();
    });
  }

  /** Ask the control plane to sign a CSR for `identity`. Rejects when disconnected or on timeout. */
  requestCertificate(csrPem: string, identity: PeerIdentity, ttlSeconds = 0): Promise<{ chainPem: string[]; rootsPem: string }> {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new MeshError('AMBIT_XDS_PROTOCOL', 'control channel not connected'));
    if (this.#certs.size >= MAX_PENDING_CERTS) return Promise.reject(new MeshError('AMBIT_LIMIT', `more than ${MAX_PENDING_CERTS} certificate requests pending`));
    const requestId = (this.#nextRequestId = (this.#nextRequestId + 1) >>> 0);
    return new Promise((resolve, reject) => {
      const timeoutMs = this.#o.certificateTimeoutMs ?? 10_000;
      const timer = setTimeout(() => {
        this.#certs.delete(requestId);
        reject(new MeshError('AMBIT_CONNECT_TIMEOUT', `certificate for ${spiffeUri(identity)}: no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#certs.set(requestId, { resolve, reject, timer });
      ws.send(encodeControlMessage({ kind: 'certificateRequest', certificateRequest: { requestId, csrPem, identity: spiffeUri(identity), ttlSeconds } }));
    });
  }

  #emitError(e: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', e);
    else this.#log.warn('control channel error', { error: e.message });
  }

  /** The token for this attempt: the fixed one, or the provider's answer within the timeout. */
  async #token(): Promise<string> {
    const src = this.#o.token;
    if (typeof src === 'string') return checkToken(src, 'control channel');
    const timeoutMs = this.#o.tokenTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      const got = await Promise.race([
        Promise.resolve().then(src),
        new Promise<never>((_res, rej) => {
          timer = setTimeout(() => rej(new MeshError('AMBIT_CONNECT_TIMEOUT', `control channel: token provider gave no answer in ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      if (typeof got !== 'string') throw new MeshError('AMBIT_CONFIG_INVALID', 'control channel: token provider returned no string');
      return checkToken(got.trim(), 'control channel: token provider');
    } finally {
      clearTimeout(timer);
    }
  }

  #retry(why: Record<string, unknown>): void {
    if (this.#closed) return;
    const delay = this.#backoff.next();
    this.#log.warn('control channel down; reconnecting', { ...why, delayMs: delay });
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  #connect(): void {
    this.#token().then((token) => {
      if (!this.#closed) this.#open(token);
    }, (e: unknown) => {
      if (this.#closed) return;
      const err = e instanceof Error ? e : new Error(String(e));
      this.#emitError(err);
      this.#retry({ error: err.message });
    });
  }

  #open(token: string): void {
    const o = this.#o;
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, 'x-ambit-node': o.node, 'x-ambit-role': o.role };
    if (o.identity) headers['x-ambit-identity'] = spiffeUri(o.identity);
    const expected = o.serverIdentity;
    // passed through to tls.connect; ws's typings describe a different checkServerIdentity signature
    const tlsOptions = {
      ca: o.caPem,
      // the control plane's certificate names a SPIFFE id, not a DNS name
      checkServerIdentity: (_host: string, cert: PeerCertificate) => checkControlIdentity(cert, expected),
    } as unknown as WebSocket.ClientOptions;
    let ws: WebSocket;
    try {
      ws = new WebSocket(o.url, {
        headers,
        maxPayload: o.maxMessageBytes ?? 64 * 1024 * 1024,
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        ...tlsOptions,
      });
    } catch (e) {
      // a bad URL or header value throws here, not as an event: report it and keep retrying
      // rather than let it escape from a timer callback
      const err = new MeshError('AMBIT_CONFIG_INVALID', `control channel ${o.url}: ${errorMessage(e)}`, { cause: e });
      this.#emitError(err);
      this.#retry({ error: err.message });
      return;
    }
    this.#ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('open', () => {
      this.#answered.clear();
      this.stats.connects++;
      this.#log.info('control channel connected', { url: o.url });
      for (const t of this.#types) this.#subscribe(ws, t);
      this.emit('connected');
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) { ws.close(1003, 'binary frames only'); return; }
      this.#onFrame(ws, data);
    });
    // set once a refusal was reported: terminating the handshake then makes ws emit its own
    // "closed before the connection was established", which would only repeat it without the code
    let refused = false;
    ws.on('unexpected-response', (_req, res) => {
      refused = true;
      // 401: the token is not accepted (a rotated one may be); 403: the token is fine but its
      // identity may not hold this session (a new token will not help). Both are retried with
      // backoff: admission can change with the mesh config (a waypoint pod appearing).
      const status = res.statusCode;
      const code: ErrorCode = status === 401 ? 'AMBIT_XDS_UNAUTHENTICATED' : status === 403 ? 'AMBIT_XDS_FORBIDDEN' : 'AMBIT_XDS_PROTOCOL';
      this.#emitError(new MeshError(code, `control plane refused the connection: HTTP ${status}`));
      res.resume();
      ws.terminate();
    });
    ws.on('error', (e) => { if (!refused) this.#emitError(e); });
    ws.on('close', (code, reason) => {
      if (this.#ws === ws) this.#ws = undefined;
      this.#failCerts('control channel closed');
      this.emit('disconnected');
      this.#retry({ code, reason: reason.toString() });
    });
  }

  #failCerts(why: string): void {
    for (const [id, p] of this.#certs) {
      clearTimeout(p.timer);
      p.reject(new MeshError('AMBIT_XDS_PROTOCOL', why));
      this.#certs.delete(id);
    }
  }

  #held(t: TypeUrl): Map<string, Held<unknown>> {
    return t === ADDRESS_TYPE ? this.#addresses : t === AUTHORIZATION_TYPE ? this.#authz : this.#l7;
  }

  #subscribe(ws: WebSocket, t: TypeUrl): void {
    const rejected = this.#rejected.get(t)!;
    const initial: Record<string, string> = {};
    for (const [name, h] of this.#held(t)) if (!rejected.has(name)) initial[name] = h.version;
    ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: t, responseNonce: '', initialResourceVersions: initial, subscribe: ['*'], unsubscribe: [] } }));
  }

  #onFrame(ws: WebSocket, data: Buffer): void {
    let msg;
    try {
      msg = decodeControlMessage(data);
    } catch (e) {
      this.#emitError(e as Error);
      ws.close(1002, 'malformed frame');
      return;
    }
    if (msg.kind === 'deltaResponse') this.#onResponse(ws, msg.deltaResponse);
    else if (msg.kind === 'certificateResponse') this.#onCertificate(msg.certificateResponse);
    else ws.close(1002, `unexpected ${msg.kind} from the server`);
  }

  #onResponse(ws: WebSocket, r: DeltaResponse): void {
    const t = this.#types.find((x) => x === r.typeUrl);
    if (!t) { ws.close(1002, closeReason(`response for a type not subscribed: ${r.typeUrl}`)); return; }
    this.stats.responses++;
    this.stats.resources += r.resources.length;
    this.stats.removed += r.removedResources.length;
    this.#backoff.reset();
    const held = this.#held(t);
    const rejectedSet = this.#rejected.get(t)!;
    const decoded: Decoded<unknown> = t === ADDRESS_TYPE ? decodeAddresses(r.resources) : t === AUTHORIZATION_TYPE ? decodeAuthorizations(r.resources) : decodeWaypointConfigs(r.resources);
    for (const x of decoded.resources) { held.set(x.name, { version: x.version, value: x.value }); rejectedSet.delete(x.name); }
    for (const name of r.removedResources) { held.delete(name); rejectedSet.delete(name); }
    // a rejected update keeps the previous value in use, but its name is left out of the versions
    // sent on reconnect so the server sends it again
    for (const x of decoded.rejected) rejectedSet.add(x.name);
    if (t === WAYPOINT_CONFIG_TYPE) {
      this.#l7View = new Map([...this.#l7].map(([k, v]) => [k, v.value]));
      this.emit('l7', this.#l7View);
    } else {
      this.#rebuild(r.systemVersionInfo);
    }
    const errorDetail = decoded.rejected.length ? nackDetail(decoded.rejected) : undefined;
    if (errorDetail) {
      this.stats.nacks++;
      this.#log.warn('rejected resources from the control plane', { type: t, message: errorDetail.message });
    }
    ws.send(encodeControlMessage({ kind: 'deltaRequest', deltaRequest: { typeUrl: t, responseNonce: r.nonce, errorDetail, initialResourceVersions: {}, subscribe: [], unsubscribe: [] } }));
    this.#answered.add(t);
    if (!this.#acked.has(t)) {
      this.#acked.add(t);
      if (this.#acked.size === this.#types.length) this.#readyResolve();
    }
  }

  #rebuild(systemVersion: string): void {
    const workloads: Workload[] = [];
    const services: Service[] = [];
    const waypoints: Waypoint[] = [];
    for (const { value } of this.#addresses.values()) {
      if (value.kind === 'workload') workloads.push(value.workload);
      else if (value.kind === 'service') services.push(value.service);
      else waypoints.push(value.waypoint);
    }
    const v = Number(systemVersion);
    const version = Number.isSafeInteger(v) && v > this.#versionCounter ? v : this.#versionCounter + 1;
    this.#versionCounter = version;
    this.#snapshot = Snapshot.build({ workloads, services, waypoints, authorizations: [...this.#authz.values()].map((h) => h.value) }, version);
    this.emit('snapshot', this.#snapshot);
  }

  #onCertificate(r: CertificateResponse): void {
    const p = this.#certs.get(r.requestId);
    if (!p) return;
    this.#certs.delete(r.requestId);
    clearTimeout(p.timer);
    if (r.error) {
      const code = (r.errorCode.startsWith('AMBIT_') ? r.errorCode : 'AMBIT_CSR_FORBIDDEN') as ErrorCode;
      p.reject(new MeshError(code, `control plane refused the certificate: ${r.error}`));
    } else if (r.chainPem.length === 0) {
      p.reject(new MeshError('AMBIT_CERT_INVALID', 'control plane returned an empty certificate chain'));
    } else {
      p.resolve({ chainPem: r.chainPem, rootsPem: r.rootsPem });
    }
  }
}

function nackDetail(rejected: ResourceError[]): { code: number; message: string; resources: ResourceError[] } {
  // code 3 = INVALID_ARGUMENT, as gRPC's status in xDS NACKs
  return { code: 3, message: rejected.map((x) => `${x.name}: ${x.message}`).join('; ').slice(0, 8192), resources: rejected };
}

/** The server must present exactly one URI SAN: the control plane's SPIFFE id. */
export function checkControlIdentity(cert: PeerCertificate, expected?: string): Error | undefined {
  const uris = (cert.subjectaltname ?? '').split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
  if (uris.length !== 1) return new MeshError('AMBIT_IDENTITY_MISMATCH', `control plane certificate has ${uris.length} URI SANs, want exactly 1`);
  const got = uris[0]!;
  const ok = expected ? got === expected : got.startsWith('spiffe://') && got.endsWith(CONTROL_PATH_SUFFIX) && !got.slice(9, -CONTROL_PATH_SUFFIX.length).includes('/');
  return ok ? undefined : new MeshError('AMBIT_IDENTITY_MISMATCH', `control plane certificate is for ${got}, want ${expected ?? `spiffe://*${CONTROL_PATH_SUFFIX}`}`);
}
