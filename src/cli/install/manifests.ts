/**
 * The Kubernetes objects of an ambit installation, from the install values: what `ambit install
 * --dry-run` prints and what daemonset/ holds (daemonset/ is this with the defaults, written by
 * `npm run manifests`; a test keeps the two equal). Comments travel with the objects, so the
 * rendered YAML says why each choice was made.
 */
import type { InstallValues } from './values.js';

export type Obj = Record<string, unknown>;

export interface Manifest {
  readonly obj: Obj;
  /** printed above the object */
  readonly comment?: string;
  /** comments above keys inside the object: dotted path (`spec.template.spec.containers[0].env`) -> text */
  readonly notes?: Readonly<Record<string, string>>;
}

export interface ManifestFile {
  readonly file: string;
  /** printed at the top of the file */
  readonly comment: string;
  readonly manifests: readonly Manifest[];
  /** part of the installation (kustomization, `ambit install`); false for examples */
  readonly installed: boolean;
}

/** The ports of ARCHITECTURE/DEVELOPING ("Marks and ports"). */
export const PORTS = { agentMetrics: 15020, agentReadiness: 15021, hbone: 15008, controlWs: 15010, controlWss: 15012, controlStatus: 15014 } as const;
/** Added to the agent's drain deadline for its grace period: the drain ends, then the process exits. */
export const GRACE_MARGIN_SECONDS = 5;
export const AGENT_STATE_DIR = '/var/run/ambit';

function scrape(port: number): Obj {
  return { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' };
}

const TOKEN_NOTE = 'minted for the control plane only (AMBIT_TOKEN_AUDIENCES), so the token is useless against the API server\n'
  + 'or any other service; the kubelet rotates it before it expires and the program re-reads the file on every reconnect';

function tokenVolume(audience: string): Obj {
  return { name: 'token', projected: { sources: [{ serviceAccountToken: { path: 'token', audience, expirationSeconds: 3600 } }] } };
}

function namespaceFile(v: InstallValues): ManifestFile {
  return {
    file: 'namespace.yaml', installed: true,
    comment: 'Everything ambit runs lives here. The namespace itself is never captured by the mesh.',
    manifests: [{
      comment: 'The node agent needs hostPath volumes and NET_ADMIN/SYS_ADMIN/NET_RAW, which the baseline Pod Security Standard\n'
        + 'forbids, so the namespace is labelled privileged; keep other workloads out.',
      obj: {
        apiVersion: 'v1', kind: 'Namespace',
        metadata: { name: v.namespace, labels: { 'istio.io/dataplane-mode': 'none', 'pod-security.kubernetes.io/enforce': 'privileged' } },
      },
    }],
  };
}

// === CRDs of the Istio kinds the control plane reads ===

const preserve = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
const strings = { type: 'array', items: { type: 'string' } };
const selector = { type: 'object', properties: { matchLabels: { type: 'object', additionalProperties: { type: 'string' } } } };
const targetRef = {
  type: 'object', required: ['kind', 'name'],
  properties: { group: { type: 'string' }, kind: { type: 'string' }, name: { type: 'string' }, namespace: { type: 'string' } },
};
const MTLS_MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];

interface CrdKind { group: string; kind: string; plural: string; shortNames?: string[]; versions: string[]; spec: Obj }

