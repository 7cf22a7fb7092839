/**
 * The narrow capabilities the agent's pieces need from the native addon. app.ts passes the real
 * `src/native` module (it satisfies these shapes structurally); nothing below app.ts imports the
 * addon at runtime (the option types come from src/native as type-only imports), so the pure
 * parts load anywhere.
 */
import type { Server, Socket } from 'node:net';
// types only: erased at runtime, so this never loads the addon
import type { ConnectOptions, ListenOptions, Netns } from '../native/index.js';

/** A pod's network namespace: a path, or an open netns fd. */
export type NetnsHandle = Netns;
export type ListenInNetnsOptions = ListenOptions;
export type ConnectInNetnsOptions = ConnectOptions;

/** Socket operations inside a pod netns: what the per-pod proxies use. */
export interface NetnsSockets {
  listenInNetns(netns: NetnsHandle, o: ListenInNetnsOptions): number;
  connectInNetns(netns: NetnsHandle, o: ConnectInNetnsOptions): Promise<number>;
  /** `peer`, when given, is the accepted socket's remote address (saves asking Node for it) */
  originalDst(fd: number): { address: string; port: number; family?: number | string; peer?: { address: string; port: number } };
  socketFd(s: Socket | Server): number;
  closeFd(fd: number): void;
}

/** fd passing over unix sockets: what the CNI hand-off uses. */
export interface FdPassing {
  recvWithFds(fd: number, maxBytes: number, maxFds: number, timeoutMs: number): Promise<{ data: Buffer; fds: number[] } | null>;
  sendWithFds(fd: number, data: Buffer, fds: number[]): unknown;
  openNetns(path: string): number;
  socketFd(s: Socket | Server): number;
  closeFd(fd: number): void;
}

export type NativeApi = NetnsSockets & FdPassing;
