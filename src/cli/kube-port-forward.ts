/**
 * One HTTP GET to a port of a pod, through the API server's port-forward (what `kubectl
 * port-forward` and istioctl do): the connection ends in the pod's own network namespace, on its
 * loopback, so it reaches the admin and debug endpoints that answer 127.0.0.1 only (the agents'
 * and waypoints' /config_dump, the control plane's /debug/*). The pod proxy would not: its
 * requests come from the API server's address, and the API server drops the user's credentials
 * before proxying, so the debug endpoints could not tell a user from anyone on the pod network.
 *
 * The protocol is the WebSocket one of the kubelet's streaming server (subprotocol
 * v4.channel.k8s.io, binary): every message starts with a channel byte; port i has data channel
 * 2i and error channel 2i+1, and the first message on each channel carries the port number
 * (2 bytes, little-endian) before any data.
 */
import http from 'node:http';
import { Duplex } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import WebSocket from 'ws';
import { MeshError, errorMessage } from '../core/index.js';

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MAX_ERROR_BYTES = 4096;
const TIMEOUT_MS = 30_000;

export interface PodPort { readonly namespace: string; readonly pod: string; readonly port: number }

/** The WebSocket URL of a pod's port-forward on the API server of `server` (http(s)://...). */
export function portForwardUrl(server: string, p: PodPort): string {
  const base = server.replace(/\/$/, '').replace(/^http/, 'ws');
  return `${base}/api/v1/namespaces/${encodeURIComponent(p.namespace)}/pods/${encodeURIComponent(p.pod)}/portforward?ports=${p.port}`;
}

/** A byte stream to the pod's port over one port-forward WebSocket. */
async function openStream(kc: KubeConfig, p: PodPort): Promise<{ stream: Duplex; ws: WebSocket }> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new MeshError('AMBIT_CONFIG_INVALID', 'kubeconfig: no current cluster');
  const opts: import('node:https').RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  const ws = new WebSocket(portForwardUrl(cluster.server, p), ['v4.channel.k8s.io'], {
    ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
    ...(opts.cert !== undefined ? { cert: opts.cert } : {}),
    ...(opts.key !== undefined ? { key: opts.key } : {}),
    ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
    headers: (opts.headers ?? {}) as Record<string, string>,
    handshakeTimeout: TIMEOUT_MS, maxPayload: MAX_BODY_BYTES,
  });
  const where = `port-forward to ${p.namespace}/${p.pod}:${p.port}`;
  const seenPort = [false, false];
  let errorText = '';
  // what the kubelet said on the error channel (a failed dial), else that the stream ended
  const ended = (): MeshError => new MeshError('AMBIT_CONNECT_REFUSED', `${where}: ${errorText.trim().slice(0, 500) || 'closed by the other end'}`);
  const stream = new Duplex({
    read() { /* pushed from the socket */ },
    write(chunk: Buffer, _enc, cb) {
      if (ws.readyState !== WebSocket.OPEN) { cb(ended()); return; }
      ws.send(Buffer.concat([Buffer.from([0]), chunk]), { binary: true }, cb);
    },
    final(cb) { cb(); },
    destroy(err, cb) { ws.terminate(); cb(err); },
  });
  ws.on('message', (data: Buffer) => {
    if (data.length === 0) return;
    const ch = data[0]!;
    let payload = data.subarray(1);
    if (ch <= 1 && !seenPort[ch]) { seenPort[ch] = true; payload = payload.subarray(2); }
    if (ch === 0) { if (payload.length > 0) stream.push(payload); return; }
    if (ch === 1 && errorText.length < MAX_ERROR_BYTES) errorText += payload.toString('utf8');
  });
  ws.on('close', () => {
    if (errorText.trim()) stream.destroy(ended());
    else stream.push(null);
  });
  ws.on('error', (e) => stream.destroy(new MeshError('AMBIT_CONNECT_REFUSED', `${where}: ${e.message}`, { cause: e })));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { if (body.length < 2000) body += c; });
      res.on('end', () => {
        let msg = body.slice(0, 300);
        try { msg = String((JSON.parse(body) as { message?: unknown }).message ?? msg); } catch { /* not a Status */ }
        reject(new MeshError('AMBIT_CONNECT_REFUSED', `${where}: HTTP ${res.statusCode ?? '?'}: ${msg || '(no body)'}`));
      });
      res.on('error', reject);
    });
    ws.once('error', (e) => reject(new MeshError('AMBIT_CONNECT_REFUSED', `${where}: ${e.message}`, { cause: e })));
  });
  return { stream, ws };
}

/** GET `path` from the pod's port; the answer's status and body (at most 16 MiB). */
export function podGet(kc: KubeConfig, p: PodPort, path: string): Promise<{ status: number; body: string }> {
  return podRequest(kc, p, 'GET', path);
}

/** One request without a body (GET, or a POST that names an action) to the pod's port; the answer's status and body. */
export async function podRequest(kc: KubeConfig, p: PodPort, method: 'GET' | 'POST', path: string): Promise<{ status: number; body: string }> {
  const { stream, ws } = await openStream(kc, p);
  try {
    return await new Promise((resolve, reject) => {
      const req = http.request({
        createConnection: () => stream as unknown as import('node:net').Socket,
        path, method, headers: { host: 'localhost', connection: 'close', ...(method === 'POST' ? { 'content-length': '0' } : {}) }, timeout: TIMEOUT_MS,
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > MAX_BODY_BYTES) { req.destroy(new MeshError('AMBIT_LIMIT', `${path}: answer larger than ${MAX_BODY_BYTES} bytes`)); return; }
          chunks.push(d);
        });
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.once('error', reject);
      });
      req.once('timeout', () => req.destroy(new MeshError('AMBIT_CONNECT_REFUSED', `${method} ${path} through the port-forward: no answer within ${TIMEOUT_MS} ms`)));
      req.once('error', (e) => reject(e instanceof MeshError ? e : new MeshError('AMBIT_CONNECT_REFUSED', `${method} ${path} on ${p.namespace}/${p.pod}:${p.port}: ${errorMessage(e)}`, { cause: e })));
      req.end();
    });
  } finally {
    ws.close();
  }
}
