/**
 * Server side of one accepted CONNECT: bytes flow both ways between the HTTP/2 stream and the
 * upstream with backpressure. A FIN on either side becomes END_STREAM / FIN on
 * the other (half-close); a reset or error on either side tears both down.
 */
import { constants as h2, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
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
  let done = false;
  let streamClosed = false;
  let upstreamClosed = false;
  let upstreamEnded = false;
  let upstreamFinished = false;

  const finish = (): void => {
    if (done || !streamClosed || !upstreamClosed) return;
    done = true;
    try {
      init.onClose?.({ bytesIn, bytesOut, durationMs: Date.now() - startedAt, ...(error !== undefined ? { error } : {}) });
    } finally {
      init.onDone(tunnel);
    }
  };
  // Abnormal end on either side: reset the other. RST_STREAM goes out as CONNECT_ERROR (the
  // RFC 9113 code for a failed CONNECT tunnel) or CANCEL when we close it on purpose.
  const abort = (reason: string, code: number = h2.NGHTTP2_CONNECT_ERROR): void => {
    if (error === undefined) error = reason;
    if (!stream.closed && !stream.destroyed) stream.close(code);
    if (!upstream.destroyed) upstream.destroy();
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
      if (!done) abort(reason, h2.NGHTTP2_CANCEL);
    },
  };

  // pipe(), not pipeline(): pipe carries backpressure and turns 'end' into end() (half-close)
  // without destroying anything, so teardown stays ours. (pipeline() destroys the http2 stream
  // right after close(code) and the RST_STREAM is then never sent.)
  stream.pipe(upstream);
  upstream.pipe(stream);
  stream.on('data', (c: Buffer) => { bytesIn += c.length; });
  upstream.on('data', (c: Buffer) => { bytesOut += c.length; });

  upstream.on('error', (e) => abort(`upstream: ${errorMessage(e)}`));
  upstream.once('end', () => { upstreamEnded = true; });
  upstream.once('finish', () => { upstreamFinished = true; });
  upstream.once('close', () => {
    upstreamClosed = true;
    // Closed without both FINs: the upstream was reset or destroyed under us.
    if (!upstreamEnded || !upstreamFinished) abort('upstream closed abruptly');
    finish();
  });
  stream.on('error', (e) => abort(`stream: ${errorMessage(e)}`));
  stream.once('aborted', () => abort('client reset the stream'));
  stream.once('close', () => {
    streamClosed = true;
    const code = stream.rstCode;
    if (code !== undefined && code !== h2.NGHTTP2_NO_ERROR) abort(`stream reset (code ${code})`);
    else upstream.end();
    finish();
  });
  return tunnel;
}
