/**
 * The parent-death signal (prctl(PR_SET_PDEATHSIG)) as `ambit up`'s programs arm it
 * (src/cli/parent-death.ts): a child whose parent is SIGKILLed gets SIGINT; a child whose
 * AMBIT_PARENT_PID is not its parent (the parent died before the prctl) is told not to start;
 * without the variable nothing is armed. The whole `ambit up` case is test/cli/up-orphans.test.ts.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { nodeChildEnv } from '../helpers/child-env.js';

const parentDeath = fileURLToPath(new URL('../../src/cli/parent-death.ts', import.meta.url));

// the program: arms the signal, says what bindToParent answered, then waits for a signal
const CHILD = `
import { bindToParent } from ${JSON.stringify(parentDeath)};
const why = await bindToParent(process.env);
process.on('SIGINT', () => { console.log('child got SIGINT'); process.exit(0); });
console.log(JSON.stringify({ ready: process.pid, why: why ?? null, inherited: process.env.AMBIT_PARENT_PID ?? null }));
if (why !== undefined) process.exit(0);
setInterval(() => {}, 1 << 30);
`;

// plays \`ambit up\`: starts the program with its own pid in AMBIT_PARENT_PID, its stdout shared
const PARENT = `
const { spawn } = require('node:child_process');
const c = spawn(process.execPath, ['--import', ${JSON.stringify(import.meta.resolve('tsx'))}, '--input-type=module', '-e', process.argv[1]],
  { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, AMBIT_PARENT_PID: String(process.pid) } });
setInterval(() => {}, 1 << 30);
`;

function collect(child: ReturnType<typeof spawn>): { text(): string; until(re: RegExp): Promise<void>; closed: Promise<void> } {
  let out = '';
  const waiters: Array<{ re: RegExp; resolve: () => void }> = [];
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    out += d;
    for (const w of [...waiters]) if (w.re.test(out)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  });
  // the pipe closes when every holder (parent and program) has exited
  const closed = new Promise<void>((resolve) => child.stdout!.once('close', () => resolve()));
  return {
    text: () => out,
    until: (re) => (re.test(out) ? Promise.resolve() : Promise.race([
      new Promise<void>((resolve) => waiters.push({ re, resolve })),
      closed.then(() => { throw new Error(`output closed while waiting for ${re}: ${out}`); }),
    ])),
    closed,
  };
}

test('a program whose parent is SIGKILLed gets SIGINT and exits', async (t) => {
  const parent = spawn(process.execPath, ['-e', PARENT, CHILD], { stdio: ['ignore', 'pipe', 'inherit'], env: nodeChildEnv() });
  const out = collect(parent);
  let childPid = 0;
  t.teardown(() => {
    for (const pid of [parent.pid, childPid]) { try { if (pid) process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  });
  await out.until(/"ready"/);
  const first = JSON.parse(out.text().split('\n')[0]!) as { ready: number; why: string | null; inherited: string | null };
  childPid = first.ready;
  t.is(first.why, null, 'the parent is alive: the program starts');
  t.is(first.inherited, null, 'the variable is not passed on to the program\'s own children');
  parent.kill('SIGKILL');
  await out.closed; // both have exited: the pipe's last writer is gone
  t.regex(out.text(), /child got SIGINT/);
});

test('a program whose parent is already gone (AMBIT_PARENT_PID is not its parent) is told not to start', async (t) => {
  const notParent = process.pid + 1_000_000; // above pid_max's default: never our parent
  const c = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', CHILD],
    { stdio: ['ignore', 'pipe', 'inherit'], env: nodeChildEnv({ AMBIT_PARENT_PID: String(notParent) }) });
  const out = collect(c);
  await out.closed;
  const r = JSON.parse(out.text().split('\n')[0]!) as { why: string | null };
  t.regex(r.why ?? '', new RegExp(`\\(pid ${notParent}\\) is gone \\(parent now pid ${process.pid}\\); not starting`));
});

test('without AMBIT_PARENT_PID nothing is armed; a bad value is refused', async (t) => {
  const { bindToParent } = await import('../../src/cli/parent-death.js');
  t.is(await bindToParent({}), undefined);
  await t.throwsAsync(bindToParent({ AMBIT_PARENT_PID: '12x' }), { message: /AMBIT_PARENT_PID: "12x" is not a process id/ });
  const { setParentDeathSignal } = await import('../../src/native/index.js');
  t.throws(() => setParentDeathSignal('SIGNOPE' as NodeJS.Signals), { message: /signal must be a signal name/ });
});
