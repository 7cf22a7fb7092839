/**
 * One HBONE stream of the engine as a Node socket: a `net.Socket` over JS's end of a unix socket
 * pair whose other end the engine carries as the stream's app side. `node:http`, `node:http2`
 * and anything else that takes a socket can use it.
 *
 * Ends are never ambiguous: the engine publishes how a flow ended (its link) before it shuts or
 * closes its end of the pair, so when EOF arrives here the link already says whether the far side
 * ended cleanly (EOF passes) or the flow failed (the socket is destroyed with an HboneError
 * instead: no caller ever mistakes a reset for a complete response). Destroying the socket before
 * its output was ended (end()) resets the stream (RST_STREAM CANCEL), it does not end it cleanly.
 */
import { Socket } from 'node:net';
import { LINK, type EngineLink, type LinkState } from '../native/index.js';
import { HboneError, hboneErrorOf } from './hbone-error.js';

export interface HboneAddress { ip: string; port: number }

export interface HboneStreamInfo {
  flowId: number;
  direction: 'inbound' | 'outbound';
  /** inbound: the client's SPIFFE URI (verified); outbound: undefined (the server was one of `expect`) */
  peer: string | undefined;
  /** the CONNECT `:authority` (inbound: as the client sent it, unparsed) */
  authority: string;
  /** inbound: the client's `forwarded` header, if any */
  forwarded: string | undefined;
  /** inbound: the client's TCP address; outbound: the HBONE peer dialed */
  remote: HboneAddress;
  /** inbound: the listener's address the client reached; outbound: not known (0.0.0.0:0) */
  local: HboneAddress;
}

/** What the engine reported when the flow closed. Bytes are counted at the socket pair. */
export interface HboneFlowResult {
  /** bytes the engine read from this socket (sent into the stream) */
  sent: number;
  /** bytes the engine wrote to this socket (received from the stream) */
  received: number;
  /** the engine's reason, when the flow failed */
  error: string | undefined;
}

/** What a socket needs from its endpoint. */
export interface HboneSocketHost {
  linkState(link: EngineLink): LinkState;
  /** reset the flow (asynchronous) */
  abort(flowId: number, reason: string): void;
}

const familyOf = (ip: string): string => (ip.includes(':') ? 'IPv6' : 'IPv4');

/**
 * Events besides net.Socket's: 'established' () once the stream is established (inbound: at
 * once; outbound: CONNECT answered 200), 'hbone-closed' (HboneFlowResult) when the engine
 * reported the flow's end (may come before or after 'close').
 */
export class HboneSocket extends Socket {
  readonly info: HboneStreamInfo;
  readonly #link: EngineLink;
  readonly #host: HboneSocketHost;
  #result: HboneFlowResult | undefined;
  #established = false;

  constructor(fd: number, info: HboneStreamInfo, link: EngineLink, host: HboneSocketHost) {
    super({ fd, readable: true, writable: true, allowHalfOpen: true });
    this.info = info;
    this.#link = link;
    this.#host = host;
    // a unix socket has no IP addresses: the stream's stand in (net.Socket reads _peername)
    (this as unknown as { _peername: object })._peername = { address: info.remote.ip, port: info.remote.port, family: familyOf(info.remote.ip) };
  }

  get flowId(): number { return this.info.flowId; }

  /** The stream is established (CONNECT answered 200, or the inbound stream accepted). */
  get established(): boolean { return this.#established || this.#host.linkState(this.#link).established; }

  /** The engine's report of the flow's end, once it came. */
  get result(): HboneFlowResult | undefined { return this.#result; }

  /** net.Socket's local address lookup (a unix socket has none): the stream's. */
  _getsockname(): object {
    return { address: this.info.local.ip, port: this.info.local.port, family: familyOf(this.info.local.ip) };
  }

  /** @internal the endpoint's dispatch of the engine's events */
  _hboneEvent(kind: 1 | 2, result?: HboneFlowResult): void {
    if (kind === 1) {
      this.#established = true;
      this.emit('established');
      return;
    }
    this.#result = result;
    this.emit('hbone-closed', result);
  }

  /** Holds EOF to the link's word: a failed flow destroys the socket with its HboneError. */
  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk === null && !this.destroyed) {
      const st = this.#host.linkState(this.#link);
      if (st.state === LINK.FAILED || st.state === LINK.OPEN) {
        this.destroy(hboneErrorOf(st, this.info.flowId));
        return false;
      }
    }
    return super.push(chunk, encoding);
  }

  override destroy(error?: Error): this {
    if (this.destroyed) return super.destroy(error);
    const st = this.#host.linkState(this.#link);
    let err = error;
    // a read or write error on the pair (ECONNRESET, EPIPE) is the engine closing a failed flow
    if (err !== undefined && !(err instanceof HboneError) && st.state === LINK.FAILED) err = hboneErrorOf(st, this.info.flowId, err);
    // Output abandoned before its end: reset the stream rather than let the peer take what it got
    // for complete. Once our end was sent (end(), then destroy(), as servers do), the engine
    // finishes the stream; bytes the peer still sends then reset it (write to app: EPIPE).
    if (st.state !== LINK.FAILED && st.state !== LINK.DONE && !this.writableFinished) {
      this.#host.abort(this.info.flowId, error !== undefined ? `closed by the application: ${error.message}` : 'closed by the application');
    }
    return super.destroy(err);
  }
}
