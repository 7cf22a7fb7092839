/**
 * Copies bytes both ways between the app-facing socket and the upstream (a TCP socket or an
 * HBONE stream) with backpressure (pipe pauses the faster side) and half-close (an end on one side
 * ends the other's write side only). Resolves once both sides are closed; never rejects.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

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

export function relay(app: Socket, upstream: Duplex): Relay {
  let error: string | undefined;
  const onError = (e: Error) => {
    error ??= e.message;
    app.destroy();
    upstream.destroy();
  };
  app.on('error', onError);
  upstream.on('error', onError);
  const closed = (s: Duplex) => new Promise<void>((resolve) => {
    if (s.destroyed) resolve(); else s.once('close', () => resolve());
  });
  // A side that finished both directions must go away even when the other never closes first.
  const finishWhenBothEnded = (s: Duplex) => {
    let ended = false;
    let finished = false;
    const check = () => { if (ended && finished) s.destroy(); };
    s.once('end', () => { ended = true; check(); });
    s.once('finish', () => { finished = true; check(); });
  };
  finishWhenBothEnded(app);
  finishWhenBothEnded(upstream);
  // When one side is gone, the other can only finish flushing what it already has: keep it only
  // when both read directions had ended cleanly, otherwise it would hang half-open forever.
  const onClose = (other: Duplex) => () => {
    if (!(app.readableEnded && upstream.readableEnded)) other.destroy();
  };
  app.once('close', onClose(upstream));
  upstream.once('close', onClose(app));
  app.pipe(upstream);
  upstream.pipe(app);
  const done = Promise.all([closed(app), closed(upstream)]).then((): RelayResult => ({
    fromApp: app.bytesRead,
    toApp: app.bytesWritten,
    ...(error !== undefined ? { error } : {}),
  }));
  return {
    done,
    destroy(reason?: string) {
      error ??= reason;
      app.destroy();
      upstream.destroy();
    },
  };
}
