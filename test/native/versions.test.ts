/**
 * The addon binds to Node's own nghttp2 and OpenSSL and checks their versions when it loads
 * (native/src/versions.c): an older Node must fail the load with a message naming what is
 * needed, never crash at the engine's first call into a function that Node does not export.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { nativeAvailable, nativeVersions, nativeVersionsCheck } from '../../src/native/index.js';

const built = nativeAvailable() ? test : test.skip;

function num(v: string): number[] {
  return v.split('.').map(Number);
}

function atLeast(have: string, want: string): boolean {
  const a = num(have), b = num(want);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

built('the addon reports the nghttp2 and OpenSSL it bound to: Node\'s own, and at least what it needs', (t) => {
  const v = nativeVersions();
  t.is(v.nghttp2, process.versions['nghttp2'] ?? 'none');
  t.true(v.openssl.includes(process.versions.openssl.replace(/\+.*$/, '')), `${v.openssl} vs ${process.versions.openssl}`);
  t.true(atLeast(v.nghttp2, v.nghttp2Min), `${v.nghttp2} >= ${v.nghttp2Min}`);
  t.true(atLeast(process.versions.openssl.replace(/\+.*$/, ''), v.opensslMin));
});

built('the load check refuses an old nghttp2 or OpenSSL, naming the version needed', (t) => {
  const { nghttp2Min, opensslMin } = nativeVersions();
  t.is(nativeVersionsCheck(0x013d00, 0x30000000), null);
  t.is(nativeVersionsCheck(0x020000, 0x30500010), null);
  const oldNg = nativeVersionsCheck(0x013c00, 0x30000000);
  t.truthy(oldNg);
  t.regex(oldNg ?? '', /nghttp2 is 1\.60\.0/);
  t.true((oldNg ?? '').includes(`nghttp2 >= ${nghttp2Min}`));
  const oldSsl = nativeVersionsCheck(0x013d00, 0x1010117f);
  t.regex(oldSsl ?? '', /OpenSSL is 1\.1\.1/);
  t.true((oldSsl ?? '').includes(`OpenSSL >= ${opensslMin}`));
});

test('package.json engines names the Node the load check asks for', (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { engines: { node: string } };
  const src = readFileSync(new URL('../../native/src/versions.c', import.meta.url), 'utf8');
  const node = /#define NODE_MIN_TEXT "([\d.]+)"/.exec(src)?.[1];
  t.truthy(node);
  t.is(pkg.engines.node, `>=${node}`);
});
