/**
 * An in-test Kubernetes API server speaking the real protocol for what the control plane and the
 * CLI write and read: JSON objects under /api/v1 and /apis/<group>/<version>, namespaced or not;
 * GET of an object or a collection (labelSelector with equality terms, limit/continue pages,
 * list resourceVersion); watch streams (?watch=true, from a resourceVersion, newline-delimited
 * events, 410 Gone for a version older than the log keeps); POST create (409 AlreadyExists);
 * PUT update (409 Conflict on a stale metadata.resourceVersion); PATCH with
 * application/merge-patch+json (RFC 7386) or application/apply-patch+yaml (server-side apply;
 * fieldManager required; 201 when it created); DELETE, with the garbage collector's background
 * cascade along ownerReferences; the status subresource (/status: only status changes there, and
 * the main resource never changes status); uid, creationTimestamp, generation (bumped when spec
 * changes) and a ClusterIP for Services set by the server; Status bodies for every failure.
 *
 * The pods' port-forward too (GET .../pods/NAME/portforward?ports=P upgraded to a WebSocket with
 * the kubelet streaming server's subprotocol v4.channel.k8s.io: a channel byte before every
 * message, data on channel 0 and errors on 1, each channel's first message the port number in
 * two little-endian bytes, a failed dial reported on the error channel); `forwardPort` says where
 * a pod's port leads (a port on 127.0.0.1, as the kubelet dials the port in the pod's namespace).
 *
 * Not modelled: field ownership of server-side apply (an apply merges maps and replaces lists),
 * strategic merge patch, admission, RBAC (an optional bearer token is checked).
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { randomUUID } from 'node:crypto';

export type Obj = Record<string, unknown> & { metadata?: Meta };
export interface Meta {
  name?: string; namespace?: string; uid?: string; resourceVersion?: string; generation?: number;
  labels?: Record<string, string>; ownerReferences?: Array<{ uid?: string }>; [k: string]: unknown;
}

export interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
  contentType: string | undefined;
  body: Obj | undefined;
  status: number;
}

interface Parsed { prefix: string; namespace?: string; plural: string; name?: string; sub?: string }

/** `/api/v1[/namespaces/ns]/plural[/name[/status]]`, `/apis/g/v[/namespaces/ns]/plural[/name[/status]]`. */
function parsePath(p: string): Parsed | undefined {
  const segs = p.split('/').filter(Boolean).map(decodeURIComponent);
  let prefix: string;
  if (segs[0] === 'api' && segs.length >= 2) { prefix = `/api/${segs[1]}`; segs.splice(0, 2); }
  else if (segs[0] === 'apis' && segs.length >= 3) { prefix = `/apis/${segs[1]}/${segs[2]}`; segs.splice(0, 3); }
  else return undefined;
  let namespace: string | undefined;
  // /namespaces/<ns>/<plural>...: a namespaced resource; /namespaces[/<name>]: the Namespace kind
  if ((segs[0] as string | undefined) === 'namespaces' && segs.length >= 3) { namespace = segs[1]; segs.splice(0, 2); }
  const [plural, name, sub] = segs;
  if (!plural || segs.length > 3) return undefined;
  return { prefix, ...(namespace !== undefined ? { namespace } : {}), plural, ...(name ? { name } : {}), ...(sub ? { sub } : {}) };
}

const keyOf = (prefix: string, plural: string, namespace: string | undefined, name: string): string =>
  `${prefix}/${namespace ? `namespaces/${namespace}/` : ''}${plural}/${name}`;

