/**
 * Shared HBONE wire settings and TLS material. Both ends speak TLS 1.3 only with ALPN exactly
 * `h2`; identity is decided from the DER certificate after the handshake, never from names.
 */
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { constants as cryptoConstants } from 'node:crypto';
import type { CertBundle } from '../identity/index.js';
import type { EngineOptions } from '../native/index.js';

export const MiB = 1024 * 1024;
export const KiB = 1024;

/**
 * The HBONE settings of the mesh: the one table the engine's client and server both read
 * (handed to it at creation; the C code keeps no defaults of its own). Every agent and waypoint
 * speaks HBONE with these unless its operator overrides one.
 */
export interface HboneSettings {
  /** HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE we announce: bytes one stream may have in flight to us. 64 KiB..2 GiB-1 */
  streamWindow: number;
  /** our HTTP/2 connection window: bytes all streams of a connection may have in flight to us, 64 KiB..2 GiB-1 */
  connectionWindow: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of our HBONE server: open streams per client connection */
  maxConcurrentStreams: number;
  /** streams one pooled client connection carries in its life; then a fresh connection is opened */
  streamsPerConnection: number;
  /** a pooled client connection unused this long is closed, ms (a server session unused twice as long) */
  idleMs: number;
  /** TLS handshake (and peer identity check) of an HBONE connection, ms */
  handshakeTimeoutMs: number;
  /** TCP connect to an HBONE peer or to the app, ms */
  connectTimeoutMs: number;
}

export const HBONE_SETTINGS: Readonly<HboneSettings> = Object.freeze({
  streamWindow: 4 * MiB,
  // four stream windows, so one stalled stream cannot starve the others
  connectionWindow: 16 * MiB,
  maxConcurrentStreams: 200,
  streamsPerConnection: 100,
  idleMs: 60_000,
  handshakeTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
});

/** The engine's creation options: the table, with the caller's overrides. */
export function engineOptions(over: Partial<HboneSettings> = {}): EngineOptions {
  return { ...HBONE_SETTINGS, ...over };
}

export const DEFAULTS = Object.freeze({
  streamWindow: 4 * MiB,
  /** four stream windows, so one stalled stream cannot starve the others */
  connectionWindow: 16 * MiB,
  maxFrameSize: 1 * MiB,
  clientMaxHeaderList: 16 * KiB,
  serverMaxHeaderList: 64 * KiB,
  maxHeaderListPairs: 128,
  serverMaxConcurrentStreams: 200,
  maxStreamsPerConnection: 100,
  idleTimeoutMs: 300_000,
  connectTimeoutMs: 10_000,
  handshakeTimeoutMs: 10_000,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
  /** node http2 accounts outbound buffers and headers here (MB); windows above need headroom */
  maxSessionMemoryMb: 64,
  tcpKeepAliveDelayMs: 180_000,
});

/** HTTP/2 and connection tuning both ends of HBONE take. */
export interface Http2Tuning {
  /** HTTP/2 stream flow-control window, bytes; default 4 MiB */
  streamWindow?: number;
  /** HTTP/2 connection flow-control window, bytes; default 16 MiB */
  connectionWindow?: number;
  /** largest HTTP/2 frame we accept, bytes; default 1 MiB */
  maxFrameSize?: number;
  /** PING interval, ms; default 10_000 (0 disables) */
  pingIntervalMs?: number;
  /** drop the connection when a PING is not acked within this, ms; default 20_000 */
  pingTimeoutMs?: number;
  /** upper bound on open TLS connections; default 4096 */
  maxConnections?: number;
}

/** TLS 1.3 suites the mesh accepts (AES-GCM; hardware accelerated almost everywhere). */
const CIPHERS = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';

export const ALPN = ['h2'];

/**
 * Secure-context options for a bundle. Session tickets are off: a resumed session would skip
 * certificate validation against the current trust bundle.
 */
export function contextOptions(b: CertBundle): SecureContextOptions {
  return {
    key: b.keyPem,
    cert: b.chainPem.join('\n'),
    ca: b.rootsPem,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: CIPHERS,
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
  };
}

// Building a context parses the key and every certificate; handshakes reuse one per bundle
// object (a rotated certificate is a new object, so it gets a new context).
const contexts = new WeakMap<CertBundle, SecureContext>();

export function secureContextFor(b: CertBundle): SecureContext {
  let ctx = contexts.get(b);
  if (ctx === undefined) {
    ctx = createSecureContext(contextOptions(b));
    contexts.set(b, ctx);
  }
  return ctx;
}
