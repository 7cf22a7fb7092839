/**
 * What the numbers were taken on: CPU model and the instruction-set features that move TLS cost
 * (AES-NI, VAES, AVX-512), core count, kernel, Node. Every bench run reports it, because the
 * ratios to the baselines depend on the host (cheap AES-GCM makes a proxy's own per-byte work show).
 */
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';

export interface MachineInfo {
  /** `model name` of /proc/cpuinfo (first CPU) */
  readonly cpuModel: string;
  readonly cpus: number;
  /** of interest for TLS: aes, vaes, avx2, avx512f, sha_ni (those present) */
  readonly cpuFlags: readonly string[];
  readonly kernel: string;
  readonly node: string;
}

const FLAGS = ['aes', 'vaes', 'vpclmulqdq', 'avx2', 'avx512f', 'sha_ni'] as const;

/** Parses /proc/cpuinfo text: the first `model name` and the TLS-relevant flags of the first CPU. Pure. */
export function parseCpuinfo(text: string): { model: string | null; flags: string[] } {
  const model = /^model name\s*:\s*(.+)$/m.exec(text)?.[1]?.trim() ?? null;
  const flagLine = /^flags\s*:\s*(.*)$/m.exec(text)?.[1] ?? '';
  const have = new Set(flagLine.split(/\s+/));
  return { model, flags: FLAGS.filter((f) => have.has(f)) };
}

export function machineInfo(): MachineInfo {
  let parsed: { model: string | null; flags: string[] } = { model: null, flags: [] };
  try { parsed = parseCpuinfo(readFileSync('/proc/cpuinfo', 'utf8')); } catch { /* not Linux: os.cpus() below */ }
  return {
    cpuModel: parsed.model ?? cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    cpuFlags: parsed.flags,
    kernel: release(),
    node: process.version,
  };
}

/** One line for a printed table: "CPU: AMD EPYC (2 CPUs; aes avx2), kernel 6.18, Node v20.20.0". */
export function machineLine(m: MachineInfo): string {
  return `CPU: ${m.cpuModel} (${m.cpus} CPUs; ${m.cpuFlags.join(' ') || 'no aes/avx flags'}), kernel ${m.kernel}, Node ${m.node}`;
}
