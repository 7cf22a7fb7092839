/**
 * Shared HBONE wire settings and TLS material. Both ends speak TLS 1.3 only with ALPN exactly
 * `h2`; identity is decided from the DER certificate after the handshake, never from names.
 */
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { constants as cryptoConstants } from 'node:crypto';
import type { CertBundle } from '../identity/index.js';

export const MiB = 1024 * 1024;
export const KiB = 1024;

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
