/**
 * Registry of open inbound connections per agent, so a policy change can re-check them
 * ("connection closed due to policy change") and a drain can wait for them or cut them.
 */
import { logger } from '../../core/index.js';
import type { Snapshot } from '../../model/index.js';
import { evaluateL4, type SourceIdentity } from '../../policy/index.js';

const log = logger('node-agent.conn');

export interface TrackedConnection {
  readonly id: number;
  readonly direction: 'inbound' | 'outbound';
  /** uid of the local pod the connection belongs to */
  readonly podUid: string;
  readonly srcIdentity?: SourceIdentity | undefined;
  readonly srcIp: string;
  readonly srcPort: number;
  readonly dstIp: string;
  readonly dstPort: number;
  close(reason: string): void;
}

export class ConnectionRegistry {
  #next = 1;
  readonly #conns = new Map<number, TrackedConnection>();

  /** Registers `c` itself (no copy: it may be a per-connection record already) and gives it an id. */
  add<T extends Omit<TrackedConnection, 'id'>>(c: T): T & TrackedConnection {
    const t = c as T & { id: number };
    t.id = this.#next++;
    this.#conns.set(t.id, t);
    return t;
  }

  remove(t: TrackedConnection): void { this.#conns.delete(t.id); }

  get size(): number { return this.#conns.size; }

  forPod(uid: string): TrackedConnection[] {
    return [...this.#conns.values()].filter((c) => c.podUid === uid);
  }

  all(): TrackedConnection[] { return [...this.#conns.values()]; }

  /**
   * Re-evaluate every inbound connection against the new snapshot; close those now denied.
   * A connection whose pod left the model is closed too (fail closed). Returns how many closed.
   */
  recheck(snapshot: Snapshot): number {
    let closed = 0;
    for (const c of [...this.#conns.values()]) {
      if (c.direction !== 'inbound') continue;
      const w = snapshot.workload(c.podUid);
      const decision = w
        ? evaluateL4(snapshot.policiesFor(w), { srcIdentity: c.srcIdentity, srcIp: c.srcIp, dstIp: c.dstIp, dstPort: c.dstPort })
        : { allowed: false, reason: 'destination workload removed' };
      if (decision.allowed) continue;
      log.info('connection closed due to policy change', { src: `${c.srcIp}:${c.srcPort}`, dst: `${c.dstIp}:${c.dstPort}`, reason: decision.reason });
      this.#conns.delete(c.id);
      c.close(`connection closed due to policy change: ${decision.reason}`);
      closed++;
    }
    return closed;
  }
}
