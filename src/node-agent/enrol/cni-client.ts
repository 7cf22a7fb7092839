/**
 * Client side of the CNI hand-off (used by `ambit cni` and by the local cluster): connect to the
 * agent socket, send one request with the netns fd, wait for the ACK/NACK.
 */
import { connect } from 'node:net';
import { MeshError } from '../../core/index.js';
import { encodeRequest, MAX_MESSAGE, parseReply, type CniRequest } from './cni-protocol.js';
import type { FdPassing } from '../deps.js';

export interface CniClientOptions {
  native: Pick<FdPassing, 'sendWithFds' | 'socketFd'>;
  /** path of the agent socket */
  path: string;
  /** overall deadline, ms; default 10_000 */
  timeoutMs?: number;
}

/** Sends one request; resolves on ACK, rejects with the agent's error text on NACK. */
export function sendCniRequest(o: CniClientOptions, req: CniRequest, netnsFd?: number): Promise<void> {
  const data = encodeRequest(req);
  return new Promise((resolve, reject) => {
    const sock = connect(o.path);
    let buf = Buffer.alloc(0);
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err); else resolve();
    };
    const timer = setTimeout(() => done(new MeshError('AMBIT_CONNECT_TIMEOUT', `cni: no answer from the agent at ${o.path}`)), o.timeoutMs ?? 10_000);
    sock.on('error', (e) => done(new MeshError('AMBIT_CONNECT_REFUSED', `cni: agent socket ${o.path}: ${e.message}`, { cause: e })));
    sock.on('connect', () => {
      try {
        o.native.sendWithFds(o.native.socketFd(sock), data, netnsFd === undefined ? [] : [netnsFd]);
      } catch (e) {
        done(e instanceof Error ? e : new Error(String(e)));
      }
    });
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length > MAX_MESSAGE) done(new MeshError('AMBIT_LIMIT', 'cni: reply too large'));
      const nl = buf.indexOf(0x0a);
      if (nl < 0) return;
      try {
        const r = parseReply(buf.subarray(0, nl));
        done(r.ok ? undefined : new MeshError('AMBIT_NETNS', `agent refused ${req.op} ${req.namespace}/${req.name}: ${r.error}`));
      } catch (e) {
        done(e instanceof Error ? e : new Error(String(e)));
      }
    });
    sock.on('end', () => done(new MeshError('AMBIT_CONNECT_REFUSED', 'cni: agent closed the connection without an answer')));
  });
}
