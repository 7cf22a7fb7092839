/**
 * The CNI plugin as a process: CNI_* from the environment, the network configuration on stdin,
 * the result (or the CNI error object) on stdout, and the exit code the spec asks for. `ambit cni`
 * runs it, and it is the entry point of the single-file bundle the agent installs on the node as
 * `ambit-cni` (scripts/bundle-cni.ts, enrol/cni-install.ts). It reaches only the plugin's own
 * modules (enrol/cni.ts and src/native, loaded here), so the bundle carries nothing of the agent.
 */
import { MeshError, errorMessage } from '../../core/index.js';

/** Largest CNI network configuration read from stdin (runCni refuses more than 1 MiB anyway). */
const MAX_CNI_STDIN = 2 * 1024 * 1024;

function readStdin(limit: number): Promise<string> {
  return new Promise((resolveRead, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    process.stdin.on('data', (d: Buffer) => {
      size += d.length;
      if (size > limit) {
        process.stdin.destroy();
        reject(new MeshError('AMBIT_LIMIT', `cni: network configuration on stdin larger than ${limit} bytes`));
        return;
      }
      chunks.push(d);
    });
    process.stdin.once('end', () => resolveRead(Buffer.concat(chunks).toString('utf8')));
    process.stdin.once('error', reject);
  });
}

export async function cniPluginMain(): Promise<void> {
  let stdin = '';
  // VERSION needs no configuration; every other command gets one on stdin
  if (process.env.CNI_COMMAND !== 'VERSION') {
    try {
      stdin = await readStdin(MAX_CNI_STDIN);
    } catch (e) {
      process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', code: 4, msg: 'invalid network configuration on stdin', details: (e as Error).message }) + '\n');
      process.exitCode = 1;
      return;
    }
  }
  try {
    const [{ runCni }, native] = await Promise.all([import('../enrol/cni.js'), import('../../native/index.js')]);
    const r = await runCni(process.env, stdin, { native });
    process.stdout.write(r.stdout);
    process.exitCode = r.code;
  } catch (e) {
    // e.g. the native addon is not built: the runtime still gets a CNI error object (fail closed)
    process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', code: 999, msg: 'ambit cni failed', details: errorMessage(e) }) + '\n');
    process.exitCode = 1;
  }
}
