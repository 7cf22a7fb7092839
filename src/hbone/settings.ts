/**
 * HBONE settings (the table below) and TLS material. Both ends speak TLS 1.3 only with ALPN
 * exactly `h2`; identity is decided from the DER certificate after the handshake, never from names.
 */
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { constants as cryptoConstants } from 'node:crypto';
import type { CertBundle } from '../identity/index.js';
import type { EngineOptions } from '../native/index.js';

export const MiB = 1024 * 1024;
export const KiB = 1024;

/**
 * The HBONE settings of the mesh: the one table the engine's client and server both read (handed
 * to engineCreate; the C code keeps no defaults of its own, and the engine refuses to start
 * without every one). Agents and waypoints speak HBONE with these unless their operator
 * overrides one (`Partial<HboneSettings>`).
 */
export interface HboneSettings {
  /**
   * HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE we announce, bytes: what one stream may have in flight to
   * us before we acknowledge (we acknowledge only what the app took: end-to-end flow control).
   * 65,535..2^31-1.
   */
  streamWindow: number;
  /** our HTTP/2 connection window, bytes: in flight to us over all streams of a connection. 65,535..2^31-1 */
  connectionWindow: number;
  /** SETTINGS_MAX_FRAME_SIZE we announce, and the largest DATA frame we send, bytes. 16,384..16,777,215 */
  maxFrameSize: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of our HBONE server: open streams per client connection */
  maxConcurrentStreams: number;
  /** streams one pooled client connection carries in its life, then new streams open a fresh one */
  streamsPerConnection: number;
  /** a pooled client connection unused this long is closed, ms; an unused server session after twice this */
  idleMs: number;
  /** TLS handshake and peer identity check of an HBONE connection, ms */
  handshakeTimeoutMs: number;
  /** TCP connect to an HBONE peer or to the app, ms */
  connectTimeoutMs: number;
  /**
   * HTTP/2 keepalive on every HBONE connection, client and server side: a PING once the peer sent
   * nothing for this long, ms; 0 disables keepalive PINGs
   */
  pingIntervalMs: number;
  /**
   * the dead-peer deadline: a PING with no answer (nor any other byte) this long closes the
   * connection and resets its flows, ms. A dead peer is found within pingIntervalMs + pingTimeoutMs.
   */
  pingTimeoutMs: number;
  /** TCP keepalive on every socket the engine owns: first probe after this idle time, ms (whole seconds); 0 disables */
  tcpKeepaliveIdleMs: number;
  /** TCP keepalive: between probes, ms (whole seconds, at least 1 s) */
  tcpKeepaliveIntervalMs: number;
  /** TCP keepalive: unanswered probes before the connection fails */
  tcpKeepaliveProbes: number;
  /**
   * TCP_USER_TIMEOUT on sockets to other hosts (HBONE tunnels, passthrough upstreams): sent data or
   * a probe unacknowledged this long fails the connection, ms; 0 keeps the kernel's (~15 min of
   * retransmissions). Not on sockets to the pod's own app: Linux counts a receive window that stays
   * closed against it, so it would cut an app that pauses reading.
   */
  tcpUserTimeoutMs: number;
  /** a flow (CONNECT stream or relayed connection) with no byte moved either way this long is reset, ms; 0 disables */
  flowIdleMs: number;
  /**
   * a flow one side of which has ended (FIN / END_STREAM) is reset after this long without a byte
   * moved, ms; 0 disables. A client that never ends its half cannot keep the other side's socket
   * in CLOSE-WAIT.
   */
  halfClosedMs: number;
  /**
   * protocol errors one HBONE server session may cause (streams reset for over-limit headers,
   * invalid frames, requests other than CONNECT) before it is closed with GOAWAY ENHANCE_YOUR_CALM
   */
  abuseBudget: number;
  /**
   * fds under the soft RLIMIT_NOFILE that the engine's accepts leave to the rest of the process
   * (readiness, admin, control plane); 0 disables
   */
  fdReserve: number;
}

export const HBONE_SETTINGS: Readonly<HboneSettings> = Object.freeze({
  streamWindow: 4 * MiB,
  // four stream windows, so one stalled stream cannot starve the others
  connectionWindow: 16 * MiB,
  // 64 KiB DATA frames: bulk transfers at a quarter of the per-frame work of 16 KiB ones, and a
  // frame still fits a batch of TLS records
  maxFrameSize: 64 * KiB,
  maxConcurrentStreams: 200,
  streamsPerConnection: 100,
  idleMs: 60_000,
  handshakeTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  // ztunnel's figures: PING every 10 s of silence, dead without an answer within 20 s
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
  tcpKeepaliveIdleMs: 60_000,
  tcpKeepaliveIntervalMs: 10_000,
  tcpKeepaliveProbes: 3,
  tcpUserTimeoutMs: 30_000,
  // Istio's TCP idleTimeout
  flowIdleMs: 3_600_000,
  // as the kernel's FIN-WAIT-2 timeout (tcp_fin_timeout)
  halfClosedMs: 60_000,
  abuseBudget: 20,
  fdReserve: 64,
});

/** The engine's creation options: the table, with the caller's overrides (undefined ones ignored). */
export function engineOptions(over: Partial<HboneSettings> = {}): EngineOptions {
  const out: EngineOptions = { ...HBONE_SETTINGS };
  for (const k of Object.keys(HBONE_SETTINGS) as (keyof HboneSettings)[]) {
    const v = over[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
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
