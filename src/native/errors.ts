/**
 * Errors of the native layer. The addon throws plain Errors carrying `code` (errno name),
 * `syscall` and `errno` (number); we rewrap them as MeshErrors so callers can use one error
 * vocabulary, while keeping the kernel's answer readable on the error itself.
 */
import { MeshError, type ErrorCode } from '../core/index.js';

/** A failed syscall. `code` is the mesh code; `errno`/`syscall` are the kernel's answer. */
export class SyscallError extends MeshError {
  /** errno name, e.g. 'ECONNREFUSED' */
  readonly errno: string;
  /** errno number, e.g. 111 (0 when unknown) */
  readonly errnum: number;
  /** the syscall that failed, e.g. 'connect', 'setns', 'getsockopt' */
  readonly syscall: string;
  /** the ambit function that called it, e.g. 'connectInNetns' */
  readonly op: string;
  constructor(code: ErrorCode, op: string, errno: string, errnum: number, syscall: string, message: string, cause?: unknown) {
    super(code, message, { cause });
    this.name = 'SyscallError';
    this.op = op;
    this.errno = errno;
    this.errnum = errnum;
    this.syscall = syscall;
  }
}

/** True for a SyscallError, optionally with the given errno name. */
export function isSyscallError(e: unknown, errno?: string): e is SyscallError {
  return e instanceof SyscallError && (errno === undefined || e.errno === errno);
}

interface RawNativeError extends Error {
  code?: unknown;
  syscall?: unknown;
  errno?: unknown;
  /** set by the addon when the netns argument itself was refused */
  netns?: unknown;
}

/** Mesh code for a failure: connect outcomes get their data-plane codes, netns checks AMBIT_NETNS. */
function meshCode(op: string, syscall: string, errno: string, netns: boolean): ErrorCode {
  if (netns) return 'AMBIT_NETNS';
  if (op === 'connectInNetns' && syscall === 'connect') {
    if (errno === 'ETIMEDOUT') return 'AMBIT_CONNECT_TIMEOUT';
    if (errno === 'ECONNREFUSED') return 'AMBIT_CONNECT_REFUSED';
  }
  if (syscall === 'setns' || (syscall === 'ioctl' && errno === 'EINVAL')) return 'AMBIT_NETNS';
  if (op === 'openNetns' || op === 'netnsId') return 'AMBIT_NETNS';
  return 'AMBIT_SYSCALL';
}

/**
 * Turn what the addon threw into a SyscallError with context (`op`, and e.g. the netns).
 * TypeErrors from argument checks pass through unchanged: they are programming errors.
 */
export function wrapNative(e: unknown, op: string, context?: string): unknown {
  if (e instanceof TypeError || !(e instanceof Error)) return e;
  const raw = e as RawNativeError;
  if (typeof raw.code !== 'string' || typeof raw.syscall !== 'string') return e;
  const errnum = typeof raw.errno === 'number' ? raw.errno : 0;
  const where = context === undefined ? '' : ` (${context})`;
  return new SyscallError(meshCode(op, raw.syscall, raw.code, raw.netns === true), op, raw.code, errnum, raw.syscall, `${op}: ${raw.message}${where}`, e);
}
