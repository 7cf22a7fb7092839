/**
 * In-pod capture: the nftables rule set and policy routes the agent writes INSIDE a pod's network
 * namespace. The rule text is a pure function (golden-tested); applying it is one `nft -f -`
 * transaction run in the namespace through nsenter, so a pod is never half-captured.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { MeshError } from '../../core/index.js';
import { AGENT_PORT } from '../../hbone/index.js';

/** Mark on every socket the agent opens in a pod netns: never redirected. */
export const AGENT_MARK = 0x539;
/** Connmark/fwmark of connections the agent opened towards the app with a spoofed source. */
export const RETURN_MARK = 0x111;
export const MARK_MASK = 0xfff;
/** Policy routing table that delivers replies to spoofed sources back to the agent's socket. */
export const RETURN_TABLE = 100;
export const RETURN_RULE_PREF = 32764;
/** Address kubelet probes are SNATed to on the host; they bypass capture (reference §3). */
export const PROBE_SOURCE_V4 = '169.254.7.127';

export interface CapturePorts {
  /** outbound capture; default 15001 */
  outbound: number;
  /** inbound plaintext; default 15006 */
  inboundPlain: number;
  /** inbound HBONE (excluded from redirection); default 15008 */
  hbone: number;
}

export const DEFAULT_CAPTURE_PORTS: CapturePorts = AGENT_PORT;

export const NAT_TABLE = 'ambit-nat';
export const MANGLE_TABLE = 'ambit-mangle';

function hex(n: number): string { return '0x' + n.toString(16); }

function checkPort(name: string, p: number): void {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new MeshError('AMBIT_CONFIG_INVALID', `capture: ports.${name}: ${p} is not a TCP port`);
}

/**
 * The nft transaction that installs (or replaces) capture in a pod netns. Each table is added,
 * deleted and added again inside the same transaction: that is idempotent (works whether or not
 * the table exists) and atomic (the kernel never sees the pod without rules in between).
 */
export function captureRules(ports: CapturePorts = DEFAULT_CAPTURE_PORTS): string {
  checkPort('outbound', ports.outbound);
  checkPort('inboundPlain', ports.inboundPlain);
  checkPort('hbone', ports.hbone);
  const m = `meta mark & ${hex(MARK_MASK)}`;
  const nat = `inet ${NAT_TABLE}`;
  const mangle = `inet ${MANGLE_TABLE}`;
  const lines = [
    `add table ${nat}`,
    `delete table ${nat}`,
    `add table ${nat}`,
    `add chain ${nat} prerouting { type nat hook prerouting priority -100 ; }`,
    `add chain ${nat} output { type nat hook output priority -100 ; }`,
    // Kubelet probes arrive SNATed to a link-local address; they must reach the app untouched.
    `add rule ${nat} prerouting meta l4proto tcp ip saddr ${PROBE_SOURCE_V4} accept`,
    `add rule ${nat} output meta l4proto tcp ip daddr ${PROBE_SOURCE_V4} accept`,
    // Inbound TCP goes to the plaintext listener, except HBONE (it has its own listener) and
    // connections the agent itself opened towards the app (mark), which would otherwise loop.
    `add rule ${nat} prerouting meta l4proto tcp ip daddr != 127.0.0.0/8 tcp dport != ${ports.hbone} ${m} != ${hex(AGENT_MARK)} redirect to :${ports.inboundPlain}`,
    `add rule ${nat} prerouting meta l4proto tcp ip6 daddr != ::1 tcp dport != ${ports.hbone} ${m} != ${hex(AGENT_MARK)} redirect to :${ports.inboundPlain}`,
    // Replies of the app to a spoofed client are local traffic for the agent, never re-captured.
    `add rule ${nat} output meta l4proto tcp ${m} == ${hex(RETURN_MARK)} accept`,
    // The pod talking to its own IP stays inside the pod (goes over lo): not mesh traffic.
    `add rule ${nat} output oifname "lo" ip daddr != 127.0.0.0/8 accept`,
    `add rule ${nat} output oifname "lo" ip6 daddr != ::1 accept`,
    // Everything else the app sends over TCP goes to the outbound listener; loopback is excluded
    // and the agent's own sockets carry the mark so they leave the pod as they are.
    `add rule ${nat} output meta l4proto tcp ip daddr != 127.0.0.0/8 ${m} != ${hex(AGENT_MARK)} redirect to :${ports.outbound}`,
    `add rule ${nat} output meta l4proto tcp ip6 daddr != ::1 ${m} != ${hex(AGENT_MARK)} redirect to :${ports.outbound}`,
    `add table ${mangle}`,
    `delete table ${mangle}`,
    `add table ${mangle}`,
    `add chain ${mangle} prerouting { type filter hook prerouting priority -150 ; }`,
    `add chain ${mangle} output { type route hook output priority -150 ; }`,
    // A spoofed-source connection from the agent loops back through lo still marked: remember it
    // on the conntrack entry...
    `add rule ${mangle} prerouting ${m} == ${hex(AGENT_MARK)} ct mark set ct mark & 0xfffff000 | ${hex(RETURN_MARK)}`,
    // ...so the app's replies get the return mark back, which the policy route delivers locally
    // (to the agent's transparent socket) instead of sending them to the real client.
    `add rule ${mangle} output ct mark & ${hex(MARK_MASK)} == ${hex(RETURN_MARK)} meta mark set ct mark`,
    // HBONE tunnels are the agent's own sockets: no NAT, no conntrack mark, so no need for
    // connection tracking. Skipping it (raw priority, before conntrack) takes its per-packet cost
    // off every tunnelled byte: the 1 kB request/response bench moved by ~10 us (bench/l4/README.md).
    `add chain ${mangle} raw_prerouting { type filter hook prerouting priority -300 ; }`,
    `add chain ${mangle} raw_output { type filter hook output priority -300 ; }`,
    // into the pod's HBONE listener, and the answers of the tunnels the agent opened
    `add rule ${mangle} raw_prerouting tcp dport ${ports.hbone} notrack`,
    `add rule ${mangle} raw_prerouting tcp sport ${ports.hbone} notrack`,
    // out of the HBONE listener, and the agent's (marked) tunnels to other pods and waypoints
    `add rule ${mangle} raw_output tcp sport ${ports.hbone} notrack`,
    `add rule ${mangle} raw_output ${m} == ${hex(AGENT_MARK)} tcp dport ${ports.hbone} notrack`,
  ];
  return lines.join('\n') + '\n';
}

