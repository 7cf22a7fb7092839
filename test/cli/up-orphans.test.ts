/**
 * `ambit up` SIGKILLed (a test's teardown after a timeout, the OOM killer): its 'exit' handler
 * never runs, yet the programs it started (control plane, agents) must not outlive it, holding
 * their ports for the next run. Each arms a parent-death signal at start-up
 * (src/cli/parent-death.ts) and ends on its own; `ambit down` then removes the namespaces.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listNetns } from '../../src/local/index.js';
import { rootSerial } from '../helpers/root.js';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const PORT_BASE = 26800;

/** Alive and not a zombie (an orphan's new parent may be slow to reap it, or never do). */
function running(pid: number): boolean {
  try { process.kill(pid, 0); } catch { return false; }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function downCli(dir: string): Promise<{ code: number | null; out: string }> {
  const down = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, 'down', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  down.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  down.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const [code] = await once(down, 'exit') as [number | null];
  return { code, out };
}

rootSerial('the programs of a SIGKILLed ambit up exit on their own; ambit down then leaves nothing behind', async (t) => {
  t.timeout(300_000);
  const dir = mkdtempSync(join(tmpdir(), 'ambit-up-orphans-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const up = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, 'up', '--dir', dir, '--port-base', String(PORT_BASE)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(up, 'exit');
  let pids: number[] = [];
  t.teardown(async () => {
    if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL');
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await exited;
    await downCli(dir); // a failed assertion ends the test before its own `ambit down`: the namespaces go here
  });
  let out = '';
  up.stdout.setEncoding('utf8');
  up.stderr.resume();
  await new Promise<void>((resolve, reject) => {
    up.stdout.on('data', (d: string) => { out += d; if (out.includes('Press Ctrl-C')) resolve(); });
    void exited.then(() => reject(new Error(`ambit up exited before it was ready:\n${out}`)));
  });

  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { programs?: Array<{ name: string; pid: number }> };
  const programs = state.programs ?? [];
  pids = programs.map((p) => p.pid);
  t.deepEqual(programs.map((p) => p.name).sort(), ['agent node-1', 'agent node-2', 'control plane']);
  t.true(pids.every(running), 'the programs run');

  up.kill('SIGKILL');
  await exited;
  // each program got SIGINT from the kernel and drains; wait for that to end (the deadline is
  // only a bound on a failure: drain deadlines are 5 s, the machine may be loaded)
  const deadline = Date.now() + 120_000;
  while (pids.some(running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const left = programs.filter((p) => running(p.pid)).map((p) => `${p.name} (pid ${p.pid})`);
  t.deepEqual(left, [], 'no program outlives ambit up');
  // each ended by its drain (SIGINT handled), not as an orphan killed later
  for (const log of ['control.log', 'agent-node-1.log', 'agent-node-2.log']) {
    let text = '';
    try { text = readFileSync(join(dir, 'logs', log), 'utf8'); } catch { /* named below */ }
    t.regex(text, /"signal":"SIGINT"/, `${log} shows the SIGINT`);
  }

  const down = await downCli(dir);
  t.is(down.code, 0, down.out);
  t.notRegex(down.out, /stopped programs/, 'ambit down found no program left to stop');
  const prefix = `ambit-${up.pid!.toString(36)}-`;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
});
