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

const kTunnel = Symbol('ambit.hbone.tunnel');
type Side = Duplex & { [kTunnel]?: Tunnel };

/**
 * One tunnel's state. The event listeners below are shared functions that find their tunnel
 * through a symbol on the emitter, so a tunnel costs this object rather than two pipe()s (nine
 * closures each) and a dozen listener closures: the server side's heap per open tunnel was
 * ~13 kB, much of it those closures.
 */
class Tunnel implements HboneTunnel {
  readonly peer: Identity;
  readonly target: HboneTarget;
  readonly authority: string;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly startedAt = Date.now();
  bytesIn = 0;
  bytesOut = 0;
  readonly stream: ServerHttp2Stream & Side;
  readonly upstream: Side;
  readonly #init: TunnelInit;
  error: string | undefined;
  done = false;
  streamClosed = false;
  upstreamClosed = false;

  constructor(stream: ServerHttp2Stream, upstream: Duplex, init: TunnelInit) {
    this.stream = stream;
    this.upstream = upstream;
    this.#init = init;
    this.peer = init.peer;
    this.target = init.target;
    this.authority = init.authority;
    this.remoteAddress = init.remoteAddress;
    this.remotePort = init.remotePort;
  }

  close(reason: string): void {
    if (!this.done) this.abort(reason, h2.NGHTTP2_CANCEL);
  }

  // Abnormal end on either side: reset the other. RST_STREAM goes out as CONNECT_ERROR (the
  // RFC 9113 code for a failed CONNECT tunnel) or CANCEL when we close it on purpose.
  abort(reason: string, code: number = h2.NGHTTP2_CONNECT_ERROR): void {
    if (this.error === undefined) this.error = reason;
    if (!this.stream.closed && !this.stream.destroyed) this.stream.close(code);
    if (!this.upstream.destroyed) this.upstream.destroy();
  }

  finish(): void {
    if (this.done || !this.streamClosed || !this.upstreamClosed) return;
    this.done = true;
    try {
      this.#init.onClose?.({
        bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs: Date.now() - this.startedAt,
        ...(this.error !== undefined ? { error: this.error } : {}),
      });
    } finally {
      this.#init.onDone(this);
    }
  }
}

// Bytes both ways with pipe()'s backpressure: a write the destination cannot take yet pauses the
// source until the destination drains. An end becomes end() on the other side (half-close);
// teardown stays with the close handlers below.
function onStreamData(this: Side, c: Buffer): void {
  const t = this[kTunnel]!;
  t.bytesIn += c.length;
  if (!t.upstream.destroyed && !t.upstream.write(c)) this.pause();
}

function onUpstreamData(this: Side, c: Buffer): void {
  const t = this[kTunnel]!;
  t.bytesOut += c.length;
  if (!t.stream.destroyed && !t.stream.write(c)) this.pause();
}

function onUpstreamDrain(this: Side): void {
  const s = this[kTunnel]!.stream;
  if (s.isPaused() && !s.destroyed) s.resume();
}

function onStreamDrain(this: Side): void {
  const u = this[kTunnel]!.upstream;
  if (u.isPaused() && !u.destroyed) u.resume();
}

function onStreamEnd(this: Side): void {
  const u = this[kTunnel]!.upstream;
  if (!u.destroyed && !u.writableEnded) u.end();
}

function onUpstreamEnd(this: Side): void {
  const s = this[kTunnel]!.stream;
  if (!s.destroyed && !s.writableEnded) s.end();
}

function onUpstreamError(this: Side, e: Error): void {
  this[kTunnel]!.abort(`upstream: ${errorMessage(e)}`);
}

function onUpstreamClose(this: Side): void {
  const t = this[kTunnel]!;
  t.upstreamClosed = true;
  // Closed without both FINs: the upstream was reset or destroyed under us.
  if (!this.readableEnded || !this.writableFinished) t.abort('upstream closed abruptly');
  t.finish();
}

function onStreamError(this: Side, e: Error): void {
  this[kTunnel]!.abort(`stream: ${errorMessage(e)}`);
}

function onStreamAborted(this: Side): void {
  this[kTunnel]!.abort('client reset the stream');
}

function onStreamClose(this: ServerHttp2Stream & Side): void {
  const t = this[kTunnel]!;
  t.streamClosed = true;
  const code = this.rstCode;
  if (code !== undefined && code !== h2.NGHTTP2_NO_ERROR) t.abort(`stream reset (code ${code})`);
  else if (!t.upstream.destroyed && !t.upstream.writableEnded) t.upstream.end();
  t.finish();
}

export function startTunnel(stream: ServerHttp2Stream, upstream: Duplex, init: TunnelInit): HboneTunnel {
  const t = new Tunnel(stream, upstream, init);
  const s: ServerHttp2Stream & Side = stream;
  const u: Side = upstream;
  s[kTunnel] = t;
  u[kTunnel] = t;
  u.on('error', onUpstreamError);
  u.on('drain', onUpstreamDrain);
  u.once('end', onUpstreamEnd);
  u.once('close', onUpstreamClose);
  s.on('error', onStreamError);
  s.on('drain', onStreamDrain);
  s.once('end', onStreamEnd);
  s.once('aborted', onStreamAborted);
  s.once('close', onStreamClose);
  // 'data' last: it starts the flow.
  s.on('data', onStreamData);
  u.on('data', onUpstreamData);
  return t;
}
