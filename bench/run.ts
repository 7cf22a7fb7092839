/**
 * `npm run bench`: runs every suite (bench/<name>/index.{ts,js} whose default export is a
 * BenchSuite, see common/suite.ts), or the ones named on the command line; prints each suite's
 * table and a summary of targets; the exit code is 1 when a target was missed or a suite failed.
 * Suites write their own bench/results/<name>.json.
 *
 *   npm run bench [-- [--suite l4,l7 | l4 l7] [--quick] [--soak-seconds N] [--profile DIR]]
 *
 * `--suite` (repeatable, comma lists) or bare names pick suites; `--quick` asks suites for a
 * smoke run; `--soak-seconds` sets the soak step's length.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
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

/** The command line: suite names, --quick, --soak-seconds N. Throws on anything else. */
export function parseArgs(args: readonly string[]): { wanted: string[]; quick: boolean; soakSeconds?: number; profileDir?: string } {
  const wanted: string[] = [];
  let quick = false;
  let soakSeconds: number | undefined;
  let profileDir: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? args[++i];
      if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--quick') quick = true;
    else if (flag === '--suite') wanted.push(...value().split(',').map((s) => s.trim()).filter(Boolean));
    else if (flag === '--soak-seconds') {
      const v = value();
      soakSeconds = Number(v);
      if (!Number.isInteger(soakSeconds) || soakSeconds < 10 || soakSeconds > 86_400) throw new Error(`--soak-seconds: "${v}" is not a whole number of seconds in 10..86400`);
    } else if (flag === '--profile') profileDir = resolve(value());
    else if (a.startsWith('-')) throw new Error(`unknown option ${a} (known: --suite NAME[,NAME], --quick, --soak-seconds N, --profile DIR)`);
    else wanted.push(a);
  }
  return { wanted, quick, ...(soakSeconds !== undefined ? { soakSeconds } : {}), ...(profileDir !== undefined ? { profileDir } : {}) };
}

async function main(): Promise<void> {
  const { wanted, quick, soakSeconds, profileDir } = parseArgs(process.argv.slice(2));
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
      const r = await suite.run({ quick, ...(soakSeconds !== undefined ? { soakSeconds } : {}), ...(profileDir !== undefined ? { profileDir } : {}) });
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

// run only as the program, not when a test imports parseArgs
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main().catch((e: unknown) => {
    console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 2;
  });
}
