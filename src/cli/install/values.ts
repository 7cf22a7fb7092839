/**
 * The settings `ambit install` renders the manifests with, and `--set key=value` on top of the
 * defaults. Every key is known and every value checked here: a typo is named in a one-line error,
 * never rendered into a manifest the API server (or worse, a node) finds wrong later.
 */
import { DNS_LABEL, ConfigError } from '../../core/index.js';

export interface InstallValues {
  /** the one image holding the three programs */
  readonly image: string;
  readonly imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  /** namespace of the control plane and the agents; never captured */
  readonly namespace: string;
  readonly trustDomain: string;
  /** mesh root namespace (policies there apply mesh-wide) */
  readonly rootNamespace: string;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** audience of the projected tokens agents and waypoints present to the control plane */
  readonly tokenAudience: string;
  readonly controlReplicas: number;
  /** the agent's SIGTERM drain deadline, s (AMBIT_DRAIN_MS); the grace period is 5 s more */
  readonly agentDrainSeconds: number;
  /** render the CRDs of the Istio kinds the control plane reads (false when Istio's own are installed) */
  readonly istioCrds: boolean;
  /** the nodes' CNI bin dir, where the agent installs its plugin (k3s, GKE and others use their own) */
  readonly cniBinDir: string;
  /** the nodes' CNI network configuration dir, whose conflist the agent chains its plugin into */
  readonly cniConfDir: string;
}

interface Key {
  readonly name: string;
  readonly field: keyof InstallValues;
  readonly describe: string;
  readonly parse: (v: string) => InstallValues[keyof InstallValues] | undefined;
  readonly expect: string;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
// registry/path:tag or @digest, no spaces or quotes
const IMAGE = /^[a-z0-9][a-z0-9._\-/:@]{0,254}$/i;
const ABS_PATH = /^(\/[A-Za-z0-9._-]+)+$/;

const int = (lo: number, hi: number) => (v: string): number | undefined => {
  const n = Number(v);
  return /^\d+$/.test(v) && n >= lo && n <= hi ? n : undefined;
};
const oneOf = <T extends string>(...xs: T[]) => (v: string): T | undefined => (xs as string[]).includes(v) ? v as T : undefined;
const match = (re: RegExp) => (v: string): string | undefined => (re.test(v) ? v : undefined);
const bool = (v: string): boolean | undefined => (v === 'true' ? true : v === 'false' ? false : undefined);

/** The keys `--set` knows, in the order `ambit install --help` lists them. */
export const KEYS: readonly Key[] = [
  { name: 'image', field: 'image', describe: 'image of the three programs', parse: match(IMAGE), expect: 'an image reference' },
  { name: 'imagePullPolicy', field: 'imagePullPolicy', describe: 'Always, IfNotPresent or Never', parse: oneOf('Always', 'IfNotPresent', 'Never'), expect: 'Always, IfNotPresent or Never' },
  { name: 'namespace', field: 'namespace', describe: 'namespace of the control plane and the agents', parse: match(DNS_LABEL), expect: 'a namespace name (DNS label)' },
  { name: 'trustDomain', field: 'trustDomain', describe: 'SPIFFE trust domain', parse: match(DNS_SUBDOMAIN), expect: 'a DNS name' },
  { name: 'rootNamespace', field: 'rootNamespace', describe: 'mesh root namespace (mesh-wide policies)', parse: match(DNS_LABEL), expect: 'a namespace name (DNS label)' },
  { name: 'logLevel', field: 'logLevel', describe: 'debug, info, warn or error', parse: oneOf('debug', 'info', 'warn', 'error'), expect: 'debug, info, warn or error' },
  { name: 'tokenAudience', field: 'tokenAudience', describe: 'audience of the agents\' and waypoints\' projected tokens', parse: match(DNS_SUBDOMAIN), expect: 'a DNS name' },
  { name: 'control.replicas', field: 'controlReplicas', describe: 'control plane replicas', parse: int(1, 9), expect: 'an integer 1..9' },
  { name: 'agent.drainSeconds', field: 'agentDrainSeconds', describe: 'agent drain deadline on SIGTERM, s (grace period: 5 s more)', parse: int(1, 600), expect: 'an integer 1..600' },
  { name: 'crds.istio', field: 'istioCrds', describe: 'render the CRDs of the Istio kinds ambit reads (false if Istio\'s are installed)', parse: bool, expect: 'true or false' },
  { name: 'cni.binDir', field: 'cniBinDir', describe: 'the nodes\' CNI bin dir (the agent installs its plugin there)', parse: match(ABS_PATH), expect: 'an absolute path' },
  { name: 'cni.confDir', field: 'cniConfDir', describe: 'the nodes\' CNI network configuration dir (the plugin is chained into its conflist)', parse: match(ABS_PATH), expect: 'an absolute path' },
];

export function defaultValues(version: string): InstallValues {
  return {
    image: `ghcr.io/ambit-mesh/ambit:${version}`,
    imagePullPolicy: 'IfNotPresent',
    namespace: 'ambit-system',
    trustDomain: 'cluster.local',
    rootNamespace: 'istio-system',
    logLevel: 'info',
    tokenAudience: 'ambit',
    controlReplicas: 2,
    agentDrainSeconds: 25,
    istioCrds: true,
    cniBinDir: '/opt/cni/bin',
    cniConfDir: '/etc/cni/net.d',
  };
}

/** Applies `key=value` settings (each may also hold several, comma-separated) to `base`. */
export function applySets(base: InstallValues, sets: readonly string[]): InstallValues {
  const out: Record<string, unknown> = { ...base };
  for (const raw of sets.flatMap((s) => s.split(','))) {
    const eq = raw.indexOf('=');
    if (eq <= 0) throw new ConfigError('--set', JSON.stringify(raw), 'expected key=value');
    const name = raw.slice(0, eq).trim();
    const value = raw.slice(eq + 1).trim();
    const key = KEYS.find((k) => k.name === name);
    if (!key) throw new ConfigError('--set', name, `unknown key (known: ${KEYS.map((k) => k.name).join(', ')})`);
    const v = key.parse(value);
    if (v === undefined) throw new ConfigError('--set', name, `${JSON.stringify(value)} is not ${key.expect}`);
    out[key.field] = v;
  }
  return out as unknown as InstallValues;
}
