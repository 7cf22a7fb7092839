/**
 * Configuration from the Kubernetes API: list + watch per kind, one object map, the complete set reported
 * (debounced) after the initial lists and after every change.
 *
 * Why not the library's ListWatch/informer: in @kubernetes/client-node 1.3 it does not ask for bookmarks,
 * stops for good on any error other than 410 (a missing CRD or an API server restart would end the watch
 * forever), and reconnects without backoff. So the loop is ours, on top of the library's `Watch` (which
 * streams and parses the events) and the library's KubeConfig (which applies TLS and credentials):
 *
 *   list (paged) -> resourceVersion R -> watch from R with bookmarks -> every event/bookmark advances R
 *   stream closed      -> watch again from R (immediately if it delivered events, else after a backoff)
 *   410 Gone (HTTP or ERROR event) -> R is too old: list again
 *   other errors       -> backoff, then watch again from R (or list if there is no R)
 *   404 on list        -> the CRD is not installed: warn, keep the other kinds going, retry later
 */
import type https from 'node:https';
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { Backoff, MeshError, boundedRequest, errorMessage, logger } from '../../core/index.js';
import type { BackoffOptions } from '../../core/index.js';
import { isKubeObject } from './kinds.js';
import { WATCHED_KINDS } from './types.js';
import type { ConfigSource, KubeObject, WatchedKind } from './types.js';

const log = logger('control.config.kube');

/** A list page not answered within this long (socket inactivity) is given up and retried, ms. */
const LIST_TIMEOUT_MS = 60_000;

export interface KubeSourceOptions {
  /** default: `loadFromDefault()` (KUBECONFIG, ~/.kube/config, or the in-cluster service account) */
  kubeConfig?: KubeConfig;
  /** default WATCHED_KINDS */
  kinds?: readonly WatchedKind[];
  /** changes within this window are reported together, ms; default 100 */
  debounceMs?: number;
  /** delays between failed attempts; default 500 ms doubling to 30 s */
  backoff?: BackoffOptions;
  /** a kind whose list answered 404 (CRD not installed) is tried again after this long, ms; default 30 000 */
  missingKindRetryMs?: number;
  /** items per list page; default 500 */
  pageSize?: number;
  /** a list page larger than this is refused, bytes; default 64 MiB */
  maxListBytes?: number;
  /** at most this many objects per kind are kept; more are dropped with an error log; default 200 000 */
  maxObjectsPerKind?: number;
  /** server-side watch timeout, s; default a random 300..600 so watches of many controllers do not align */
  watchTimeoutSeconds?: number;
}

class HttpStatusError extends Error {
  constructor(readonly statusCode: number, message: string) { super(message); }
}

function statusOf(e: unknown): number | undefined {
  if (e && typeof e === 'object') {
    const o = e as { statusCode?: unknown; code?: unknown };
    if (typeof o.statusCode === 'number') return o.statusCode;
    if (typeof o.code === 'number') return o.code;
  }
  return undefined;
}

interface ListPage { items: unknown[]; metadata?: { resourceVersion?: string; continue?: string } }

/** One kind's list/watch loop and its objects. */
class KindWatcher {
  readonly objects = new Map<string, KubeObject>();
  readonly path: string;
  readonly apiVersion: string;
  #rv = '';
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #controller: AbortController | undefined;
  #gen = 0;
  readonly #backoff: Backoff;
  #missing = false;
  /** resolves once the kind has been listed, or is known not to exist (404) */
  readonly synced: Promise<void>;
  #markSynced: () => void = () => undefined;

