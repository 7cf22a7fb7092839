/**
 * Why an HBONE stream of the engine failed, typed, from what the engine published for it
 * (LinkState): so a caller can tell "nothing reached the target, retry" from "reset mid-way"
 * without reading error text.
 */
import { MeshError, type ErrorCode } from '../core/index.js';
import { FAIL, type LinkState } from '../native/index.js';

export type HboneFailure =
  /** the TCP connection to the HBONE peer failed or timed out */
  | 'connect'
  /** the TLS handshake failed, or the peer's identity was refused */
  | 'tls'
  /** the peer answered the CONNECT with a status other than 200 (`status`) */
  | 'status'
  /** refused by GOAWAY or RST_STREAM REFUSED_STREAM (already retried once on a fresh connection) */
  | 'refused'
  /** the stream or its connection went before the CONNECT was answered */
  | 'lost'
  /** reset after it was established */
  | 'reset'
  /** ended on this side: closeFlow, the endpoint closed, the engine gone, out of memory */
  | 'aborted';

const BY_FAIL: Record<number, HboneFailure> = {
  [FAIL.CONNECT]: 'connect', [FAIL.TLS]: 'tls', [FAIL.STATUS]: 'status', [FAIL.REFUSED]: 'refused',
  [FAIL.LOST]: 'lost', [FAIL.RESET]: 'reset', [FAIL.LOCAL]: 'aborted',
};

const CODES: Record<HboneFailure, ErrorCode> = {
  connect: 'AMBIT_HBONE_CONNECT_FAILED', tls: 'AMBIT_HBONE_TLS', status: 'AMBIT_HBONE_STATUS', refused: 'AMBIT_HBONE_REFUSED',
  lost: 'AMBIT_HBONE_LOST', reset: 'AMBIT_HBONE_RESET', aborted: 'AMBIT_HBONE_ABORTED',
};

export class HboneError extends MeshError {
  readonly failure: HboneFailure;
  /** the CONNECT status, for 'status' */
  readonly status: number | undefined;
  /** the stream had been established (CONNECT answered 200) when it failed */
  readonly established: boolean;
  /**
   * Nothing reached the target (connect, tls, status, refused): the request may be sent again.
   * 'lost' is not safe: the peer may have passed bytes on before its answer was lost.
   */
  readonly retrySafe: boolean;
  readonly flowId: number;

  constructor(failure: HboneFailure, message: string, o: { status?: number; established: boolean; flowId: number; cause?: unknown }) {
    super(CODES[failure], message, o.cause !== undefined ? { cause: o.cause } : undefined);
    this.name = 'HboneError';
    this.failure = failure;
    this.status = o.status;
    this.established = o.established;
    this.retrySafe = !o.established && (failure === 'connect' || failure === 'tls' || failure === 'status' || failure === 'refused');
    this.flowId = o.flowId;
  }
}

/** The failure named by an engine FAIL code (a link's, or a closed flow's event); undefined for none (0). */
export function hboneFailureOf(fail: number | undefined): HboneFailure | undefined {
  return fail === undefined || fail === 0 ? undefined : BY_FAIL[fail] ?? 'aborted';
}

/** The error for a failed link (state FAILED), or for an end the engine did not explain. */
export function hboneErrorOf(st: LinkState, flowId: number, cause?: unknown): HboneError {
  const failure: HboneFailure = st.fail !== undefined ? BY_FAIL[st.fail] ?? 'aborted' : st.established ? 'reset' : 'lost';
  const reason = st.reason ?? 'hbone: the stream ended without a reason';
  return new HboneError(failure, `${reason} (flow ${flowId})`, {
    ...(failure === 'status' && st.status ? { status: st.status } : {}), established: st.established, flowId, cause,
  });
}
