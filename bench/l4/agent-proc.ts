/**
 * A node agent as its own process, for the bench (until `ambit agent` exists it is the way to run
 * one outside the tests). Settings come from the environment exactly as for `ambit agent`
 * (src/node-agent/main.ts agentSettings); the arguments are the pod netns paths the agent may
 * scan. Restricting the scan matters on a shared machine: other local clusters reuse the same pod
 * IPs, and the agent finds a pod's namespace by its IP.
 *
 * Prints "READY" once the agent is ready (control plane synced, pods enrolled and listening);
 * drains on SIGTERM/SIGINT. Started with --expose-gc, SIGUSR2 runs a full garbage collection and
 * prints "GC {rss, heapUsed, heapTotal, external, arrayBuffers}" (bytes): the memory measurement
 * reads RSS after it, so garbage not yet collected does not count as per-connection cost.
 */
import { errorMessage, setLogLevel, type Level } from '../../src/core/index.js';
import { agentSettings, createAgent } from '../../src/node-agent/index.js';

async function main(): Promise<void> {
  if (process.env.AMBIT_LOG_LEVEL) setLogLevel(process.env.AMBIT_LOG_LEVEL as Level);
  const candidates = process.argv.slice(2);
  if (candidates.length === 0 || candidates.some((p) => !p.startsWith('/'))) {
    throw new Error('usage: agent-proc <netns path>... (absolute paths of the pod namespaces)');
  }
  const settings = agentSettings(process.env, { netnsCandidates: async () => candidates });
  const agent = createAgent(settings);
  let stopping: Promise<void> | undefined;
  const done = (p: Promise<void>) => p.then(() => process.exit(0), () => process.exit(1));
  // SIGTERM: where the agent can hand its pods over to a successor (the handover of issue 8), it
  // keeps serving until one took over (or AMBIT_DRAIN_MS passed), then drains, as `ambit agent`
  // does; otherwise, and on SIGINT, it stops at once.
  const terminate = (agent as { terminate?: (deadlineMs: number) => Promise<void> }).terminate;
  // the DaemonSet's drain (daemonset/node-agent.yaml): on a loaded machine a new agent can take
  // 10 s and more to be ready, and the old one stops serving at this deadline without a successor
  const drainMs = Number(process.env.AMBIT_DRAIN_MS ?? 25_000);
  process.once('SIGTERM', () => { stopping ??= done(terminate ? terminate.call(agent, drainMs) : agent.stop(0)); });
  process.once('SIGINT', () => { stopping ??= done(agent.stop(0)); });
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    process.on('SIGUSR2', () => {
      gc();
      // The breakdown tells JS heap from native memory (TLS, HTTP/2 sessions, buffers).
      const m = process.memoryUsage();
      process.stdout.write(`GC ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers })}\n`);
    });
  }
  await agent.start();
  await agent.whenReady();
  process.stdout.write('READY\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`agent-proc: ${errorMessage(e)}\n`);
  process.exit(1);
});