const ISTIO_KINDS: CrdKind[] = [
  {
    group: 'security.istio.io', kind: 'AuthorizationPolicy', plural: 'authorizationpolicies', versions: ['v1', 'v1beta1'],
    spec: {
      action: { type: 'string', enum: ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'] },
      selector, targetRef, targetRefs: { type: 'array', items: targetRef },
      provider: { type: 'object', properties: { name: { type: 'string' } } },
      rules: { type: 'array', items: preserve },
    },
  },
  {
    group: 'security.istio.io', kind: 'PeerAuthentication', plural: 'peerauthentications', shortNames: ['pa'], versions: ['v1', 'v1beta1'],
    spec: {
      selector,
      mtls: { type: 'object', properties: { mode: { type: 'string', enum: MTLS_MODES } } },
      portLevelMtls: { type: 'object', additionalProperties: { type: 'object', properties: { mode: { type: 'string', enum: MTLS_MODES } } } },
    },
  },
  {
    group: 'networking.istio.io', kind: 'VirtualService', plural: 'virtualservices', shortNames: ['vs'], versions: ['v1', 'v1beta1', 'v1alpha3'],
    spec: { hosts: strings, gateways: strings, exportTo: strings, http: { type: 'array', items: preserve }, tcp: { type: 'array', items: preserve }, tls: { type: 'array', items: preserve } },
  },
  {
    group: 'networking.istio.io', kind: 'DestinationRule', plural: 'destinationrules', shortNames: ['dr'], versions: ['v1', 'v1beta1', 'v1alpha3'],
    spec: { host: { type: 'string' }, exportTo: strings, trafficPolicy: preserve, subsets: { type: 'array', items: preserve }, workloadSelector: preserve },
  },
];

function crd(k: CrdKind): Manifest {
  const schema = {
    type: 'object',
    properties: {
      // the control plane judges every field (unknown ones are rejected and named there), so the
      // API server keeps what it does not know instead of dropping it silently
      spec: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true, properties: k.spec },
      status: preserve,
    },
  };
  return {
    obj: {
      apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition',
      metadata: { name: `${k.plural}.${k.group}` },
      spec: {
        group: k.group,
        names: { kind: k.kind, listKind: `${k.kind}List`, plural: k.plural, singular: k.kind.toLowerCase(), ...(k.shortNames ? { shortNames: k.shortNames } : {}), categories: ['istio-io', `${k.group.split('.')[0]}-istio-io`] },
        scope: 'Namespaced',
        versions: k.versions.map((name, i) => ({ name, served: true, storage: i === 0, subresources: { status: {} }, schema: { openAPIV3Schema: schema } })),
      },
    },
  };
}

function crdFile(): ManifestFile {
  return {
    file: 'crds.yaml', installed: true,
    comment: 'The Istio kinds the control plane reads, for clusters without Istio (with Istio installed, its own CRDs serve:\n'
      + 'render without these, --set crds.istio=false). Every version the control plane accepts is served; v1 is stored.\n'
      + 'Gateway API (gateway.networking.k8s.io v1: Gateway, HTTPRoute, GRPCRoute) is a prerequisite, installed from its own release.',
    manifests: ISTIO_KINDS.map(crd),
  };
}

// === the waypoint GatewayClass ===

/** The GatewayClass of ambit's waypoints and the controller name the control plane answers to. */
export const WAYPOINT_GATEWAY_CLASS = { name: 'ambit-waypoint', controllerName: 'ambit.dev/waypoint-controller' } as const;

function gatewayClassFile(): ManifestFile {
  return {
    file: 'gatewayclass.yaml', installed: true,
    comment: 'The class of ambit\'s waypoint Gateways. The control plane marks it Accepted and, for every Gateway of this class\n'
      + '(and of istio-waypoint, whose class Istio installs), runs the waypoint: see waypoint.yaml.',
    manifests: [{
      obj: {
        apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GatewayClass', metadata: { name: WAYPOINT_GATEWAY_CLASS.name },
        spec: { controllerName: WAYPOINT_GATEWAY_CLASS.controllerName, description: 'ambit waypoints: the L7 proxy of the services (or workloads) bound to them' },
      },
    }],
  };
}

// === RBAC ===

