/**
 * The CNI socket hands the agent a network namespace to capture and proxy: only root may use it.
 * Checked with a real unix socket and a real unprivileged process, under a permissive umask (some
 * container runtimes start processes with umask 0).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniServer } from '../../../src/node-agent/enrol/cni-server.js';
import type { FdPassing } from '../../../src/node-agent/deps.js';
import { rootTest } from '../../helpers/root.js';


const native: FdPassing = {
  socketFd: () => { throw new Error('not used'); },
  recvWithFds: () => Promise.reject(new Error('not used')),
  sendWithFds: () => { throw new Error('not used'); },
  openNetns: () => { throw new Error('not used'); },
  closeFd: () => undefined,
};

async function listenUnderUmask(t: import('ava').ExecutionContext, mask: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-cni-'));
  // A directory others may traverse, as a host path shared with the CNI plugin often is.
  chmodSync(dir, 0o755);
  const path = join(dir, 'agent.sock');
  const server = new CniServer({ native, path, handlers: { add: () => Promise.resolve(), del: () => Promise.resolve() } });
  const old = process.umask(mask);
  try {
    await server.listen();
  } finally {
    process.umask(old);
  }
  t.teardown(async () => { await server.close(); rmSync(dir, { recursive: true, force: true }); });
  return path;
}

test('the CNI socket is owner-only whatever the umask', async (t) => {
  const path = await listenUnderUmask(t, 0);
  t.is(statSync(path).mode & 0o777, 0o600);
});

rootTest('an unprivileged process cannot connect to the CNI socket', async (t) => {
  const path = await listenUnderUmask(t, 0);
  const script = `require('net').connect(${JSON.stringify(path)})`
    + `.on('connect', () => { console.log('CONNECTED'); process.exit(0); })`
    + `.on('error', (e) => { console.log(e.code); process.exit(0); })`;
  const out = await new Promise<string>((resolve, reject) => {
    execFile('/usr/bin/setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script],
      { timeout: 10_000 }, (e, stdout) => { if (e) reject(e); else resolve(stdout.trim()); });
  });
  t.is(out, 'EACCES');
});
