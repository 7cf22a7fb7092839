/**
 * PING keepalive for an HTTP/2 session. A peer that vanished without a FIN (node rebooted, netns
 * deleted, NAT dropped state) would otherwise hold pooled connections and tunnels forever.
 */
import type { Http2Session } from 'node:http2';

export interface KeepaliveOptions {
  /** ms between PINGs; 0 disables */
  intervalMs: number;
  /** ms to wait for the PING ack before giving up on the session */
  timeoutMs: number;
  /** called once when an ack did not arrive in time (the caller destroys the session) */
  onTimeout: () => void;
}

/** Start pinging; returns a stop function (also stops by itself when the session closes). */
export function startKeepalive(session: Http2Session, o: KeepaliveOptions): () => void {
  if (o.intervalMs <= 0) return () => {};
  let waiting: NodeJS.Timeout | undefined;
  let stopped = false;
  const stop = (): void => {
    stopped = true;
    clearInterval(interval);
    if (waiting) clearTimeout(waiting);
  };
  const interval = setInterval(() => {
    // One PING in flight at a time: a slow ack must not stack up timers.
    if (stopped || waiting !== undefined || session.destroyed || session.closed) return;
    let sent = false;
    try {
      sent = session.ping((err) => {
        if (waiting) clearTimeout(waiting);
        waiting = undefined;
        void err; // a failed ping means the session is going away; its close handler cleans up
      });
    } catch {
      sent = false;
    }
    if (!sent) return;
    waiting = setTimeout(() => {
      waiting = undefined;
      if (!stopped) { stop(); o.onTimeout(); }
    }, o.timeoutMs);
    waiting.unref();
  }, o.intervalMs);
  // Keepalive alone must not keep a process alive.
  interval.unref();
  session.once('close', stop);
  return stop;
}
