/**
 * The environment for a Node child process that loads the native addon. Under `npm run sanitize`
 * the workers keep the sanitizer runtimes out of the programs they start (sanitize-preload.mjs);
 * a child that loads the instrumented addon needs them first in its library list again.
 */
export function nodeChildEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const preload = process.env['AMBIT_SANITIZE_LD_PRELOAD'];
  return { ...process.env, ...(preload ? { LD_PRELOAD: preload } : {}), ...extra };
}
