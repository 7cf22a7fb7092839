/**
 * Adapts src/hbone (client pool and server) to the two seams the pod proxy uses. Until the hbone
 * module is wired here, both refuse: mesh traffic fails closed, never falls back to plaintext.
 */
import { MeshError } from '../core/index.js';
import type { HboneListenerFactory, TunnelOpener } from './pod-proxy.js';

export function createTunnelOpener(): TunnelOpener & { close(): Promise<void> } {
  return {
    open: () => Promise.reject(new MeshError('AMBIT_BUG', 'hbone client not available')),
    close: async () => undefined,
  };
}

export const createHboneListener: HboneListenerFactory = () => ({
  listen: async () => { throw new MeshError('AMBIT_BUG', 'hbone server not available'); },
  close: async () => undefined,
});
