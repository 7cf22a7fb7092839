/**
 * KubeSource against the real @kubernetes/client-node talking to an in-test API server that speaks the
 * list/watch protocol (paged lists with resourceVersion, chunked newline-delimited watch events, bookmarks,
 * 410 Gone, 404 for a CRD that is not installed).
 */
import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeSource } from '../../src/control/config/kube-source.js';
import { WATCHED_KINDS } from '../../src/control/config/types.js';
import type { KubeObject } from '../../src/control/config/types.js';

interface Seen { path: string; query: URLSearchParams; watch: boolean; auth: string | undefined }

interface Resource { items: Map<string, Record<string, unknown>>; rv: number; missing: boolean }

/** Minimal API server: list (with pages of `limit`) and watch for a fixed set of collection paths. */
class FakeApiServer {
  readonly server = http.createServer((req, res) => this.#handle(req, res));
  readonly seen: Seen[] = [];
  readonly resources = new Map<string, Resource>();
  readonly #watches = new Map<string, Set<http.ServerResponse>>();
  /** answer the next watch of a path with this HTTP status instead of a stream */
  readonly failNextWatch = new Map<string, number>();
  #waiters: { from: number; pred: (s: Seen) => boolean; resolve: (s: Seen) => void }[] = [];

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }
  async close(): Promise<void> {
    for (const set of this.#watches.values()) for (const r of set) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  add(path: string, missing = false): Resource {
    const r: Resource = { items: new Map(), rv: 10, missing };
    this.resources.set(path, r);
    return r;
  }

  /** Next request (after `mark`) matching `pred`. */
  request(pred: (s: Seen) => boolean, mark = this.seen.length): Promise<Seen> {
    const hit = this.seen.slice(mark).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve) => this.#waiters.push({ from: mark, pred, resolve }));
  }

  send(path: string, type: string, object: unknown): void {
    for (const res of this.#watches.get(path) ?? []) res.write(JSON.stringify({ type, object }) + '\n');
  }
  /** one raw line on every open watch of `path` (for junk the encoder would not produce) */
  sendRaw(path: string, line: string): void {
    for (const res of this.#watches.get(path) ?? []) res.write(line + '\n');
  }
  closeWatches(path: string): void {
    for (const res of this.#watches.get(path) ?? []) res.end();
    this.#watches.get(path)?.clear();
  }
  /** resolves when every open watch of `path` has been closed (by either side) */
  watchesClosed(path: string): Promise<void> {
    const open = [...(this.#watches.get(path) ?? [])].filter((r) => !r.closed);
    return Promise.all(open.map((r) => new Promise<void>((resolve) => r.once('close', () => resolve())))).then(() => undefined);
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const s: Seen = { path: url.pathname, query: url.searchParams, watch: url.searchParams.get('watch') === 'true', auth: req.headers.authorization };
    this.seen.push(s);
    const idx = this.seen.length - 1;
    const r = this.resources.get(url.pathname);
    const status = (code: number, reason: string): void => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, code }));
    };
    if (!r || r.missing) status(404, 'NotFound');
    else if (s.watch) {
      const fail = this.failNextWatch.get(url.pathname);
      if (fail) { this.failNextWatch.delete(url.pathname); status(fail, 'Expired'); }
      else {
        res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
        res.flushHeaders();
        const set = this.#watches.get(url.pathname) ?? new Set();
        set.add(res);
        this.#watches.set(url.pathname, set);
        res.on('close', () => set.delete(res));
      }
    } else {
      // Paged list: `continue` is the index to start from.
      const all = [...r.items.values()];
      const limit = Number(url.searchParams.get('limit') ?? all.length) || all.length;
      const start = Number(url.searchParams.get('continue') ?? '0');
      const page = all.slice(start, start + limit);
      const next = start + limit < all.length ? String(start + limit) : undefined;
      res.writeHead(200, { 'content-type': 'application/json' });
      // List items carry no apiVersion/kind, as from a real API server.
      res.end(JSON.stringify({ kind: 'List', apiVersion: 'v1', metadata: { resourceVersion: String(r.rv), ...(next ? { continue: next } : {}) },
        items: page.map(({ apiVersion: _a, kind: _k, ...rest }) => rest) }));
    }
    this.#waiters = this.#waiters.filter((w) => (idx >= w.from && w.pred(s) ? (w.resolve(s), false) : true));
  }
}

class Recorder {
  sets: (readonly KubeObject[])[] = [];
  #waiters: { pred: (s: readonly KubeObject[]) => boolean; resolve: (s: readonly KubeObject[]) => void }[] = [];
  onChange = (objs: readonly KubeObject[]): void => {
    this.sets.push(objs);
    this.#waiters = this.#waiters.filter((w) => (w.pred(objs) ? (w.resolve(objs), false) : true));
  };
  /** the latest set if it matches, else the next one that does */
  until(pred: (s: readonly KubeObject[]) => boolean): Promise<readonly KubeObject[]> {
    const last = this.sets.at(-1);
    if (last && pred(last)) return Promise.resolve(last);
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }
}

const SVC = '/api/v1/services';
const ROUTES = '/apis/gateway.networking.k8s.io/v1/httproutes';
const NS = '/api/v1/namespaces';

function svc(ns: string, name: string, rv: number, port = 80): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns, resourceVersion: String(rv), managedFields: [{ manager: 'kubectl' }] }, spec: { ports: [{ port }] } };
}
const names = (s: readonly KubeObject[]): string[] => s.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort();