function rbacFile(v: InstallValues): ManifestFile {
  const read = ['get', 'list', 'watch'];
  const write = ['create', 'update', 'patch', 'delete'];
  return {
    file: 'rbac.yaml', installed: true,
    comment: 'Control plane: reads the kinds it turns into the mesh model, reviews the service account tokens agents and\n'
      + 'waypoints present (TokenReview), manages the ServiceAccounts, ConfigMaps, Deployments and Services of waypoints\n'
      + '(with the status of their Gateways), and, in its own namespace only, keeps the mesh CA in a Secret. The agent\n'
      + 'talks to the control plane only: its service account has no rights at all.',
    manifests: [
      { obj: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'ambit-control', namespace: v.namespace } } },
      {
        comment: 'the agent authenticates with its projected token (audience-bound), never with an API token',
        obj: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'ambit-agent', namespace: v.namespace }, automountServiceAccountToken: false },
      },
      {
        obj: {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'ambit-control' },
          rules: [
            { apiGroups: [''], resources: ['namespaces', 'pods'], verbs: read },
            { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways', 'httproutes', 'grpcroutes'], verbs: read },
            { apiGroups: ['security.istio.io'], resources: ['authorizationpolicies', 'peerauthentications'], verbs: read },
            { apiGroups: ['networking.istio.io'], resources: ['virtualservices', 'destinationrules'], verbs: read },
            { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
            // waypoints: a Gateway of class ambit-waypoint gets a Deployment, Service, ServiceAccount and root ConfigMap
            { apiGroups: [''], resources: ['services'], verbs: [...read, ...write] },
            { apiGroups: [''], resources: ['serviceaccounts'], verbs: [...read, ...write] },
            { apiGroups: [''], resources: ['configmaps'], verbs: [...read, ...write] },
            { apiGroups: ['apps'], resources: ['deployments'], verbs: [...read, ...write] },
            { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways/status'], verbs: ['update', 'patch'] },
            { apiGroups: ['gateway.networking.k8s.io'], resources: ['gatewayclasses'], resourceNames: [WAYPOINT_GATEWAY_CLASS.name], verbs: ['get'] },
            { apiGroups: ['gateway.networking.k8s.io'], resources: ['gatewayclasses/status'], resourceNames: [WAYPOINT_GATEWAY_CLASS.name], verbs: ['patch'] },
          ],
        },
        notes: {
          rules: 'read: exactly the kinds the control plane watches (src/control/config/types.ts WATCHED_KINDS), and the\nwaypoint objects it manages (listed once at start, to remove those of Gateways that went while it was down)',
          'rules[5]': 'Services are watched too (read) and written for waypoints',
          'rules[7]': 'the mesh root for each waypoint (<gateway>-ambit-ca-root; a pod mounts ConfigMaps of its own namespace only),\nand ambit-ca-root in this namespace for the agents',
        },
      },
      {
        obj: {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'ambit-control' },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'ambit-control' },
          subjects: [{ kind: 'ServiceAccount', name: 'ambit-control', namespace: v.namespace }],
        },
      },
      {
        comment: 'In its own namespace only. The mesh CA (src/control/kube/ca-secret.ts): the first replica to start creates\n'
          + 'the Secret ambit-ca (a racing one gets 409 and reads it); every later start reads it. A Secret cacerts (Istio\'s\n'
          + 'plug-in CA layout) is used instead when present. The Lease ambit-control elects the one replica that writes\n'
          + 'waypoint objects and Gateway status (src/control/kube/leader.ts). Only these objects can be read or updated;\n'
          + 'create cannot be limited to a name by RBAC.',
        obj: {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'ambit-control', namespace: v.namespace },
          rules: [
            { apiGroups: [''], resources: ['secrets'], resourceNames: ['ambit-ca', 'cacerts'], verbs: ['get'] },
            { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
            { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['ambit-control'], verbs: ['get', 'update'] },
            { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
          ],
        },
      },
      {
        obj: {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'ambit-control', namespace: v.namespace },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'ambit-control' },
          subjects: [{ kind: 'ServiceAccount', name: 'ambit-control', namespace: v.namespace }],
        },
      },
    ],
  };
}

// === control plane ===

