#!/usr/bin/env node
/**
 * The `ambit` command. Entry point: parses arguments, owns the process (signals, exit code) and
 * prints errors as one line naming what is wrong. Exit codes: 0 ok, 1 error.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { errorMessage, setLogLevel, type Level } from '../core/index.js';
import { applyFile, applyText } from './apply.js';
import { waypointGatewayYaml } from './local-waypoints.js';
import { runDown } from './down.js';
import { runExec } from './exec.js';
import { agentCommand, agentOptions, cniCommand, controlCommand, controlOptions } from './programs.js';
import { resolveDir } from './state-file.js';
import { runUp, selfCommand } from './up.js';
import { packageVersion } from './version.js';
import { waypointCommand, waypointRunOptions } from './waypoint.js';

/**
 * Runs a long-lived program to its end and exits: once it has stopped (or failed to start),
 * nothing it left behind (a reconnect timer, a half-open socket) may keep the process alive.
 */
async function runProgram(run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (e) {
    process.stderr.write(`ambit: ${errorMessage(e)}\n`);
    process.exit(1);
  }
  process.exit(process.exitCode ?? 0);
}

async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('ambit')
    .usage('$0 <command> [options]\n\nA sidecarless (ambient) service mesh for Kubernetes.')
    .version(packageVersion())
    .option('dir', { type: 'string', describe: 'ambit working directory (state.json, config/); default $AMBIT_DIR or ./.ambit', global: true })
    .option('log-level', { type: 'string', choices: ['debug', 'info', 'warn', 'error'], default: 'info', global: true })
    .middleware((a) => { setLogLevel(a['log-level'] as Level); })
    .command('up', 'build a 2-node cluster with a client and an echo service, run the mesh on it; remove it all on Ctrl-C',
      (y) => y
        .option('once', { type: 'boolean', default: false, describe: 'build, start the mesh, check it, tear down and exit (for tests)' })
        .option('nodes', { type: 'number', default: 2, describe: 'number of nodes (at least 2)' })
        .option('mesh', { type: 'boolean', default: true, describe: 'start the control plane and node agents (--no-mesh: the bare cluster)' })
        .option('port-base', { type: 'number', default: 15000, describe: 'control plane on base+10/12/14, agent i on base+100*i (+0 admin, +20 metrics, +21 readiness)' }),
      async (a) => {
        process.exitCode = await runUp({
          dir: resolveDir(a.dir), nodes: a.nodes, once: a.once, self: selfCommand(process.argv[1]),
          mesh: a.mesh, portBase: a['port-base'], logLevel: a['log-level'],
          print: (text) => { process.stdout.write(text); },
        });
      })
    .command('down', 'remove what crashed runs left behind (namespaces, processes, state file)', (y) => y,
      async (a) => {
        const r = await runDown(resolveDir(a.dir));
        process.stdout.write(`removed ${r.removedNetns.length} stale network namespace(s)${r.removedStateFile ? ' and the stale state file' : ''}\n`);
        if (r.stoppedPrograms.length > 0) process.stdout.write(`stopped programs left by a dead ambit up: ${r.stoppedPrograms.join(', ')}\n`);
        if (r.running !== undefined) process.stdout.write(`ambit up is still running (pid ${r.running}); stop it with Ctrl-C there\n`);
      })
    .command('exec <target> [cmd..]', 'run a command in a pod of the running ambit up (target: pod name, node/<name> or underlay)',
      (y) => y
        .positional('target', { type: 'string', demandOption: true })
        .positional('cmd', { type: 'string', array: true })
        .parserConfiguration({ 'populate--': true })
        .example('$0 exec client -- curl -s http://10.244.2.2:8080/', ''),
      async (a) => {
        const cmd = [...((a.cmd as string[] | undefined) ?? []), ...((a['--'] as string[] | undefined) ?? [])].map(String);
        process.exitCode = await runExec(resolveDir(a.dir), a.target, cmd);
      })
    .command('apply', 'validate a YAML file and copy it into the watched config directory',
      (y) => y.option('f', { alias: 'filename', type: 'string', demandOption: true, describe: 'YAML file, or - for stdin' }),
      (a) => {
        const r = applyFile(a.f, resolveDir(a.dir));
        process.stdout.write(`applied ${r.objects} object(s): ${r.dest}\n`);
      })
    .command('control', 'run the control plane (config from a YAML directory, or the Kubernetes API with --kube)',
      (y) => controlOptions(y), (a) => runProgram(() => controlCommand(a)))
    .command('agent', 'run the node agent of one node (until SIGTERM/SIGINT, then drain)',
      (y) => agentOptions(y), (a) => runProgram(() => agentCommand(a)))
    .command('waypoint', 'run a waypoint (the L7 proxy of the services bound to it), until SIGTERM/SIGINT, then drain; or apply/generate one',
      (y) => waypointRunOptions(y)
        .command(['apply', 'generate'], 'declare a waypoint Gateway (istioctl waypoint apply|generate): apply puts it in the watched config (ambit up starts it), generate prints it',
          (y2) => y2
            .option('for', { type: 'string', default: 'service', choices: ['service', 'workload', 'all', 'none'], describe: 'traffic the waypoint takes (istio.io/waypoint-for)' })
            .option('enroll-namespace', { type: 'boolean', default: false, describe: 'also label the namespace istio.io/use-waypoint=<name>' }),
          (a) => {
            const text = waypointGatewayYaml({ name: a.name ?? 'waypoint', namespace: a.namespace ?? 'default', for: a.for, enrollNamespace: a['enroll-namespace'] });
            if ((a._ as string[]).includes('generate')) { process.stdout.write(text); return; }
            const dest = applyText(text, `waypoint-${a.namespace ?? 'default'}-${a.name ?? 'waypoint'}.yaml`, resolveDir(a.dir));
            process.stdout.write(`waypoint ${a.namespace ?? 'default'}/${a.name ?? 'waypoint'} applied: ${dest}\n(ambit up starts its pod and process and prints when it is ready)\n`);
          }),
      (a) => runProgram(() => waypointCommand(a)))
    .command('cni', 'the CNI plugin: CNI_COMMAND etc. in the environment, network configuration on stdin, result on stdout',
      (y) => y, () => cniCommand())
    .demandCommand(1, 'give a command; see --help')
    .strict()
    .help()
    .alias('h', 'help')
    .wrap(100)
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`ambit: ${msg}\nrun "ambit --help" for usage\n`);
      process.exit(1);
    })
    .parseAsync();
}

// A reader that went away (`ambit up | head`) must not crash us halfway through a teardown.
process.stdout.on('error', () => {});
main(hideBin(process.argv)).catch((e: unknown) => {
  process.stderr.write(`ambit: ${errorMessage(e)}\n`);
  process.exitCode = 1;
});
