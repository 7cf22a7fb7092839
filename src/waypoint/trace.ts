/**
 * Request ids and trace context, pure except for the injected randomness: `x-request-id` is kept
 * when sane and generated when absent; W3C `traceparent` and B3 (multi-header and single `b3`)
 * keep the trace id and get a new span id for this hop, the incoming span becoming the parent.
 */
import { randomFillSync, randomUUID } from 'node:crypto';
import { getHeader, removeHeader, setHeader, type HeaderList } from './headers.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const HEX32_OR_16 = /^(?:[0-9a-f]{32}|[0-9a-f]{16})$/;
const HEX16 = /^[0-9a-f]{16}$/;

export interface TraceIds {
  readonly requestId: string;
  readonly traceId: string;
  /** this hop's span id, sent upstream */
  readonly spanId: string;
  /** the caller's span id, when it sent one */
  readonly parentSpanId?: string | undefined;
}

export interface TraceRandom {
  uuid(): string;
  hex(bytes: number): string;
}

/**
 * Trace and span ids from the CSPRNG, drawn from a pool refilled 4 KiB at a time: one
 * randomBytes() per id cost two OpenSSL calls (each with its fork check, a getpid(2)) per request,
 * 5 % of the waypoint's CPU under load. randomUUID() keeps its own cache.
 */
const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;
function poolHex(n: number): string {
  if (n > POOL.length) return randomFillSync(Buffer.alloc(n)).toString('hex');
  if (poolAt + n > POOL.length) { randomFillSync(POOL); poolAt = 0; }
  const s = POOL.toString('hex', poolAt, poolAt + n);
  poolAt += n;
  return s;
}

export const CRYPTO_RANDOM: TraceRandom = { uuid: () => randomUUID(), hex: poolHex };

const zero = (s: string): boolean => /^0+$/.test(s);

/** Rewrites the request's id and trace headers in `headers` for the upstream; returns what it used. */
export function propagateTrace(headers: HeaderList, rnd: TraceRandom = CRYPTO_RANDOM): TraceIds {
  const rid = getHeader(headers, 'x-request-id');
  const requestId = rid !== undefined && REQUEST_ID.test(rid) ? rid : rnd.uuid();
  setHeader(headers, 'x-request-id', requestId);

  let traceId: string | undefined;
  let parent: string | undefined;
  let flags = '00';
  let sampled: string | undefined;
  const tp = TRACEPARENT.exec(getHeader(headers, 'traceparent') ?? '');
  if (tp && tp[1] !== 'ff' && !zero(tp[2]!) && !zero(tp[3]!)) { traceId = tp[2]!; parent = tp[3]!; flags = tp[4]!; }
  const b3Trace = getHeader(headers, 'x-b3-traceid')?.toLowerCase();
  const b3Span = getHeader(headers, 'x-b3-spanid')?.toLowerCase();
  const b3Single = getHeader(headers, 'b3')?.toLowerCase().split('-');
  if (traceId === undefined && b3Trace && HEX32_OR_16.test(b3Trace) && b3Span && HEX16.test(b3Span)) {
    traceId = b3Trace.padStart(32, '0'); parent = b3Span;
    sampled = getHeader(headers, 'x-b3-sampled');
  } else if (traceId === undefined && b3Single && b3Single.length >= 2 && HEX32_OR_16.test(b3Single[0]!) && HEX16.test(b3Single[1]!)) {
    traceId = b3Single[0]!.padStart(32, '0'); parent = b3Single[1]!; sampled = b3Single[2];
  }
  if (sampled === '1' || sampled === 'd') flags = '01';
  if (traceId === undefined) traceId = rnd.hex(16);
  const spanId = rnd.hex(8);

  setHeader(headers, 'traceparent', `00-${traceId}-${spanId}-${flags}`);
  const sampledBit = flags === '01' ? '1' : '0';
  if (getHeader(headers, 'b3') !== undefined) {
    removeHeader(headers, 'b3');
    headers.push(['b3', `${traceId}-${spanId}-${sampledBit}${parent ? `-${parent}` : ''}`]);
  }
  setHeader(headers, 'x-b3-traceid', traceId);
  setHeader(headers, 'x-b3-spanid', spanId);
  if (parent) setHeader(headers, 'x-b3-parentspanid', parent); else removeHeader(headers, 'x-b3-parentspanid');
  setHeader(headers, 'x-b3-sampled', sampledBit);
  return { requestId, traceId, spanId, parentSpanId: parent };
}
