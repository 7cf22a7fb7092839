/**
 * Destroying a cluster when its process ends. SIGINT/SIGTERM: destroy, then re-raise the signal
 * with our handler removed, so the process still dies of that signal (exit status 130/143).
 * 'exit': only synchronous work runs there, so namespaces are deleted with execFileSync.
 * SIGKILL cannot be caught; `cleanupStale` of the next run handles that case.
 */
import { logger } from '../core/index.js';
import type { Cluster } from './cluster.js';

const log = logger('local');

/** Installs the handlers; returns a function that removes them again. */
export function installExitCleanup(cluster: Cluster): () => void {
  const onExit = (): void => { cluster.destroySync(); };
  const onSignal = (signal: NodeJS.Signals): void => {
    uninstall();
    cluster.destroy()
      .catch((e: unknown) => { log.error('cleanup after signal failed', { signal, err: e }); cluster.destroySync(); })
      .finally(() => { process.kill(process.pid, signal); });
  };
  const uninstall = (): void => {
    process.off('exit', onExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  process.on('exit', onExit);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return uninstall;
}
