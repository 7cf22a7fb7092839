/**
 * Leader election over a coordination.k8s.io/v1 Lease in the control plane's namespace, as
 * client-go's leaderelection does it: the holder renews spec.renewTime every `renewMs`; another
 * replica takes the Lease over once it has seen the same record unchanged for
 * leaseDurationSeconds by its own clock (never by comparing clocks across machines); every write
 * carries the resourceVersion it read, so two candidates never both win (409 for the loser). A
 * leader that could not renew within `renewDeadlineMs` steps down before anyone else may take
 * over. On stop the leader releases the Lease (empty holder) so a successor need not wait.
 *
 * Only the waypoint reconciler's writes wait for leadership; the CA Secret is create-or-read
 * and safe from every replica.
 */
import { errorMessage, logger } from '../../core/index.js';
import { resourcePath, statusMessage } from './api.js';
import type { Json, KubeApi } from './api.js';

const log = logger('control.leader');

export const LEASE_NAME = 'ambit-control';

export interface LeaderElectorOptions {
  readonly api: KubeApi;
  readonly namespace: string;
  /** this replica (its pod name) */
  readonly identity: string;
  /** default ambit-control */
  readonly name?: string;
  /** how long a Lease not renewed stays another's, s; default 15 */
  readonly leaseDurationSeconds?: number;
  /** how often the leader renews and a follower tries, ms; default 2000 */
  readonly renewMs?: number;
  /** a leader that has not renewed for this long steps down, ms; default 10 000 (under the duration) */
  readonly renewDeadlineMs?: number;
  /** told on every change of leadership */
  readonly onChange?: (leader: boolean) => void;
  /** ms since the epoch; default Date.now */
  readonly now?: () => number;
}

interface LeaseSpec { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number }

/** metav1.MicroTime: RFC 3339 with exactly six fractional digits (the API server parses no other). */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class LeaderElector {
  readonly #o: LeaderElectorOptions;
  readonly #path: string;
  readonly #now: () => number;
  #leader = false;
  #lastRenew = 0;
  /** the record last read (JSON of spec) and when, by our clock */
  #observed = '';
  #observedAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(o: LeaderElectorOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#path = resourcePath('coordination.k8s.io/v1', 'leases', o.namespace, o.name ?? LEASE_NAME);
  }

  get isLeader(): boolean { return this.#leader; }

  /** Tries at once, then every renewMs until stop(). */
  start(): void {
    const loop = (): void => {
      if (this.#stopped) return;
      void this.attempt().finally(() => {
        if (!this.#stopped) {
          this.#timer = setTimeout(loop, this.#o.renewMs ?? 2000);
          this.#timer.unref(); // the program's servers keep it alive, not its Lease
        }
      });
    };
    loop();
  }

  /** Steps down; a leader releases the Lease so a successor takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    if (!this.#leader) return;
    this.#set(false);
    try {
      const a = await this.#o.api.get(this.#path);
      const spec = (a.body.spec ?? {}) as LeaseSpec;
      if (a.status !== 200 || spec.holderIdentity !== this.#o.identity) return;
      await this.#o.api.request('PUT', this.#path, this.#lease(a.body, { ...spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(this.#now()) }));
    } catch (e) {
      log.warn('lease release failed', { error: errorMessage(e) });
    }
  }

  /** One acquire-or-renew; resolves with whether this replica leads now. Never throws. */
  async attempt(): Promise<boolean> {
    try {
      const r = await this.#tryAcquireOrRenew();
      if (r === 'leader') { this.#lastRenew = this.#now(); this.#set(true); }
      else if (r === 'follower') this.#set(false); // the Lease is another's: at once
      // 'conflict': a leader that lost one renewal race keeps leading until the deadline
      else if (this.#leader && this.#now() - this.#lastRenew > (this.#o.renewDeadlineMs ?? 10_000)) this.#set(false);
    } catch (e) {
      log.warn('lease attempt failed', { error: errorMessage(e) });
      if (this.#leader && this.#now() - this.#lastRenew > (this.#o.renewDeadlineMs ?? 10_000)) this.#set(false);
    }
    return this.#leader;
  }

  #set(leader: boolean): void {
    if (leader === this.#leader) return;
    this.#leader = leader;
    log.info(leader ? 'leading: writes waypoint objects and Gateway status' : 'no longer leading', { identity: this.#o.identity });
    this.#o.onChange?.(leader);
  }

  #lease(current: Json | undefined, spec: LeaseSpec): Json {
    const md = (current?.metadata ?? {}) as Json;
    return {
      apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
      metadata: {
        name: this.#o.name ?? LEASE_NAME, namespace: this.#o.namespace,
        ...(md.resourceVersion ? { resourceVersion: md.resourceVersion } : {}),
        labels: { 'app.kubernetes.io/part-of': 'ambit' },
      },
      spec,
    };
  }

  async #tryAcquireOrRenew(): Promise<'leader' | 'follower' | 'conflict'> {
    const { api, identity } = this.#o;
    const now = this.#now();
    const duration = this.#o.leaseDurationSeconds ?? 15;
    const mine: LeaseSpec = { holderIdentity: identity, leaseDurationSeconds: duration, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 };
    const got = await api.get(this.#path);
    if (got.status === 404) {
      const c = await api.create(resourcePath('coordination.k8s.io/v1', 'leases', this.#o.namespace), this.#lease(undefined, mine));
      if (c.status === 201 || c.status === 200) return 'leader';
      if (c.status === 409) return 'follower'; // another replica created it first
      throw new Error(`creating Lease: HTTP ${c.status}: ${statusMessage(c)}`);
    }
    if (got.status !== 200) throw new Error(`reading Lease: HTTP ${got.status}: ${statusMessage(got)}`);
    const spec = (got.body.spec ?? {}) as LeaseSpec;
    const record = JSON.stringify(spec);
    if (record !== this.#observed) { this.#observed = record; this.#observedAt = now; }
    const holder = spec.holderIdentity ?? '';
    const held = holder !== '' && holder !== identity;
    const expired = now > this.#observedAt + (spec.leaseDurationSeconds ?? duration) * 1000;
    if (held && !expired) return 'follower';
    const next: LeaseSpec = holder === identity
      ? { ...spec, leaseDurationSeconds: duration, renewTime: microTime(now) }
      : { ...mine, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 };
    const u = await api.request('PUT', this.#path, this.#lease(got.body, next));
    if (u.status === 200) {
      if (holder !== identity) log.info('lease acquired', { identity, from: holder || '(released)' });
      this.#observed = JSON.stringify((u.body.spec ?? next) as LeaseSpec);
      this.#observedAt = now;
      return 'leader';
    }
    if (u.status === 409) return 'conflict'; // someone else wrote it between our read and our write
    throw new Error(`updating Lease: HTTP ${u.status}: ${statusMessage(u)}`);
  }
}
