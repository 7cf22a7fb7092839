#!/usr/bin/env node
/**
 * The `ambit` command. Entry point: parses arguments, owns the process (signals, exit code) and
 * prints errors as one line naming what is wrong (one line per problem, each starting with
 * `ambit: `). Exit codes: 0 ok, 1 error.
 */
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { MeshError, errorMessage, setLogLevel, type Level } from '../core/index.js';
import { analyze, analyzeExitCode, renderAnalysis } from './analyze.js';
import { applyFile, applyText, deleteFile, deleteObject } from './apply.js';
import { declaredWaypoints, waypointGatewayYaml, waypointRows } from './local-waypoints.js';
import { OUTPUT_OPTION, render, renderTable } from './output.js';
import { runDown } from './down.js';
import { bindToParent } from './parent-death.js';
import { runExec } from './exec.js';
import { runInstall, runUninstall } from './install/install.js';
import { KEYS } from './install/values.js';
import { agentCommand, agentOptions, cniCommand, controlCommand, controlOptions } from './programs.js';
import { configDir, readState, resolveDir } from './state-file.js';
import { runUp, selfCommand } from './up.js';
import { parseRestartRequest, parseUpRequest, sendRestart } from './up-socket.js';
import { liveState } from './exec.js';
import { chooseMesh, parseDumpTarget, runConfigDump, runStatus, type Mesh } from './inspect.js';
import { KUBE_WAYPOINT_COLUMNS, contextNamespace, kubeNamespaceLabel, kubeWaypointApply, kubeWaypointCells, kubeWaypointDelete, kubeWaypointList } from './kube-verbs.js';
import { packageVersion } from './version.js';
import { helpWidth, wrapHelp } from './help-wrap.js';
import { waypointCommand, waypointRunOptions } from './waypoint.js';

/**
 * Runs a long-lived program to its end and exits: once it has stopped (or failed to start),
 * nothing it left behind (a reconnect timer, a half-open socket) may keep the process alive.
 */
async function runProgram(run: () => Promise<void>): Promise<void> {
  try {
    // started by `ambit up`: end with it (see parent-death.ts)
    const orphaned = await bindToParent(process.env);
    if (orphaned !== undefined) {
      process.stderr.write(`ambit: ${orphaned}\n`);
      process.exit(1);
    }
    await run();
  } catch (e) {
    process.stderr.write(`ambit: ${errorMessage(e)}\n`);
    process.exit(1);
  }
  process.exit(process.exitCode ?? 0);
}

/** --kube: the cluster of the kubeconfig rather than the local mesh (chooseMesh). */
function kubeOption<T>(y: Argv<T>) {
  return y.option('kube', { type: 'boolean', describe: 'the cluster of the kubeconfig (KUBECONFIG, ~/.kube/config), even when ./.ambit holds a local mesh' });
}

/** The mesh a verb acts on: the local one of --dir / $AMBIT_DIR / a running ./.ambit, else (or with --kube) the kubeconfig's cluster. */
function meshOf(a: { dir?: string | undefined; kube?: boolean | undefined }): Mesh {
  return chooseMesh({ dir: a.dir, kube: a.kube, env: process.env });
}

const EXIT_CODES = 'Exit codes: 0 done; 1 an error (one "ambit: " line on stderr per problem)';

/** The options of the read verbs (status, config-dump): output format and which mesh to ask. */
function readOptions<T>(y: Argv<T>) {
  return kubeOption(y)
    .option('output', OUTPUT_OPTION)
    .option('control-namespace', { type: 'string', default: 'ambit-system', describe: 'with a cluster: the namespace of the control plane and the agents (ambit install --set namespace=)' });
}

