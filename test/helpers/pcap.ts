/** Packet capture on a node's underlay, for tests that prove what crosses the wire. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster } from '../../src/local/index.js';

/** Captures TCP on a node's underlay interface (eth0) while `fn` runs; returns the raw pcap bytes. */
export async function captureUnderlay(cluster: Cluster, node: string, fn: () => Promise<void>): Promise<Buffer> {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-pcap-'));
  const file = join(dir, 'cap.pcap');
  try {
    const tcpdump = ['/usr/bin/tcpdump', '/usr/sbin/tcpdump'].find((p) => existsSync(p));
    if (!tcpdump) throw new Error('tcpdump is not installed (apt-get install -y tcpdump; .ci/setup does it)');
    const child = cluster.spawn({ node }, [tcpdump, '-Z', 'root', '--immediate-mode', '-i', 'eth0', '-U', '-s', '0', '-w', file, 'tcp']);
    try {
      await new Promise<void>((resolve, reject) => {
        let err = '';
        child.stderr?.on('data', (d: Buffer) => { err += d.toString(); if (err.includes('listening on')) resolve(); });
        child.once('exit', (c) => reject(new Error(`tcpdump exited ${c}: ${err}`)));
      });
      await fn();
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await exited;
    }
    return readFileSync(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
