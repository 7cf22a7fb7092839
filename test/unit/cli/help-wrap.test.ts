import test from 'ava';
import { helpWidth, wrapHelp, wrapLine } from '../../../src/cli/help-wrap.js';

const words = (s: string): string[] => s.split(/\s+/).filter((w) => w !== '');

test('a long description continues under its own column, broken between words', (t) => {
  const line = '  ambit up       build a 2-node cluster with a client and an echo service, run the mesh on it';
  const out = wrapLine(line, 50);
  t.true(out.length > 1);
  for (const l of out) t.true(l.length <= 50, l);
  for (const l of out.slice(1)) t.is(l.length - l.trimStart().length, '  ambit up       '.length, l);
  t.deepEqual(words(out.join(' ')), words(line), 'no word split, none lost');
});

test('short lines and lines without columns', (t) => {
  t.deepEqual(wrapLine('  --dir  short', 40), ['  --dir  short']);
  const para = 'Exit codes: 0 done; 1 an error (one line per problem on stderr), 2 nothing';
  const out = wrapLine(para, 30);
  t.true(out.every((l) => l.length <= 30 && !l.startsWith(' ')), out.join('|'));
  t.deepEqual(words(out.join(' ')), words(para));
});

test('a column too far right for the width: the left part stands alone, the text indented by 4', (t) => {
  const line = '  ambit config-dump <target> [name]  print a program\'s config dump: control, agent NODE';
  const out = wrapLine(line, 50);
  t.is(out[0], '  ambit config-dump <target> [name]');
  for (const l of out.slice(1)) { t.true(l.startsWith('      ') && !l.startsWith('       '), l); t.true(l.length <= 50); }
  t.deepEqual(words(out.join(' ')), words(line));
});

test('a word longer than the room stands on its own line, whole', (t) => {
  const long = `https://example.org/${'x'.repeat(60)}`;
  const out = wrapHelp(`  --url  see ${long} for more`, 50);
  t.true(out.split('\n').some((l) => l.trim() === long));
});

test('helpWidth: the terminal, else $COLUMNS, else 100; clamped to 40..120', (t) => {
  t.is(helpWidth(90, {}), 90);
  t.is(helpWidth(undefined, { COLUMNS: '70' }), 70);
  t.is(helpWidth(undefined, { COLUMNS: 'wide' }), 100);
  t.is(helpWidth(10, {}), 40);
  t.is(helpWidth(400, {}), 120);
});
