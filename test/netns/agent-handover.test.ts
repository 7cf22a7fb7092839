/**
 * Restart and upgrade of a node agent without a refusal: a new instance takes every pod's
 * listening sockets over from the running one (fd passing, src/node-agent/handover.ts) before
 * the old one stops accepting, and the old one drains. A request every 20 ms from a pod to a pod
 * on another node and to one on its own node must all succeed, and nothing may cross the underlay
 * in plaintext, across an overlapping replacement and a restart of either node's agent.
 */
import { existsSync } from 'node:fs';
import * as native from '../../src/native/index.js';
import { sendCniRequest } from '../../src/node-agent/index.js';
import { createMesh } from '../helpers/mesh.js';
import { captureUnderlay } from '../helpers/pcap.js';
import { startRequestLoop } from '../helpers/request-loop.js';
import { rootSerial } from '../helpers/root.js';

const serial = rootSerial;

const opened = async (m: { telemetry: { metrics(): Promise<string> } }): Promise<number> => {
  let n = 0;
  for (const line of (await m.telemetry.metrics()).split('\n')) {
    if (line.startsWith('istio_tcp_connections_opened_total{reporter="source"')) n += Number(line.split(' ').pop());
  }
  return n;
};

serial('replacing and restarting agents under a request every 20 ms: no request fails, none in plaintext', async (t) => {
  const mesh = await createMesh(t, { nodes: 2 });
  const client = await mesh.pod({ name: 'client', node: 'node-1', ambient: true });
  const far = await mesh.pod({ name: 'far', node: 'node-2', ambient: true });
  const near = await mesh.pod({ name: 'near', node: 'node-1', ambient: true });
  await Promise.all([mesh.echo(far), mesh.echo(near)]);
  const targets = [`${far.ip}:8080`, `${near.ip}:8080`];

  let summary!: Awaited<ReturnType<Awaited<ReturnType<typeof startRequestLoop>>['stop']>>;
  const steps: string[] = [];
  const pcap = await captureUnderlay(mesh.cluster, 'node-1', async () => {
    const loop = await startRequestLoop(mesh.cluster, client, targets, 20);
    await loop.successes(10);
    for (const [node, mode] of [['node-1', 'overlap'], ['node-2', 'overlap'], ['node-1', 'restart'], ['node-2', 'restart']] as const) {
      const old = mesh.agent(node);
      const fresh = await mesh.replaceAgent(node, mode, 10_000);
      t.not(fresh, old);
      t.is(old.instance.state, 'stopped');
      t.is(fresh.instance.state, 'serving');
      t.true(fresh.isReady(), `${node}: the new agent is ready`);
      // the new agent carries the traffic now (node-1's counts the client's connections)
      const before = node === 'node-1' ? await opened(fresh) : 0;
      await loop.successes(10);
      if (node === 'node-1') t.true(await opened(fresh) > before, 'the new agent on node-1 opened the client\'s connections');
      steps.push(`${node} ${mode}`);
      t.log(`${node} ${mode} done at ${Date.now()}`);
    }
    summary = await loop.stop();
  });
  t.deepEqual(steps, ['node-1 overlap', 'node-2 overlap', 'node-1 restart', 'node-2 restart']);
  t.log(`${summary.total} requests, ${summary.failed.length} failed, longest gap per target (ms): ${JSON.stringify(summary.longestGapMs)}`);
  t.true(summary.total >= 80, `requests were made (${summary.total})`);
  t.deepEqual(summary.failed.map((r) => `${r.target} ${r.error ?? 'bad answer'}`), [], `no request failed: ${JSON.stringify(summary.failed)}`);
  // every request crossing the underlay went through HBONE: no HTTP request line in clear
  t.true(pcap.includes(Buffer.from([0x3a, 0xa0])), 'traffic went to port 15008');
  t.false(pcap.includes(Buffer.from('GET / HTTP/1.0')), 'no request crossed the underlay in plaintext');
});

serial('a second agent that fails to start removes nothing of the running one: a pod ADD still works', async (t) => {
  const mesh = await createMesh(t, { nodes: 1, agent: { handoverTimeoutMs: 1_500 } });
  const a = await mesh.pod({ name: 'a', node: 'node-1', ambient: true });
  await mesh.echo(a);
  const running = mesh.agent('node-1');
  const socket = running.socketPath;
  t.true(existsSync(socket));
  // the second instance cannot get certificates (control plane down for it): it must give up
  mesh.control.setDown(true);
  const second = mesh.newAgent('node-1');
  await t.throwsAsync(second.start(), { message: /handover|certificate/i });
  await second.stop(0);
  mesh.control.setDown(false);
  t.true(existsSync(socket), 'the running agent\'s CNI socket is still there');
  t.is(running.instance.state, 'serving');
  // a new pod handed over CNI to the running agent is enrolled and served
  const b = await mesh.pod({ name: 'b', node: 'node-1', ambient: true, serviceAccount: 'a' });
  t.true(running.enrolledPods().some((p) => p.name === 'b' && p.listening));
  await mesh.echo(b);
  const r = await mesh.http(a, b.ip, 8080);
  t.true(r.ok, `a -> b: ${r.error ?? ''}`);
  // and the CNI socket answers directly too
  const fd = native.openNetns(b.netnsPath);
  try {
    await t.notThrowsAsync(sendCniRequest({ native, path: socket }, { op: 'ADD', name: b.name, namespace: b.namespace, ip: b.ip }, fd));
  } finally {
    native.closeFd(fd);
  }
});
