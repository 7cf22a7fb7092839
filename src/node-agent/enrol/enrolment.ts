/**
 * Which pods this agent serves, and bringing them in and out of the mesh.
 *
 * A pod is enrolled when the model says it is ambient (`tunnel: 'hbone'`) and runs on this node.
 * Its netns comes from the CNI hand-off (an fd, remembered by namespace/name) or, for pods that
 * were running before the agent (or whose hand-off was missed), from a scan by IP. Enrolling
 * means: capture rules (one nft transaction), certificate tracking, listeners. Unenrolling
 * reverses it; an agent that merely stops leaves the rules in place so its pods stay captured
 * (and refused, not plaintext) until it comes back.
 *
 * All changes run one at a time (a reconcile never overlaps another); a snapshot arriving
 * meanwhile triggers one more pass.
 */
import { errorMessage, logger } from '../../core/index.js';
import type { Identity } from '../../identity/index.js';
import type { Snapshot, Workload } from '../../model/index.js';
import type { NetnsHandle } from '../deps.js';
import type { ListenerFds, PodInfo } from '../proxy/context.js';

const log = logger('node-agent.enrol');

/** Pods enrolled at once within a reconcile pass. */
const ENROL_CONCURRENCY = 8;

/** A pod netns the agent was told about (CNI ADD) or found. */
export interface KnownNetns {
  readonly name: string;
  readonly namespace: string;
  readonly ip?: string | undefined;
  readonly netns: NetnsHandle;
  /** the agent holds this fd and must close it when forgetting the pod */
  readonly ownedFd?: number | undefined;
}

/** The running side of one enrolled pod (a PodProxy in production). */
export interface EnrolledProxy {
  readonly listening: boolean;
  readonly openConnections: number;
  start(): Promise<void>;
  stop(deadlineMs: number): Promise<void>;
  /** handover: stop accepting (the successor holds the sockets), serve what was accepted, drain */
  release?(deadlineMs: number): Promise<void>;
  /** the listening sockets, for a handover */
  listenerFds?(): ListenerFds | undefined;
}

/** A pod's listeners taken over from the previous agent, waiting for its enrolment. */
export interface AdoptedListeners {
  readonly fds: ListenerFds;
  /** what the previous agent installed in the pod: fingerprint of its capture rules, return path */
  readonly capture?: string | undefined;
  readonly returnPath?: boolean | undefined;
}

export interface EnrolmentDeps {
  node: string;
  snapshot(): Snapshot;
  /**
   * install capture in the pod netns; resolves whether the return path (source spoofing) is on.
   * `adopted`: the previous agent's rules are in place and carry live traffic (replace them
   * atomically, never remove first).
   */
  applyCapture(netns: NetnsHandle, adopted?: AdoptedListeners): Promise<{ returnPath: boolean }>;
  /** listeners handed over by the previous agent for this workload uid (taken: asked once) */
  takeAdopted?(uid: string): AdoptedListeners | undefined;
  removeCapture(netns: NetnsHandle): Promise<void>;
  /** find a running pod's netns by IP (scan) */
  findNetns(ip: string): Promise<NetnsHandle | undefined>;
  createProxy(pod: PodInfo): EnrolledProxy;
  trackIdentity(id: Identity): void;
  untrackIdentity(id: Identity): void;
  closeFd(fd: number): void;
  /** how long an unenrolled pod's open connections may take to finish, ms; default 5_000 */
  unenrolDrainMs?: number;
  /** most pods served at once; default 1024 */
  maxPods?: number;
  /** told the number of enrolled pods whenever it changes (the active-proxy gauge) */
  enrolledChanged?(count: number): void;
}

export interface EnrolledPod {
  readonly workload: Workload;
  readonly netns: NetnsHandle;
  readonly proxy: EnrolledProxy;
  readonly returnPath: boolean;
}

function podKey(namespace: string, name: string): string { return `${namespace}/${name}`; }
function identityOf(w: Workload): Identity { return { trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount }; }

