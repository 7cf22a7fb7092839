/**
 * Structured logging: one JSON object per line on stderr (stdout stays free for command output).
 * Level is set once by the entry point; `trace` lines are dropped unless their scope is enabled.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold = ORDER.info;
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');
const traced = new Set<string>();

export function setLogLevel(level: Level): void { threshold = ORDER[level]; }
/** Comma-separated scopes whose trace lines print (entry points pass AMBIT_TRACE). */
export function enableTrace(scopes: string): void {
  for (const s of scopes.split(',')) if (s.trim()) traced.add(s.trim());
}
/** Redirect output (tests capture lines). Returns the previous sink. */
export function setLogSink(fn: (line: string) => void): (line: string) => void {
  const prev = sink; sink = fn; return prev;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  trace(msg: string, fields?: Record<string, unknown>): void;
  child(scope: string): Logger;
  /** whether lines at `level` are written (skip building a record that would be dropped) */
  enabled(level: Level): boolean;
}

function emit(level: Level | 'trace', scope: string, msg: string, fields?: Record<string, unknown>): void {
  const rec: Record<string, unknown> = { time: new Date().toISOString(), level, scope, msg };
  if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = v instanceof Error ? v.message : v;
  sink(JSON.stringify(rec));
}

export function logger(scope: string): Logger {
  return {
    debug: (m, f) => { if (threshold <= ORDER.debug) emit('debug', scope, m, f); },
    info: (m, f) => { if (threshold <= ORDER.info) emit('info', scope, m, f); },
    warn: (m, f) => { if (threshold <= ORDER.warn) emit('warn', scope, m, f); },
    error: (m, f) => { if (threshold <= ORDER.error) emit('error', scope, m, f); },
    trace: (m, f) => { if (traced.has(scope) || traced.has('all')) emit('trace', scope, m, f); },
    child: (s) => logger(`${scope}.${s}`),
    enabled: (level) => threshold <= ORDER[level],
  };
}
