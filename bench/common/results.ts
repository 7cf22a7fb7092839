/** Where bench results go: `bench/results/<suite>.json` of the repository (also when run from dist/). */
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchError } from './errors.js';

/** The repository root: the nearest directory above this file that holds package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new BenchError('results', `no package.json above ${fileURLToPath(import.meta.url)}`);
}

/** Writes `data` as pretty JSON, atomically (a reader never sees half a file). Returns the path. */
export function writeResults(suite: string, data: unknown, dir = join(repoRoot(), 'bench', 'results')): string {
  if (!/^[a-z0-9][-a-z0-9]*$/.test(suite)) throw new BenchError('results', `suite name "${suite}" must be lowercase letters, digits and '-'`);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${suite}.json`);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(data, null, 2) + '\n');
  renameSync(tmp, path);
  return path;
}