function mergePatch(target: unknown, patch: unknown): unknown {
  if (!patch || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = target && typeof target === 'object' && !Array.isArray(target) ? { ...target as Record<string, unknown> } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

interface Stored { key: string; prefix: string; plural: string; namespace: string | undefined; obj: Obj }
interface Event { rv: number; type: 'ADDED' | 'MODIFIED' | 'DELETED'; s: Stored }

export class FakeKubeApi {
  readonly server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { body += c; });
    req.on('end', () => this.#handle(req, body, res));
  });
  readonly seen: Seen[] = [];
  /** bearer token required of every request, when set */
  token: string | undefined;
  readonly #objects = new Map<string, Stored>();
  readonly #events: Event[] = [];
  /** the oldest resourceVersion a watch may start from (older: 410 Gone) */
  compactedRv = 0;
  #rv = 100;
  #ip = 10;
  readonly #watches = new Set<{ match: (s: Stored) => boolean; res: http.ServerResponse }>();
  readonly #failures: Array<{ method: string; path: RegExp; code: number; times: number; message?: string }> = [];
  readonly #gates: Array<{ path: string; count: number; held: Array<() => void> }> = [];
  #waiters: Array<{ pred: (s: Seen) => boolean; from: number; resolve: (s: Seen) => void }> = [];
  /** `ns/pod:port` -> the 127.0.0.1 port a port-forward dials */
  readonly #forwards = new Map<string, number>();
  readonly #wss = new WebSocketServer({ noServer: true, handleProtocols: (p) => (p.has('v4.channel.k8s.io') ? 'v4.channel.k8s.io' : false) });

  constructor() {
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.#upgrade(req, socket, head));
  }

  /** A port-forward to `namespace/pod`'s `port` dials 127.0.0.1:`target` (the pod must exist; a port not given here fails the dial). */
  forwardPort(namespace: string, pod: string, port: number, target: number): void { this.#forwards.set(`${namespace}/${pod}:${port}`, target); }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const w of this.#watches) w.res.destroy();
    for (const c of this.#wss.clients) c.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** The next `times` requests of `method` to a path matching `path` are answered `code` (with `message`, as the API server words it). */
  fail(method: string, path: RegExp, code: number, times = 1, message?: string): void { this.#failures.push({ method, path, code, times, ...(message !== undefined ? { message } : {}) }); }

  /** POSTs to the collection `path` are held until `count` of them arrived, then served in order (a race made certain). */
  gateCreates(path: string, count: number): void { this.#gates.push({ path, count, held: [] }); }

  /** Stored object at an object path (`/api/v1/namespaces/ns/secrets/x`), or undefined. */
  get(path: string): Obj | undefined { return this.#objects.get(path)?.obj; }

  /** Objects of a collection path (`/apis/apps/v1/deployments` cluster-wide, or below a namespace). */
  list(collection: string): Obj[] {
    const p = parsePath(collection);
    if (!p) return [];
    return [...this.#objects.values()].filter((s) => s.prefix === p.prefix && s.plural === p.plural && (p.namespace === undefined || s.namespace === p.namespace)).map((s) => s.obj);
  }

  /** Creates (or replaces) an object as a client would, setting server fields. Returns it. */
  put(collection: string, obj: Obj): Obj {
    const p = parsePath(collection)!;
    const name = obj.metadata!.name!;
    const key = keyOf(p.prefix, p.plural, p.namespace, name);
    const old = this.#objects.get(key);
    return this.#store(key, p, this.#serverFields(obj, old?.obj, p), old ? 'MODIFIED' : 'ADDED').obj;
  }

  /** Deletes as a client would (with the garbage collector's cascade). */
  remove(path: string): boolean { return this.#delete(path); }

  /** Next request (from `mark` on) matching `pred`. */
  request(pred: (s: Seen) => boolean, mark = 0): Promise<Seen> {
    const hit = this.seen.slice(mark).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve) => this.#waiters.push({ pred, from: mark, resolve }));
  }

  writes(): Seen[] { return this.seen.filter((s) => s.method !== 'GET'); }

  #upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const seen: Seen = { method: 'GET', path: url.pathname, query: url.searchParams, contentType: undefined, body: undefined, status: 0 };
    const record = (code: number): void => {
      seen.status = code;
      this.seen.push(seen);
      const idx = this.seen.length - 1;
      this.#waiters = this.#waiters.filter((w) => (idx >= w.from && w.pred(seen) ? (w.resolve(seen), false) : true));
    };
    const refuse = (code: number, text: string, reason: string, message: string): void => {
      record(code);
      const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason, message, code });
      socket.end(`HTTP/1.1 ${code} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    };
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) return refuse(401, 'Unauthorized', 'Unauthorized', 'Unauthorized');
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/.exec(url.pathname);
    if (!m) return refuse(404, 'Not Found', 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const [ns, pod] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)];
    if (!this.get(`/api/v1/namespaces/${ns}/pods/${pod}`)) return refuse(404, 'Not Found', 'NotFound', `pods "${pod}" not found`);
    const port = Number(url.searchParams.get('ports'));
    if (!Number.isInteger(port) || port < 1 || port > 65535) return refuse(400, 'Bad Request', 'BadRequest', `invalid port ${JSON.stringify(url.searchParams.get('ports'))}`);
    record(101);
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      const withChannel = (ch: number, d: Buffer): Buffer => Buffer.concat([Buffer.from([ch]), d]);
      const portBytes = Buffer.from([port & 0xff, port >> 8]);
      ws.send(withChannel(0, portBytes));
      ws.send(withChannel(1, portBytes));
      const fail = (why: string): void => { ws.send(withChannel(1, Buffer.from(`error forwarding port ${port} to pod ${pod}: ${why}`))); ws.close(); };
      const target = this.#forwards.get(`${ns}/${pod}:${port}`);
      if (target === undefined) { fail(`dial tcp4 127.0.0.1:${port}: connect: connection refused`); return; }
      const conn = net.connect(target, '127.0.0.1');
      conn.on('data', (d: Buffer) => ws.send(withChannel(0, d)));
      conn.on('end', () => ws.close());
      conn.on('error', (e) => fail(e.message));
      ws.on('message', (d: Buffer) => { if (d[0] === 0) conn.write(d.subarray(1)); });
      ws.on('close', () => conn.destroy());
    });
  }

  #serverFields(obj: Obj, old: Obj | undefined, p: Parsed): Obj {
    const md = { ...(obj.metadata ?? {}) };
    const rv = String(++this.#rv);
    const specChanged = JSON.stringify(obj.spec ?? null) !== JSON.stringify(old?.spec ?? null);
    const out: Obj = {
      ...obj,
      metadata: {
        ...md,
        ...(p.namespace ? { namespace: p.namespace } : {}),
        uid: old?.metadata?.uid ?? randomUUID(),
        resourceVersion: rv,
        creationTimestamp: (old?.metadata?.creationTimestamp as string | undefined) ?? new Date().toISOString(),
        generation: old ? (old.metadata?.generation ?? 1) + (specChanged ? 1 : 0) : 1,
      },
    };
    if (p.plural === 'services' && p.prefix === '/api/v1') {
      const spec = { ...(out.spec as Record<string, unknown> | undefined) };
      const oldIp = (old?.spec as { clusterIP?: string } | undefined)?.clusterIP;
      spec.clusterIP ??= oldIp ?? `10.96.0.${++this.#ip}`;
      spec.clusterIPs = [spec.clusterIP];
      out.spec = spec;
    }
    return out;
  }

  #store(key: string, p: Parsed, obj: Obj, type: 'ADDED' | 'MODIFIED'): Stored {
    const s: Stored = { key, prefix: p.prefix, plural: p.plural, namespace: p.namespace, obj };
    this.#objects.set(key, s);
    this.#emit({ rv: this.#rv, type, s });
    return s;
  }

  #emit(e: Event): void {
    this.#events.push(e);
    if (this.#events.length > 10_000) this.#events.shift();
    for (const w of this.#watches) if (w.match(e.s)) w.res.write(JSON.stringify({ type: e.type, object: e.s.obj }) + '\n');
  }

  #delete(key: string): boolean {
    const s = this.#objects.get(key);
    if (!s) return false;
    this.#objects.delete(key);
    ++this.#rv;
    this.#emit({ rv: this.#rv, type: 'DELETED', s: { ...s, obj: { ...s.obj, metadata: { ...s.obj.metadata, resourceVersion: String(this.#rv) } } } });
    // the garbage collector, background propagation: dependents go after their owner
    const uid = s.obj.metadata?.uid;
    for (const d of [...this.#objects.values()]) {
      if (d.obj.metadata?.ownerReferences?.some((r) => r.uid === uid)) this.#delete(d.key);
    }
    return true;
  }

  #handle(req: http.IncomingMessage, raw: string, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    let body: Obj | undefined;
    try { body = raw ? JSON.parse(raw) as Obj : undefined; } catch { body = undefined; }
    const seen: Seen = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, contentType: req.headers['content-type'], body, status: 0 };
    const answer = (code: number, obj: unknown, stream = false): void => {
      seen.status = code;
      this.seen.push(seen);
      const idx = this.seen.length - 1;
      this.#waiters = this.#waiters.filter((w) => (idx >= w.from && w.pred(seen) ? (w.resolve(seen), false) : true));
      if (stream) return;
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const status = (code: number, reason: string, message: string): void =>
      answer(code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason, message, code });

    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) return status(401, 'Unauthorized', 'Unauthorized');
    const f = this.#failures.find((x) => x.method === seen.method && x.path.test(url.pathname));
    if (f) {
      if (--f.times <= 0) this.#failures.splice(this.#failures.indexOf(f), 1);
      return status(f.code, f.code === 409 ? 'Conflict' : f.code >= 500 ? 'InternalError' : 'Invalid', f.message ?? `injected failure ${f.code}`);
    }
    const p = parsePath(url.pathname);
    if (!p) return status(404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    if (p.sub !== undefined && p.sub !== 'status') return status(404, 'NotFound', `subresource ${p.sub} not served`);
    const key = p.name ? keyOf(p.prefix, p.plural, p.namespace, p.name) : undefined;
    const cur = key ? this.#objects.get(key) : undefined;
    const notFound = (): void => status(404, 'NotFound', `${p.plural} "${p.name ?? ''}" not found`);

    switch (seen.method) {
      case 'GET': {
        if (cur) return answer(200, cur.obj);
        if (key) return notFound();
        const selector = (url.searchParams.get('labelSelector') ?? '').split(',').filter(Boolean).map((t) => t.split('=') as [string, string]);
        const match = (s: Stored): boolean => s.prefix === p.prefix && s.plural === p.plural && (p.namespace === undefined || s.namespace === p.namespace)
          && selector.every(([k, v]) => s.obj.metadata?.labels?.[k] === v);
        if (url.searchParams.get('watch') === 'true') {
          const from = Number(url.searchParams.get('resourceVersion') ?? '0');
          if (from && from < this.compactedRv) return status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`);
          answer(200, undefined, true);
          res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
          res.flushHeaders();
          for (const e of this.#events) if (e.rv > from && match(e.s)) res.write(JSON.stringify({ type: e.type, object: e.s.obj }) + '\n');
          const w = { match, res };
          this.#watches.add(w);
          res.on('close', () => this.#watches.delete(w));
          return;
        }
        const all = [...this.#objects.values()].filter(match);
        const limit = Number(url.searchParams.get('limit') ?? '0') || all.length;
        const start = Number(url.searchParams.get('continue') ?? '0');
        const next = start + limit < all.length ? String(start + limit) : undefined;
        return answer(200, {
          kind: 'List', apiVersion: 'v1', metadata: { resourceVersion: String(this.#rv), ...(next ? { continue: next } : {}) },
          items: all.slice(start, start + limit).map((s) => { const { apiVersion: _a, kind: _k, ...rest } = s.obj; return rest; }),
        });
      }
      case 'POST': {
        if (key || !body) return status(405, 'MethodNotAllowed', 'POST to a collection with a body');
        const name = body.metadata?.name;
        if (!name) return status(422, 'Invalid', 'metadata.name: Required value');
        const gate = this.#gates.find((g) => g.path === url.pathname);
        const go = (): void => {
          const k = keyOf(p.prefix, p.plural, p.namespace, name);
          if (this.#objects.has(k)) return status(409, 'AlreadyExists', `${p.plural} "${name}" already exists`);
          answer(201, this.#store(k, p, this.#serverFields({ ...body!, status: undefined }, undefined, p), 'ADDED').obj);
        };
        if (!gate) return go();
        gate.held.push(go);
        if (gate.held.length >= gate.count) { this.#gates.splice(this.#gates.indexOf(gate), 1); for (const h of gate.held) h(); }
        return;
      }
      case 'PUT': {
        if (!cur || !key) return notFound();
        if (!body) return status(400, 'BadRequest', 'no body');
        const rv = body.metadata?.resourceVersion;
        if (rv !== undefined && rv !== cur.obj.metadata?.resourceVersion) return status(409, 'Conflict', 'the object has been modified; please apply your changes to the latest version and try again');
        const next = p.sub === 'status' ? { ...cur.obj, status: body.status } : { ...body, status: cur.obj.status };
        return answer(200, this.#store(key, p, this.#serverFields(next, cur.obj, p), 'MODIFIED').obj);
      }
      case 'PATCH': {
        if (!key) return status(405, 'MethodNotAllowed', 'PATCH of a collection');
        if (!body) return status(400, 'BadRequest', 'no body');
        const ct = req.headers['content-type'];
        if (ct === 'application/apply-patch+yaml') {
          if (!url.searchParams.get('fieldManager')) return status(400, 'BadRequest', 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch');
          if (p.sub === 'status') {
            if (!cur) return notFound();
            return answer(200, this.#store(key, p, this.#serverFields({ ...cur.obj, status: body.status }, cur.obj, p), 'MODIFIED').obj);
          }
          // maps merge, lists are replaced (one field manager's view of server-side apply)
          const merged = mergePatch(cur?.obj ?? {}, { ...body, status: null }) as Obj;
          const next = { ...merged, ...(cur?.obj.status !== undefined ? { status: cur.obj.status } : {}) };
          if (cur) return answer(200, this.#store(key, p, this.#serverFields(next, cur.obj, p), 'MODIFIED').obj);
          return answer(201, this.#store(key, p, this.#serverFields(next, undefined, p), 'ADDED').obj);
        }
        if (ct !== 'application/merge-patch+json') {
          return status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`);
        }
        if (!cur) return notFound();
        const patched = mergePatch(cur.obj, body) as Obj;
        const next = p.sub === 'status' ? { ...cur.obj, status: patched.status } : { ...patched, status: cur.obj.status };
        return answer(200, this.#store(key, p, this.#serverFields(next, cur.obj, p), 'MODIFIED').obj);
      }
      case 'DELETE': {
        if (!key || !cur) return notFound();
        this.#delete(key);
        return answer(200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name: p.name, kind: p.plural, uid: cur.obj.metadata?.uid } });
      }
      default:
        return status(405, 'MethodNotAllowed', `${seen.method} not served`);
    }
  }
}
