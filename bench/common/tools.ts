/**
 * System tools a bench needs (iperf3, wrk, stunnel4, haproxy). Missing ones are installed with
 * apt-get when running as root on Debian; otherwise the bench stops with the command to run.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BenchError } from './errors.js';

/** binary name -> Debian package */
export type ToolSet = Readonly<Record<string, string>>;

const SEARCH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Absolute path of a binary, or undefined. Looked up in the usual places, not $PATH only. */
export function whichTool(bin: string): string | undefined {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+-]*$/.test(bin)) throw new BenchError('tools', `"${bin}" is not a plain binary name`);
  const dirs = [...new Set([...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), ...SEARCH])];
  for (const d of dirs) if (existsSync(`${d}/${bin}`)) return `${d}/${bin}`;
  return undefined;
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } },
      (err, _stdout, stderr) => {
        if (err) reject(new BenchError('tools', `${file} ${args.join(' ')}: ${stderr.trim().split('\n').slice(-3).join(' | ') || err.message}`));
        else resolve();
      });
  });
}

/** Makes sure every binary exists; returns binary -> absolute path. */
export async function ensureTools(tools: ToolSet, log: (line: string) => void = () => {}): Promise<Record<string, string>> {
  const missing = Object.keys(tools).filter((b) => whichTool(b) === undefined);
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((b) => tools[b]!))];
    if (process.getuid?.() !== 0) {
      throw new BenchError('tools', `missing ${missing.join(', ')}; run as root: apt-get install -y ${pkgs.join(' ')}`);
    }
    log(`installing ${pkgs.join(' ')}`);
    await run('apt-get', ['update', '-qq'], 300_000);
    await run('apt-get', ['install', '-y', '-qq', ...pkgs], 600_000);
  }
  const out: Record<string, string> = {};
  for (const b of Object.keys(tools)) {
    const p = whichTool(b);
    if (!p) throw new BenchError('tools', `${b} still missing after installing ${tools[b]}`);
    out[b] = p;
  }
  return out;
}
