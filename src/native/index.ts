/**
 * The kernel operations Node lacks, for the node agent: sockets created inside a pod's network
 * namespace, SO_MARK, transparent sockets, the original destination of a redirected connection,
 * and fd passing over unix sockets. The only importer of native/ (the compiled addon).
 *
 * Errors: argument mistakes throw TypeError (code ERR_INVALID_ARG_VALUE) before any syscall. A
 * failing syscall throws (or rejects with) a SyscallError: a MeshError whose `code` is
 * 'AMBIT_SYSCALL' (or 'AMBIT_NETNS' for netns checks, 'AMBIT_CONNECT_TIMEOUT' /
 * 'AMBIT_CONNECT_REFUSED' for connectInNetns), and which keeps the kernel's answer as `.errno`
 * ('EINVAL'), `.errnum` (22) and `.syscall` ('setns'). Its message reads
 * "<function>: <syscall>: <ERRNO> (<text>)[: detail] (<context>)".
 */
import { isIP, type Server, type Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import { addon, type NativeVersions } from './addon.js';
import { wrapNative } from './errors.js';

export { SyscallError, isSyscallError } from './errors.js';
export { nativeAvailable, addonFile, type NativeVersions } from './addon.js';
export {
  Engine, ENGINE_CODES, FAIL, LINK, engineCodesMismatch, type EngineCallbacks, type EngineLogLevel, type EngineOptions, type EngineListenOptions, type EngineStats, type EngineTls, type InboundTarget,
  type OutboundPlan, type EngineLink, type InboundAdopt, type LinkState, type HbonePlan,
} from './engine.js';

export interface SockAddr { address: string; port: number; family: 4 | 6 }

/** originalDst's answer: the destination, plus the socket's peer when it could be read (addon builds from before it was added: never). */
export interface OriginalDst extends SockAddr { peer?: SockAddr }

/** A network namespace: a path such as /var/run/netns/x (opened and checked per call) or an open netns fd. */
export type Netns = string | number;

export interface ListenOptions {
  /** local IP to bind; '::' gives a dual-stack listener (IPv4 arrives v4-mapped) */
  address: string;
  /** 0..65535 (0: the kernel picks) */
  port: number;
  /** SO_MARK for the listener and the sockets it accepts */
  mark?: number;
  /** SO_REUSEPORT, so a new agent can bind next to the old one during an upgrade; default false */
  reusePort?: boolean;
  /** listen() backlog, 1..65535; default 511 (Node re-applies its own on listen({fd})) */
  backlog?: number;
  /** IP(V6)_TRANSPARENT + FREEBIND; default false */
  transparent?: boolean;
}

export interface ConnectOptions {
  address: string;
  /** 1..65535 */
  port: number;
  /** SO_MARK (0x539 keeps the pod's capture rules away from the agent's own sockets) */
  mark?: number;
  /** source IP to bind; may be non-local when `transparent` is set */
  localAddress?: string;
  /** source port; default 0 (kernel picks) */
  localPort?: number;
  /** IP(V6)_TRANSPARENT + FREEBIND, to connect with another host's source address; default false */
  transparent?: boolean;
  /** handshake deadline in ms; default 10000 */
  timeoutMs?: number;
}

export type UnixKind = 'stream' | 'seqpacket';

const U32 = 0xffff_ffff;

function bad(fn: string, field: string, what: string, got: unknown): TypeError {
  const shown = typeof got === 'string' ? `'${got.slice(0, 60)}'` : String(got);
  const e = new TypeError(`${fn}: ${field} ${what}, got ${shown}`);
  (e as TypeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE';
  return e;
}

function checkInt(fn: string, field: string, v: unknown, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw bad(fn, field, `must be an integer in ${min}..${max}`, v);
  }
}

function checkFd(fn: string, field: string, v: unknown): void {
  checkInt(fn, field, v, 0, 0x7fff_ffff);
}

function checkIp(fn: string, field: string, v: unknown): void {
  if (typeof v !== 'string' || isIP(v) === 0) throw bad(fn, field, 'must be an IPv4 or IPv6 address', v);
}

function checkNetns(fn: string, v: unknown): void {
  if (typeof v === 'string') {
    if (v.length === 0 || v.includes('\0')) throw bad(fn, 'netns', 'must be a netns path', v);
    return;
  }
  if (typeof v === 'number') return checkFd(fn, 'netns', v);
  throw bad(fn, 'netns', 'must be a netns path (string) or an open netns fd (number)', v);
}

function optional(fn: string, field: string, v: unknown, check: (fn: string, field: string, v: unknown) => void): void {
  if (v !== undefined) check(fn, field, v);
}

function checkBool(fn: string, field: string, v: unknown): void {
  if (typeof v !== 'boolean') throw bad(fn, field, 'must be a boolean', v);
}

function checkKind(fn: string, v: unknown): void {
  if (v !== 'stream' && v !== 'seqpacket') throw bad(fn, 'kind', "must be 'stream' or 'seqpacket'", v);
}

function call<T>(op: string, context: string | undefined, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw wrapNative(e, op, context);
  }
}

