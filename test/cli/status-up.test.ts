/**
 * `ambit status` and `ambit config-dump` against the local mesh of a running `ambit up` (another
 * terminal): both agents listed with what they ACKed and their certificates' expiry, an agent's
 * config dump naming its node's pods, the control plane's dump, and a target that is not running
 * named in one line with what is.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { listNetns, type PodState } from '../../src/local/index.js';
import type { StatusRow } from '../../src/cli/status-view.js';
import { rootSerial } from '../helpers/root.js';
import { runCli, startUp } from '../helpers/cli.js';

const PORT_BASE = 26500;

const cli = runCli;

rootSerial('ambit status lists both agents with ACKed versions; ambit config-dump shows an agent\'s pods and the control plane\'s config', async (t) => {
  t.timeout(600_000);
  const dir = mkdtempSync(join(tmpdir(), 'ambit-status-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { child: up, exited, out } = await startUp(t, dir, PORT_BASE);

  // the last push (the namespace labelled ambient) may still be on its way to an agent: ask
  // until both ACKed it (each ask is a new process; a bounded number of them)
  let rows: StatusRow[] = [];
  const synced = (r: StatusRow): boolean => ['Address', 'Authorization'].every((k) => r.types[k]?.state === 'SYNCED');
  for (let i = 0; i < 30; i++) {
    const r = await cli(['status', '--dir', dir, '-o', 'json']);
    t.is(r.code, 0, r.stderr);
    rows = JSON.parse(r.stdout) as StatusRow[];
    if (rows.length === 2 && rows.every(synced)) break;
  }
  t.deepEqual(rows.map((r) => [r.name, r.role]), [['node-1', 'agent'], ['node-2', 'agent']]);
  for (const r of rows) {
    t.true(synced(r), JSON.stringify(r.types));
    t.not(r.types.Address!.acked, '');
    t.truthy(r.certExpiry, `a certificate was issued to ${r.name}`);
    t.true(Date.parse(r.certExpiry!) > Date.now());
    t.false('WaypointConfig' in r.types, 'agents take no waypoint config');
  }
  const table = await cli(['status', '--dir', dir]);
  t.is(table.code, 0, table.stderr);
  t.log(table.stdout);
  t.regex(table.stdout, /^NAME\s+ROLE\s+NODE\s+CONNECTED\s+ADDRESS\s+AUTHORIZATION/);
  t.regex(table.stdout, /^node-1\s+agent\s+node-1\s+\S+ ago\s+SYNCED \(\d+\)\s+SYNCED \(\d+\)\s+-\s+in \S+/m);
  t.regex(table.stdout, /^node-2\s+agent\s+/m);

  const pods = (JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { cluster: { pods: PodState[] } }).cluster.pods;
  const onNode1 = pods.filter((p) => p.node === 'node-1' && p.namespace === 'default').map((p) => p.name).sort();
  t.true(onNode1.length > 0);
  const dump = await cli(['config-dump', 'agent', 'node-1', '--dir', dir, '-o', 'json']);
  t.is(dump.code, 0, dump.stderr);
  const d = JSON.parse(dump.stdout) as { enrolled?: Array<{ name: string; namespace: string }> };
  t.deepEqual((d.enrolled ?? []).map((e) => e.name).sort(), onNode1);

  const control = await cli(['config-dump', 'control', '--dir', dir, '-o', 'yaml']);
  t.is(control.code, 0, control.stderr);
  const c = parse(control.stdout) as { workloads: Array<{ name: string }> };
  for (const name of onNode1) t.true(c.workloads.some((w) => w.name === name), `${name} in the control plane's workloads`);

  const missing = await cli(['config-dump', 'agent', 'node-9', '--dir', dir]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /^ambit: agent node-9: not running in the ambit up of .*; running: .*agent node-1.*\n$/);

  up.kill('SIGINT');
  const [code] = await exited as [number | null];
  t.is(code, 0, out());
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(`ambit-${up.pid!.toString(36)}-`)), []);
});
