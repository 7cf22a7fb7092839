/**
 * Control-channel integration harnesses: a push server on a loopback HTTP(S) server, or a whole
 * control plane; clients tracked for teardown, torn down in order (clients first).
 */
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createControlPlane, type ControlPlane, type ControlPlaneOptions } from '../../src/control/app.js';

export interface PushHarness {
  port: number;
  /** ws://127.0.0.1:port (or wss:// when `tls`) */
  url: string;
  /** registers a client to be closed at teardown; returns it */
  track<C extends { close(): Promise<unknown> }>(c: C): C;
}

/**
 * Listens `server` on 127.0.0.1:0. `closePush` is called at teardown (after the tracked clients):
 * the caller wires the push server to `server` (attach or its own upgrade handler) and may swap it.
 */
export async function servePush(t: ExecutionContext, server: Server, closePush: () => Promise<unknown>, o: { tls?: boolean } = {}): Promise<PushHarness> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const clients: Array<{ close(): Promise<unknown> }> = [];
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await closePush();
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `${o.tls ? 'wss' : 'ws'}://127.0.0.1:${port}`,
    track(c) { clients.push(c); return c; },
  };
}

/**
 * A whole control plane (createControlPlane) in a temporary state directory, started, with
 * clients tracked for teardown and its status port's metrics at hand. `options` gets the state
 * directory (bootstrap tokens live there).
 */
export async function startControlPlane(t: ExecutionContext, label: string,
  options: (stateDir: string) => ControlPlaneOptions | Promise<ControlPlaneOptions>): Promise<{
  cp: ControlPlane;
  track<C extends { close(): Promise<unknown> }>(c: C): C;
  metrics(): Promise<string>;
}> {
  const dir = await mkdtemp(join(tmpdir(), `ambit-${label}-`));
  const clients: Array<{ close(): Promise<unknown> }> = [];
  const held: { cp?: ControlPlane } = {};
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await held.cp?.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const started = createControlPlane(await options(dir));
  held.cp = started;
  await started.start();
  return {
    cp: started,
    track(c) { clients.push(c); return c; },
    async metrics() { return (await fetch(`http://127.0.0.1:${started.addresses.status!.port}/metrics`)).text(); },
  };
}