/** Removes both tables; fails if either is absent (use `removeCaptureRules` for the tolerant form). */
export function uncaptureRules(): string {
  // add-then-delete makes the delete succeed whether or not the table exists.
  return [
    `add table inet ${NAT_TABLE}`, `delete table inet ${NAT_TABLE}`,
    `add table inet ${MANGLE_TABLE}`, `delete table inet ${MANGLE_TABLE}`,
  ].join('\n') + '\n';
}

/** The `ip` commands (argv after `ip`) that install the return-path policy route; v4 then v6. */
export function returnRouteCommands(): { v4: string[][]; v6: string[][] } {
  const rule = (fam: string) => [fam, 'rule', 'add', 'fwmark', `${hex(RETURN_MARK)}/${hex(MARK_MASK)}`, 'pref', String(RETURN_RULE_PREF), 'lookup', String(RETURN_TABLE)];
  const del = (fam: string) => [fam, 'rule', 'del', 'pref', String(RETURN_RULE_PREF)];
  return {
    v4: [del('-4'), rule('-4'), ['-4', 'route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(RETURN_TABLE)]],
    v6: [del('-6'), rule('-6'), ['-6', 'route', 'replace', 'local', '::/0', 'dev', 'lo', 'table', String(RETURN_TABLE)]],
  };
}

/** Where a netns is: a path (`/var/run/netns/x`, `/proc/<pid>/ns/net`) or an fd this process holds. */
export type NetnsRef = string | number;

/** A path other processes (nsenter) can open to reach the same namespace. */
export function netnsPathFor(ns: NetnsRef): string {
  return typeof ns === 'number' ? `/proc/${process.pid}/fd/${ns}` : ns;
}

export interface RunResult { code: number; stdout: string; stderr: string }

/**
 * Absolute path of a system tool. Never trust PATH for these: under npm/npx, node_modules/.bin
 * comes first and holds an unrelated `nft` (a JavaScript file tracer).
 */
export function systemTool(name: 'nft' | 'ip' | 'nsenter'): string {
  for (const dir of ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    const p = `${dir}/${name}`;
    if (existsSync(p)) return p;
  }
  return name;
}

/** Runs a program inside a netns through nsenter. Output is bounded (64 KiB each). */
export function runInNetns(ns: NetnsRef, argv: readonly string[], input?: string, timeoutMs = 10_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = argv;
    const tool = file === 'nft' || file === 'ip' ? systemTool(file) : file!;
    const child = spawn(systemTool('nsenter'), [`--net=${netnsPathFor(ns)}`, '--', tool, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const LIMIT = 64 * 1024;
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { if (stdout.length < LIMIT) stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { if (stderr.length < LIMIT) stderr += c.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(new MeshError('AMBIT_NFT', `cannot run ${argv[0]} in netns: ${e.message}`, { cause: e })); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }); });
    child.stdin.on('error', () => { /* the child may exit before reading; its exit code tells */ });
    child.stdin.end(input ?? '');
  });
}