function controlFile(v: InstallValues): ManifestFile {
  const labels = { app: 'ambit-control' };
  return {
    file: 'control.yaml', installed: true,
    comment: `The control plane: config from the Kubernetes API, CA, push server for agents and waypoints.
Ports: ${PORTS.controlWs} ws (in-cluster, token-authenticated), ${PORTS.controlWss} wss, ${PORTS.controlStatus} status/metrics.

The mesh CA is made by the control plane, never by hand: on its first start it creates a self-signed root into
the Secret ambit-ca of this namespace, and every later start (and every other replica) reads it from there. To
bring your own CA, create the Secret cacerts first (Istio's layout: ca-cert.pem, ca-key.pem, root-cert.pem,
cert-chain.pem); it is then used instead. The root is published in the ConfigMap ambit-ca-root, which the agents
mount to verify the wss listener (they wait for it at their first start).
For every Gateway of class ambit-waypoint (or istio-waypoint) it creates the waypoint's ServiceAccount, ConfigMap,
Deployment (this image) and Service, owned by the Gateway, and writes the Gateway's status.`,
    manifests: [
      {
        comment: `${v.controlReplicas} replicas: every replica reads the same API objects, signs with the same CA (the Secret)
and serves the agents that connect to it; an agent whose replica goes away reconnects to another through the
Service. The API writes for waypoints (objects and Gateway status) are made by one replica at a time, the holder
of the Lease ambit-control (renewed every 2 s, taken over 15 s after its holder stopped renewing, released at
once on a clean stop); the CA Secret is create-or-read and safe from any replica.`,
        obj: {
          apiVersion: 'apps/v1', kind: 'Deployment',
          metadata: { name: 'ambit-control', namespace: v.namespace, labels },
          spec: {
            replicas: v.controlReplicas,
            selector: { matchLabels: labels },
            strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
            template: {
              metadata: { labels: { ...labels, 'istio.io/dataplane-mode': 'none' }, annotations: scrape(PORTS.controlStatus) },
              spec: {
                serviceAccountName: 'ambit-control',
                securityContext: { runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
                nodeSelector: { 'kubernetes.io/os': 'linux' },
                affinity: {
                  podAntiAffinity: {
                    preferredDuringSchedulingIgnoredDuringExecution: [
                      { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: labels } } },
                    ],
                  },
                },
                containers: [{
                  name: 'control',
                  image: v.image,
                  imagePullPolicy: v.imagePullPolicy,
                  args: ['control'],
                  env: [
                    { name: 'AMBIT_CONFIG_SOURCE', value: 'kubernetes' },
                    { name: 'AMBIT_TRUST_DOMAIN', value: v.trustDomain },
                    { name: 'AMBIT_ROOT_NAMESPACE', value: v.rootNamespace },
                    { name: 'AMBIT_STATE_DIR', value: '/var/run/ambit' },
                    { name: 'AMBIT_AGENT_SERVICE_ACCOUNTS', value: `${v.namespace}/ambit-agent` },
                    { name: 'AMBIT_TOKEN_AUDIENCES', value: v.tokenAudience },
                    { name: 'AMBIT_LOG_LEVEL', value: v.logLevel },
                    { name: 'AMBIT_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                    { name: 'AMBIT_POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                    { name: 'AMBIT_WAYPOINT_IMAGE', value: v.image },
                    { name: 'AMBIT_WAYPOINT_IMAGE_PULL_POLICY', value: v.imagePullPolicy },
                  ],
                  ports: [
                    { name: 'ws', containerPort: PORTS.controlWs },
                    { name: 'wss', containerPort: PORTS.controlWss },
                    { name: 'status', containerPort: PORTS.controlStatus },
                  ],
                  readinessProbe: { httpGet: { path: '/ready', port: PORTS.controlStatus }, periodSeconds: 5 },
                  livenessProbe: { httpGet: { path: '/metrics', port: PORTS.controlStatus }, periodSeconds: 15, timeoutSeconds: 5, failureThreshold: 8 },
                  resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
                  securityContext: { runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
                  volumeMounts: [{ name: 'state', mountPath: '/var/run/ambit' }],
                }],
                volumes: [{ name: 'state', emptyDir: {} }],
              },
            },
          },
        },
        notes: {
          'spec.template.spec.securityContext': 'a fixed non-root user; the CA is read through the API (rbac.yaml), never mounted',
          'spec.template.spec.containers[0].env[3]': 'scratch state only: the CA lives in the Secret ambit-ca (or cacerts) of AMBIT_NAMESPACE',
          'spec.template.spec.containers[0].env[4]': 'agents authenticate with TokenReview; only this service account may act as an agent',
          'spec.template.spec.containers[0].env[5]': 'agents and waypoints mint their projected tokens for this audience; a token made for another\nservice, or for the API server itself, is refused here even if it is otherwise valid',
          'spec.template.spec.containers[0].livenessProbe': 'the status port answers /metrics whenever the process runs; /ready waits for config, and a\nrestart would not bring that sooner',
          'spec.template.spec.containers[0].env[7]': 'where the CA Secret, the root ConfigMap and the leader Lease are kept',
          'spec.template.spec.containers[0].env[8]': 'this replica\'s name in the leader Lease',
          'spec.template.spec.containers[0].env[9]': 'waypoint Deployments run this image (`ambit waypoint`)',
        },
      },
      {
        obj: {
          apiVersion: 'v1', kind: 'Service',
          metadata: { name: 'ambit-control', namespace: v.namespace, labels },
          spec: {
            selector: labels,
            ports: [
              { name: 'ws', port: PORTS.controlWs, targetPort: PORTS.controlWs, appProtocol: 'http' },
              { name: 'wss', port: PORTS.controlWss, targetPort: PORTS.controlWss, appProtocol: 'https' },
              { name: 'status', port: PORTS.controlStatus, targetPort: PORTS.controlStatus, appProtocol: 'http' },
            ],
          },
        },
      },
      {
        comment: 'a voluntary disruption (node drain) takes one replica at a time; with one replica it may take it',
        obj: {
          apiVersion: 'policy/v1', kind: 'PodDisruptionBudget',
          metadata: { name: 'ambit-control', namespace: v.namespace, labels },
          spec: { maxUnavailable: 1, selector: { matchLabels: labels } },
        },
      },
    ],
  };
}

// === node agent ===

function agentFile(v: InstallValues): ManifestFile {
  const labels = { app: 'ambit-agent' };
  const c = 'spec.template.spec.containers[0]';
  return {
    file: 'node-agent.yaml', installed: true,
    comment: `One node agent per node. It runs in its own pod namespace (no hostNetwork, no hostPID) and enters workload pod
namespaces through the native addon (netns fds from /var/run/netns and the CNI hand-off socket), so it needs
NET_ADMIN (nftables, marks), SYS_ADMIN (setns) and NET_RAW (transparent sockets), not privileged. The namespace
needs the \`privileged\` Pod Security level: baseline forbids hostPath and these capabilities.`,
    manifests: [{
      obj: {
        apiVersion: 'apps/v1', kind: 'DaemonSet',
        metadata: { name: 'ambit-agent', namespace: v.namespace, labels },
        spec: {
          selector: { matchLabels: labels },
          updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
          template: {
            metadata: { labels: { ...labels, 'istio.io/dataplane-mode': 'none' }, annotations: scrape(PORTS.agentMetrics) },
            spec: {
              serviceAccountName: 'ambit-agent',
              automountServiceAccountToken: false,
              priorityClassName: 'system-node-critical',
              terminationGracePeriodSeconds: v.agentDrainSeconds + GRACE_MARGIN_SECONDS,
              nodeSelector: { 'kubernetes.io/os': 'linux' },
              tolerations: [{ operator: 'Exists' }],
              containers: [{
                name: 'agent',
                image: v.image,
                imagePullPolicy: v.imagePullPolicy,
                args: ['agent'],
                env: [
                  { name: 'AMBIT_NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                  { name: 'AMBIT_CONTROL_URL', value: `wss://ambit-control.${v.namespace}.svc:${PORTS.controlWss}` },
                  { name: 'AMBIT_TOKEN_FILE', value: '/var/run/secrets/ambit/token' },
                  { name: 'AMBIT_CONTROL_CA_FILE', value: '/var/run/ambit-ca/root-cert.pem' },
                  { name: 'AMBIT_STATE_DIR', value: AGENT_STATE_DIR },
                  { name: 'AMBIT_TRUST_DOMAIN', value: v.trustDomain },
                  { name: 'AMBIT_DRAIN_MS', value: String(v.agentDrainSeconds * 1000) },
                  { name: 'AMBIT_LOG_LEVEL', value: v.logLevel },
                  { name: 'NODE_OPTIONS', value: '--max-semi-space-size=4' },
                  { name: 'AMBIT_CNI_BIN_DIR', value: `/host${v.cniBinDir}` },
                  { name: 'AMBIT_CNI_CONF_DIR', value: `/host${v.cniConfDir}` },
                  { name: 'AMBIT_EXEMPT_NAMESPACES', value: v.namespace },
                ],
                ports: [
                  { name: 'metrics', containerPort: PORTS.agentMetrics },
                  { name: 'readiness', containerPort: PORTS.agentReadiness },
                ],
                readinessProbe: { httpGet: { path: '/healthz/ready', port: PORTS.agentReadiness }, periodSeconds: 5 },
                livenessProbe: { httpGet: { path: '/metrics', port: PORTS.agentMetrics }, initialDelaySeconds: 10, periodSeconds: 15, timeoutSeconds: 5, failureThreshold: 8 },
                resources: { requests: { cpu: '200m', memory: '128Mi' }, limits: { memory: '1Gi' } },
                securityContext: {
                  privileged: false,
                  runAsUser: 0,
                  allowPrivilegeEscalation: true,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'SYS_ADMIN', 'NET_RAW'] },
                },
                volumeMounts: [
                  { name: 'netns', mountPath: '/var/run/netns', mountPropagation: 'HostToContainer' },
                  { name: 'state', mountPath: AGENT_STATE_DIR },
                  { name: 'token', mountPath: '/var/run/secrets/ambit', readOnly: true },
                  { name: 'ca-root', mountPath: '/var/run/ambit-ca', readOnly: true },
                  { name: 'tmp', mountPath: '/tmp' },
                  { name: 'cni-bin', mountPath: `/host${v.cniBinDir}` },
                  { name: 'cni-conf', mountPath: `/host${v.cniConfDir}` },
                ],
              }],
              volumes: [
                { name: 'tmp', emptyDir: {} },
                { name: 'ca-root', configMap: { name: 'ambit-ca-root' } },
                { name: 'netns', hostPath: { path: '/var/run/netns' } },
                { name: 'state', hostPath: { path: AGENT_STATE_DIR, type: 'DirectoryOrCreate' } },
                tokenVolume(v.tokenAudience),
                { name: 'cni-bin', hostPath: { path: v.cniBinDir, type: 'DirectoryOrCreate' } },
                { name: 'cni-conf', hostPath: { path: v.cniConfDir, type: 'DirectoryOrCreate' } },
              ],
            },
          },
        },
      },
      notes: {
        'spec.updateStrategy': 'an upgrade without an outage: the new agent starts beside the old one on the node and takes every\npod\'s listening sockets from it (the listener handover over the state dir\'s unix socket) before the old one\nstops accepting; maxUnavailable 0, so a node is never without an agent',
        'spec.template.spec.terminationGracePeriodSeconds': `the drain deadline (AMBIT_DRAIN_MS) plus ${GRACE_MARGIN_SECONDS} s to exit after it: a SIGKILL before the drain ends would cut\nthe connections the drain lets finish`,
        'spec.template.spec.tolerations': 'every taint, NoExecute included: a node without its agent cannot start an ambient pod',
        [`${c}.env[6]`]: 'with the handover the old agent serves until its successor took over; a new agent can need over 10 s on a\nloaded node',
        [`${c}.env[8]`]: 'V8 grows its young generation to 16 MB per semi-space under bursts of new connections and keeps it after a full\nGC; capped at 4 MB the RSS per extra idle tunnel (both agents, L4 bench) went from ~48-51 kB to ~28 kB',
        [`${c}.env[9]`]: 'the agent installs its CNI plugin here at start (ambit-cni, a launcher, and ambit-cni.d: a copy of the image\'s\nNode, the plugin bundled into one file, the native addon; the host needs glibc and libstdc++, nothing else) and\nchains it into the first conflist of AMBIT_CNI_CONF_DIR, again whenever the main plugin rewrites it. Stopping or\nupgrading the agent leaves both in place (pods keep waiting for an agent rather than starting outside the mesh);\n`ambit uninstall` first asks each agent to remove them (or run `ambit agent --cni-uninstall` in its pod)',
        [`${c}.env[11]`]: 'never held back by the CNI plugin, with kube-system: the agent\'s own pods must start while no agent runs',
        [`${c}.readinessProbe`]: 'ready: synced with the control plane, every enrolled pod listening, and the CNI plugin installed and chained',
        [`${c}.livenessProbe`]: 'alive: the metrics port answers whenever the event loop runs. Not readiness: an agent waiting for the control\nplane is not helped by a restart, and a restart on a slow probe would cut every connection on the node; hence\nthe long threshold (2 minutes without an answer)',
        [`${c}.resources`]: 'Open files: a pod spec cannot set RLIMIT_NOFILE; the agent needs about 6 fds per enrolled pod (its netns,\nlisteners) and about 12 more per pod with new connections in the last few seconds, so 250 pods with a burst\nfrom each need about 4,600: above the 1,024 soft limit runtimes often give, within their hard limit\n(containerd: 524,288 or more), which the agent raises its soft limit to at start.',
        [`${c}.securityContext.allowPrivilegeEscalation`]: 'Kubernetes refuses allowPrivilegeEscalation: false together with SYS_ADMIN (kubernetes#119568)',
        [`${c}.volumeMounts[4]`]: 'the root filesystem is read-only; Node and tools still want a scratch /tmp',
        'spec.template.spec.volumes[3]': `the CNI hand-off socket (agent.sock) lives here: the CNI plugin, run by the container runtime on the host,\nconnects to ${AGENT_STATE_DIR}/agent.sock`,
        'spec.template.spec.volumes[4]': TOKEN_NOTE,
      },
    }],
  };
}

