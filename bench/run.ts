/**
 * `npm run bench`: runs every suite (bench/<name>/index.{ts,js} exporting `run()`), or the ones
 * named on the command line, prints one table and writes bench/results/<suite>.json.
 *
 * A suite returns rows: one measured number each, with its unit and, when there is one, the
 * target it must meet (`ok` says whether it did).
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  /** e.g. '< 3000' */
  target?: string;
  ok?: boolean;
}

export interface BenchSuite {
  run(): Promise<BenchRow[]>;
}

const here = dirname(fileURLToPath(import.meta.url));

async function suites(): Promise<{ name: string; file: string }[]> {
  const out: { name: string; file: string }[] = [];
  for (const e of await readdir(here, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name === 'results') continue;
    for (const f of ['index.js', 'index.ts']) {
      const file = join(here, e.name, f);
      if (existsSync(file)) { out.push({ name: e.name, file }); break; }
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

function table(suite: string, rows: BenchRow[]): string {
  const cells = rows.map((r) => [r.name, r.value.toFixed(r.value >= 100 ? 0 : 2), r.unit, r.target ?? '', r.ok === undefined ? '' : r.ok ? 'ok' : 'MISS']);
  const head = ['measure', 'value', 'unit', 'target', ''];
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => (i === 1 ? x.padStart(w[i]!) : x.padEnd(w[i]!))).join('  ');
  return [`== ${suite}`, line(head), ...cells.map(line)].join('\n');
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const all = await suites();
  const chosen = wanted.length ? all.filter((s) => wanted.includes(s.name)) : all;
  for (const w of wanted) if (!all.some((s) => s.name === w)) console.error(`unknown suite ${w}; known: ${all.map((s) => s.name).join(', ')}`);
  const resultsDir = join(here, 'results');
  await mkdir(resultsDir, { recursive: true });
  let failed = false;
  for (const s of chosen) {
    const mod = await import(pathToFileURL(s.file).href) as BenchSuite;
    let rows: BenchRow[];
    try {
      rows = await mod.run();
    } catch (e) {
      console.error(`suite ${s.name} failed: ${e instanceof Error ? e.stack : String(e)}`);
      failed = true;
      continue;
    }
    console.log(table(s.name, rows) + '\n');
    await writeFile(join(resultsDir, `${s.name}.json`), JSON.stringify({ suite: s.name, at: new Date().toISOString(), node: process.version, rows }, null, 2) + '\n');
    if (rows.some((r) => r.ok === false)) failed = true;
  }
  process.exitCode = failed ? 1 : 0;
}

await main();
