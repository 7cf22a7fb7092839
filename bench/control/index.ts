/**
 * Control-plane benchmarks: ingest of synthetic clusters through the translator and the wire
 * tables, and the fan-out of one workload change to many connected clients until all ACKed.
 * Clients run in the same process as the server, so fan-out numbers include their decode work.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setLogLevel } from '../../src/core/index.js';
import type { KubeObject } from '../../src/control/config/types.js';
import { Translator } from '../../src/control/translate/index.js';
import { BootstrapTokenAuthenticator, PushServer } from '../../src/control/push/index.js';
import { buildResourceTables } from '../../src/xds/index.js';
import type { BenchOptions, BenchSuite, SuiteReport, TargetCheck } from '../common/suite.js';
import { writeResults } from '../common/results.js';

/** One measured number; `target` is the goal in the row's unit, met when below it. */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  target?: string;
  ok?: boolean;
}

const NAMESPACES = 100;
/** child processes holding the fan-out clients */
const WORKERS = 4;

export function syntheticCluster(workloads: number, policies = 1000): KubeObject[] {
  const out: KubeObject[] = [];
  for (let n = 0; n < NAMESPACES; n++) {
    out.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns${n}`, labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  }
  const services = Math.max(1, Math.floor(workloads / 10));
  for (let s = 0; s < services; s++) {
    out.push({
      apiVersion: 'v1', kind: 'Service', metadata: { name: `svc${s}`, namespace: `ns${s % NAMESPACES}` },
      spec: { selector: { app: `app${s}` }, clusterIP: `10.${96 + (s >> 16)}.${(s >> 8) & 255}.${s & 255}`, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
    });
  }
  for (let i = 0; i < workloads; i++) {
    const s = i % services;
    out.push(pod(i, s));
  }
  for (let p = 0; p < policies; p++) {
    out.push({
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: `pol${p}`, namespace: `ns${p % NAMESPACES}` },
      spec: {
        selector: { matchLabels: { app: `app${(p * 7) % services}` } }, action: 'ALLOW',
        rules: [{ from: [{ source: { principals: [`cluster.local/ns/ns${p % NAMESPACES}/sa/sa${p % 13}`] } }], to: [{ operation: { ports: ['8080'] } }] }],
      },
    });
  }
  return out;
}

function pod(i: number, s: number, rev = 'v1'): KubeObject {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: `pod${i}`, namespace: `ns${s % NAMESPACES}`, labels: { app: `app${s}`, version: rev } },
    spec: { nodeName: `node${i % 100}`, serviceAccountName: `sa${i % 13}`, containers: [{ name: 'app' }] },
    status: { phase: 'Running', podIP: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`.replace(/^10\./, `${10 + (i >> 24)}.`), conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

function ms(t0: bigint): number { return Number(process.hrtime.bigint() - t0) / 1e6; }

function hasGc(): boolean { return typeof (globalThis as { gc?: unknown }).gc === 'function'; }

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

async function ingest(n: number, target?: number): Promise<BenchRow[]> {
  const objects = syntheticCluster(n);
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = process.hrtime.bigint();
  const tr = new Translator({ trustDomain: 'cluster.local', rootNamespace: 'istio-system' });
  const r = tr.update(objects);
  const tTranslate = ms(t0);
  const t1 = process.hrtime.bigint();
  const built = buildResourceTables(r.snapshot, r.l7);
  const tEncode = ms(t1);
  const total = ms(t0);
  const heap = (process.memoryUsage().heapUsed - heap0) / 1024 / 1024;
  if (r.snapshot.counts.workloads !== n) throw new Error(`ingest ${n}: translated ${r.snapshot.counts.workloads} workloads (rejected ${r.rejected.length}: ${r.rejected[0]?.message ?? ''})`);
  // a second update with one pod changed: what a steady-state config change costs
  const changed = objects.map((o) => (o.kind === 'Pod' && o.metadata.name === 'pod0' ? pod(0, 0, 'v2') : o));
  const t2 = process.hrtime.bigint();
  const r2 = tr.update(changed);
  buildResourceTables(r2.snapshot, r2.l7);
  const tOne = ms(t2);
  void built;
  const k = n >= 1000 ? `${n / 1000}k` : String(n);
  return [
    { name: `ingest ${k} workloads: translate`, value: tTranslate, unit: 'ms' },
    { name: `ingest ${k} workloads: encode tables`, value: tEncode, unit: 'ms' },
    { name: `ingest ${k} workloads: total`, value: total, unit: 'ms', ...(target ? { target: `< ${target}`, ok: total < target } : {}) },
    { name: `ingest ${k} workloads: heap growth${hasGc() ? '' : ' (approx.: run with --expose-gc)'}`, value: heap, unit: 'MiB' },
    { name: `ingest ${k} workloads: one-pod change, re-translate + encode`, value: tOne, unit: 'ms' },
  ];
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function fanout(clients: number, workloads: number, rounds: number): Promise<BenchRow[]> {
  const token = 'bench-bootstrap-token-0123456789';
  const push = new PushServer({ authenticator: new BootstrapTokenAuthenticator({ token, trustDomain: 'cluster.local' }), debounceMs: 0, maxConnections: clients + 10 });
  const objects = syntheticCluster(workloads, 100);
  const tr = new Translator({ trustDomain: 'cluster.local', rootNamespace: 'istio-system' });
  const first = tr.update(objects);
  push.update(buildResourceTables(first.snapshot, first.l7).tables);
  push.flush();
  const server = createServer();
  push.attach(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // clients live in child processes (as on separate nodes); from .ts the children need tsx too
  const self = fileURLToPath(import.meta.url);
  const workerFile = self.replace(/index\.(ts|js)$/, (_m, ext: string) => `fanout-worker.${ext}`);
  const execArgv = self.endsWith('.ts') ? ['--import=tsx'] : [];
  const workers = Array.from({ length: WORKERS }, () => fork(workerFile, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const tConnect = process.hrtime.bigint();
  const per = Math.ceil(clients / WORKERS);
  await Promise.all(workers.map(async (w, i) => {
    const ready = once(w, 'message');
    w.send({ url, token, from: i * per, count: Math.min(per, clients - i * per) });
    await ready;
  }));
  const connectMs = ms(tConnect);
  const perClient: number[] = [];
  const allAcked: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const changed = objects.map((o) => (o.kind === 'Pod' && o.metadata.name === 'pod0' ? pod(0, 0, `r${r}`) : o));
    const result = tr.update(changed);
    const tables = buildResourceTables(result.snapshot, result.l7).tables;
    const t0 = process.hrtime.bigint();
    const acked = new Set<number>();
    const done = new Promise<void>((resolve) => {
      const on = (id: number) => {
        if (acked.has(id)) return;
        acked.add(id);
        perClient.push(ms(t0));
        if (acked.size === clients) { push.off('ack', on); resolve(); }
      };
      push.on('ack', on);
    });
    push.update(tables);
    push.flush();
    await done;
    allAcked.push(ms(t0));
  }
  await Promise.all(workers.map((w) => { const exited = once(w, 'exit'); w.send('close'); return exited; }));
  await push.close();
  server.closeAllConnections();
  server.close();
  return [
    { name: `fan-out: connect + initial sync of ${clients} clients (${workloads} workloads)`, value: connectMs, unit: 'ms' },
    { name: `fan-out: one change to ${clients} clients, per-client ACK p50`, value: pct(perClient, 50), unit: 'ms' },
    { name: `fan-out: one change to ${clients} clients, per-client ACK p99`, value: pct(perClient, 99), unit: 'ms', target: '< 1000', ok: pct(perClient, 99) < 1000 },
    { name: `fan-out: one change to ${clients} clients, all ACKed p50 (${rounds} rounds)`, value: pct(allAcked, 50), unit: 'ms' },
    { name: `fan-out: one change to ${clients} clients, all ACKed max`, value: Math.max(...allAcked), unit: 'ms' },
  ];
}

function formatTable(rows: BenchRow[]): string {
  const cells = rows.map((r) => [r.name, r.value.toFixed(r.value >= 100 ? 0 : 2), r.unit, r.target ?? '', r.ok === undefined ? '' : r.ok ? 'ok' : 'MISS']);
  const head = ['measure', 'value', 'unit', 'target', ''];
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => (i === 1 ? x.padStart(w[i]!) : x.padEnd(w[i]!))).join('  ').trimEnd();
  return [line(head), ...cells.map(line)].join('\n');
}

export async function runControlBench(opts: BenchOptions = {}): Promise<SuiteReport> {
  setLogLevel('error');
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  log('control: ingest 10k');
  const rows = [...await ingest(opts.quick ? 1000 : 10_000)];
  log('control: ingest 100k');
  if (!opts.quick) rows.push(...await ingest(100_000, 3000));
  log('control: fan-out');
  rows.push(...await fanout(opts.quick ? 100 : 1000, 1000, opts.quick ? 3 : 10));
  const targets: TargetCheck[] = rows.filter((r) => r.target).map((r) => ({ name: r.name, value: Math.round(r.value), unit: r.unit, goal: r.target!, met: r.ok ?? null }));
  const resultsPath = writeResults('control', { suite: 'control', at: new Date().toISOString(), node: process.version, quick: opts.quick ?? false, rows });
  return { name: 'control', table: formatTable(rows), targets, resultsPath };
}

export const controlSuite: BenchSuite = {
  name: 'control',
  description: 'control plane: ingest of 10k/100k synthetic workloads, fan-out of one change to 1000 clients',
  run: (opts) => runControlBench(opts),
};

export default controlSuite;