  constructor(
    readonly kind: WatchedKind,
    readonly src: { kc: KubeConfig; watch: Watch; opts: Required<Omit<KubeSourceOptions, 'kubeConfig' | 'kinds' | 'watchTimeoutSeconds'>> & { watchTimeoutSeconds?: number }; changed: () => void },
  ) {
    this.apiVersion = kind.group ? `${kind.group}/${kind.version}` : kind.version;
    this.path = kind.group ? `/apis/${kind.group}/${kind.version}/${kind.plural}` : `/api/${kind.version}/${kind.plural}`;
    this.#backoff = new Backoff({ initialMs: 500, maxMs: 30_000, ...src.opts.backoff });
    this.synced = new Promise((resolve) => { this.#markSynced = resolve; });
  }

  get resourceVersion(): string { return this.#rv; }

  /**
   * Starts the loop. Resolves once synced: listed, or answered 404 (CRD not installed: an empty kind is the
   * truth then). Other failures keep retrying and keep start() waiting: reporting an empty set because the
   * API server was briefly unreachable would look like "all policies deleted".
   */
  async start(): Promise<void> {
    void this.#cycle();
    await this.synced;
  }

  stop(): void {
    this.#stopped = true;
    this.#gen++;
    clearTimeout(this.#timer);
    this.#controller?.abort();
    this.#controller = undefined;
    this.#markSynced(); // a start() still waiting returns
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => { void this.#cycle(); }, ms);
  }

  async #cycle(): Promise<void> {
    if (this.#stopped) return;
    if (!this.#rv) {
      try {
        await this.#relist();
      } catch (e) {
        if (this.#stopped) return;
        if (statusOf(e) === 404) {
          if (!this.#missing) log.warn('kind not served by the API server (CRD not installed?); will retry', { kind: this.kind.kind, path: this.path });
          this.#missing = true;
          this.#markSynced();
          if (this.objects.size > 0) { this.objects.clear(); this.src.changed(); }
          this.#schedule(this.src.opts.missingKindRetryMs);
        } else {
          const delay = this.#backoff.next();
          log.warn('list failed; retrying', { kind: this.kind.kind, error: errorMessage(e), retryMs: delay });
          this.#schedule(delay);
        }
        return;
      }
      if (this.#missing) log.info('kind is served now', { kind: this.kind.kind });
      this.#missing = false;
      this.#backoff.reset();
      this.#markSynced();
    }
    // Not awaited: start() waits for the first list only, never for a watch stream to open.
    void this.#watch();
  }

  /** Replaces this kind's objects with a fresh, complete list and remembers its resourceVersion. */
  async #relist(): Promise<void> {
    const next = new Map<string, KubeObject>();
    let cont = '';
    let rv = '';
    // a server that keeps answering with a continue token (a bug, or a proxy replaying a page)
    // would keep this loop going for ever; a full list never needs more pages than this
    const maxPages = Math.ceil(this.src.opts.maxObjectsPerKind / this.src.opts.pageSize) + 1;
    let pages = 0;
    do {
      if (++pages > maxPages) throw new MeshError('AMBIT_LIMIT', `list ${this.path}: more than ${maxPages} pages`);
      const q = new URLSearchParams({ limit: String(this.src.opts.pageSize) });
      if (cont) q.set('continue', cont);
      const page = await this.#get(`${this.path}?${q.toString()}`);
      for (const item of page.items) this.#put(next, item);
      const c = page.metadata?.continue;
      const r = page.metadata?.resourceVersion;
      cont = typeof c === 'string' ? c : '';
      rv = typeof r === 'string' ? r : '';
    } while (cont && !this.#stopped);
    if (this.#stopped) return;
    if (!rv) throw new MeshError('AMBIT_CONFIG_INVALID', `list ${this.path}: response carries no metadata.resourceVersion`);
    this.objects.clear();
    for (const [k, v] of next) this.objects.set(k, v);
    this.#rv = rv;
    this.src.changed();
  }

  #put(into: Map<string, KubeObject>, raw: unknown): boolean {
    if (!raw || typeof raw !== 'object') return false;
    // List items come without apiVersion/kind; watch events with. Normalise so consumers see one shape.
    const obj = { ...(raw as Record<string, unknown>), apiVersion: this.apiVersion, kind: this.kind.kind };
    if (!isKubeObject(obj)) { log.warn('ignoring malformed object from the API server', { kind: this.kind.kind }); return false; }
    const { managedFields: _mf, ...meta } = obj.metadata;
    obj.metadata = meta as KubeObject['metadata'];
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    if (!into.has(key) && into.size >= this.src.opts.maxObjectsPerKind) {
      log.error('too many objects of one kind; dropping', { kind: this.kind.kind, limit: this.src.opts.maxObjectsPerKind, name: key });
      return false;
    }
    into.set(key, obj);
    return true;
  }

  async #get(pathAndQuery: string): Promise<ListPage> {
    const cluster = this.src.kc.getCurrentCluster();
    if (!cluster) throw new MeshError('AMBIT_CONFIG_INVALID', 'kubeconfig: no current cluster');
    const url = new URL(cluster.server.replace(/\/$/, '') + pathAndQuery);
    const opts: https.RequestOptions = { method: 'GET', headers: { accept: 'application/json' } };
    // Applies the cluster CA, client certificate, bearer token / exec credentials, and the right agent.
    await this.src.kc.applyToHTTPSOptions(opts);
    const res = await boundedRequest(url, { request: opts, maxBytes: this.src.opts.maxListBytes, timeoutMs: LIST_TIMEOUT_MS, what: `list ${url.pathname}` });
    if (res.status !== 200) throw new HttpStatusError(res.status, `list ${url.pathname}: HTTP ${res.status}: ${res.body.slice(0, 200)}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body);
    } catch (e) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `list ${url.pathname}: invalid JSON: ${errorMessage(e)}`);
    }
    if (!parsed || typeof parsed !== 'object' || !Array.isArray((parsed as ListPage).items)) {
      throw new MeshError('AMBIT_CONFIG_INVALID', `list ${url.pathname}: response is not a list`);
    }
    return parsed as ListPage;
  }

  async #watch(): Promise<void> {
    const gen = ++this.#gen;
    let delivered = false;
    let gone = false;
    const timeoutSeconds = this.src.opts.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    const onEvent = (type: string, obj: unknown): void => {
      if (gen !== this.#gen) return;
      const o = (obj ?? {}) as { metadata?: { resourceVersion?: unknown }; code?: unknown; message?: unknown };
      switch (type) {
        case 'ADDED':
        case 'MODIFIED':
          if (this.#put(this.objects, obj)) this.src.changed();
          break;
        case 'DELETED': {
          const m = (o as { metadata?: { name?: unknown; namespace?: unknown } }).metadata;
          if (m && typeof m.name === 'string') {
            if (this.objects.delete(`${typeof m.namespace === 'string' ? m.namespace : ''}/${m.name}`)) this.src.changed();
          }
          break;
        }
        case 'BOOKMARK':
          break;
        case 'ERROR':
          // A Status object. 410: our resourceVersion is older than the server keeps; only a list recovers.
          if (o.code === 410) gone = true;
          else log.warn('watch error event', { kind: this.kind.kind, code: o.code, message: o.message });
          this.#controller?.abort();
          return;
        default:
          return;
      }
      delivered = true;
      const rv = o.metadata?.resourceVersion;
      if (typeof rv === 'string' && rv) this.#rv = rv;
    };
    const onDone = (err: unknown): void => {
      if (gen !== this.#gen || this.#stopped) return;
      this.#controller = undefined;
      if (gone || statusOf(err) === 410) {
        log.info('resourceVersion expired; relisting', { kind: this.kind.kind });
        this.#rv = '';
        this.#schedule(0);
      } else if (statusOf(err) === 404) {
        // The CRD went away under an open watch: relist, which notices the 404 and clears the kind.
        this.#rv = '';
        this.#schedule(0);
      } else if (delivered && !err) {
        // A normal end (server timeout, apiserver restart): continue from where we are.
        this.#backoff.reset();
        this.#schedule(0);
      } else {
        const delay = this.#backoff.next();
        if (err) log.warn('watch failed; retrying', { kind: this.kind.kind, error: errorMessage(err), retryMs: delay });
        this.#schedule(delay);
      }
    };
    try {
      const ctl = await this.src.watch.watch(
        this.path,
        { resourceVersion: this.#rv, allowWatchBookmarks: true, timeoutSeconds },
        onEvent,
        onDone,
      );
      if (gen !== this.#gen) ctl.abort(); // stopped (or superseded) while connecting
      else this.#controller = ctl;
    } catch (e) {
      onDone(e);
    }
  }
}

export class KubeSource implements ConfigSource {
  readonly #kc: KubeConfig;
  readonly #kinds: readonly WatchedKind[];
  readonly #debounceMs: number;
  readonly #watchers: KindWatcher[] = [];
  #onChange: ((objects: readonly KubeObject[], origin: string) => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ready = false;
  #stopped = false;
  readonly #opts: KubeSourceOptions;

  constructor(o: KubeSourceOptions = {}) {
    this.#opts = o;
    if (o.kubeConfig) {
      this.#kc = o.kubeConfig;
    } else {
      this.#kc = new KubeConfig();
      this.#kc.loadFromDefault();
    }
    this.#kinds = o.kinds ?? WATCHED_KINDS;
    this.#debounceMs = o.debounceMs ?? 100;
  }

  get origin(): string { return `kubernetes:${this.#kc.getCurrentCluster()?.server ?? '?'}`; }

  /**
   * Lists every kind (a missing CRD does not block; a failing API server does, until it answers: wrap in a
   * timeout if needed), reports the complete set once, then keeps watching.
   */
  async start(onChange: (objects: readonly KubeObject[], origin: string) => void): Promise<void> {
    if (this.#onChange) throw new MeshError('AMBIT_BUG', 'KubeSource already started');
    this.#onChange = onChange;
    const shared = {
      kc: this.#kc,
      watch: new Watch(this.#kc),
      opts: {
        debounceMs: this.#debounceMs,
        backoff: this.#opts.backoff ?? {},
        missingKindRetryMs: this.#opts.missingKindRetryMs ?? 30_000,
        pageSize: this.#opts.pageSize ?? 500,
        maxListBytes: this.#opts.maxListBytes ?? 64 * 1024 * 1024,
        maxObjectsPerKind: this.#opts.maxObjectsPerKind ?? 200_000,
        watchTimeoutSeconds: this.#opts.watchTimeoutSeconds,
      },
      changed: () => this.#changed(),
    };
    for (const k of this.#kinds) this.#watchers.push(new KindWatcher(k, shared));
    await Promise.all(this.#watchers.map((w) => w.start()));
    if (this.#stopped) return;
    this.#ready = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#emit();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#ready = false;
    clearTimeout(this.#timer);
    for (const w of this.#watchers) w.stop();
  }

  /** resourceVersion each kind would resume its watch from (diagnostics and tests). */
  resourceVersions(): Record<string, string> {
    return Object.fromEntries(this.#watchers.map((w) => [w.kind.kind, w.resourceVersion]));
  }

  #changed(): void {
    // Before the first report, start() emits once all kinds are listed; a partial set must never escape.
    if (!this.#ready || this.#timer) return;
    // Fixed window, not a sliding one: a constant trickle of changes must not postpone reports forever.
    this.#timer = setTimeout(() => { this.#timer = undefined; this.#emit(); }, this.#debounceMs);
  }

  #emit(): void {
    if (!this.#ready || !this.#onChange) return;
    const out: KubeObject[] = [];
    for (const w of this.#watchers) out.push(...w.objects.values());
    this.#onChange(out, this.origin);
  }
}