export class Enrolment {
  readonly #d: EnrolmentDeps;
  /** netns handed over or found, by `<namespace>/<name>` */
  readonly #known = new Map<string, KnownNetns>();
  /** enrolled pods by workload uid */
  readonly #enrolled = new Map<string, EnrolledPod>();
  /** last enrolment error by workload uid (for readiness and config_dump) */
  readonly #failed = new Map<string, string>();
  /** pods held captured (rules only, everything refused) until the config knows them, by key */
  readonly #held = new Set<string>();
  /** pods being enrolled right now (a pass enrols a few at once), by uid */
  readonly #enrolling = new Map<string, Workload>();
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  /** while set, no pass starts (a handover is moving the pods between agents) */
  #paused: Promise<void> | undefined;
  /** the pass in progress */
  #passing: Promise<void> | undefined;

  constructor(d: EnrolmentDeps) { this.#d = d; }

  #setEnrolled(uid: string, e: EnrolledPod | undefined): void {
    if (e) this.#enrolled.set(uid, e); else this.#enrolled.delete(uid);
    this.#d.enrolledChanged?.(this.#enrolled.size);
  }

  get enrolled(): ReadonlyMap<string, EnrolledPod> { return this.#enrolled; }
  get failures(): ReadonlyMap<string, string> { return this.#failed; }
  get known(): ReadonlyMap<string, KnownNetns> { return this.#known; }

  /** Remembers a handed-over netns (replacing, and closing, an earlier one of the same pod). */
  remember(k: KnownNetns): void {
    const key = podKey(k.namespace, k.name);
    const prev = this.#known.get(key);
    if (prev?.ownedFd !== undefined && prev.ownedFd !== k.ownedFd) this.#d.closeFd(prev.ownedFd);
    this.#known.set(key, k);
  }

  /**
   * Captures a remembered pod the config does not know yet: its rules go in (nothing listens, so
   * every connection is refused, never plaintext) and stay until the config says what the pod is:
   * ambient (enrolled) or not (rules removed).
   */
  async hold(namespace: string, name: string): Promise<void> {
    const key = podKey(namespace, name);
    const k = this.#known.get(key);
    if (!k) throw new Error(`pod ${key}: no network namespace was handed over`);
    await this.#d.applyCapture(k.netns);
    this.#held.add(key);
    log.info('pod held captured until the mesh config knows it', { pod: key });
    await this.reconcile(); // the config may have learnt of it meanwhile
  }

  get held(): ReadonlySet<string> { return this.#held; }

  /** Forgets a remembered pod that is neither enrolled nor held (its ADD was refused). */
  forgetIdle(namespace: string, name: string): void {
    const key = podKey(namespace, name);
    if (this.#held.has(key)) return;
    for (const e of this.#enrolled.values()) if (e.workload.namespace === namespace && e.workload.name === name) return;
    this.#forget(key);
  }

  /** CNI ADD (or a manual enrol): remember the netns, then reconcile. Resolves after the pass. */
  async add(k: KnownNetns): Promise<void> {
    const key = podKey(k.namespace, k.name);
    this.remember(k);
    await this.reconcile();
    // A pod the model already calls ambient must be up when CNI gets its ACK: report failure.
    const w = this.#desired().find((x) => x.namespace === k.namespace && x.name === k.name);
    if (w && !this.#enrolled.has(w.uid)) throw new Error(this.#failed.get(w.uid) ?? `pod ${key} could not be enrolled`);
  }

  /**
   * Hold every pass until the returned function is called: waits for the pass in progress, so
   * the set of enrolled pods stays still while a handover reads or fills it. Calls of
   * `reconcile` meanwhile run once it is released.
   */
  async pause(): Promise<() => void> {
    let resume!: () => void;
    const p = new Promise<void>((r) => { resume = r; });
    while (this.#paused) await this.#paused;
    this.#paused = p;
    await this.#passing?.catch(() => undefined);
    return () => {
      if (this.#paused === p) this.#paused = undefined;
      resume();
    };
  }

  #forget(key: string): void {
    this.#held.delete(key);
    const k = this.#known.get(key);
    if (!k) return;
    this.#known.delete(key);
    if (k.ownedFd !== undefined) this.#d.closeFd(k.ownedFd);
  }

  /** CNI DEL: forget the netns; the pod leaves the mesh (if it was in). */
  async del(namespace: string, name: string): Promise<void> {
    const key = podKey(namespace, name);
    for (const [uid, e] of [...this.#enrolled]) {
      if (e.workload.namespace === namespace && e.workload.name === name) await this.#unenrol(uid, e, true);
    }
    this.#forget(key);
  }

  /** Bring the set of enrolled pods in line with the snapshot. Serialised; coalesces calls. */
  reconcile(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          while (this.#paused) await this.#paused;
          this.#again = false;
          this.#passing = this.#pass();
          await this.#passing;
        } while (this.#again && !this.#stopped);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  #desired(): Workload[] {
    return this.#d.snapshot().workloadsOnNode(this.#d.node).filter((w) => w.tunnel === 'hbone');
  }

  async #pass(): Promise<void> {
    if (this.#stopped) return;
    const desired = this.#desired();
    const want = new Map(desired.map((w) => [w.uid, w]));
    for (const [uid, e] of [...this.#enrolled]) {
      const w = want.get(uid);
      // Gone from the model, moved, or no longer ambient: out of the mesh. Rules are removed only
      // when the pod still exists (unlabelled); a deleted pod's netns is going away anyway.
      if (!w) {
        const stillThere = this.#d.snapshot().workload(uid) !== undefined;
        await this.#unenrol(uid, e, stillThere);
        if (!stillThere) this.#forget(podKey(e.workload.namespace, e.workload.name));
      } else if (w.addresses.join() !== e.workload.addresses.join() || w.serviceAccount !== e.workload.serviceAccount) {
        await this.#unenrol(uid, e, false); // re-enrolled below with the new facts
      }
    }
    const max = this.#d.maxPods ?? 1024;
    // Pods are enrolled a few at a time: each waits on a process (nft) and possibly its first
    // certificate, and one at a time a node's 130 pods took minutes under load.
    const todo = desired.filter((w) => !this.#enrolled.has(w.uid));
    let next = 0;
    let inFlight = 0;
    const worker = async (): Promise<void> => {
      while (next < todo.length && !this.#stopped) {
        const w = todo[next++]!;
        if (this.#enrolled.size + inFlight >= max) {
          this.#failed.set(w.uid, `pod limit reached (${max})`);
          continue;
        }
        inFlight++;
        try {
          await this.#enrol(w);
          this.#failed.delete(w.uid);
        } catch (e) {
          this.#failed.set(w.uid, errorMessage(e));
          log.warn('enrolment failed', { pod: `${w.namespace}/${w.name}`, error: errorMessage(e) });
        } finally {
          inFlight--;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(ENROL_CONCURRENCY, todo.length) }, worker));
    if (this.#stopped) return;
    for (const uid of [...this.#failed.keys()]) if (!want.has(uid)) this.#failed.delete(uid);
    await this.#releaseHeld();
  }

  /** Held pods the config now knows: enrolled ones are no longer held; others are released. */
  async #releaseHeld(): Promise<void> {
    if (this.#held.size === 0) return;
    const byKey = new Map(this.#d.snapshot().workloadsOnNode(this.#d.node).map((w) => [podKey(w.namespace, w.name), w]));
    for (const key of [...this.#held]) {
      const w = byKey.get(key);
      if (!w) continue;
      if (w.tunnel === 'hbone') {
        if (this.#enrolled.has(w.uid)) this.#held.delete(key);
        continue; // not enrolled yet (failed): stays captured, retried with the other failures
      }
      this.#held.delete(key);
      const k = this.#known.get(key);
      if (!k) continue;
      try {
        await this.#d.removeCapture(k.netns);
        log.info('held pod released: not in the mesh', { pod: key });
      } catch (err) {
        log.warn('capture removal failed', { pod: key, error: errorMessage(err) });
      }
    }
  }

  async #enrol(w: Workload): Promise<void> {
    this.#enrolling.set(w.uid, w);
    try {
      await this.#enrolOne(w);
    } finally {
      this.#enrolling.delete(w.uid);
    }
  }

  async #enrolOne(w: Workload): Promise<void> {
    const key = podKey(w.namespace, w.name);
    let netns = this.#known.get(key)?.netns;
    if (netns === undefined) {
      const ip = w.addresses[0];
      if (!ip) throw new Error(`pod ${key} has no address`);
      netns = await this.#d.findNetns(ip);
      if (netns === undefined) throw new Error(`pod ${key}: no network namespace holds ${ip} (not handed over by CNI, not found by scan)`);
      this.#known.set(key, { name: w.name, namespace: w.namespace, ip, netns });
    }
    const adopted = this.#d.takeAdopted?.(w.uid);
    const { returnPath } = await this.#d.applyCapture(netns, adopted);
    const proxy = this.#d.createProxy({
      uid: w.uid, name: w.name, namespace: w.namespace, serviceAccount: w.serviceAccount, ips: w.addresses, netns, spoof: returnPath,
      ...(adopted ? { listenFds: adopted.fds } : {}),
    });
    this.#d.trackIdentity(identityOf(w));
    try {
      await proxy.start();
    } catch (e) {
      this.#untrack(w);
      throw e;
    }
    this.#setEnrolled(w.uid, { workload: w, netns, proxy, returnPath });
    log.info('pod enrolled', { pod: key, ips: w.addresses, returnPath, ...(adopted ? { takenOver: true } : {}) });
  }

  #untrack(w: Workload): void {
    const id = identityOf(w);
    // identities are shared by pods of one service account: keep tracking while one remains
    // (pods being enrolled alongside count too)
    const same = (o: Workload) => o.uid !== w.uid && o.serviceAccount === w.serviceAccount && o.namespace === w.namespace && o.trustDomain === w.trustDomain;
    const shared = [...this.#enrolled.values()].some((e) => same(e.workload)) || [...this.#enrolling.values()].some(same);
    if (!shared) this.#d.untrackIdentity(id);
  }

  async #unenrol(uid: string, e: EnrolledPod, removeRules: boolean): Promise<void> {
    this.#setEnrolled(uid, undefined);
    this.#untrack(e.workload);
    await e.proxy.stop(this.#d.unenrolDrainMs ?? 5_000);
    if (removeRules) {
      try {
        await this.#d.removeCapture(e.netns);
      } catch (err) {
        log.warn('capture removal failed', { pod: `${e.workload.namespace}/${e.workload.name}`, error: errorMessage(err) });
      }
    }
    log.info('pod unenrolled', { pod: `${e.workload.namespace}/${e.workload.name}`, rulesRemoved: removeRules });
  }

  /**
   * Handover done: the successor accepts on every pod's sockets and owns the netns. No more
   * passes here; every proxy stops accepting and drains (capture rules stay: they are the
   * successor's now). Netns fds are kept until `stop`: draining connections still dial from them.
   */
  async release(deadlineMs: number): Promise<void> {
    this.#stopped = true;
    await Promise.all([...this.#enrolled.values()].map((e) => e.proxy.release ? e.proxy.release(deadlineMs) : e.proxy.stop(deadlineMs)));
  }

  /**
   * Agent shutdown: stop every proxy (drain until the deadline) but leave the capture rules in
   * place, so enrolled pods are refused rather than sent in plaintext while the agent is away.
   */
  async stop(deadlineMs: number): Promise<void> {
    this.#stopped = true;
    await this.#running?.catch(() => undefined);
    await Promise.all([...this.#enrolled.values()].map((e) => e.proxy.stop(deadlineMs)));
    this.#enrolled.clear();
    this.#d.enrolledChanged?.(0);
    this.#held.clear();
    for (const k of this.#known.values()) if (k.ownedFd !== undefined) this.#d.closeFd(k.ownedFd);
    this.#known.clear();
  }
}