async function setup(t: import('ava').ExecutionContext) {
  const api = new FakeApiServer();
  const port = await api.listen();
  t.teardown(() => api.close());
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'test-token' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
    currentContext: 'c',
  });
  const kinds = WATCHED_KINDS.filter((k) => ['Namespace', 'Service', 'HTTPRoute'].includes(k.kind));
  const rec = new Recorder();
  const src = new KubeSource({ kubeConfig: kc, kinds, debounceMs: 5, backoff: { initialMs: 5, maxMs: 50 }, missingKindRetryMs: 30, pageSize: 2, watchTimeoutSeconds: 300 });
  t.teardown(() => src.stop());
  return { api, rec, src };
}

test('list + watch: paged initial list, events, bookmarks, reconnect from the last resourceVersion, 410 relists, missing CRD', async (t) => {
  const { api, rec, src } = await setup(t);
  const services = api.add(SVC);
  api.add(NS).items.set('prod', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'prod', resourceVersion: '3' } });
  const routes = api.add(ROUTES, true);
  for (const [i, n] of ['a', 'b', 'c'].entries()) services.items.set(n, svc('prod', n, 5 + i));
  services.rv = 10;

  const svcWatch = api.request((s) => s.path === SVC && s.watch);
  await src.start(rec.onChange);
  // start() reports exactly once, with every kind listed (the 3 services needed two pages) and the CRD kind empty
  t.is(rec.sets.length, 1);
  t.deepEqual(names(rec.sets[0]!), ['Namespace//prod', 'Service/prod/a', 'Service/prod/b', 'Service/prod/c']);
  const first = rec.sets[0]!.find((o) => o.metadata.name === 'a')!;
  t.is(first.apiVersion, 'v1');
  t.is(first.kind, 'Service');
  t.false('managedFields' in first.metadata);
  t.true(api.seen.some((s) => s.path === SVC && s.query.get('continue') === '2'));

  // the watch resumes from the list's resourceVersion, asks for bookmarks and carries the kubeconfig's credentials
  const w1 = await svcWatch;
  t.is(w1.query.get('resourceVersion'), '10');
  t.is(w1.query.get('allowWatchBookmarks'), 'true');
  t.is(w1.auth, 'Bearer test-token');

  api.send(SVC, 'ADDED', svc('prod', 'd', 11));
  api.send(SVC, 'MODIFIED', svc('prod', 'a', 12, 8080));
  api.send(SVC, 'DELETED', svc('prod', 'b', 13));
  const s2 = await rec.until((s) => names(s).includes('Service/prod/d') && !names(s).includes('Service/prod/b'));
  t.deepEqual(names(s2), ['Namespace//prod', 'Service/prod/a', 'Service/prod/c', 'Service/prod/d']);
  t.deepEqual((s2.find((o) => o.metadata.name === 'a')!.spec as { ports: { port: number }[] }).ports[0]!.port, 8080);

  // a bookmark moves the resourceVersion without changing objects; a closed stream resumes from it
  api.send(SVC, 'BOOKMARK', { kind: 'Service', apiVersion: 'v1', metadata: { resourceVersion: '20' } });
  let mark = api.seen.length;
  await new Promise<void>((resolve) => {
    // the bookmark is applied once the client has read it: wait for the source to expose it
    const check = (): void => { if (src.resourceVersions().Service === '20') resolve(); else setImmediate(check); };
    check();
  });
  api.closeWatches(SVC);
  const w2 = await api.request((s) => s.path === SVC && s.watch, mark);
  t.is(w2.query.get('resourceVersion'), '20');
  t.false(api.seen.slice(mark).some((s) => s.path === SVC && !s.watch), 'a closed stream must not trigger a list');

  // ERROR 410 on the stream: the resourceVersion is gone, the client lists again and the list's content replaces the map
  services.items.clear();
  services.items.set('c', svc('prod', 'c', 7));
  services.items.set('e', svc('prod', 'e', 29));
  services.rv = 30;
  mark = api.seen.length;
  api.send(SVC, 'ERROR', { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410 });
  await api.request((s) => s.path === SVC && !s.watch, mark);
  const w3 = await api.request((s) => s.path === SVC && s.watch, mark);
  t.is(w3.query.get('resourceVersion'), '30');
  t.deepEqual(names(await rec.until((s) => names(s).includes('Service/prod/e'))), ['Namespace//prod', 'Service/prod/c', 'Service/prod/e']);

  // HTTP 410 on the watch request itself: relist as well
  services.items.set('f', svc('prod', 'f', 40));
  services.rv = 40;
  api.failNextWatch.set(SVC, 410);
  mark = api.seen.length;
  api.closeWatches(SVC);
  const w4 = await api.request((s) => s.path === SVC && s.watch && s.query.get('resourceVersion') === '40', mark);
  t.truthy(w4);
  t.true(api.seen.slice(mark).some((s) => s.path === SVC && !s.watch));
  await rec.until((s) => names(s).includes('Service/prod/f'));

  // the missing CRD was retried all along; once installed its objects join the set, the others unaffected
  t.true(api.seen.filter((s) => s.path === ROUTES).length >= 1);
  routes.items.set('r1', { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r1', namespace: 'prod', resourceVersion: '50' }, spec: {} });
  routes.rv = 50;
  mark = api.seen.length;
  routes.missing = false;
  const s5 = await rec.until((s) => names(s).includes('HTTPRoute/prod/r1'));
  t.deepEqual(names(s5), ['HTTPRoute/prod/r1', 'Namespace//prod', 'Service/prod/c', 'Service/prod/e', 'Service/prod/f']);
  t.is(s5.find((o) => o.kind === 'HTTPRoute')!.apiVersion, 'gateway.networking.k8s.io/v1');
  const rw = await api.request((s) => s.path === ROUTES && s.watch, mark);
  t.is(rw.query.get('resourceVersion'), '50');

  // the CRD is removed: its objects go, the rest stays
  routes.missing = true;
  api.failNextWatch.set(ROUTES, 404);
  api.closeWatches(ROUTES);
  const s6 = await rec.until((s) => !names(s).includes('HTTPRoute/prod/r1'));
  t.deepEqual(names(s6), ['Namespace//prod', 'Service/prod/c', 'Service/prod/e', 'Service/prod/f']);
});