// === an example waypoint (not installed: one per namespace that wants one) ===

function waypointFile(_v: InstallValues): ManifestFile {
  return {
    file: 'waypoint.yaml', installed: false,
    comment: `A waypoint for the services of one namespace (here: default). Opt in with
  kubectl label namespace default istio.io/use-waypoint=waypoint
The Gateway is all there is to write: the control plane creates and owns (ownerReferences) its ServiceAccount,
ConfigMap (the mesh root), Deployment (\`ambit waypoint\`, ports ${PORTS.hbone}/${PORTS.agentMetrics}/${PORTS.agentReadiness}) and Service (${PORTS.hbone}, named mesh),
all named after it, updates them when it changes and removes them when it goes; its status says when it is
Programmed and at which address. \`ambit waypoint generate\` prints this.`,
    manifests: [
      {
        obj: {
          apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway',
          metadata: { name: 'waypoint', namespace: 'default', labels: { 'istio.io/waypoint-for': 'service' } },
          spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: PORTS.hbone, protocol: 'HBONE' }] },
        },
      },
    ],
  };
}

/** The label every installed object carries: what `ambit install` may overwrite and `ambit uninstall` may remove. */
export const PART_OF = { key: 'app.kubernetes.io/part-of', value: 'ambit' } as const;

function labelled(f: ManifestFile): ManifestFile {
  if (!f.installed) return f;
  return {
    ...f,
    manifests: f.manifests.map((m) => {
      const md = m.obj.metadata as Obj;
      return { ...m, obj: { ...m.obj, metadata: { ...md, labels: { ...(md.labels as Obj | undefined), [PART_OF.key]: PART_OF.value } } } };
    }),
  };
}

/** Every manifest file, in the order they are applied (namespace and CRDs first). */
export function manifestFiles(v: InstallValues): ManifestFile[] {
  return [
    namespaceFile(v),
    ...(v.istioCrds ? [crdFile()] : []),
    gatewayClassFile(),
    rbacFile(v),
    controlFile(v),
    agentFile(v),
    waypointFile(v),
  ].map(labelled);
}
