/**
 * Fetches and rotates workload certificates for the identities of local workloads.
 *
 * - one fetch at a time per identity; concurrent `get`s share it;
 * - at most `maxConcurrent` fetches overall, callers waiting on a `get` ahead of background renewals;
 * - tracked identities renew at half-life; a failed fetch retries with per-identity backoff while
 *   the current certificate stays in use until it expires (then `peek` returns nothing: fail closed);
 * - every response is checked before use: chain verifies against the returned roots, the leaf is
 *   exactly the requested identity and matches our key.
 */
import { EventEmitter } from 'node:events';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { Backoff, MeshError, errorMessage, logger } from '../core/index.js';
import type { BackoffOptions } from '../core/index.js';
import { certValidity } from './der.js';
import { pemToDers, derToPem } from './pem.js';
import { MAX_CHAIN, verifyPeerChain } from './peer.js';
import { generateKeyAndCsr } from './csr.js';
import { identityKey, requireIdentity, spiffeUri } from './spiffe.js';
import type { Identity } from './spiffe.js';

const log = logger('identity.certs');

export interface CertBundle {
  identity: Identity;
  /** PKCS#8 PEM private key */
  keyPem: string;
  /** leaf first, then intermediates; never the roots */
  chainPem: string[];
  /** trust bundle to verify peers with */
  rootsPem: string;
  /** ms since the epoch */
  notBefore: number;
  notAfter: number;
}

export interface CertClock {
  now(): number;
  setTimeout: typeof setTimeout;
  clearTimeout: typeof clearTimeout;
}

export type CertRequest = (csrPem: string, id: Identity) => Promise<{ chainPem: string[]; rootsPem: string }>;

export interface CertManagerOptions {
  /** sends the CSR to the CA (the xDS client's CSR call) */
  request: CertRequest;
  /** default: real time */
  clock?: CertClock;
  /** retry delays after a failed fetch; default initial 1 s, x2, jitter 0.2, cap 150 s */
  backoff?: BackoffOptions;
  /** fetches in flight at once; default 8 */
  maxConcurrent?: number;
  /** identities held at once (tracked or cached); default 4096 */
  maxIdentities?: number;
  /** key and CSR generator; default `generateKeyAndCsr` (RSA 2048) */
  generate?: (id: Identity) => Promise<{ keyPem: string; csrPem: string }>;
}

const REAL_CLOCK: CertClock = { now: () => Date.now(), setTimeout, clearTimeout };
// setTimeout cannot wait longer than this (it fires at once instead); longer waits are chained.
const MAX_TIMER_MS = 2 ** 31 - 1;

type Priority = 'urgent' | 'background';

interface Entry {
  id: Identity;
  key: string;
  bundle?: CertBundle;
  inflight?: Promise<CertBundle>;
  tracked: boolean;
  removed: boolean;
  timer?: ReturnType<typeof setTimeout>;
  backoff: Backoff;
}

/** Half-life of a bundle: when renewal starts. */
export function refreshAt(b: Pick<CertBundle, 'notBefore' | 'notAfter'>): number {
  return b.notBefore + Math.floor((b.notAfter - b.notBefore) / 2);
}

export class CertManager {
  readonly #request: CertRequest;
  readonly #clock: CertClock;
  readonly #backoff: BackoffOptions;
  readonly #max: number;
  readonly #maxIds: number;
  readonly #generate: (id: Identity) => Promise<{ keyPem: string; csrPem: string }>;
  readonly #entries = new Map<string, Entry>();
  readonly #events = new EventEmitter();
  #active = 0;
  readonly #waiting: Record<Priority, Array<() => void>> = { urgent: [], background: [] };
  #closed = false;

