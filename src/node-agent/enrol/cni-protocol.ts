/**
 * The CNI hand-off protocol between `ambit cni` (or the local cluster) and the agent, over the
 * unix socket `<stateDir>/agent.sock`. One request per connection: a JSON line of at most
 * MAX_MESSAGE bytes carrying, for ADD, exactly one fd (the pod's netns) as SCM_RIGHTS; the agent
 * answers with one JSON line `{"ok":true}` or `{"ok":false,"error":"..."}` and closes.
 * Parsing is pure and bounded; every rejection names the field.
 */
import { MeshError } from '../../core/index.js';

export const MAX_MESSAGE = 4096;
export const PROTOCOL_VERSION = 1;

export interface CniAdd {
  readonly op: 'ADD';
  readonly name: string;
  readonly namespace: string;
  readonly uid?: string;
  readonly ip?: string;
}
export interface CniDel {
  readonly op: 'DEL';
  readonly name: string;
  readonly namespace: string;
}
export type CniRequest = CniAdd | CniDel;

export interface CniReply { readonly ok: boolean; readonly error?: string }

const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const IP = /^[0-9a-fA-F:.]{2,45}$/;

function bad(field: string, msg: string): MeshError {
  return new MeshError('AMBIT_CONFIG_INVALID', `cni request: ${field}: ${msg}`);
}

function str(o: Record<string, unknown>, field: string, re: RegExp, required: boolean): string | undefined {
  const v = o[field];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw bad(field, 'must be a string');
  if (!re.test(v)) throw bad(field, `invalid value ${JSON.stringify(v.slice(0, 64))}`);
  return v;
}

export function encodeRequest(r: CniRequest): Buffer {
  const b = Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, ...r }) + '\n');
  if (b.length > MAX_MESSAGE) throw bad('message', `too large (${b.length} > ${MAX_MESSAGE} bytes)`);
  return b;
}

export function parseRequest(buf: Buffer): CniRequest {
  if (buf.length > MAX_MESSAGE) throw bad('message', `too large (${buf.length} > ${MAX_MESSAGE} bytes)`);
  const text = buf.toString('utf8');
  if (!text.endsWith('\n')) throw bad('message', 'incomplete (no terminating newline)');
  let raw: unknown;
  try { raw = JSON.parse(text); } catch { throw bad('message', 'not JSON'); }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw bad('message', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.v !== PROTOCOL_VERSION) throw bad('v', `unsupported protocol version ${JSON.stringify(o.v)}`);
  const name = str(o, 'name', NAME, true)!;
  const namespace = str(o, 'namespace', NAME, true)!;
  if (o.op === 'ADD') {
    const uid = str(o, 'uid', /^[\x21-\x7e]{1,256}$/, false);
    const ip = str(o, 'ip', IP, false);
    return { op: 'ADD', name, namespace, ...(uid ? { uid } : {}), ...(ip ? { ip } : {}) };
  }
  if (o.op === 'DEL') return { op: 'DEL', name, namespace };
  throw bad('op', `must be ADD or DEL, got ${JSON.stringify(o.op)}`);
}

export function encodeReply(r: CniReply): Buffer {
  const error = r.error === undefined ? undefined : r.error.slice(0, 1024);
  return Buffer.from(JSON.stringify(error === undefined ? { ok: r.ok } : { ok: r.ok, error }) + '\n');
}

export function parseReply(buf: Buffer): CniReply {
  if (buf.length > MAX_MESSAGE) throw bad('reply', 'too large');
  let raw: unknown;
  try { raw = JSON.parse(buf.toString('utf8')); } catch { throw bad('reply', 'not JSON'); }
  if (raw === null || typeof raw !== 'object') throw bad('reply', 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  if (typeof o.ok !== 'boolean') throw bad('reply.ok', 'must be a boolean');
  return o.ok ? { ok: true } : { ok: false, error: typeof o.error === 'string' ? o.error : 'unknown error' };
}
