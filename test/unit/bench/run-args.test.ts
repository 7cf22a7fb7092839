/** bench/run.ts: the command line of `npm run bench`. */
import test from 'ava';
import { parseArgs } from '../../../bench/run.js';

test('suites by --suite (comma lists, repeated, NAME=) or bare names; --quick; --soak-seconds', (t) => {
  t.deepEqual(parseArgs([]), { wanted: [], quick: false });
  t.deepEqual(parseArgs(['--suite', 'l4,l7', '--suite=soak', 'restart', '--quick']), { wanted: ['l4', 'l7', 'soak', 'restart'], quick: true });
  t.deepEqual(parseArgs(['--soak-seconds', '1800']), { wanted: [], quick: false, soakSeconds: 1800 });
  t.deepEqual(parseArgs(['--soak-seconds=90', 'soak']), { wanted: ['soak'], quick: false, soakSeconds: 90 });
  t.deepEqual(parseArgs(['--profile', '/tmp/p']), { wanted: [], quick: false, profileDir: '/tmp/p' });
});

test('bad options are refused with what is wrong', (t) => {
  t.throws(() => parseArgs(['--suite']), { message: '--suite needs a value' });
  t.throws(() => parseArgs(['--suite', '--quick']), { message: '--suite needs a value' });
  t.throws(() => parseArgs(['--soak-seconds', 'long']), { message: /--soak-seconds: "long"/ });
  t.throws(() => parseArgs(['--soak-seconds', '5']), { message: /10\.\.86400/ });
  t.throws(() => parseArgs(['--fast']), { message: /unknown option --fast/ });
});
