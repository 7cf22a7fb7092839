/**
 * `ambit namespace` and `ambit waypoint apply|list|delete` against the local mesh of a running
 * `ambit up` (another terminal): unenroll takes the capture table out of a pod of the namespace,
 * enroll puts it back; a waypoint applied is started by `ambit up` and listed with its process,
 * and once deleted its pod goes and the list is empty. One `ambit up` for the file.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { execInNetns, listNetns, type PodState } from '../../src/local/index.js';
import type { WaypointListRow } from '../../src/cli/local-waypoints.js';
import { runCli, startUp } from '../helpers/cli.js';
import { rootSerial } from '../helpers/root.js';

const PORT_BASE = 29500;
/** the agent's capture table in a pod's netns (src/node-agent/enrol/capture.ts, docs/DEVELOPING.md) */
const NAT_TABLE = 'ambit-nat';

function pods(dir: string): PodState[] {
  return (JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { cluster: { pods: PodState[] } }).cluster.pods;
}

/** Asks `check` again (a short pause between asks, each an ip/nft run) until it answers true; fails after `ms`. */
async function until(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await delay(100);
  }
}

async function tables(netns: string): Promise<string> {
  const r = await execInNetns(netns, ['/usr/sbin/nft', 'list', 'tables'], { timeoutMs: 10_000 });
  return r.stdout;
}

rootSerial('namespace unenroll/enroll and waypoint apply/list/delete on the local mesh of ambit up', async (t) => {
  t.timeout(600_000);
  const dir = mkdtempSync(join(tmpdir(), 'ambit-verbs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { child: up, exited, printed, out } = await startUp(t, dir, PORT_BASE);

  const pod = pods(dir).find((p) => p.namespace === 'default' && p.name === 'client')!;
  t.truthy(pod, 'the client pod of namespace default');
  t.true((await tables(pod.netnsName)).includes(`table inet ${NAT_TABLE}`), 'captured after up');

  const off = await runCli(['namespace', 'unenroll', 'default', '--dir', dir]);
  t.is(off.code, 0, off.stderr);
  t.regex(off.stdout, /namespace default unenrolled/);
  await until(`inet ${NAT_TABLE} removed from ${pod.name}`, async () => !(await tables(pod.netnsName)).includes(`inet ${NAT_TABLE}`));
  const on = await runCli(['namespace', 'enroll', 'default', '--dir', dir]);
  t.is(on.code, 0, on.stderr);
  t.regex(on.stdout, /namespace default enrolled/);
  await until(`inet ${NAT_TABLE} back in ${pod.name}`, async () => (await tables(pod.netnsName)).includes(`inet ${NAT_TABLE}`));

  const apply = await runCli(['waypoint', 'apply', '-n', 'default', '--name', 'wp', '--dir', dir]);
  t.is(apply.code, 0, apply.stderr);
  t.regex(apply.stdout, /^waypoint default\/wp applied: /);
  await printed(/waypoint default\/wp ready: /);
  const listed = await runCli(['waypoint', 'list', '-o', 'json', '--dir', dir]);
  t.is(listed.code, 0, listed.stderr);
  const rows = JSON.parse(listed.stdout) as WaypointListRow[];
  t.deepEqual(rows.map((r) => [r.namespace, r.name, r.for, r.enrollNamespace]), [['default', 'wp', 'service', false]]);
  t.true(typeof rows[0]!.pid === 'number', 'its process under ambit up');
  const wpNetns = pods(dir).find((p) => p.name === 'wp-wp')!.netnsName;
  t.true((await listNetns()).includes(wpNetns));

  const del = await runCli(['waypoint', 'delete', 'wp', '--dir', dir]);
  t.is(del.code, 0, del.stderr);
  t.is(del.stdout, 'waypoint default/wp deleted\n');
  const empty = await runCli(['waypoint', 'list', '-o', 'json', '--dir', dir]);
  t.deepEqual(JSON.parse(empty.stdout), []);
  await until('the waypoint pod removed', async () => !(await listNetns()).includes(wpNetns));
  const again = await runCli(['waypoint', 'delete', 'wp', '--dir', dir]);
  t.is(again.code, 1);
  t.is(again.stderr, 'ambit: waypoint default/wp: not found (ambit waypoint list)\n');

  up.kill('SIGINT');
  const [code] = await exited as [number | null];
  t.is(code, 0, out());
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(`ambit-${up.pid!.toString(36)}-`)), []);
});
