/**
 * A child process holding a share of the fan-out benchmark's clients, so client-side decode and
 * snapshot building run beside the server as they would on separate nodes.
 * Protocol over the IPC channel: parent sends {url, token, from, count}; child answers 'ready'
 * once every client is ready; parent sends 'close'; child closes and exits.
 */
import { setLogLevel } from '../../src/core/index.js';
import { XdsClient } from '../../src/xds/index.js';

setLogLevel('error');
const clients: XdsClient[] = [];

process.on('message', (m: { url: string; token: string; from: number; count: number } | 'close') => {
  if (m === 'close') {
    void Promise.all(clients.map((c) => c.close())).then(() => process.exit(0));
    return;
  }
  void (async () => {
    for (let i = 0; i < m.count; i += 25) {
      const batch: XdsClient[] = [];
      for (let j = i; j < Math.min(m.count, i + 25); j++) {
        const c = new XdsClient({ url: m.url, token: m.token, node: `node${m.from + j}`, role: 'agent' });
        c.on('error', () => {});
        c.start();
        batch.push(c);
      }
      await Promise.all(batch.map((c) => c.ready));
      clients.push(...batch);
    }
    process.send!('ready');
  })();
});
