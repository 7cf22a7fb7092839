/**
 * What a waypoint Gateway (class ambit-waypoint or istio-waypoint) should have in the cluster,
 * decided without I/O: its ServiceAccount (the waypoint's identity), a ConfigMap with the mesh
 * root (to verify the control plane; ConfigMaps cannot be mounted across namespaces), the
 * Deployment running `ambit waypoint`, and the Service (15008, named mesh) agents reach it by;
 * all named after the Gateway, in its namespace, owned by it (ownerReferences, so the garbage
 * collector removes them with it), and labelled so the reconciler finds them again. Also the
 * Gateway's status (Accepted, Programmed, the Service's address).
 */
import type { KubeObject } from '../config/types.js';
import { PART_OF } from './ca-secret.js';
import type { Json } from './api.js';

export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'ambit-control';
export const WAYPOINT_PORTS = { hbone: 15008, metrics: 15020, readiness: 15021 } as const;
/** the one listener a waypoint serves */
const HBONE_LISTENER = { port: WAYPOINT_PORTS.hbone, protocol: 'HBONE' } as const;
export const GATEWAY_API_VERSION = 'gateway.networking.k8s.io/v1';
/** ambit's own waypoint GatewayClass (rendered by `ambit install`) and the controller name it names. */
export const WAYPOINT_GATEWAY_CLASS = { name: 'ambit-waypoint', controllerName: 'ambit.dev/waypoint-controller' } as const;

/** Cluster-wide settings of every waypoint Deployment. */
export interface WaypointDeploySettings {
  /** the image holding `ambit` (the control plane's own) */
  readonly image: string;
  readonly imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** wss:// URL of the control plane */
  readonly controlUrl: string;
  readonly trustDomain: string;
  /** audience of the projected token; undefined: the API server's own */
  readonly tokenAudience?: string;
  readonly logLevel?: string;
}

/** One object to apply: its API path (with name) and body. */
export interface Desired {
  readonly kind: 'ServiceAccount' | 'ConfigMap' | 'Deployment' | 'Service';
  readonly path: string;
  readonly obj: Json;
}