/** `-f`/`--set` given once is a string, repeated an array (yargs' duplicate-arguments-array); `array: true` would take `-` for a flag. */
function files(f: string | string[]): string[] {
  return (Array.isArray(f) ? f : [f]).map(String);
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
    .command('restart <program> [name]', 'replace a program of the running ambit up: agent NODE (a handover: nothing refused), control, waypoint NAME',
      (y) => y
        .positional('program', { type: 'string', choices: ['agent', 'control', 'waypoint'], demandOption: true })
        .positional('name', { type: 'string', describe: 'the node (agent) or waypoint ([namespace/]name)' })
        .example('$0 restart agent node-1', '')
        .example('$0 restart control', ''),
      async (a) => {
        const dir = resolveDir(a.dir);
        const req = parseRestartRequest({ op: 'restart', target: a.program, ...(a.name !== undefined ? { name: a.name } : {}) });
        liveState(dir); // a clear error when no ambit up runs for this directory
        const done = await sendRestart(dir, req, (line) => { process.stdout.write(`${line}\n`); });
        process.stdout.write(`${done}\n`);
      })
    .command('namespace <action> <name>', 'label a namespace in (enroll: istio.io/dataplane-mode=ambient) or out of (unenroll) the mesh; the agents capture or release its running pods. '
      + 'The local mesh of a running ambit up, or (without one, or with --kube) the cluster of the kubeconfig (a merge patch of the Namespace)',
      (y) => kubeOption(y)
        .positional('action', { type: 'string', choices: ['enroll', 'unenroll'], demandOption: true })
        .positional('name', { type: 'string', demandOption: true, describe: 'the namespace' })
        .example('$0 namespace unenroll default', '')
        .example('$0 namespace enroll shop --kube', '')
        .epilogue(`${EXIT_CODES}: no mesh, no such namespace, the API server's refusal.`),
      async (a) => {
        const m = meshOf(a);
        if (m.kind === 'kube') { process.stdout.write(`${await kubeNamespaceLabel(m.kc, a.name, a.action === 'enroll')}\n`); return; }
        const dir = m.dir;
        const req = parseUpRequest({ op: 'namespace', name: a.name, enroll: a.action === 'enroll' });
        liveState(dir);
        process.stdout.write(`${await sendRestart(dir, req, (line) => { process.stdout.write(`${line}\n`); }, 30_000)}\n`);
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
    .command('status', 'every agent and waypoint connected to the control plane: since when, per config type the version sent and ACKed (SYNCED, STALE, NACK with the reason), certificate expiry (like istioctl proxy-status)',
      (y) => readOptions(y)
        .example('$0 status', 'the local mesh of ./.ambit, else the cluster of the kubeconfig')
        .example('$0 status --kube -o yaml', ''),
      async (a) => {
        await runStatus(chooseMesh({ dir: a.dir, kube: a.kube, namespace: a['control-namespace'], env: process.env }), { output: a.output, print: (t) => { process.stdout.write(t); } });
      })
    .command('config-dump <target> [name]', 'print a program\'s config dump: control, agent NODE or waypoint [NAMESPACE/]NAME (namespace default); the table is a summary, -o json|yaml the whole dump',
      (y) => readOptions(y)
        .positional('target', { type: 'string', demandOption: true, describe: 'control, agent or waypoint' })
        .positional('name', { type: 'string', describe: 'the node (agent) or [NAMESPACE/]NAME (waypoint)' })
        .example('$0 config-dump agent node-1 -o json', '')
        .example('$0 config-dump waypoint shop/waypoint', '')
        .example('$0 config-dump control -o yaml', ''),
      async (a) => {
        const target = parseDumpTarget(a.target, a.name);
        await runConfigDump(chooseMesh({ dir: a.dir, kube: a.kube, namespace: a['control-namespace'], env: process.env }), target, { output: a.output, print: (t) => { process.stdout.write(t); } });
      })
    .command('apply', 'check the objects of a YAML file with the control plane\'s own translator, then store each one under its kind/namespace/name in the watched config directory',
      (y) => y.option('f', { alias: 'filename', type: 'string', demandOption: true, describe: 'YAML file, or - for stdin (may be repeated)' }),
      async (a) => {
        const r = await applyFile(files(a.f), resolveDir(a.dir));
        for (const w of r.warnings) process.stderr.write(`ambit: warning: ${w}\n`);
        for (const o of r.objects) process.stdout.write(`${o.object} ${o.outcome}\n`);
      })
    .command('analyze', 'what the control plane would reject or ignore, and why, without applying: the files given (with what the watched directory holds), or the whole watched directory; exit 0 without errors, 1 with errors',
      (y) => y
        .option('f', { alias: 'filename', type: 'string', describe: 'YAML file, or - for stdin (may be repeated); default: every file of the watched config directory' })
        .option('output', OUTPUT_OPTION)
        .example('$0 analyze', 'the watched config directory of the local mesh')
        .example('$0 analyze -f examples/seed/destination-rule.yaml -o json', ''),
      async (a) => {
        const r = await analyze({ files: a.f === undefined ? [] : files(a.f), dir: resolveDir(a.dir) });
        process.stdout.write(renderAnalysis(r, a.output));
        process.exitCode = analyzeExitCode(r);
      })
    .command('delete', 'remove the objects a YAML file names (kind/namespace/name) from the watched config directory',
      (y) => y
        .option('f', { alias: 'filename', type: 'string', demandOption: true, describe: 'YAML file, or - for stdin (may be repeated)' })
        .option('ignore-not-found', { type: 'boolean', default: false, describe: 'an object that is not stored is no error' }),
      (a) => {
        const r = deleteFile(files(a.f), resolveDir(a.dir));
        for (const o of r.deleted) process.stdout.write(`${o} deleted\n`);
        if (a['ignore-not-found']) return;
        for (const o of r.notFound) process.stderr.write(`ambit: ${o} not found (not stored by ambit apply)\n`);
        if (r.notFound.length > 0) process.exitCode = 1;
      })
    .command('install', 'install ambit into the cluster of the current kubeconfig (server-side apply; the Gateway API CRDs must be there, or --gateway-api installs them); --dry-run prints the manifests (YAML) instead',
      (y) => y
        .option('dry-run', { type: 'boolean', default: false, describe: 'print the objects instead of applying them' })
        .option('set', { type: 'string', describe: `key=value over the defaults (may be repeated): ${KEYS.map((k) => k.name).join(', ')}` })
        .option('output-dir', { type: 'string', describe: 'with --dry-run: write one file per component and a kustomization.yaml into this directory' })
        .option('gateway-api', { type: 'string', describe: 'first install the Gateway API CRDs (v1 of Gateway, HTTPRoute, GRPCRoute) from FILE or URL (a release\'s standard-install.yaml); without a value, the standard channel release v1.2.1 from GitHub' }),
      async (a) => {
        await runInstall({
          version: packageVersion(), dryRun: a['dry-run'], set: a.set === undefined ? [] : files(a.set),
          ...(a['output-dir'] !== undefined ? { outputDir: a['output-dir'] } : {}),
          ...(a['gateway-api'] !== undefined ? { gatewayApi: a['gateway-api'] } : {}),
          env: process.env, print: (text) => { process.stdout.write(text); },
        });
      })
    .command('uninstall', 'remove what ambit install added (objects labelled app.kubernetes.io/part-of=ambit), newest first; the CRDs and the namespace only when asked',
      (y) => y
        .option('set', { type: 'string', describe: 'the --set values install was given (namespace, crds.istio)' })
        .option('remove-crds', { type: 'boolean', default: false, describe: 'also delete the Istio CRDs ambit installed (and every object of those kinds)' })
        .option('remove-namespace', { type: 'boolean', default: false, describe: 'also delete the namespace (and everything in it, the CA Secret included)' }),
      async (a) => {
        await runUninstall({
          version: packageVersion(), set: a.set === undefined ? [] : files(a.set), removeCrds: a['remove-crds'], removeNamespace: a['remove-namespace'],
          env: process.env, print: (text) => { process.stdout.write(text); },
        });
      })
    .command('control', 'run the control plane (config from a YAML directory, or the Kubernetes API with --kube)',
      (y) => controlOptions(y), (a) => runProgram(() => controlCommand(a)))
    .command('agent', 'run the node agent of one node (until SIGTERM/SIGINT, then drain)',
      (y) => agentOptions(y), (a) => runProgram(() => agentCommand(a)))
    .command('waypoint', 'run a waypoint (the L7 proxy of the services bound to it), until SIGTERM/SIGINT, then drain; or apply/generate one',
      (y) => waypointRunOptions(y)
        .command(['apply', 'generate'], 'declare a waypoint Gateway (istioctl waypoint apply|generate): apply puts it in the watched config of the local mesh (ambit up starts it) '
          + 'or, without one or with --kube, server-side applies it (class ambit-waypoint, field manager ambit) to the cluster (the control plane starts it); generate prints it',
          (y2) => kubeOption(y2)
            .epilogue(`${EXIT_CODES}: a bad name or flag, no mesh, the API server's refusal, a missing namespace (--enroll-namespace).`)
            .option('for', { type: 'string', default: 'service', choices: ['service', 'workload', 'all', 'none'], describe: 'traffic the waypoint takes (istio.io/waypoint-for)' })
            .option('enroll-namespace', { type: 'boolean', default: false, describe: 'also label the namespace istio.io/use-waypoint=<name>' }),
          async (a) => {
            if ((a._ as string[]).includes('generate')) {
              process.stdout.write(waypointGatewayYaml({ name: a.name ?? 'waypoint', namespace: a.namespace ?? 'default', for: a.for, enrollNamespace: a['enroll-namespace'] }));
              return;
            }
            const m = meshOf(a);
            if (m.kind === 'kube') {
              const lines = await kubeWaypointApply(m.kc, { name: a.name ?? 'waypoint', namespace: contextNamespace(m.kc, a.namespace), for: a.for }, a['enroll-namespace']);
              process.stdout.write(lines.map((l) => `${l}\n`).join(''));
              return;
            }
            const text = waypointGatewayYaml({ name: a.name ?? 'waypoint', namespace: a.namespace ?? 'default', for: a.for, enrollNamespace: a['enroll-namespace'] });
            const dest = applyText(text, `waypoint-${a.namespace ?? 'default'}-${a.name ?? 'waypoint'}.yaml`, m.dir);
            process.stdout.write(`waypoint ${a.namespace ?? 'default'}/${a.name ?? 'waypoint'} applied: ${dest}\n(ambit up starts its pod and process and prints when it is ready)\n`);
          })
        .command('list', 'the waypoint Gateways (of -n NAMESPACE, or of all namespaces): in the watched config of the local mesh, with their processes under ambit up; '
          + 'or, without one or with --kube, in the cluster, with their Programmed condition and address',
          (y2) => kubeOption(y2)
            .option('output', OUTPUT_OPTION)
            .option('all-namespaces', { alias: 'A', type: 'boolean', describe: 'every namespace (also the default without -n)' })
            .epilogue(`${EXIT_CODES}: no mesh, the API server's refusal.`),
          async (a) => {
            if (a['all-namespaces'] === true && a.namespace !== undefined) throw new MeshError('AMBIT_CONFIG_INVALID', 'waypoint list: -n and -A: give one');
            const m = meshOf(a);
            if (m.kind === 'kube') {
              const rows = await kubeWaypointList(m.kc, a.namespace);
              process.stdout.write(render(a.output, rows, () => (rows.length === 0 ? 'no waypoints (ambit waypoint apply)\n'
                : renderTable(KUBE_WAYPOINT_COLUMNS, rows.map(kubeWaypointCells)))));
              return;
            }
            const dir = m.dir;
            const rows = waypointRows(declaredWaypoints(configDir(dir)), readState(dir)?.programs ?? [], a.namespace);
            process.stdout.write(render(a.output, rows, () => (rows.length === 0 ? 'no waypoints (ambit waypoint apply)\n'
              : renderTable(['NAMESPACE', 'NAME', 'FOR', 'ENROLLS NAMESPACE', 'PROCESS'],
                rows.map((r) => [r.namespace, r.name, r.for, r.enrollNamespace ? 'yes' : 'no', r.pid !== null ? `pid ${r.pid}` : 'not running'])))));
          })
        .command('delete [names..]', 'remove waypoint Gateways of -n NAMESPACE: from the watched config of the local mesh (ambit up stops their processes and pods) or, '
          + 'without one or with --kube, from the cluster (only Gateways of class ambit-waypoint or istio-waypoint; the control plane\'s objects for it go with it)',
          (y2) => kubeOption(y2)
            .positional('names', { type: 'string', array: true, describe: 'waypoint names; default --name or "waypoint"' })
            .epilogue(`${EXIT_CODES}: a waypoint not found, a Gateway that is not a waypoint (not deleted), no mesh, the API server's refusal; the others are still deleted.`),
          async (a) => {
            const names = (a.names as string[] | undefined)?.length ? (a.names as string[]) : [a.name ?? 'waypoint'];
            const m = meshOf(a);
            if (m.kind === 'kube') {
              const r = await kubeWaypointDelete(m.kc, contextNamespace(m.kc, a.namespace), names);
              for (const x of r) (x.ok ? process.stdout : process.stderr).write(x.ok ? `${x.line}\n` : `ambit: ${x.line}\n`);
              if (r.some((x) => !x.ok)) process.exitCode = 1;
              return;
            }
            const dir = m.dir;
            const namespace = a.namespace ?? 'default';
            let missing = 0;
            for (const name of names) {
              if (deleteObject({ group: 'gateway.networking.k8s.io', kind: 'Gateway', namespace, name }, dir)) process.stdout.write(`waypoint ${namespace}/${name} deleted\n`);
              else { missing++; process.stderr.write(`ambit: waypoint ${namespace}/${name}: not found (ambit waypoint list)\n`); }
            }
            if (missing > 0) process.exitCode = 1;
          }),
      (a) => runProgram(() => waypointCommand(a)))
    .command('cni', 'the CNI plugin: CNI_COMMAND etc. in the environment, network configuration on stdin, result on stdout',
      (y) => y, () => cniCommand())
    .demandCommand(1, 'give a command; see --help')
    .strict()
    .help()
    .alias('h', 'help')
    // unwrapped here, wrapped between words at the terminal's width below (help-wrap.ts)
    .wrap(null)
    .epilogue('Exit codes: 0 done; 1 an error (one line per problem on stderr, starting with "ambit: "): a bad flag or value, '
      + 'no mesh to ask, a program that does not answer; ambit exec passes on the command\'s own.\n'
      + 'status, config-dump, namespace and waypoint apply|list|delete act on the local mesh of a running ambit up (--dir, $AMBIT_DIR, ./.ambit) or, without one or with --kube, '
      + 'on the cluster of the kubeconfig (status and config-dump through the API server\'s port-forward).')
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`ambit: ${msg}\nrun "ambit --help" for usage\n`);
      process.exit(1);
    })
    .completion('completion', 'print a bash/zsh completion script: ambit completion >> ~/.bashrc (or ~/.zshrc)')
    // with a callback yargs hands --help/--version text over instead of printing it
    .parseAsync(argv, {}, (_err: unknown, _argv: unknown, output: string) => {
      if (output) process.stdout.write(`${wrapHelp(output, helpWidth(process.stdout.isTTY ? process.stdout.columns : undefined, process.env))}\n`);
    });
}

// A reader that went away (`ambit up | head`) must not crash us halfway through a teardown.
process.stdout.on('error', () => {});
main(hideBin(process.argv)).catch((e: unknown) => {
  process.stderr.write(errorMessage(e).split('\n').map((l) => `ambit: ${l}\n`).join(''));
  process.exitCode = 1;
});
