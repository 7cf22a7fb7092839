/**
 * One HTTP(S) request whose answer is read whole, bounded in size and time: for APIs that answer
 * with one JSON document (the Kubernetes API server, to `ambit install` and to the control plane's
 * config source). The caller supplies the request options (method, headers, TLS material and
 * credentials, e.g. from a KubeConfig's applyToHTTPSOptions) and judges the status itself.
 */
import http from 'node:http';
import https from 'node:https';
import { MeshError } from './errors.js';

export interface BoundedAnswer {
  readonly status: number;
  /** the body as UTF-8 */
  readonly body: string;
  /** the Location header of a redirect */
  readonly location?: string;
}

export interface BoundedRequestOptions {
  /** Node's request options: method, headers, TLS (ca, cert, key), agent */
  readonly request: https.RequestOptions;
  /** request body, sent as it is */
  readonly body?: string | undefined;
  /** a longer answer is refused (AMBIT_LIMIT), bytes */
  readonly maxBytes: number;
  /** the whole exchange is given up after this long without progress (AMBIT_CONNECT_TIMEOUT), ms */
  readonly timeoutMs: number;
  /** names the request in errors; default "<method> <origin><path>" */
  readonly what?: string;
}

/**
 * Sends the request to `url` (https or http by its protocol) and resolves with the status and the
 * whole body, whatever the status. Rejects with a MeshError: AMBIT_LIMIT (answer larger than
 * maxBytes), AMBIT_CONNECT_TIMEOUT (timeoutMs of socket inactivity), AMBIT_CONNECT_REFUSED (any
 * other failure of the connection, the error as cause).
 */
export function boundedRequest(url: URL, o: BoundedRequestOptions): Promise<BoundedAnswer> {
  const what = o.what ?? `${o.request.method ?? 'GET'} ${url.origin}${url.pathname}`;
  return new Promise<BoundedAnswer>((resolve, reject) => {
    // set when we end the request ourselves: the error events that follow carry less
    let ours: MeshError | undefined;
    const fail = (e: Error): void => {
      reject(ours ?? (e instanceof MeshError ? e : new MeshError('AMBIT_CONNECT_REFUSED', `${what}: ${e.message}`, { cause: e })));
    };
    // a response being read is destroyed itself: req.destroy(err) once the whole answer has
    // arrived (its socket back in the agent's pool) raises err where nobody listens
    const abort = (e: MeshError, stream: { destroy(e: Error): void }): void => { ours ??= e; stream.destroy(e); };
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, o.request, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (ours) return; // what is still buffered after the abort
        size += c.length;
        if (size > o.maxBytes) { abort(new MeshError('AMBIT_LIMIT', `${what}: response exceeds ${o.maxBytes} bytes`), res); return; }
        chunks.push(c);
      });
      res.on('error', fail);
      res.on('end', () => resolve({
        status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'),
        ...(typeof res.headers.location === 'string' ? { location: res.headers.location } : {}),
      }));
    });
    req.on('error', fail);
    req.setTimeout(o.timeoutMs, () => abort(new MeshError('AMBIT_CONNECT_TIMEOUT', `${what}: no answer within ${o.timeoutMs} ms`), req));
    req.end(o.body);
  });
}