test('a failing API server does not block start; the source recovers when it answers', async (t) => {
  const { api, rec, src } = await setup(t);
  // no resources registered yet: every list is a 404; then the server starts serving
  await src.start(rec.onChange);
  t.deepEqual(rec.sets, [[]]);
  const services = api.add(SVC);
  services.items.set('a', svc('default', 'a', 5));
  api.add(NS);
  api.add(ROUTES);
  t.deepEqual(names(await rec.until((s) => s.length === 1)), ['Service/default/a']);
});

test('start() waits for kinds whose list fails (500) instead of reporting them empty', async (t) => {
  const { api, rec, src } = await setup(t);
  api.add(NS);
  api.add(ROUTES);
  const services = api.add(SVC);
  services.items.set('a', svc('default', 'a', 5));
  let failures = 3;
  const orig = api.server.listeners('request')[0] as (req: http.IncomingMessage, res: http.ServerResponse) => void;
  api.server.removeAllListeners('request');
  api.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url?.startsWith(`${SVC}?`) && failures > 0) { failures--; res.writeHead(500).end('{}'); return; }
    orig(req, res);
  });
  await src.start(rec.onChange);
  t.is(failures, 0);
  t.is(rec.sets.length, 1);
  t.deepEqual(names(rec.sets[0]!), ['Service/default/a']);
});

