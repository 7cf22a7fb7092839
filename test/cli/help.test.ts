/** `ambit --help` at the terminal's width, and shell completion, from the real command. */
import test from 'ava';
import { runCli as run } from '../helpers/cli.js';

const words = (s: string): string[] => s.split(/\s+/).filter((w) => w !== '');

test('help is wrapped at $COLUMNS between words: the same words at 60 and 120 columns, no line longer', async (t) => {
  for (const args of [['--help'], ['waypoint', '--help'], ['status', '--help']]) {
    const [narrow, wide] = await Promise.all([run(args, { COLUMNS: '60' }), run(args, { COLUMNS: '120' })]);
    t.is(narrow.code, 0, narrow.stderr);
    t.is(wide.code, 0, wide.stderr);
    for (const l of narrow.stdout.split('\n')) t.true(l.length <= 60, `${args.join(' ')}: ${l}`);
    for (const l of wide.stdout.split('\n')) t.true(l.length <= 120, `${args.join(' ')}: ${l}`);
    t.deepEqual(words(narrow.stdout), words(wide.stdout), `${args.join(' ')}: a word was split`);
    t.true(narrow.stdout.split('\n').length > wide.stdout.split('\n').length);
  }
});

test('completion: a bash/zsh script, and the candidates for a partial command line', async (t) => {
  const script = await run(['completion']);
  t.is(script.code, 0, script.stderr);
  t.regex(script.stdout, /--get-yargs-completions/);
  t.regex(script.stdout, /complete -o bashdefault -o default -F _ambit_yargs_completions ambit|compdef _ambit_yargs_completions ambit/);
  const top = await run(['--get-yargs-completions', '']);
  t.true(['up', 'status', 'waypoint', 'namespace', 'install'].every((c) => words(top.stdout).includes(c)), top.stdout);
  const sub = await run(['--get-yargs-completions', 'waypoint', '']);
  t.deepEqual(words(sub.stdout).filter((w) => ['apply', 'list', 'delete'].includes(w)).sort(), ['apply', 'delete', 'list']);
});

test('an unknown flag or command is one line naming it, exit 1', async (t) => {
  const r = await run(['status', '--bogus']);
  t.is(r.code, 1);
  t.regex(r.stderr, /^ambit: Unknown argument: bogus\n/);
});
