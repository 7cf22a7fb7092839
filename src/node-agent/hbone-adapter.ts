/**
 * Adapts src/hbone (client pool and server) to the two seams the pod proxy uses. Until the hbone
 * module is wired here, both refuse: mesh traffic fails closed, never falls back to plaintext.
 */
import { createServer, type Server } from 'node:net';
import { MeshError } from '../core/index.js';
import type { HboneListenerFactory, TunnelOpener } from './pod-proxy.js';

export function createTunnelOpener(): TunnelOpener & { close(): Promise<void> } {
  return {
    open: () => Promise.reject(new MeshError('AMBIT_BUG', 'hbone client not available')),
    close: async () => undefined,
  };
}

export const createHboneListener: HboneListenerFactory = () => {
  let server: Server | undefined;
  return {
    listen: (fd) => new Promise<void>((resolve, reject) => {
      server = createServer((s) => s.resetAndDestroy());
      server.once('error', reject);
      server.listen({ fd }, () => resolve());
    }),
    close: () => new Promise<void>((resolve) => { if (server) server.close(() => resolve()); else resolve(); }),
  };
};
