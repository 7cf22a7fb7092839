import test from 'ava';
import { compileSafeRegex, MAX_REGEX_LENGTH } from '../../../src/policy/index.js';

test('compiles ordinary RE2 patterns anchored to the whole string', (t) => {
  const r = compileSafeRegex('/api/v[0-9]+/.*');
  if (!('regex' in r)) return t.fail(r.error);
  t.true(r.regex.test('/api/v2/users'));
  t.false(r.regex.test('x/api/v2/users'));
  const alt = compileSafeRegex('GET|POST');
  if (!('regex' in alt)) return t.fail(alt.error);
  t.true(alt.regex.test('POST'));
  t.false(alt.regex.test('GETPOST'));
});

const bad: [string, unknown, RegExp][] = [
  ['not a string', 42, /must be a string/],
  ['too long', 'a'.repeat(MAX_REGEX_LENGTH + 1), /longer than the limit/],
  ['backreference', '(a)\\1', /backreferences/],
  ['lookahead', 'a(?=b)', /lookaround/],
  ['lookbehind', '(?<!a)b', /lookaround/],
  ['nested quantifier', '(a+)+$', /nested repetition/],
  ['quantified alternation', '(a|aa)*', /nested repetition/],
  ['deep nested', '((ab)*c)*', /nested repetition/],
  ['unbalanced', '(abc', /unbalanced/],
  ['unbalanced close', 'abc)', /unbalanced/],
  ['bad class', '[abc', /unterminated/],
  ['invalid syntax', 'a{2,1}', /invalid regex/],
];
for (const [name, pattern, msg] of bad) {
  test(`refuses ${name}`, (t) => {
    const r = compileSafeRegex(pattern);
    t.true('error' in r);
    if ('error' in r) t.regex(r.error, msg);
  });
}

test('bounded repetition of a group is fine', (t) => {
  t.true('regex' in compileSafeRegex('(ab){1,3}c'));
  t.true('regex' in compileSafeRegex('[(]+x'));
  t.true('regex' in compileSafeRegex('\\(a+\\)+'));
});
