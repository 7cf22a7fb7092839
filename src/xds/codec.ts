/**
 * The envelope: one ControlMessage per WebSocket frame. These TypeScript shapes are private to
 * src/xds (the session and the client); nothing outside sees a protobuf type.
 */
import { MeshError, errorMessage } from '../core/index.js';
import { schema } from './schema.js';

export const ADDRESS_TYPE = 'type.googleapis.com/ambit.v1.Address';
export const AUTHORIZATION_TYPE = 'type.googleapis.com/ambit.v1.Authorization';
export const WAYPOINT_CONFIG_TYPE = 'type.googleapis.com/ambit.v1.WaypointConfig';
export const TYPE_URLS = [ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_CONFIG_TYPE] as const;
export type TypeUrl = (typeof TYPE_URLS)[number];

export function isTypeUrl(s: string): s is TypeUrl {
  return (TYPE_URLS as readonly string[]).includes(s);
}

/** A WebSocket close reason must fit 123 bytes of UTF-8 (RFC 6455 §5.5), or `ws` throws. */
export const MAX_CLOSE_REASON_BYTES = 123;

/**
 * Cut `text` to fit a close frame. Reasons often quote what the peer sent, and `ws.close` throws a
 * RangeError on an oversized one, which inside a message handler would crash the process; so the
 * cut is by bytes and never splits a character.
 */
export function closeReason(text: string): string {
  if (Buffer.byteLength(text) <= MAX_CLOSE_REASON_BYTES) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > MAX_CLOSE_REASON_BYTES) break;
    out += ch;
    bytes += n;
  }
  return out;
}

export interface ResourceError { name: string; message: string }

export interface DeltaRequest {
  typeUrl: string;
  responseNonce: string;
  errorDetail?: { code: number; message: string; resources: ResourceError[] };
  initialResourceVersions: Record<string, string>;
  subscribe: string[];
  unsubscribe: string[];
}

export interface WireResource {
  name: string;
  version: string;
  payload: Uint8Array;
}

export interface DeltaResponse {
  typeUrl: string;
  systemVersionInfo: string;
  nonce: string;
  resources: WireResource[];
  removedResources: string[];
}

export interface CertificateRequest {
  requestId: number;
  csrPem: string;
  identity: string;
  ttlSeconds: number;
}

export interface CertificateResponse {
  requestId: number;
  chainPem: string[];
  rootsPem: string;
  error: string;
  errorCode: string;
}

export type ControlMessage =
  | { kind: 'deltaRequest'; deltaRequest: DeltaRequest }
  | { kind: 'deltaResponse'; deltaResponse: DeltaResponse }
  | { kind: 'certificateRequest'; certificateRequest: CertificateRequest }
  | { kind: 'certificateResponse'; certificateResponse: CertificateResponse };

export function encodeControlMessage(m: ControlMessage): Uint8Array {
  const T = schema().ControlMessage;
  // protobufjs encoders read plain objects with the camelCase field names; no need to build instances
  switch (m.kind) {
    case 'deltaRequest': return T.encode({ deltaRequest: m.deltaRequest }).finish();
    case 'deltaResponse': return T.encode({ deltaResponse: m.deltaResponse }).finish();
    case 'certificateRequest': return T.encode({ certificateRequest: m.certificateRequest }).finish();
    case 'certificateResponse': return T.encode({ certificateResponse: m.certificateResponse }).finish();
  }
}

interface RawEnvelope {
  kind?: string;
  deltaRequest?: DeltaRequest & { errorDetail?: { code: number; message: string; resources: ResourceError[] } | null };
  deltaResponse?: DeltaResponse;
  certificateRequest?: CertificateRequest;
  certificateResponse?: CertificateResponse;
}

/** Decode one frame. Throws MeshError AMBIT_XDS_PROTOCOL on anything that is not a ControlMessage. */
export function decodeControlMessage(buf: Uint8Array): ControlMessage {
  let raw: RawEnvelope;
  try {
    raw = schema().ControlMessage.decode(buf) as unknown as RawEnvelope;
  } catch (e) {
    throw new MeshError('AMBIT_XDS_PROTOCOL', `malformed control message (${buf.length} bytes): ${errorMessage(e)}`);
  }
  switch (raw.kind) {
    case 'deltaRequest': {
      const r = raw.deltaRequest!;
      const out: DeltaRequest = {
        typeUrl: r.typeUrl,
        responseNonce: r.responseNonce,
        initialResourceVersions: { ...r.initialResourceVersions },
        subscribe: r.subscribe,
        unsubscribe: r.unsubscribe,
      };
      if (r.errorDetail) out.errorDetail = { code: r.errorDetail.code, message: r.errorDetail.message, resources: r.errorDetail.resources.map((x) => ({ name: x.name, message: x.message })) };
      return { kind: 'deltaRequest', deltaRequest: out };
    }
    case 'deltaResponse': {
      const r = raw.deltaResponse!;
      return {
        kind: 'deltaResponse',
        deltaResponse: {
          typeUrl: r.typeUrl,
          systemVersionInfo: r.systemVersionInfo,
          nonce: r.nonce,
          resources: r.resources.map((x) => ({ name: x.name, version: x.version, payload: x.payload })),
          removedResources: r.removedResources,
        },
      };
    }
    case 'certificateRequest': {
      const r = raw.certificateRequest!;
      return { kind: 'certificateRequest', certificateRequest: { requestId: r.requestId, csrPem: r.csrPem, identity: r.identity, ttlSeconds: r.ttlSeconds } };
    }
    case 'certificateResponse': {
      const r = raw.certificateResponse!;
      return { kind: 'certificateResponse', certificateResponse: { requestId: r.requestId, chainPem: r.chainPem, rootsPem: r.rootsPem, error: r.error, errorCode: r.errorCode } };
    }
    default:
      throw new MeshError('AMBIT_XDS_PROTOCOL', 'control message carries none of delta_request, delta_response, certificate_request, certificate_response');
  }
}
