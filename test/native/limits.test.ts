/**
 * raiseFdLimit: the soft RLIMIT_NOFILE raised to the hard limit, checked in a child process
 * (this process's own limit is left alone). Node itself raises the soft limit at start-up, so
 * the child first lowers its own (prlimit on its pid), as an operator or a runtime might.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { nodeChildEnv } from '../helpers/child-env.js';

const native = fileURLToPath(new URL('../../src/native/index.ts', import.meta.url));
const SCRIPT = `
import { raiseFdLimit } from ${JSON.stringify(native)};
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
execFileSync('/usr/bin/prlimit', ['--pid', String(process.pid), '--nofile=256:2048']);
const r = raiseFdLimit();
const line = readFileSync('/proc/self/limits', 'utf8').split('\\n').find((l) => l.startsWith('Max open files'));
console.log(JSON.stringify({ r, line }));
`;

(process.getuid?.() === 0 ? test : test.skip)('raiseFdLimit lifts the soft open-file limit to the hard one and reports both', (t) => {
  const out = execFileSync(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', SCRIPT], { encoding: 'utf8', env: nodeChildEnv() });
  const { r, line } = JSON.parse(out.trim().split('\n').pop()!) as { r: { soft: number; hard: number; before: number }; line: string };
  t.deepEqual(r, { soft: 2048, hard: 2048, before: 256 });
  t.regex(line, /^Max open files\s+2048\s+2048\s+files/);
});