test('stop() closes the watches and no report follows', async (t) => {
  const { api, rec, src } = await setup(t);
  api.add(SVC).items.set('a', svc('default', 'a', 5));
  api.add(NS);
  api.add(ROUTES);
  const w = api.request((s) => s.path === SVC && s.watch);
  await src.start(rec.onChange);
  await w;
  const closed = api.watchesClosed(SVC);
  await src.stop();
  await closed;
  const n = rec.sets.length;
  api.send(SVC, 'ADDED', svc('default', 'late', 6));
  t.is(rec.sets.length, n);
});

test('garbage from the API server (partial JSON, wrong shapes, junk watch lines) is survived; good data still applies', async (t) => {
  const { api, rec, src } = await setup(t);
  api.add(NS);
  api.add(ROUTES);
  const services = api.add(SVC);
  services.items.set('a', svc('default', 'a', 5));
  const junkLists = [
    '{"kind":"List","items":[{"metadata":{"na', 'null', '[]', '{"items":"x"}', '{"items":[],"metadata":{}}', '\u0000\u00ff',
    // a usable list whose items are mostly junk: only the one real object may come through
    JSON.stringify({ metadata: { resourceVersion: '7' }, items: [null, 5, 'x', [], { metadata: 'x' }, { metadata: { name: 7 } }, { metadata: { name: 'a', namespace: 'default' }, spec: { ports: [{ port: 80 }] } }] }),
  ];
  const orig = api.server.listeners('request')[0] as (req: http.IncomingMessage, res: http.ServerResponse) => void;
  api.server.removeAllListeners('request');
  api.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const body = req.url?.startsWith(`${SVC}?`) && !req.url.includes('watch=') ? junkLists.shift() : undefined;
    if (body !== undefined) { res.writeHead(200, { 'content-type': 'application/json' }).end(body); return; }
    orig(req, res);
  });
  const watched = api.request((s) => s.path === SVC && s.watch);
  await src.start(rec.onChange);
  t.is(junkLists.length, 0);
  t.deepEqual(names(rec.sets.at(-1)!), ['Service/default/a']);
  await watched;
  for (const line of ['not json', 'null', '{"type":"ADDED","object":null}', '{"type":"ADDED","object":{"metadata":"x"}}', '{"type":"DELETED"}',
    '{"type":"DELETED","object":{"metadata":{"name":{}}}}', '{"type":7,"object":[]}', '{"type":"MODIFIED","object":{"metadata":{"name":"a","namespace":"default","resourceVersion":{}}}}']) {
    api.sendRaw(SVC, line);
  }
  api.send(SVC, 'ADDED', svc('default', 'b', 20));
  t.deepEqual(names(await rec.until((s) => s.length === 2)), ['Service/default/a', 'Service/default/b']);
});

test('a list that never stops paging is cut off and retried, not followed for ever', async (t) => {
  const api = new FakeApiServer();
  const port = await api.listen();
  t.teardown(() => api.close());
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'test-token' }], contexts: [{ name: 'c', cluster: 'fake', user: 'u' }], currentContext: 'c',
  });
  const kinds = WATCHED_KINDS.filter((k) => k.kind === 'Service');
  api.add(SVC).items.set('a', svc('default', 'a', 5));
  // every list page says "there is more"; count the pages of each attempt (an attempt starts without `continue`)
  const attempts: number[] = [];
  let secondAttempt!: () => void;
  const retried = new Promise<void>((resolve) => { secondAttempt = resolve; });
  let endless = true;
  const orig = api.server.listeners('request')[0] as (req: http.IncomingMessage, res: http.ServerResponse) => void;
  api.server.removeAllListeners('request');
  api.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (endless && req.url?.startsWith(`${SVC}?`)) {
      if (!req.url.includes('continue=')) attempts.push(0);
      attempts[attempts.length - 1]!++;
      if (attempts.length === 2) { endless = false; secondAttempt(); }
      else {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ metadata: { resourceVersion: '5', continue: 'again' }, items: [] }));
        return;
      }
    }
    orig(req, res);
  });
  const rec = new Recorder();
  const src = new KubeSource({ kubeConfig: kc, kinds, debounceMs: 5, backoff: { initialMs: 5, maxMs: 5 }, pageSize: 10, maxObjectsPerKind: 50 });
  t.teardown(() => src.stop());
  const started = src.start(rec.onChange);
  await retried;
  // at most 50 / 10 + 1 pages, then the attempt is given up and a new one starts
  t.is(attempts[0], 6);
  await started;
  t.deepEqual(names(rec.sets.at(-1)!), ['Service/default/a']);
});
