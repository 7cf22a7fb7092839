import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cleanupStale, createCluster, listNetns, pidAlive, removeNetns } from '../../src/local/index.js';
import { rootTest } from '../helpers/root.js';

const nt = rootTest;

const fixture = fileURLToPath(new URL('./fixtures/crash-child.ts', import.meta.url));

interface Report { pid: number; netns: string[]; serverPid: number }

/** Runs the fixture in `mode` and resolves with its report and a promise of its end. */
async function startFixture(mode: string): Promise<{ child: ChildProcess; report: Report; ended: Promise<unknown[]> }> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), fixture, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ended = once(child, 'exit');
  let out = '';
  child.stdout.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: string) => { out += d; if (out.includes('\n')) resolve(); });
    child.once('exit', (code) => reject(new Error(`fixture exited early (${code}): ${out}`)));
  });
  const r = JSON.parse(out.slice(0, out.indexOf('\n'))) as { netns: string[]; serverPid: number };
  return { child, report: { pid: child.pid!, ...r }, ended };
}

/** Runs the fixture, reads its report, SIGKILLs it: a crashed run. */
async function crashedRun(): Promise<Report> {
  const { child, report, ended } = await startFixture('crash');
  child.kill('SIGKILL');
  await ended;
  return report;
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

nt('installExitCleanup removes the cluster on SIGTERM and the process still dies of SIGTERM', async (t) => {
  const { child, report, ended } = await startFixture('signal');
  t.teardown(async () => { for (const n of report.netns) await removeNetns(n).catch(() => {}); });
  child.kill('SIGTERM');
  const [code, signal] = await ended;
  t.is(code, null);
  t.is(signal, 'SIGTERM');
  const names = await listNetns();
  t.deepEqual(report.netns.filter((n) => names.includes(n)), []);
});

nt('installExitCleanup removes the cluster synchronously on process.exit', async (t) => {
  const { report, ended } = await startFixture('exit');
  t.teardown(async () => { for (const n of report.netns) await removeNetns(n).catch(() => {}); });
  const [code] = await ended;
  t.is(code, 0);
  const names = await listNetns();
  t.deepEqual(report.netns.filter((n) => names.includes(n)), []);
  t.false(pidAlive(report.serverPid) && !isZombie(report.serverPid), 'the server in the pod was killed');
});
