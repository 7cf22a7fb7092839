/**
 * HBONE for the waypoint through the addon's engine (src/hbone's stream API): accepted CONNECT
 * streams and dialled ones are Node duplex streams; TLS and HTTP/2 stay in the engine.
 */
import { MeshError } from '../core/index.js';
import type { TransportContext } from './app.js';
import type { WaypointTransport } from './transport.js';

export function createEngineTransport(_ctx: TransportContext): WaypointTransport {
  throw new MeshError('AMBIT_NATIVE_UNAVAILABLE', 'waypoint: the engine stream API (src/hbone) has not landed yet');
}
