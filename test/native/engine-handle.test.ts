/**
 * What JavaScript holds of the engine (native/src/engine_js.c): type-tagged externals, and an
 * engine handle that outlives the engine. Misuse must throw a coded error, never reach freed
 * memory or read one kind of object as another (the sanitizer run, `npm run sanitize`, turns any
 * such read into a failure). Driven at the addon's own level, below the Engine wrapper, which
 * would refuse most of these calls before they reach C.
 */
import test from 'ava';
import { addon, nativeAvailable } from '../../src/native/addon.js';
import { Engine, unixSocketPair } from '../../src/native/index.js';
import { engineOptions } from '../../src/hbone/index.js';
import { makeTestPki } from '../helpers/pki.js';

const built = nativeAvailable() ? test : test.skip;

interface Raw {
  engineCreate(cb: object, o: object): object;
  engineTls(chain: string, key: string, roots: string): object;
  engineStats(e: object): { flows: number };
  engineSource(e: object, netns: string, o: object): number;
  engineCloseFlow(e: object, id: number, reason: string): void;
  engineLink(): object;
  engineLinkState(link: object): { state: number };
  engineOpen(e: object, sourceId: number, fd: number, plan: object, link: object): number;
  engineDestroy(e: object): void;
}

const callbacks = { outbound: () => null, inbound: () => 500, verify: () => '', context: () => null, event: () => undefined };

function ticks(n = 5): Promise<void> {
  return (async () => { for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r)); })();
}

built('a destroyed engine\'s handle throws AMBIT_ENGINE_CLOSED at every call, also after its memory was freed and reused', async (t) => {
  const raw = addon() as unknown as Raw;
  const e = raw.engineCreate(callbacks, engineOptions());
  t.is(raw.engineStats(e).flows, 0);
  raw.engineDestroy(e);
  // the engine is freed once its uv handle closes (next loop turn); then the heap is reused
  await ticks(10);
  const scribble = Array.from({ length: 200 }, () => Buffer.allocUnsafeSlow(66_000).fill(0xa5));
  t.throws(() => raw.engineStats(e), { code: 'AMBIT_ENGINE_CLOSED', message: /engineStats: the engine was destroyed/ });
  t.throws(() => raw.engineCloseFlow(e, 1, 'x'), { code: 'AMBIT_ENGINE_CLOSED' });
  t.throws(() => raw.engineSource(e, '/proc/self/ns/net', { mark: 0 }), { code: 'AMBIT_ENGINE_CLOSED' });
  const [a, b] = unixSocketPair();
  t.throws(() => raw.engineOpen(e, 1, a, {}, raw.engineLink()), { code: 'AMBIT_ENGINE_CLOSED' });
  addon().closeFd(b);
  t.notThrows(() => { raw.engineDestroy(e); }, 'destroy twice is a no-op');
  t.is(scribble.length, 200);
});

built('an object of another kind is refused as an engine, a link or a TLS context (TypeError), never read as one', async (t) => {
  const raw = addon() as unknown as Raw;
  const pki = makeTestPki({ trustDomain: 'cluster.local' });
  const cert = await pki.issue(pki.id('ns', 'sa'));
  const e = raw.engineCreate(callbacks, engineOptions());
  t.teardown(() => { raw.engineDestroy(e); });
  const tls = raw.engineTls(cert.chainPem.join(''), cert.keyPem, cert.rootsPem);
  const link = raw.engineLink();
  for (const wrong of [tls, link, {}, Buffer.alloc(64)]) {
    t.throws(() => raw.engineStats(wrong), { code: 'ERR_INVALID_ARG_VALUE', message: /must be an engine/ });
    t.throws(() => { raw.engineDestroy(wrong); }, { code: 'ERR_INVALID_ARG_VALUE' });
  }
  t.throws(() => raw.engineLinkState(e), { code: 'ERR_INVALID_ARG_VALUE', message: /must be a link/ });
  t.throws(() => raw.engineLinkState(tls), { code: 'ERR_INVALID_ARG_VALUE', message: /must be a link/ });
  t.is(raw.engineLinkState(link).state, 0);
  // a plan whose ctx is not a TLS context is not an HBONE plan
  const src = raw.engineSource(e, '/proc/self/ns/net', { mark: 0 });
  const [a, b] = unixSocketPair();
  t.teardown(() => { try { addon().closeFd(b); } catch { /* closed */ } });
  const plan = { t: 2, ctx: link, key: 'k', tag: 't', ip: '127.0.0.1', port: 1, authority: 'x:1', headers: '' };
  t.throws(() => raw.engineOpen(e, src, a, plan, link), { code: 'ERR_INVALID_ARG_VALUE', message: /must be an HBONE plan/ });
  t.throws(() => raw.engineOpen(e, src, a, { ...plan, ctx: tls }, tls), { code: 'ERR_INVALID_ARG_VALUE', message: /must be a link/ });
});

built('Engine: open after destroy throws a MeshError AMBIT_ENGINE_CLOSED and closes the fd it was given', (t) => {
  const engine = new Engine(callbacks, engineOptions());
  engine.destroy();
  const [a, b] = unixSocketPair();
  t.teardown(() => { addon().closeFd(b); });
  const err = t.throws(() => engine.open(1, a, { t: 2 } as never, engine.link()));
  t.is((err as { code?: string }).code, 'AMBIT_ENGINE_CLOSED');
  t.is(err?.name, 'MeshError');
  t.throws(() => { addon().closeFd(a); }, { code: 'EBADF' }, 'the fd was closed');
});
