/**
 * Teardown racing with construction: a destroy() while pods are still being added must leave no
 * namespace of the cluster behind, whichever side finishes first.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { createCluster, listNetns } from '../../src/local/index.js';
import { rootSerial } from '../helpers/root.js';

const nt = rootSerial;

nt('destroy() during addPod leaves no namespace of the cluster, and a second destroy() is a no-op', async (t) => {
  // the race window moves with machine speed, so tear down at several points of the adds
  for (const ms of [0, 2, 5, 10, 20, 40]) {
    const cluster = await createCluster({ nodes: 1 });
    t.teardown(() => cluster.destroySync());
    const adding = Array.from({ length: 4 }, (_, i) => cluster.addPod({ name: `p${i}`, node: 'node-1' }).then(() => 'added', () => 'refused'));
    await delay(ms); // not a timing assertion: every point must end clean
    await cluster.destroy();
    t.deepEqual((await listNetns()).filter((n) => n.startsWith(cluster.prefix)), [], `torn down after ${ms} ms`);
    await Promise.all(adding);
    await cluster.destroy();
    t.deepEqual((await listNetns()).filter((n) => n.startsWith(cluster.prefix)), [], `after the adds settled (${ms} ms)`);
  }
});
