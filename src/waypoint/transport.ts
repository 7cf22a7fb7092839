/**
 * How the waypoint meets HBONE: it never speaks TLS or HTTP/2 CONNECT itself. A transport hands
 * it each accepted CONNECT stream as a byte stream with what the tunnel proved (the peer's
 * SPIFFE id, the `:authority` it asked for, addresses), and opens streams to `ip:15008` with an
 * authority and the identity the server must prove. The production transport is the addon's
 * engine (engine-transport.ts); tests may plug in plain sockets.
 */
import type { Duplex } from 'node:stream';

export interface InboundStreamInfo {
  /** SPIFFE id the client proved with its certificate (`spiffe://td/ns/x/sa/y`) */
  readonly peerIdentity: string;
  /** CONNECT `:authority`: the original destination, `VIP:port` or `podIP:port` (IPv6 in brackets) */
  readonly authority: string;
  /** address of the tunnel's peer (the client's node agent dials from the client pod) */
  readonly remoteIp: string;
  readonly remotePort: number;
  /** `Forwarded` request header of the CONNECT, when sent (`for="ip:port";host=...`) */
  readonly forwarded?: string | undefined;
}

export interface OutboundTarget {
  /** the endpoint pod IP; the stream goes to `ip:port` (15008) */
  readonly ip: string;
  readonly port: number;
  /** CONNECT `:authority`, `podIP:targetPort` */
  readonly authority: string;
  /** SPIFFE id the server must present (the endpoint's identity) */
  readonly expectedIdentity: string;
  /** extra CONNECT headers (lowercase names), e.g. `forwarded`, `baggage` */
  readonly headers?: Readonly<Record<string, string>>;
  /** the stream must be established within this, ms (DestinationRule `tcp.connectTimeout`); default the pools' */
  readonly connectTimeoutMs?: number;
  /** a pooled connection idle this long is closed, ms (DestinationRule `http.idleTimeout`); default the pools' */
  readonly idleTimeoutMs?: number;
}

export type InboundHandler = (stream: Duplex, info: InboundStreamInfo) => void;

export interface WaypointTransport {
  /** start delivering accepted streams to `handler` */
  listen(handler: InboundHandler): Promise<void>;
  /**
   * Open a stream to `target`. Resolves once the server accepted the CONNECT (200); rejects with
   * a MeshError (AMBIT_CONNECT_REFUSED, AMBIT_CONNECT_TIMEOUT, AMBIT_HBONE_STATUS,
   * AMBIT_IDENTITY_MISMATCH) otherwise.
   */
  connect(target: OutboundTarget, signal?: AbortSignal): Promise<Duplex>;
  /** stop accepting (drain); open streams go on */
  stopAccepting(): Promise<void>;
  /** cut everything */
  close(): Promise<void>;
  /** counters for the config dump */
  stats?(): Record<string, number>;
}