/** The kinds a waypoint is made of, with their collection paths below /namespaces/<ns> (and cluster-wide). */
export const WAYPOINT_KINDS: ReadonlyArray<{ kind: Desired['kind']; apiVersion: string; plural: string }> = [
  { kind: 'ServiceAccount', apiVersion: 'v1', plural: 'serviceaccounts' },
  { kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' },
  { kind: 'Deployment', apiVersion: 'apps/v1', plural: 'deployments' },
  { kind: 'Service', apiVersion: 'v1', plural: 'services' },
];

/** ConfigMap of the mesh root for a waypoint: named after it, so each is owned by one Gateway. */
export function caRootName(gateway: string): string { return `${gateway}-ambit-ca-root`; }

// a Service name is a DNS-1035 label; the ConfigMap's suffix must fit in 253
const SERVICE_NAME = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

function path(apiVersion: string, plural: string, ns: string, name: string): string {
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  return `${base}/namespaces/${encodeURIComponent(ns)}/${plural}/${encodeURIComponent(name)}`;
}

const MAX_INFRA_ENTRIES = 64;
const MAX_INFRA_VALUE = 4096;

/**
 * spec.infrastructure.labels and .annotations (Gateway API): carried onto every object and the
 * pods, as Istio does. Ours win over a label of the same key.
 */
function infrastructure(gw: KubeObject): { labels: Record<string, string>; annotations: Record<string, string> } | { error: string } {
  const infra = (gw.spec as { infrastructure?: unknown } | undefined)?.infrastructure;
  const out = { labels: {} as Record<string, string>, annotations: {} as Record<string, string> };
  if (infra === undefined || infra === null) return out;
  if (typeof infra !== 'object' || Array.isArray(infra)) return { error: 'spec.infrastructure: not an object' };
  for (const k of ['labels', 'annotations'] as const) {
    const m = (infra as Record<string, unknown>)[k];
    if (m === undefined || m === null) continue;
    if (typeof m !== 'object' || Array.isArray(m)) return { error: `spec.infrastructure.${k}: not a map` };
    const entries = Object.entries(m as Record<string, unknown>);
    if (entries.length > MAX_INFRA_ENTRIES) return { error: `spec.infrastructure.${k}: more than ${MAX_INFRA_ENTRIES} entries` };
    for (const [key, v] of entries) {
      if (typeof v !== 'string' || v.length > MAX_INFRA_VALUE) return { error: `spec.infrastructure.${k}[${JSON.stringify(key.slice(0, 80))}]: not a string of at most ${MAX_INFRA_VALUE} characters` };
      out[k][key] = v;
    }
  }
  return out;
}

/**
 * The desired objects for `gw`, or why there can be none (a name a Service cannot have, or a
 * Gateway without a uid to own them by). The caller has already checked the class.
 */
export function waypointObjects(gw: KubeObject, s: WaypointDeploySettings, rootsPem: string): { objects: Desired[] } | { error: string } {
  const name = gw.metadata.name;
  const ns = gw.metadata.namespace;
  const uid = gw.metadata.uid;
  if (!ns) return { error: 'the Gateway has no namespace' };
  if (!uid) return { error: 'the Gateway has no metadata.uid to own its objects by' };
  if (!SERVICE_NAME.test(name)) return { error: `the name ${JSON.stringify(name.slice(0, 80))} cannot name a Service (a DNS-1035 label: a-z, 0-9, '-', at most 63, starting with a letter)` };
  const infra = infrastructure(gw);
  if ('error' in infra) return infra;
  const labels = { ...infra.labels, [GATEWAY_NAME_LABEL]: name, [MANAGED_BY_LABEL]: MANAGED_BY, ...PART_OF };
  const annotations = infra.annotations;
  const ownerReferences = [{ apiVersion: GATEWAY_API_VERSION, kind: 'Gateway', name, uid, controller: true }];
  const meta = (n: string): Json => ({ name: n, namespace: ns, labels, ...(Object.keys(annotations).length > 0 ? { annotations } : {}), ownerReferences });
  const selector = { [GATEWAY_NAME_LABEL]: name };
  const caRoot = caRootName(name);
  const token: Json = { path: 'token', expirationSeconds: 3600, ...(s.tokenAudience ? { audience: s.tokenAudience } : {}) };
  const deployment: Json = {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: meta(name),
    spec: {
      // no replicas: 1 on creation, and a later `kubectl scale` or an autoscaler is not undone
      selector: { matchLabels: selector },
      // an upgrade without an outage: the new pod is ready before an old one terminates, and a
      // terminating one serves through its grace (AMBIT_TERMINATION_GRACE_MS) while agents learn
      // of its withdrawal, then drains (AMBIT_DRAIN_MS)
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: {
          labels: { ...infra.labels, ...selector, 'istio.io/dataplane-mode': 'none' },
          annotations: { ...annotations, 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(WAYPOINT_PORTS.metrics), 'prometheus.io/path': '/metrics' },
        },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          // the grace (5 s) plus the drain (20 s) plus 5 s to exit: a SIGKILL before would cut requests
          terminationGracePeriodSeconds: 30,
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          containers: [{
            name: 'waypoint',
            image: s.image,
            imagePullPolicy: s.imagePullPolicy ?? 'IfNotPresent',
            args: ['waypoint', '--name', name, '--namespace', ns],
            env: [
              { name: 'AMBIT_WAYPOINT_NAME', value: name },
              { name: 'AMBIT_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
              { name: 'AMBIT_SERVICE_ACCOUNT', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
              { name: 'AMBIT_NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
              { name: 'AMBIT_CONTROL_URL', value: s.controlUrl },
              { name: 'AMBIT_TOKEN_FILE', value: '/var/run/secrets/ambit/token' },
              { name: 'AMBIT_CONTROL_CA_FILE', value: '/var/run/ambit-ca/root-cert.pem' },
              { name: 'AMBIT_TRUST_DOMAIN', value: s.trustDomain },
              ...(s.logLevel ? [{ name: 'AMBIT_LOG_LEVEL', value: s.logLevel }] : []),
            ],
            ports: [
              { name: 'mesh', containerPort: WAYPOINT_PORTS.hbone, protocol: 'TCP' },
              { name: 'metrics', containerPort: WAYPOINT_PORTS.metrics, protocol: 'TCP' },
              { name: 'readiness', containerPort: WAYPOINT_PORTS.readiness, protocol: 'TCP' },
            ],
            readinessProbe: { httpGet: { path: '/healthz/ready', port: WAYPOINT_PORTS.readiness } },
            livenessProbe: { httpGet: { path: '/metrics', port: WAYPOINT_PORTS.metrics }, periodSeconds: 15, timeoutSeconds: 5, failureThreshold: 8 },
            // the engine opens its sockets from a thread that enters the pod's netns (setns): CAP_SYS_ADMIN
            securityContext: { runAsUser: 0, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'], add: ['SYS_ADMIN'] } },
            volumeMounts: [
              { name: 'token', mountPath: '/var/run/secrets/ambit', readOnly: true },
              { name: 'ca-root', mountPath: '/var/run/ambit-ca', readOnly: true },
            ],
          }],
          volumes: [
            { name: 'token', projected: { sources: [{ serviceAccountToken: token }] } },
            { name: 'ca-root', configMap: { name: caRoot } },
          ],
        },
      },
    },
  };
  return {
    objects: [
      { kind: 'ServiceAccount', path: path('v1', 'serviceaccounts', ns, name), obj: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(name) } },
      { kind: 'ConfigMap', path: path('v1', 'configmaps', ns, caRoot), obj: { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(caRoot), data: { 'root-cert.pem': rootsPem } } },
      { kind: 'Deployment', path: path('apps/v1', 'deployments', ns, name), obj: deployment },
      {
        kind: 'Service', path: path('v1', 'services', ns, name),
        obj: {
          apiVersion: 'v1', kind: 'Service', metadata: meta(name),
          spec: { selector, ports: [{ name: 'mesh', port: WAYPOINT_PORTS.hbone, targetPort: WAYPOINT_PORTS.hbone, protocol: 'TCP' }] },
        },
      },
    ],
  };
}

export type Condition = {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
};

export interface GatewayState {
  /** why the Gateway is not accepted (the translator's rejection, or waypointObjects' error); undefined: accepted */
  readonly invalid?: string;
  /** why its objects are not (yet) in place; undefined: applied */
  readonly notProgrammed?: string;
  /** the Service's ClusterIP, once it has one */
  readonly clusterIP?: string;
}

/**
 * The Gateway's status: conditions Accepted and Programmed for its current generation, and the
 * Service's address. A condition whose status did not change keeps its lastTransitionTime.
 * Conditions of other types (written by others) are kept.
 */
export function gatewayStatus(gw: KubeObject, st: GatewayState, now: string): Json {
  const generation = typeof gw.metadata.generation === 'number' ? gw.metadata.generation : undefined;
  const old = existingConditions(gw);
  const cond = (type: string, ok: boolean, reason: string, message: string): Condition =>
    condition(old.find((c) => c.type === type), { type, ok, reason, message }, generation, now);
  const accepted = st.invalid === undefined;
  const programmed = accepted && st.notProgrammed === undefined && st.clusterIP !== undefined;
  const conditions: Json[] = [
    cond('Accepted', accepted, accepted ? 'Accepted' : 'Invalid', accepted ? 'accepted by ambit' : st.invalid!),
    cond('Programmed', programmed, programmed ? 'Programmed' : accepted ? 'Pending' : 'Invalid',
      programmed ? `the waypoint Deployment and Service ${gw.metadata.name} are applied`
        : !accepted ? 'the Gateway is not accepted' : st.notProgrammed ?? 'the Service has no ClusterIP yet'),
    ...old.filter((c) => c.type !== 'Accepted' && c.type !== 'Programmed') as unknown as Json[],
  ];
  return {
    ...(typeof gw.status === 'object' && gw.status !== null ? gw.status as Json : {}),
    conditions,
    addresses: st.clusterIP ? [{ type: 'IPAddress', value: st.clusterIP }] : [],
    listeners: listenerStatus(gw, accepted, programmed, generation, now),
  };
}

/**
 * One entry per listener of the spec (Gateway API's status.listeners): the HBONE listener on
 * 15008 is Accepted, and Programmed with the Gateway; any other listener is not accepted
 * (UnsupportedProtocol: a waypoint serves HBONE on 15008 only). Routes attach to the Services a
 * waypoint serves, not to its listeners, so supportedKinds is empty and attachedRoutes 0.
 */
function listenerStatus(gw: KubeObject, accepted: boolean, programmed: boolean, generation: number | undefined, now: string): Json[] {
  const spec = gw.spec as { listeners?: unknown } | undefined;
  const listeners = Array.isArray(spec?.listeners) ? spec.listeners as Array<Record<string, unknown>> : [];
  const prevStatus = (gw.status as { listeners?: unknown } | undefined)?.listeners;
  const prevOf = (name: string, type: string): Partial<Condition> | undefined => {
    if (!Array.isArray(prevStatus)) return undefined;
    const l = (prevStatus as Array<{ name?: unknown; conditions?: unknown }>).find((x) => x?.name === name);
    return Array.isArray(l?.conditions) ? (l.conditions as Array<Partial<Condition>>).find((c) => c?.type === type) : undefined;
  };
  return listeners.filter((l) => typeof l?.['name'] === 'string').map((l) => {
    const name = l['name'] as string;
    const hbone = l['port'] === HBONE_LISTENER.port && l['protocol'] === HBONE_LISTENER.protocol;
    const cond = (type: string, ok: boolean, reason: string, message: string): Condition =>
      condition(prevOf(name, type), { type, ok, reason, message }, generation, now);
    const ok = accepted && hbone;
    return {
      name, supportedKinds: [], attachedRoutes: 0,
      conditions: [
        cond('Accepted', ok, ok ? 'Accepted' : hbone ? 'Invalid' : 'UnsupportedProtocol',
          ok ? 'the waypoint\'s HBONE listener' : hbone ? 'the Gateway is not accepted' : `a waypoint serves only protocol ${HBONE_LISTENER.protocol} on port ${HBONE_LISTENER.port}`),
        cond('Programmed', ok && programmed, ok && programmed ? 'Programmed' : ok ? 'Pending' : 'Invalid', ok && programmed ? 'listening' : ok ? 'the waypoint is not programmed yet' : 'the listener is not accepted'),
        cond('ResolvedRefs', true, 'ResolvedRefs', 'no references to resolve'),
      ],
    };
  });
}

/** A condition for `generation`; its lastTransitionTime moves only when its status changes. */
function condition(prev: Partial<Condition> | undefined, c: { type: string; ok: boolean; reason: string; message: string }, generation: number | undefined, now: string): Condition {
  const status = c.ok ? 'True' : 'False';
  return {
    type: c.type, status, reason: c.reason, message: c.message,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    lastTransitionTime: prev && prev.status === status && typeof prev.lastTransitionTime === 'string' ? prev.lastTransitionTime : now,
  };
}

function existingConditions(gw: KubeObject): Array<Partial<Condition> & { type: string }> {
  const s = gw.status as { conditions?: unknown } | undefined;
  if (!s || !Array.isArray(s.conditions)) return [];
  return s.conditions.filter((c): c is Partial<Condition> & { type: string } => !!c && typeof c === 'object' && typeof (c as { type?: unknown }).type === 'string');
}

/** Whether writing `next` would change what the Gateway already says (lastTransitionTime aside). */
export function statusDiffers(gw: KubeObject, next: Json): boolean {
  const strip = (v: unknown): string => JSON.stringify(v ?? null, (k, x: unknown) => (k === 'lastTransitionTime' ? undefined : x));
  const cur = (gw.status ?? {}) as Json;
  return strip(cur.conditions) !== strip(next.conditions) || strip(cur.addresses ?? []) !== strip(next.addresses)
    || strip(cur.listeners ?? []) !== strip(next.listeners ?? []);
}

/**
 * The status of ambit's GatewayClass: Accepted for its generation, or undefined when the class is
 * another controller's (then it is not ours to judge) or already says so.
 */
export function gatewayClassStatus(gc: KubeObject, controllerName: string, now: string): Json | undefined {
  if ((gc.spec as { controllerName?: unknown } | undefined)?.controllerName !== controllerName) return undefined;
  const generation = typeof gc.metadata.generation === 'number' ? gc.metadata.generation : undefined;
  const old = existingConditions(gc);
  const prev = old.find((c) => c.type === 'Accepted');
  if (prev && prev.status === 'True' && prev.observedGeneration === generation) return undefined;
  const accepted: Condition = {
    type: 'Accepted', status: 'True', reason: 'Accepted', message: 'handled by the ambit control plane',
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    lastTransitionTime: prev && prev.status === 'True' && typeof prev.lastTransitionTime === 'string' ? prev.lastTransitionTime : now,
  };
  return { conditions: [accepted, ...old.filter((c) => c.type !== 'Accepted') as unknown as Json[]] };
}
