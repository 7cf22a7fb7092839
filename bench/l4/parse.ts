/** Parsers for the tools' output. Pure, so a changed tool version fails with a clear message. */
import { BenchError } from '../common/errors.js';

/** Bits per second received by the server, from `iperf3 -c ... -J`. */
export function parseIperfJson(text: string): number {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new BenchError('iperf3', `output is not JSON: ${text.slice(0, 120)}`);
  }
  if (typeof doc !== 'object' || doc === null) throw new BenchError('iperf3', `output is not a JSON object: ${text.slice(0, 120)}`);
  const d = doc as { error?: unknown; end?: { sum_received?: { bits_per_second?: unknown } } };
  if (typeof d.error === 'string') throw new BenchError('iperf3', d.error);
  const bps = d.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number' || !Number.isFinite(bps)) throw new BenchError('iperf3', 'no end.sum_received.bits_per_second in the JSON');
  return bps;
}

export interface WrkResult {
  readonly requestsPerSec: number;
  /** non-2xx/3xx responses plus socket errors */
  readonly errors: number;
}

/** `Requests/sec:` and the error counters of wrk's text report. */
export function parseWrk(text: string): WrkResult {
  const m = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  if (!m) throw new BenchError('wrk', `no "Requests/sec:" line: ${text.trim().split('\n').slice(-3).join(' | ')}`);
  let errors = 0;
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text);
  if (non2xx) errors += Number(non2xx[1]);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  if (sock) errors += Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]);
  return { requestsPerSec: Number(m[1]), errors };
}

/** The last line of a pod script's stdout, parsed as JSON; an `error` field becomes a BenchError. */
export function parseScriptJson<T>(step: string, stdout: string): T {
  const line = stdout.trim().split('\n').pop() ?? '';
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new BenchError(step, `no JSON result line: ${stdout.slice(0, 200)}`);
  }
  if (v === null || typeof v !== 'object') throw new BenchError(step, `result is not an object: ${line.slice(0, 120)}`);
  const err = (v as { error?: unknown }).error;
  if (err !== undefined) throw new BenchError(step, String(err));
  return v as T;
}

/** "HELD <ok> <failed> <pending> <json errors>" from the connection holder. */
export function parseHeld(line: string): { ok: number; failed: number; pending: number; errors: string[] } {
  const m = /^HELD (\d+) (\d+) (\d+) (.*)$/.exec(line.trim());
  if (!m) throw new BenchError('memory', `unexpected holder line: ${line.slice(0, 120)}`);
  let errors: string[] = [];
  try { errors = (JSON.parse(m[4]!) as unknown[]).map(String); } catch { /* the counts are what matter */ }
  return { ok: Number(m[1]), failed: Number(m[2]), pending: Number(m[3]), errors };
}