function where(netns: Netns): string {
  return typeof netns === 'string' ? `netns ${netns}` : `netns fd ${netns}`;
}

/**
 * Original destination of an accepted, REDIRECTed socket: SO_ORIGINAL_DST, or
 * IP6T_SO_ORIGINAL_DST for IPv6. IPv4 clients of a dual-stack listener come back as family 4.
 */
export function originalDst(fd: number): OriginalDst {
  checkFd('originalDst', 'fd', fd);
  return call('originalDst', `fd ${fd}`, () => addon().originalDst(fd));
}

/** SO_MARK on a socket (needs CAP_NET_ADMIN). */
export function setMark(fd: number, mark: number): void {
  checkFd('setMark', 'fd', fd);
  checkInt('setMark', 'mark', mark, 0, U32);
  call('setMark', `fd ${fd}`, () => addon().setMark(fd, mark));
}

/** IP_TRANSPARENT + IP_FREEBIND (IPv4 socket) or IPV6_TRANSPARENT + IPV6_FREEBIND (IPv6 socket). */
export function setTransparent(fd: number): void {
  checkFd('setTransparent', 'fd', fd);
  call('setTransparent', `fd ${fd}`, () => addon().setTransparent(fd));
}

/**
 * A listening TCP socket that lives in `netns`. Returns an fd (non-blocking, CLOEXEC, SO_REUSEADDR)
 * for `net.Server.listen({ fd })`; the socket was created on a helper thread that entered the
 * netns, so this thread never changes namespace.
 */
export function listenInNetns(netns: Netns, opts: ListenOptions): number {
  const fn = 'listenInNetns';
  checkNetns(fn, netns);
  if (typeof opts !== 'object' || opts === null) throw bad(fn, 'opts', 'must be an object', opts);
  checkIp(fn, 'opts.address', opts.address);
  checkInt(fn, 'opts.port', opts.port, 0, 65535);
  optional(fn, 'opts.mark', opts.mark, (f, n, v) => checkInt(f, n, v, 0, U32));
  optional(fn, 'opts.backlog', opts.backlog, (f, n, v) => checkInt(f, n, v, 1, 65535));
  optional(fn, 'opts.reusePort', opts.reusePort, checkBool);
  optional(fn, 'opts.transparent', opts.transparent, checkBool);
  return call(fn, `${opts.address} port ${opts.port} in ${where(netns)}`, () => addon().listenInNetns(netns, opts));
}

/**
 * A TCP connection made from inside `netns`. Resolves an fd for
 * `new net.Socket({ fd, readable: true, writable: true })`. The handshake is awaited on the event
 * loop (no thread is held), and fails with AMBIT_CONNECT_TIMEOUT after `timeoutMs`.
 */
