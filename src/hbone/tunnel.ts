/**
 * Server side of one accepted CONNECT: bytes flow both ways between the HTTP/2 stream and the
 * upstream with backpressure (stream.pipeline). A FIN on either side becomes END_STREAM / FIN on
 * the other (half-close); a reset or error on either side tears both down.
 */
import { constants as h2, type ServerHttp2Stream } from 'node:http2';
import { pipeline, type Duplex } from 'node:stream';
import { errorMessage } from '../core/index.js';
import type { Identity } from '../identity/index.js';
import type { HboneTarget } from './authority.js';

export interface TunnelCloseInfo {
  /** bytes the client sent through the tunnel (to the upstream) */
  bytesIn: number;
  /** bytes the upstream sent back to the client */
  bytesOut: number;
  durationMs: number;
  /** set when the tunnel ended abnormally (reset, upstream error, closed by `close(reason)`) */
  error?: string;
}

/** A live tunnel, as listed by `HboneServer.connections()`. */
export interface HboneTunnel {
  readonly peer: Identity;
  readonly target: HboneTarget;
  readonly authority: string;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** ms since the epoch */
  readonly startedAt: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** tear the tunnel down now (e.g. a policy change denies it); `reason` is reported to onClose */
  close(reason: string): void;
}

export interface TunnelInit {
  peer: Identity;
  target: HboneTarget;
  authority: string;
  remoteAddress: string;
  remotePort: number;
  onClose?: (info: TunnelCloseInfo) => void;
  /** called once after onClose, for the server's bookkeeping */
  onDone: (t: HboneTunnel) => void;
}

export function startTunnel(stream: ServerHttp2Stream, upstream: Duplex, init: TunnelInit): HboneTunnel {
  const startedAt = Date.now();
  let bytesIn = 0;
  let bytesOut = 0;
  let error: string | undefined;
  let pending = 2;
  let done = false;

  const finish = (): void => {
    if (done) return;
    done = true;
    if (!upstream.destroyed) upstream.destroy();
    if (!stream.destroyed && !stream.closed) stream.close(error === undefined ? h2.NGHTTP2_NO_ERROR : h2.NGHTTP2_CANCEL);
    try {
      init.onClose?.({ bytesIn, bytesOut, durationMs: Date.now() - startedAt, ...(error !== undefined ? { error } : {}) });
    } finally {
      init.onDone(tunnel);
    }
  };
  const half = (e: Error | null | undefined): void => {
    if (e && error === undefined) error = errorMessage(e);
    if (e) {
      // One direction failed: the other cannot be trusted to finish on its own.
      upstream.destroy();
      if (!stream.destroyed) stream.close(h2.NGHTTP2_CANCEL);
    }
    if (--pending === 0) finish();
  };

  const tunnel: HboneTunnel = {
    peer: init.peer,
    target: init.target,
    authority: init.authority,
    remoteAddress: init.remoteAddress,
    remotePort: init.remotePort,
    startedAt,
    get bytesIn() { return bytesIn; },
    get bytesOut() { return bytesOut; },
    close(reason: string) {
      if (done) return;
      if (error === undefined) error = reason;
      upstream.destroy();
      if (!stream.destroyed) stream.close(h2.NGHTTP2_CANCEL);
    },
  };

  upstream.on('error', () => { /* reported through pipeline */ });
  pipeline(stream, upstream, half);
  pipeline(upstream, stream, half);
  // Counting listeners ride along the pipes; pipe() pauses the source, so they see exactly the
  // chunks that were forwarded and add no buffering.
  stream.on('data', (c: Buffer) => { bytesIn += c.length; });
  upstream.on('data', (c: Buffer) => { bytesOut += c.length; });
  return tunnel;
}
