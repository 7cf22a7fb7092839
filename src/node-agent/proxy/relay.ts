/**
 * Copies bytes both ways between the app-facing socket and the upstream (a TCP socket or an
 * HBONE stream) with backpressure (the reader pauses while its writer has RELAY_BUFFER_BYTES
 * queued) and half-close (an end on one side ends the other's write side only). Resolves once
 * both sides are closed; never rejects. Written for the per-connection cost: no pipe(), no
 * closures per connection, writes batched per loop turn.
 */
import { Socket } from 'node:net';
import { Writable, type Duplex } from 'node:stream';

const baseWrite = Writable.prototype.write;
const kCorked = Symbol('ambit.coalescing');
type Coalescing = Writable & { [kCorked]?: boolean };

function uncorkLater(s: Coalescing): void {
  s[kCorked] = false;
  s.uncork();
}

/** Below this a chunk goes out at once (request/response traffic); bulk chunks are ~8 kB. */
const COALESCE_MIN_BYTES = 4096;

function coalescingWrite(this: Coalescing, ...args: unknown[]): boolean {
  const chunk = args[0];
  if (this[kCorked] !== true && !this.writableEnded && !this.destroyed
    && (chunk as { length?: unknown } | null)?.length !== undefined && (chunk as { length: number }).length >= COALESCE_MIN_BYTES) {
    this[kCorked] = true;
    this.cork();
    setImmediate(uncorkLater, this);
  }
  return (baseWrite as (...a: unknown[]) => boolean).apply(this, args);
}

/**
 * Writes made in one event-loop turn leave as one writev. One TLS read on the HBONE side yields an HTTP/2
 * DATA chunk per TLS record (~8 kB on average), and a plain socket write per chunk made each
 * write its own syscall: 5 writes per read, 80 % of the server agent's syscall time in a bulk
 * transfer. Each chunk arrives in its own native callback, after which Node drains nextTick and
 * microtasks, so only the check phase of the loop (setImmediate) sees them all: the cork is
 * lifted there, right after the poll phase that read them. That costs an extra loop turn, so only
 * bulk-sized chunks start a batch; small request/response writes go out at once (a small chunk
 * written while a batch is open joins it). Shared functions and a symbol flag,
 * so no closure per connection. A writable whose `write` is not the stock one is left alone.
 */
export function coalesceWrites(s: Writable): void {
  if (s.write === baseWrite) s.write = coalescingWrite as Writable['write'];
}

export interface RelayResult {
  /** bytes read from the app-facing socket */
  fromApp: number;
  /** bytes written to the app-facing socket */
  toApp: number;
  /** first error seen on either side, if any */
  error?: string;
}

export interface Relay {
  done: Promise<RelayResult>;
  /** tear both sides down now (policy change, drain deadline) */
  destroy(reason?: string): void;
}

/**
 * Bytes one direction may have buffered towards a slow writer before the reader is paused. The
 * writers' own high-water marks (16 kB) paused the app socket on nearly every 64 kB read in a bulk
 * transfer: a readStop/readStart pair of epoll_ctl calls per read. Only reached under load.
 */
export const RELAY_BUFFER_BYTES = 256 * 1024;

const kRelay = Symbol('ambit.relay');
type Side = Duplex & { [kRelay]?: RelayState };

/**
 * Per-connection state. The listeners below are shared functions that find their relay through a
 * symbol on the emitter (`this`), so a connection costs this object and its promise, not a set of
 * closures per listener.
 */
class RelayState implements Relay {
  readonly app: Side;
  readonly up: Side;
  error: string | undefined;
  closed = 0;
  readonly done: Promise<RelayResult>;
  resolve!: (r: RelayResult) => void;

  constructor(app: Side, up: Side) {
    this.app = app;
    this.up = up;
    this.done = new Promise<RelayResult>((resolve) => { this.resolve = resolve; });
  }

  other(s: Side): Side { return s === this.app ? this.up : this.app; }

  destroy(reason?: string): void {
    this.error ??= reason;
    this.app.destroy();
    this.up.destroy();
  }

  sideClosed(): void {
    if (++this.closed < 2) return;
    const app = this.app as unknown as Socket;
    this.resolve({ fromApp: app.bytesRead, toApp: app.bytesWritten, ...(this.error !== undefined ? { error: this.error } : {}) });
  }
}

function onError(this: Side, e: Error): void {
  this[kRelay]!.destroy(e.message);
}

function onData(this: Side, chunk: Buffer): void {
  const dst = this[kRelay]!.other(this);
  if (dst.destroyed) return;
  if (!dst.write(chunk) && dst.writableLength >= RELAY_BUFFER_BYTES) this.pause();
}

function onDrain(this: Side): void {
  const src = this[kRelay]!.other(this);
  if (src.isPaused() && !src.destroyed) src.resume();
}

// Half-close: an end on one side ends the other's write side only.
function onEnd(this: Side): void {
  const dst = this[kRelay]!.other(this);
  if (!dst.destroyed) dst.end();
  bothWays(this);
}

// A socket that finished both directions must go away even when the other never closes first.
// Not an HTTP/2 stream: it closes itself once END_STREAM went both ways, and destroying it
// before nghttp2 has closed it (the 'end' event can come first) sends a needless RST_STREAM.
function bothWays(s: Side): void {
  if (s.readableEnded && s.writableFinished && s instanceof Socket) s.destroy();
}

function onFinish(this: Side): void { bothWays(this); }

// When one side is gone, the other can only finish flushing what it already has: keep it only
// when both read directions had ended cleanly, otherwise it would hang half-open forever.
function onClose(this: Side): void {
  const r = this[kRelay]!;
  if (!(r.app.readableEnded && r.up.readableEnded)) r.other(this).destroy();
  r.sideClosed();
}

function attach(s: Side, r: RelayState): void {
  s[kRelay] = r;
  s.on('error', onError);
  s.on('end', onEnd);
  s.on('finish', onFinish);
  s.on('drain', onDrain);
  if (s.destroyed) r.sideClosed(); else s.once('close', onClose);
}

/**
 * Copies bytes both ways between the app-facing socket and the upstream (a TCP socket or an
 * HBONE stream) with backpressure and half-close. Resolves once both sides are closed; never
 * rejects.
 */
export function relay(app: Socket, upstream: Duplex): Relay {
  const r = new RelayState(app, upstream);
  attach(app, r);
  attach(upstream, r);
  coalesceWrites(app);
  if (upstream instanceof Socket) coalesceWrites(upstream);
  if (app.destroyed || upstream.destroyed) {
    r.destroy();
  } else {
    app.on('data', onData);
    upstream.on('data', onData);
  }
  return r;
}