export async function connectInNetns(netns: Netns, opts: ConnectOptions): Promise<number> {
  const fn = 'connectInNetns';
  checkNetns(fn, netns);
  if (typeof opts !== 'object' || opts === null) throw bad(fn, 'opts', 'must be an object', opts);
  checkIp(fn, 'opts.address', opts.address);
  checkInt(fn, 'opts.port', opts.port, 1, 65535);
  optional(fn, 'opts.mark', opts.mark, (f, n, v) => checkInt(f, n, v, 0, U32));
  optional(fn, 'opts.localAddress', opts.localAddress, checkIp);
  optional(fn, 'opts.localPort', opts.localPort, (f, n, v) => checkInt(f, n, v, 0, 65535));
  optional(fn, 'opts.transparent', opts.transparent, checkBool);
  optional(fn, 'opts.timeoutMs', opts.timeoutMs, (f, n, v) => checkInt(f, n, v, 1, 0x7fff_ffff));
  if (opts.localAddress !== undefined && isIP(opts.localAddress) !== isIP(opts.address)) {
    throw bad(fn, 'opts.localAddress', `must be of the same IP family as opts.address (${opts.address})`, opts.localAddress);
  }
  const context = `${opts.address} port ${opts.port} from ${where(netns)}`;
  try {
    return await addon().connectInNetns(netns, opts);
  } catch (e) {
    throw wrapNative(e, fn, context);
  }
}

/**
 * recvmsg with SCM_RIGHTS, waiting up to `timeoutMs` on a helper thread (the fd may belong to a
 * paused net.Socket: libuv is not involved). Resolves null on orderly EOF; rejects on a
 * truncated message or too many fds (EMSGSIZE; any fds that arrived are closed) and on timeout
 * (ETIMEDOUT). Received fds are CLOEXEC and owned by the caller. The helper thread reads a dup of
 * `fd`: closing `fd` meanwhile is safe, but the call (and the socket) lasts until data, EOF or timeout.
 * `maxBytes` 1..1048576, `maxFds` 0..253.
 */
export async function recvWithFds(fd: number, maxBytes: number, maxFds: number, timeoutMs: number): Promise<{ data: Buffer; fds: number[] } | null> {
  const fn = 'recvWithFds';
  checkFd(fn, 'fd', fd);
  checkInt(fn, 'maxBytes', maxBytes, 1, 1024 * 1024);
  checkInt(fn, 'maxFds', maxFds, 0, 253);
  checkInt(fn, 'timeoutMs', timeoutMs, 1, 0x7fff_ffff);
  try {
    return await addon().recvWithFds(fd, maxBytes, maxFds, timeoutMs);
  } catch (e) {
    throw wrapNative(e, fn, `fd ${fd}`);
  }
}

/**
 * sendmsg with SCM_RIGHTS: `data` (1..1048576 bytes) with `fds` (at most 253) attached to its first
 * byte. Blocks the caller only while a non-blocking socket is full (at most 5 s, then ETIMEDOUT).
 * The fds stay open here; the receiver gets duplicates.
 */
export function sendWithFds(fd: number, data: Buffer, fds: number[]): void {
  const fn = 'sendWithFds';
  checkFd(fn, 'fd', fd);
  if (!Buffer.isBuffer(data) || data.length < 1 || data.length > 1024 * 1024) {
    throw bad(fn, 'data', 'must be a Buffer of 1..1048576 bytes', Buffer.isBuffer(data) ? `${data.length} bytes` : typeof data);
  }
  if (!Array.isArray(fds) || fds.length > 253) throw bad(fn, 'fds', 'must be an array of at most 253 fds', fds);
  fds.forEach((f, i) => checkFd(fn, `fds[${i}]`, f));
  call(fn, `fd ${fd}`, () => addon().sendWithFds(fd, data, fds));
}

/**
 * Open a netns file (O_RDONLY|O_CLOEXEC) and check that it is a network namespace
 * (NS_GET_NSTYPE, or the nsfs filesystem on old kernels). The caller owns the fd.
 */
export function openNetns(path: string): number {
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) throw bad('openNetns', 'path', 'must be a file path', path);
  return call('openNetns', undefined, () => addon().openNetns(path));
}

/**
 * Identity of a network namespace, "dev:ino" of its nsfs inode, from a path or an fd. Equal ids
 * mean the same namespace; a recreated pod netns at the same path gets a new id.
 */
export function netnsId(netns: Netns): string {
  checkNetns('netnsId', netns);
  return call('netnsId', where(netns), () => addon().netnsId(netns));
}

