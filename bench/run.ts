/**
 * `npm run bench`: runs every suite (bench/<name>/index.{ts,js} whose default export is a
 * BenchSuite, see common/suite.ts), or the ones named on the command line; prints each suite's
 * table and a summary of targets; the exit code is 1 when a target was missed or a suite failed.
 * Suites write their own bench/results/<name>.json. `--quick` asks suites for a smoke run.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BenchSuite, SuiteReport } from './common/suite.js';

const here = dirname(fileURLToPath(import.meta.url));

async function suiteFiles(): Promise<{ dir: string; file: string }[]> {
  const out: { dir: string; file: string }[] = [];
  for (const e of await readdir(here, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name === 'results' || e.name === 'common') continue;
    for (const f of ['index.js', 'index.ts']) {
      const file = join(here, e.name, f);
      if (existsSync(file)) { out.push({ dir: e.name, file }); break; }
    }
  }
  return out.sort((a, b) => a.dir.localeCompare(b.dir));
}

function isSuite(x: unknown): x is BenchSuite {
  return typeof x === 'object' && x !== null && typeof (x as BenchSuite).name === 'string' && typeof (x as BenchSuite).run === 'function';
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const wanted = args.filter((a) => !a.startsWith('--'));
  const files = await suiteFiles();
  for (const w of wanted) if (!files.some((s) => s.dir === w)) console.error(`unknown suite ${w}; known: ${files.map((s) => s.dir).join(', ')}`);
  const chosen = wanted.length ? files.filter((s) => wanted.includes(s.dir)) : files;
  const reports: SuiteReport[] = [];
  let failed = wanted.some((w) => !files.some((s) => s.dir === w));
  for (const s of chosen) {
    const mod = await import(pathToFileURL(s.file).href) as { default?: unknown };
    if (!isSuite(mod.default)) { console.error(`bench/${s.dir}: the default export is not a BenchSuite; skipped`); continue; }
    const suite = mod.default;
    console.error(`== ${suite.name}: ${suite.description}`);
    try {
      const r = await suite.run({ quick });
      console.log(`== ${r.name}\n${r.table}\n`);
      reports.push(r);
    } catch (e) {
      console.error(`suite ${suite.name} failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      failed = true;
    }
  }
  for (const r of reports) {
    for (const t of r.targets) {
      if (t.met === false) failed = true;
      console.log(`${r.name.padEnd(8)} ${t.met === null ? 'n/a ' : t.met ? 'ok  ' : 'MISS'} ${t.name}: ${t.value ?? '-'} ${t.unit} (goal ${t.goal})`);
    }
    console.log(`${r.name.padEnd(8)} results: ${r.resultsPath}`);
  }
  process.exitCode = failed ? 1 : 0;
}

await main();