export interface CaptureOptions {
  ports?: CapturePorts;
  /** install the return-path policy routes (needed to spoof the client's source IP); default true */
  returnPath?: boolean;
  /**
   * the rules are live (a new agent taking over from the previous one): a policy rule already in
   * place is kept, not deleted and re-added, so replies of live connections never miss it
   * (the nft tables are replaced in one transaction either way)
   */
  live?: boolean;
}

/**
 * Installs capture in a pod netns. Rules first (one transaction), then the policy routes; when
 * the routes cannot be installed the result says so and the caller stops spoofing sources.
 */
/** Identifies a rule set (ports included): a new agent leaves identical live rules untouched. */
export function captureFingerprint(ports: CapturePorts = DEFAULT_CAPTURE_PORTS): string {
  return createHash('sha256').update(captureRules(ports)).update(JSON.stringify(returnRouteCommands())).digest('hex').slice(0, 16);
}

export async function applyCapture(ns: NetnsRef, o: CaptureOptions = {}): Promise<{ returnPath: boolean }> {
  const r = await runInNetns(ns, ['nft', '-f', '-'], captureRules(o.ports ?? DEFAULT_CAPTURE_PORTS));
  if (r.code !== 0) throw new MeshError('AMBIT_NFT', `nft capture rules rejected in ${netnsPathFor(ns)}: ${r.stderr.trim()}`);
  if (o.returnPath === false) return { returnPath: false };
  const cmds = returnRouteCommands();
  if (o.live) {
    for (const fam of ['v4', 'v6'] as const) {
      const shown = await runInNetns(ns, ['ip', fam === 'v4' ? '-4' : '-6', 'rule', 'list', 'pref', String(RETURN_RULE_PREF)]);
      if (shown.code === 0 && shown.stdout.trim() !== '') cmds[fam] = cmds[fam].filter((argv) => argv[1] !== 'rule');
    }
  }
  let ok = true;
  for (const argv of cmds.v4) {
    const res = await runInNetns(ns, ['ip', ...argv]);
    // deleting a rule that is not there fails; that is expected on the first install
    if (res.code !== 0 && argv[2] !== 'del') ok = false;
  }
  for (const argv of cmds.v6) await runInNetns(ns, ['ip', ...argv]); // v6 may be disabled in the pod
  return { returnPath: ok };
}

/** Removes capture (tables and policy routes) from a pod netns. Idempotent. */
export async function removeCapture(ns: NetnsRef): Promise<void> {
  const r = await runInNetns(ns, ['nft', '-f', '-'], uncaptureRules());
  if (r.code !== 0) throw new MeshError('AMBIT_NFT', `nft capture removal failed in ${netnsPathFor(ns)}: ${r.stderr.trim()}`);
  for (const fam of ['-4', '-6']) {
    await runInNetns(ns, ['ip', fam, 'rule', 'del', 'pref', String(RETURN_RULE_PREF)]);
    await runInNetns(ns, ['ip', fam, 'route', 'flush', 'table', String(RETURN_TABLE)]);
  }
}

/** True when the pod netns holds the agent's capture tables. */
export async function hasCapture(ns: NetnsRef): Promise<boolean> {
  const r = await runInNetns(ns, ['nft', 'list', 'table', 'inet', NAT_TABLE]);
  return r.code === 0;
}