/**
 * True when `fd` is an open network-namespace fd (NS_GET_NSTYPE). Use this rather than readlink of
 * /proc/self/fd/N: an fd opened through a bind mount such as /var/run/netns/x reads back as that
 * path, not as "net:[ino]".
 */
export function isNetnsFd(fd: number): boolean {
  checkFd('isNetnsFd', 'fd', fd);
  try {
    addon().netnsId(fd);
    return true;
  } catch (e) {
    if (e instanceof TypeError) throw e;
    const code = (e as { code?: unknown }).code;
    if (code === 'EINVAL' || code === 'EBADF' || code === 'ENOTTY') return false;
    throw wrapNative(e, 'isNetnsFd', `fd ${fd}`);
  }
}

/** close(2) an fd this process owns (one from this module, or received). Refuses 0..2. */
/**
 * The nghttp2 and OpenSSL the addon binds to and the least it needs. The addon checks them when it
 * loads: an older Node fails the load (AMBIT_NATIVE_UNAVAILABLE) with a message naming what is needed.
 */
export function nativeVersions(): NativeVersions {
  return addon().versions();
}

/**
 * The load-time check applied to given version numbers (nghttp2's 0xMMmmpp, OpenSSL's
 * OPENSSL_VERSION_NUMBER): the refusal message, or null. For tests and diagnostics.
 */
export function nativeVersionsCheck(nghttp2Num: number, opensslNum: number): string | null {
  return addon().versionsCheck(nghttp2Num, opensslNum);
}

/** The open-file limit (RLIMIT_NOFILE) after raiseFdLimit: -1 means unlimited. */
export interface FdLimit { soft: number; hard: number; before: number }

/** Raise the soft open-file limit to the hard one (setrlimit; Node has none). Throws AMBIT_SYSCALL. */
export function raiseFdLimit(): FdLimit {
  return call('raiseFdLimit', 'RLIMIT_NOFILE', () => addon().raiseFdLimit());
}

/**
 * prctl(PR_SET_PDEATHSIG): the kernel sends `signal` to this process when the thread that
 * forked it exits (`0` clears it). Returns getppid() read after the prctl: when it is not the
 * parent the caller expects, the parent died before the prctl took effect and no signal will come.
 * Throws AMBIT_SYSCALL.
 */
export function setParentDeathSignal(signal: NodeJS.Signals | 0): number {
  const num = signal === 0 ? 0 : osConstants.signals[signal];
  if (num === undefined) throw bad('setParentDeathSignal', 'signal', 'must be a signal name', signal);
  return call('setParentDeathSignal', String(signal), () => addon().setParentDeathSignal(num));
}

export function closeFd(fd: number): void {
  checkInt('closeFd', 'fd', fd, 3, 0x7fff_ffff);
  call('closeFd', `fd ${fd}`, () => addon().closeFd(fd));
}

/** Connect a unix socket (stream or seqpacket) to `path`; the fd is non-blocking and CLOEXEC. */
export function unixConnect(path: string, kind: UnixKind = 'stream'): number {
  if (typeof path !== 'string' || path.length === 0 || Buffer.byteLength(path) > 107 || path.includes('\0')) {
    throw bad('unixConnect', 'path', 'must be a socket path of 1..107 bytes', path);
  }
  checkKind('unixConnect', kind);
  return call('unixConnect', path, () => addon().unixConnect(path, kind));
}

/** A connected pair of unix sockets (non-blocking, CLOEXEC), e.g. to hand fds to a child or a test. */
export function unixSocketPair(kind: UnixKind = 'stream'): [number, number] {
  checkKind('unixSocketPair', kind);
  return call('unixSocketPair', undefined, () => addon().unixSocketPair(kind));
}

interface HandleWithFd { _handle?: { fd?: unknown } | null }

/**
 * The fd under a net.Socket or net.Server (libuv's handle). Throws when the object has no open
 * handle (not yet connected or listening, already closed) or is not fd-backed.
 */
export function socketFd(s: Socket | Server): number {
  const fd = (s as unknown as HandleWithFd)._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw bad('socketFd', 'socket', 'has no open fd-backed handle (not connected/listening yet, or closed)', typeof fd === 'number' ? fd : 'none');
  }
  return fd;
}
