/**
 * Child processes of a bench: wait for a readiness line, read memory from /proc, stop them.
 * Every wait has a deadline, and every output buffer is capped, so a stuck tool fails the step
 * instead of hanging the suite.
 */
import { readFileSync, readdirSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { BenchError } from './errors.js';

/** Output kept per child stream for error messages, bytes. */
const MAX_KEPT = 64 * 1024;

/** Keeps the last MAX_KEPT bytes a child wrote on stdout and stderr (for error messages). */
export class OutputTail {
  #text = '';
  constructor(child: ChildProcess) {
    const add = (d: Buffer) => {
      this.#text += d.toString('utf8');
      if (this.#text.length > MAX_KEPT) this.#text = this.#text.slice(-MAX_KEPT);
    };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
  }
  get text(): string { return this.#text; }
  /** the last few lines, for an error message */
  last(lines = 8): string { return this.#text.trim().split('\n').slice(-lines).join('\n'); }
}

/**
 * Resolves with the first stdout line matching `re`; rejects when the child exits first or the
 * deadline passes. The line is matched on stdout only: tools print diagnostics on stderr.
 */
export function waitForLine(child: ChildProcess, re: RegExp, what: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let stderr = '';
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (re.test(line)) { cleanup(); resolve(line); return; }
      }
      if (buf.length > MAX_KEPT) buf = buf.slice(-MAX_KEPT);
    };
    const onErr = (d: Buffer) => { stderr = (stderr + d.toString('utf8')).slice(-4096); };
    const onExit = (code: number | null, sig: string | null) => {
      cleanup();
      reject(new BenchError(what, `exited (${sig ?? `code ${code}`}) before it was ready: ${stderr.trim().split('\n').slice(-6).join(' | ')}`));
    };
    const onError = (e: Error) => { cleanup(); reject(new BenchError(what, e.message, { cause: e })); };
    const timer = setTimeout(() => {
      cleanup();
      reject(new BenchError(what, `not ready after ${timeoutMs} ms: ${stderr.trim().split('\n').slice(-6).join(' | ')}`));
    }, timeoutMs);
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onErr);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

/** Resident set size of a process in kB (VmRSS of /proc/<pid>/status; threads included). */
export function rssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!m) throw new BenchError('memory', `no VmRSS in /proc/${pid}/status (process gone or a kernel thread)`);
  return Number(m[1]);
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child is gone. */
export function stopChild(child: ChildProcess, graceMs = 3000, sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => { signal(child, 'SIGKILL'); }, graceMs);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    signal(child, sig);
  });
}

function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  // The children are group leaders (spawned detached): signal the group, so helpers they
  // started go too.
  try { process.kill(-child.pid!, sig); } catch {
    try { child.kill(sig); } catch { /* gone */ }
  }
}

/** Resolves when the child exits, with its code; rejects after the deadline. */
export function waitExit(child: ChildProcess, what: string, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchError(what, `still running after ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code) => { clearTimeout(timer); resolve(code); });
  });
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on every Linux architecture Node runs on). */
export const USER_HZ = 100;

/**
 * CPU seconds (user + system) of a process, or of one of its threads when `tid` is given (the
 * JS thread of a Node process is the thread whose id is the pid). From /proc/<pid>/stat fields 14
 * and 15, counted after the `)` that ends the command name (which may hold spaces).
 */
export function cpuSeconds(pid: number, tid?: number): number {
  const path = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`;
  return parseStatCpuSeconds(readFileSync(path, 'utf8'));
}

/** utime + stime of a /proc stat line, in seconds. Pure. */
export function parseStatCpuSeconds(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new BenchError('cpu', `unreadable stat line: ${stat.slice(0, 80)}`);
  return (utime + stime) / USER_HZ;
}

/** CPU seconds of the whole machine from /proc/stat: busy (all but idle and iowait) and total, over all CPUs. */
export interface MachineCpu { readonly busy: number; readonly total: number }

export function machineCpu(): MachineCpu {
  return parseProcStat(readFileSync('/proc/stat', 'utf8'));
}

/** The aggregate `cpu` line of /proc/stat text, in seconds. Pure. */
export function parseProcStat(text: string): MachineCpu {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const f = line?.trim().split(/\s+/).slice(1, 9).map(Number) ?? [];
  if (f.length < 8 || f.some((v) => !Number.isFinite(v))) throw new BenchError('cpu', `unreadable /proc/stat: ${text.slice(0, 80)}`);
  const total = f.reduce((a, v) => a + v, 0);
  return { busy: (total - f[3]! - f[4]!) / USER_HZ, total: total / USER_HZ };
}

/** Open file descriptors of a process (entries of /proc/<pid>/fd). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A process and all its descendants (e.g. nginx's master and workers), from the ppid field of /proc/<pid>/stat. */
export function processTree(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* exited meanwhile */ }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [pid, pp] of parent) if (pp === out[i]) out.push(pid);
  return out;
}