  constructor(opts: CertManagerOptions) {
    if (typeof opts?.request !== 'function') {
      throw new MeshError('AMBIT_CONFIG_INVALID', 'cert manager: request must be a function');
    }
    this.#request = opts.request;
    this.#clock = opts.clock ?? REAL_CLOCK;
    this.#backoff = { initialMs: 1000, factor: 2, jitter: 0.2, maxMs: 150_000, ...opts.backoff };
    this.#max = opts.maxConcurrent ?? 8;
    this.#maxIds = opts.maxIdentities ?? 4096;
    this.#generate = opts.generate ?? generateKeyAndCsr;
    for (const [k, v] of [['maxConcurrent', this.#max], ['maxIdentities', this.#maxIds]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new MeshError('AMBIT_CONFIG_INVALID', `cert manager: ${k}: must be a positive integer`);
    }
  }

  /** Current bundle for `id`, fetching it if there is no valid one; concurrent callers share one fetch. */
  async get(id: Identity): Promise<CertBundle> {
    this.#checkOpen();
    const e = this.#entry(id);
    const b = e.bundle;
    const now = this.#clock.now();
    if (b !== undefined && valid(b, now)) {
      // Past half-life without a renewal running (an untracked identity): renew in the background.
      if (now >= refreshAt(b) && e.inflight === undefined) this.#refresh(e, 'background').catch(() => undefined);
      return b;
    }
    return this.#refresh(e, 'urgent');
  }

  /** Cached bundle if it is valid now, else undefined. Synchronous, for the connection hot path. */
  peek(id: Identity): CertBundle | undefined {
    const b = this.#entries.get(identityKey(id))?.bundle;
    return b !== undefined && valid(b, this.#clock.now()) ? b : undefined;
  }

  /** Keep `id` fetched and renewed at half-life (call when a local workload appears). */
  track(id: Identity): void {
    this.#checkOpen();
    const e = this.#entry(id);
    if (e.tracked) return;
    e.tracked = true;
    const b = e.bundle;
    if (b !== undefined && valid(b, this.#clock.now())) this.#schedule(e, refreshAt(b));
    else if (e.inflight === undefined) this.#refresh(e, 'background').catch(() => undefined);
    // An in-flight fetch schedules the renewal itself when it completes.
  }

  /** Stop renewing `id` and forget its key (call when the last local workload with it goes). */
  untrack(id: Identity): void {
    const key = identityKey(id);
    const e = this.#entries.get(key);
    if (e === undefined) return;
    e.tracked = false;
    e.removed = true;
    this.#clearTimer(e);
    this.#entries.delete(key);
  }

  /** Replace the trust bundle of every held bundle without refetching; emits 'rotated' for each. */
  setRoots(rootsPem: string): void {
    const normalised = pemToDers(rootsPem, 'trust bundle').map(derToPem).join('');
    for (const e of this.#entries.values()) {
      if (e.bundle === undefined || e.bundle.rootsPem === normalised) continue;
      e.bundle = { ...e.bundle, rootsPem: normalised };
      this.#emitRotated(e.bundle);
    }
  }

  /** 'rotated': a new bundle is in use for an identity (new certificate or new roots). */
  on(event: 'rotated', fn: (b: CertBundle) => void): this {
    this.#events.on(event, fn);
    return this;
  }

  off(event: 'rotated', fn: (b: CertBundle) => void): this {
    this.#events.off(event, fn);
    return this;
  }

  /** Stop all timers; later `get`/`track` calls fail with AMBIT_DRAINING. */
  close(): void {
    this.#closed = true;
    for (const e of this.#entries.values()) this.#clearTimer(e);
    // Let queued fetches run into the closed check instead of hanging their callers.
    for (const q of [this.#waiting.urgent, this.#waiting.background]) {
      while (q.length > 0) q.shift()!();
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new MeshError('AMBIT_DRAINING', 'cert manager: closed');
  }

  #entry(id: Identity): Entry {
    const key = identityKey(id);
    let e = this.#entries.get(key);
    if (e !== undefined) return e;
    if (this.#entries.size >= this.#maxIds) this.#evict();
    if (this.#entries.size >= this.#maxIds) {
      throw new MeshError('AMBIT_LIMIT', `cert manager: more than ${this.#maxIds} identities held; refusing ${key}`);
    }
    e = {
      id: { trustDomain: id.trustDomain, namespace: id.namespace, serviceAccount: id.serviceAccount },
      key, tracked: false, removed: false, backoff: new Backoff(this.#backoff),
    };
    this.#entries.set(key, e);
    return e;
  }

  /** Drop untracked, idle entries whose certificate is gone or expired. */
  #evict(): void {
    const now = this.#clock.now();
    for (const [k, e] of this.#entries) {
      if (!e.tracked && e.inflight === undefined && (e.bundle === undefined || !valid(e.bundle, now))) {
        this.#entries.delete(k);
      }
    }
  }

  #refresh(e: Entry, prio: Priority): Promise<CertBundle> {
    if (e.inflight !== undefined) return e.inflight;
    this.#clearTimer(e);
    const p = this.#fetch(e, prio).then(
      (b) => {
        e.inflight = undefined;
        e.backoff.reset();
        if (!e.removed) {
          e.bundle = b;
          if (e.tracked && !this.#closed) this.#schedule(e, refreshAt(b));
          this.#emitRotated(b);
        }
        return b;
      },
      (err: unknown) => {
        e.inflight = undefined;
        if (e.tracked && !e.removed && !this.#closed) {
          const delay = e.backoff.next();
          log.warn('certificate fetch failed; retrying', {
            identity: e.key, error: errorMessage(err), retryMs: delay,
            haveValidCert: e.bundle !== undefined && valid(e.bundle, this.#clock.now()),
          });
          this.#schedule(e, this.#clock.now() + delay);
        }
        throw err;
      },
    );
    e.inflight = p;
    return p;
  }

  async #fetch(e: Entry, prio: Priority): Promise<CertBundle> {
    await this.#acquire(prio);
    try {
      this.#checkOpen();
      const { keyPem, csrPem } = await this.#generate(e.id);
      const resp = await this.#request(csrPem, e.id);
      return this.#check(e.id, keyPem, resp);
    } finally {
      this.#release();
    }
  }

  /** Validate a CA response before it is used for anything. */
  #check(id: Identity, keyPem: string, resp: { chainPem: string[]; rootsPem: string }): CertBundle {
    const what = `certificate response for ${spiffeUri(id)}`;
    if (resp === null || typeof resp !== 'object' || !Array.isArray(resp.chainPem) || typeof resp.rootsPem !== 'string') {
      throw new MeshError('AMBIT_CERT_INVALID', `${what}: expected { chainPem: string[], rootsPem: string }`);
    }
    if (resp.chainPem.length === 0 || resp.chainPem.length > MAX_CHAIN) {
      throw new MeshError('AMBIT_CERT_INVALID', `${what}: chain must hold 1..${MAX_CHAIN} certificates`);
    }
    const roots = pemToDers(resp.rootsPem, `${what}: roots`);
    const ders = resp.chainPem.flatMap((p, i) => pemToDers(p, `${what}: chain[${i}]`))
      // Some CAs append the root; peers already have it, so it is not served.
      .filter((d, i) => i === 0 || !roots.some((r) => r.equals(d)));
    const leaf = ders[0]!;
    const { notBefore, notAfter } = certValidity(leaf);
    // Our clock may run a little behind the CA's; a not-yet-valid leaf is still the right one.
    const got = verifyPeerChain(ders, resp.rootsPem, Math.max(this.#clock.now(), notBefore));
    requireIdentity(got, id);
    if (!new X509Certificate(leaf).checkPrivateKey(createPrivateKey(keyPem))) {
      throw new MeshError('AMBIT_CERT_INVALID', `${what}: leaf does not match the requested key`);
    }
    return {
      identity: got, keyPem, chainPem: ders.map(derToPem), rootsPem: roots.map(derToPem).join(''), notBefore, notAfter,
    };
  }

  async #acquire(prio: Priority): Promise<void> {
    if (this.#active < this.#max) {
      this.#active++;
      return;
    }
    // The releaser hands its slot straight to us (no decrement/increment gap another caller could take).
    await new Promise<void>((resolve) => this.#waiting[prio].push(resolve));
  }

  #release(): void {
    const next = this.#waiting.urgent.shift() ?? this.#waiting.background.shift();
    if (next !== undefined) next();
    else this.#active--;
  }

  #schedule(e: Entry, at: number): void {
    this.#clearTimer(e);
    const delay = Math.max(0, at - this.#clock.now());
    const t = this.#clock.setTimeout(() => {
      e.timer = undefined;
      if (e.removed || this.#closed) return;
      if (this.#clock.now() < at) this.#schedule(e, at);
      else this.#refresh(e, 'background').catch(() => undefined);
    }, Math.min(delay, MAX_TIMER_MS));
    // Renewal alone must not keep a process alive.
    (t as { unref?: () => void }).unref?.();
    e.timer = t;
  }

  #clearTimer(e: Entry): void {
    if (e.timer !== undefined) {
      this.#clock.clearTimeout(e.timer);
      e.timer = undefined;
    }
  }

  #emitRotated(b: CertBundle): void {
    try {
      this.#events.emit('rotated', b);
    } catch (err) {
      log.error('rotated listener threw', { identity: spiffeUri(b.identity), error: errorMessage(err) });
    }
  }
}

function valid(b: CertBundle, now: number): boolean {
  return now >= b.notBefore && now < b.notAfter;
}
