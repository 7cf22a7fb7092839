import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cleanupStale, createCluster, listNetns, pidAlive, removeNetns } from '../../src/local/index.js';

const root = process.getuid?.() === 0;
const nt = root ? test : test.skip;
if (!root) test('netns tests need root (skipped)', (t) => { t.pass(); });

const fixture = fileURLToPath(new URL('./fixtures/crash-child.ts', import.meta.url));

/** Runs the fixture, reads its report, SIGKILLs it: a crashed run. */
async function crashedRun(): Promise<{ pid: number; netns: string[]; serverPid: number }> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), fixture], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  for await (const chunk of child.stdout) {
    out += chunk as string;
    if (out.includes('\n')) break;
  }
  const report = JSON.parse(out.slice(0, out.indexOf('\n'))) as { netns: string[]; serverPid: number };
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
  return { pid: child.pid!, ...report };
}

nt('the next createCluster removes the namespaces of a SIGKILLed run, and kills what ran inside them', async (t) => {
  const dead = await crashedRun();
  const prefix = `ambit-${dead.pid.toString(36)}-`;
  t.teardown(async () => { for (const n of dead.netns) await removeNetns(n).catch(() => {}); });
  t.is(dead.netns.length, 4); // underlay, two nodes, one pod
  t.true(dead.netns.every((n) => n.startsWith(prefix)));
  // (Not asserted: that the leftovers exist right now. A concurrent test process may already have
  // cleaned them up, which is exactly the behaviour under test.)

  const fresh = await createCluster({ nodes: 1 });
  t.teardown(() => fresh.destroy());
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), []);
  t.false(pidAlive(dead.serverPid) && !isZombie(dead.serverPid), 'the server inside the stale pod was killed');
});

nt('cleanupStale never touches namespaces of a live process', async (t) => {
  const live = await createCluster({ nodes: 1 });
  t.teardown(() => live.destroy());
  const removed = await cleanupStale();
  t.false(removed.some((n) => n.startsWith(live.prefix)));
  const names = await listNetns();
  for (const n of live.netnsNames) t.true(names.includes(n));
});

/** A killed process whose parent (init) has not reaped it yet still answers kill(pid, 0). */
function isZombie(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch { return true; }
}
