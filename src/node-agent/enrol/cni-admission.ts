/**
 * What a CNI ADD may answer, and when: a pod of the mesh is never left running without capture.
 *
 * `decideCniAdd` is pure: from what the agent knows right now (its config, whether that config is
 * current, the pod's namespace) it says whether the pod is outside the mesh (answer at once),
 * ambient (answer once it is enrolled: rules, certificate, listeners), unknown to a current config
 * (hold it captured, refusing everything, until the config says what it is), or whether nothing can
 * be told yet (wait; the ADD fails at its deadline and the runtime retries it).
 *
 * `admitCniAdd` carries a decision out within the ADD's deadline, re-deciding whenever the agent's
 * state may have changed; it never answers yes for a pod that should be in the mesh and is not.
 */
import { MeshError } from '../../core/index.js';
import type { Identity } from '../../identity/index.js';
import type { Snapshot, Workload } from '../../model/index.js';

/** Namespaces whose pods never wait for the mesh (the cluster's and the mesh's own). */
export const DEFAULT_EXEMPT_NAMESPACES: readonly string[] = Object.freeze(['kube-system', 'ambit-system']);

export interface CniAddFacts {
  readonly namespace: string;
  readonly name: string;
  /** the pod IP the runtime's main plugin assigned, when known */
  readonly ip?: string | undefined;
  readonly node: string;
  readonly snapshot: Snapshot;
  /** the agent has applied a config from the control plane at least once */
  readonly synced: boolean;
  /** that config is current: the control channel is up and has answered since it (re)connected */
  readonly current: boolean;
  readonly exemptNamespaces: ReadonlySet<string>;
}

export type CniAddDecision =
  /** not for the mesh (exempt namespace, or the config says not ambient): answer yes now */
  | { readonly kind: 'outside'; readonly reason: string }
  /** ambient: answer yes once enrolled, listening and holding its certificate */
  | { readonly kind: 'enrol'; readonly workload: Workload }
  /** a current config does not know the pod yet: capture it (all refused) until it does */
  | { readonly kind: 'hold'; readonly reason: string }
  /** nothing can be told (no config, or a stale one that does not know the pod): wait, then refuse */
  | { readonly kind: 'wait'; readonly reason: string };

/** The pod's workload in the snapshot: this node, this namespace/name, and the ADD's IP if given. */
export function findPodWorkload(snap: Snapshot, node: string, namespace: string, name: string, ip?: string): Workload | undefined {
  for (const w of snap.workloadsOnNode(node)) {
    if (w.namespace !== namespace || w.name !== name) continue;
    // a pod of the same name with another address is an earlier incarnation
    if (ip !== undefined && !w.addresses.includes(ip)) continue;
    return w;
  }
  return undefined;
}

export function decideCniAdd(f: CniAddFacts): CniAddDecision {
  const pod = `${f.namespace}/${f.name}`;
  if (f.exemptNamespaces.has(f.namespace)) return { kind: 'outside', reason: `namespace ${f.namespace} is exempt from the mesh` };
  if (!f.synced) {
    return { kind: 'wait', reason: `the agent has no config from the control plane yet, so it cannot tell whether pod ${pod} is in the mesh` };
  }
  const w = findPodWorkload(f.snapshot, f.node, f.namespace, f.name, f.ip);
  if (w) return w.tunnel === 'hbone' ? { kind: 'enrol', workload: w } : { kind: 'outside', reason: `pod ${pod} is not ambient` };
  if (!f.current) {
    return { kind: 'wait', reason: `the control plane is unreachable and the agent's config does not know pod ${pod}` };
  }
  return { kind: 'hold', reason: `pod ${pod} is not in the mesh config yet` };
}

/** Why an enrolled pod is not yet fit to start, or undefined when it is. */
export function notYetServing(w: Workload, s: { enrolled: boolean; listening: boolean; hasCert: boolean; failure?: string | undefined }): string | undefined {
  const pod = `${w.namespace}/${w.name}`;
  if (!s.enrolled) return s.failure !== undefined ? `pod ${pod} could not be enrolled: ${s.failure}` : `pod ${pod} is not enrolled yet`;
  if (!s.hasCert) return `no certificate yet for spiffe://${w.trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount} (the control plane issues it)`;
  if (!s.listening) return `pod ${pod}: its proxy is not listening yet`;
  return undefined;
}

export interface AdmissionDeps {
  /** the facts, as of now */
  facts(): CniAddFacts;
  /** remember the pod's netns (CNI hand-off) and run a reconcile pass */
  remember(): Promise<void>;
  /** capture the pod (rules only: everything refused) until the config knows it */
  hold(): Promise<void>;
  /** forget the pod's netns (closes the fd) after a refusal, unless it was enrolled */
  forget(): void;
  /** the state of the pod's enrolment */
  state(w: Workload): { enrolled: boolean; listening: boolean; hasCert: boolean; failure?: string | undefined };
  /** ask for the pod's certificate now (a fresh pod must not wait for the next rotation pass) */
  fetchCert(id: Identity): void;
  /** resolves when something may have changed (a snapshot, a reconcile, a timer); never rejects */
  changed(): Promise<void>;
  now(): number;
}

/**
 * Waits until the pod may start, at most until `deadline` (ms since the epoch, `now()`'s clock).
 * Resolves with how it was admitted; rejects with the last reason when the deadline passes.
 */
export async function admitCniAdd(d: AdmissionDeps, deadline: number): Promise<CniAddDecision['kind']> {
  await d.remember();
  let askedAt = -Infinity;
  for (;;) {
    const decision = decideCniAdd(d.facts());
    let reason: string;
    if (decision.kind === 'outside') return 'outside';
    if (decision.kind === 'hold') {
      await d.hold();
      return 'hold';
    }
    if (decision.kind === 'enrol') {
      const w = decision.workload;
      const state = d.state(w);
      // no certificate yet: ask now rather than at the identity's next retry (at most once a second)
      if (!state.hasCert && d.now() - askedAt >= 1_000) {
        d.fetchCert({ trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount });
        askedAt = d.now();
      }
      const why = notYetServing(w, state);
      if (why === undefined) return 'enrol';
      reason = why;
    } else {
      reason = decision.reason;
    }
    if (d.now() >= deadline) {
      if (decision.kind === 'wait') d.forget();
      throw new MeshError('AMBIT_POD_NOT_ADMITTED', `pod not started (it would run outside the mesh): ${reason}`);
    }
    await Promise.race([d.changed(), new Promise<void>((r) => setTimeout(r, Math.max(0, deadline - d.now())).unref())]);
  }
}
