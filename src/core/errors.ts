/**
 * One error base for the whole mesh. Codes are stable and never reused: operators grep for them,
 * tests assert on them, metrics label by them. Messages are lowercase and carry context.
 */
export type ErrorCode =
  // configuration and input
  | 'AMBIT_CONFIG_INVALID'
  | 'AMBIT_CONFIG_UNKNOWN_FIELD'
  // native / kernel
  | 'AMBIT_SYSCALL'
  | 'AMBIT_NETNS'
  | 'AMBIT_NFT'
  // identity
  | 'AMBIT_CSR_INVALID'
  | 'AMBIT_CSR_FORBIDDEN'
  | 'AMBIT_CERT_INVALID'
  | 'AMBIT_IDENTITY_MISMATCH'
  | 'AMBIT_TRUST_DOMAIN_MISMATCH'
  // control channel
  | 'AMBIT_XDS_UNAUTHENTICATED'
  | 'AMBIT_XDS_PROTOCOL'
  | 'AMBIT_XDS_NACK'
  | 'AMBIT_XDS_SLOW_CLIENT'
  // data plane
  | 'AMBIT_HBONE_BAD_REQUEST'
  | 'AMBIT_HBONE_STATUS'
  // an HBONE stream of the engine failed (src/hbone HboneError): the TCP dial to the peer, TLS
  // (handshake or peer identity), refused by GOAWAY / REFUSED_STREAM, lost before the CONNECT was
  // answered, reset after it was, or ended on our side (closeFlow, shutdown)
  | 'AMBIT_HBONE_CONNECT_FAILED'
  | 'AMBIT_HBONE_TLS'
  | 'AMBIT_HBONE_REFUSED'
  | 'AMBIT_HBONE_LOST'
  | 'AMBIT_HBONE_RESET'
  | 'AMBIT_HBONE_ABORTED'
  | 'AMBIT_CONNECT_TIMEOUT'
  | 'AMBIT_CONNECT_REFUSED'
  | 'AMBIT_NO_HEALTHY_UPSTREAM'
  | 'AMBIT_POLICY_DENIED'
  | 'AMBIT_SELF_CALL'
  | 'AMBIT_DRAINING'
  | 'AMBIT_HANDOVER'
  | 'AMBIT_LIMIT'
  | 'AMBIT_BUG'
  // native addon missing or not loadable (not built for this machine, or a Node whose nghttp2 or
  // OpenSSL is older than the engine needs)
  | 'AMBIT_NATIVE_UNAVAILABLE'
  // a call on a data-path engine after its destroy()
  | 'AMBIT_ENGINE_CLOSED'
  // a program started by `ambit up` (control plane, node agent) exited or never became ready
  | 'AMBIT_PROCESS_FAILED'
  // an authenticated control-channel peer may not take the role it asked for (e.g. a waypoint
  // session from an identity that runs no waypoint)
  | 'AMBIT_XDS_FORBIDDEN'
  // a pod cannot be started inside the mesh yet (no config, no certificate): its CNI ADD is
  // refused rather than letting it run uncaptured; the runtime retries
  | 'AMBIT_POD_NOT_ADMITTED'
  // `ambit restart` cannot talk to the running `ambit up` (no control socket, a bad answer)
  | 'AMBIT_UP_UNREACHABLE'
  // the Kubernetes API server refused or failed a write (or a read) the control plane needs
  // (the CA Secret, a waypoint's objects, a Gateway's status): the status and its message
  | 'AMBIT_KUBE_API'
  // the node agent could not install its CNI plugin onto the node, or remove it (a file of the CNI
  // bin or conf dir that cannot be read or written, a payload file missing): names the file
  | 'AMBIT_CNI_INSTALL';

export class MeshError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'MeshError';
  }
}

/** Config rejected for one resource: names the resource and the field, so the user can fix it. */
export class ConfigError extends MeshError {
  readonly resource: string;
  readonly field: string;
  constructor(resource: string, field: string, message: string, code: ErrorCode = 'AMBIT_CONFIG_INVALID') {
    super(code, `${resource}: ${field}: ${message}`);
    this.resource = resource;
    this.field = field;
    this.name = 'ConfigError';
  }
}

export function isMeshError(e: unknown, code?: ErrorCode): e is MeshError {
  return e instanceof MeshError && (code === undefined || e.code === code);
}

/** Best-effort message of anything thrown. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
