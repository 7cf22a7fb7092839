import test from 'ava';
import { backendShares, parseDurationMs, pathHasPrefix, replacePrefix } from '../../../src/model/l7.js';

const durations: [string, number | undefined][] = [
  ['10s', 10_000], ['500ms', 500], ['1m30s', 90_000], ['1h', 3_600_000], ['1.5s', 1500], ['0s', 0], ['0', 0],
  ['250us', 1], ['100ns', 1], ['2m0.5s', 120_500],
  ['', undefined], ['10', undefined], ['s', undefined], ['-1s', undefined], ['10 s', undefined], ['1d', undefined], ['1s ', undefined], ['ms', undefined],
];
for (const [text, want] of durations) {
  test(`parseDurationMs(${JSON.stringify(text)}) = ${want}`, (t) => t.is(parseDurationMs(text), want));
}

// Gateway API PathPrefix is element-wise; VirtualService prefix is a plain string prefix (reference §2.1, §2.2).
const prefixes: [string, string, boolean, boolean][] = [
  ['/abc', '/abc', true, true], ['/abc/', '/abc', true, true], ['/abc/def', '/abc', true, true], ['/abcd', '/abc', true, false],
  ['/abc', '/abc/', true, true], ['/abc/d', '/abc/', true, true], ['/anything', '/', true, true], ['/Abc', '/abc', true, false],
  ['/abcd', '/abc', false, true], ['/foobar', '/foo', false, true], ['/fo', '/foo', false, false],
];
for (const [path, prefix, segmented, want] of prefixes) {
  test(`pathHasPrefix(${path}, ${prefix}, ${segmented ? 'segmented' : 'plain'}) = ${want}`, (t) => t.is(pathHasPrefix(path, prefix, segmented), want));
}
test('pathHasPrefix ignoreCase', (t) => {
  t.true(pathHasPrefix('/API/v1', '/api', false, true));
  t.false(pathHasPrefix('/API/v1', '/api', false, false));
});

// The replacement table of reference §2.1 (URLRewrite ReplacePrefixMatch).
const rewrites: [string, string, string, string][] = [
  ['/foo/bar', '/foo', '/xyz', '/xyz/bar'], ['/foo/bar', '/foo', '', '/bar'], ['/foo', '/foo', '', '/'],
  ['/foo/bar', '/foo/', '/xyz/', '/xyz/bar'], ['/foo/bar', '/foo', '/', '/bar'], ['/abc', '/', '/xyz', '/xyz/abc'],
];
for (const [path, prefix, repl, want] of rewrites) {
  test(`replacePrefix(${path}, ${prefix} -> ${JSON.stringify(repl)}) = ${want}`, (t) => t.is(replacePrefix(path, prefix, repl, true), want));
}
test('replacePrefix plain (VirtualService) keeps the rest of the string', (t) => {
  t.is(replacePrefix('/foobar', '/foo', '/x', false), '/xbar');
  t.is(replacePrefix('/foo/bar', '/foo', '', false), '/bar');
});

test('backendShares: weight/sum, zero weights get nothing, all-zero gives all zero', (t) => {
  t.deepEqual(backendShares([90, 10]), [0.9, 0.1]);
  t.deepEqual(backendShares([1, 0, 3]), [0.25, 0, 0.75]);
  t.deepEqual(backendShares([0, 0]), [0, 0]);
});
