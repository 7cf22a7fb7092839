/**
 * The inbound decision, pure: given the mesh snapshot, the local pod and what arrived for it (a
 * captured plaintext connection on 15006, or an HBONE CONNECT stream on 15008 after the engine's
 * mTLS and identity check), say where the bytes go, or why not as a typed refusal. The pod proxy
 * then only carries out the answer (decide, then do); both ports ask here, so they decide alike.
 */
import { canonicalIp, serviceKey, type Snapshot, type Workload } from '../../model/index.js';
import { parseSpiffeUri, type Identity } from '../../identity/index.js';
import { evaluateL4 } from '../../policy/index.js';
import { parseAuthority } from '../../hbone/index.js';
import { errorMessage } from '../../core/index.js';
import { forwardedHost } from './headers.js';
import { INBOUND_REFUSAL_STATUS, responseFlag, type InboundRefusalReason, type ResponseFlag } from './outcome.js';
import { formatAddr, spiffeIdOf, type SocketAddr } from './route.js';

/** What the decision needs of the local pod. */
export interface InboundPod {
  /** uid of the workload in the model */
  readonly uid: string;
  /** the pod's addresses; a target must be one of them */
  readonly ips: readonly string[];
  /** the return-path routes are installed: the app may be dialed from the client's address */
  readonly spoof: boolean;
}

/** What arrived. Addresses are as the kernel reports them (canonical text, IPv4 not mapped). */
export type InboundRequest =
  /** 15006: a captured plaintext connection; `dst` is its original destination */
  | { readonly via: 'plain'; readonly src: SocketAddr; readonly dst: SocketAddr }
  /**
   * 15008: a CONNECT stream. `peer`: the client's SPIFFE id, verified by the engine's TLS;
   * `authority`: the CONNECT `:authority` (untrusted); `local`: where the connection arrived;
   * `draining`: the proxy is stopping and refuses new streams.
   */
  | {
    readonly via: 'hbone'; readonly peer: string; readonly authority: string; readonly forwarded?: string | undefined;
    readonly src: SocketAddr; readonly local: SocketAddr; readonly draining: boolean;
  };

export interface InboundOptions {
  /** the agent's ports in the pod netns: never a target (a loop, or a way around capture) */
  readonly agentPorts: readonly number[];
}

/** Carry it: dial `target` from inside the pod netns (from `spoof` when set). */
export interface InboundAllow {
  readonly kind: 'allow';
  readonly target: SocketAddr;
  /** dial the app from this source address (the client's), when the pod's return path allows it */
  readonly spoof?: string;
  /** the pod's workload (the destination) */
  readonly workload: Workload;
  /** the client's workload when the model knows it (for HBONE: only when its identity matches) */
  readonly source: Workload | undefined;
  /** HBONE: the verified peer identity, parsed (the live-policy registry re-checks it) */
  readonly peer?: Identity;
  /** HBONE: the Service the peer named in `Forwarded: host=`, only when the model knows it */
  readonly serviceHost?: string | undefined;
}

/** Refuse it: reset (15006) or answer the CONNECT with `status` (15008); counted with `responseFlag`. */
export interface InboundRefusal {
  readonly kind: 'refuse';
  readonly reason: InboundRefusalReason;
  readonly status: 400 | 401 | 503;
  readonly responseFlag: ResponseFlag;
  /** for logs and the access log only; never parsed */
  readonly detail: string;
  /** the target, when it could be read (telemetry's destination address) */
  readonly target?: SocketAddr;
  readonly workload: Workload | undefined;
  readonly source: Workload | undefined;
  readonly serviceHost?: string | undefined;
}

export type InboundDecision = InboundAllow | InboundRefusal;

/**
 * Parsed peer identities, shared across connections: parsing a SPIFFE id per new connection
 * showed in profiles. Bounded: cleared when it grows past what any mesh here names.
 */
const PEER_CACHE_MAX = 4096;
const peerCache = new Map<string, Identity>();

/** A SPIFFE id parsed once (frozen); throws AMBIT_IDENTITY_INVALID as parseSpiffeUri. */
export function parsedIdentity(uri: string): Identity {
  let id = peerCache.get(uri);
  if (id === undefined) {
    id = Object.freeze(parseSpiffeUri(uri));
    if (peerCache.size >= PEER_CACHE_MAX) peerCache.clear();
    peerCache.set(uri, id);
  }
  return id;
}

/**
 * The `Forwarded: host=` a peer sent, kept only when it names a Service the model knows. It
 * becomes a metric label value, and every distinct value is a series kept for the agent's life:
 * a peer must not be able to mint them.
 */
export function knownServiceHost(snap: Snapshot, forwarded: string | undefined): string | undefined {
  const host = forwardedHost(forwarded);
  if (host === undefined) return undefined;
  const ns = host.split('.')[1];
  return ns !== undefined && snap.service(serviceKey({ namespace: ns, hostname: host })) !== undefined ? host : undefined;
}

/**
 * Decide an inbound connection for `pod`. Order (first failing check wins): draining, the
 * authority (15008), the target (an address of this pod, not an agent port), the pod in the
 * model, the peer's identity (15008), authorization policy.
 */
export function decideInbound(snapshot: Snapshot, pod: InboundPod, req: InboundRequest, o: InboundOptions): InboundDecision {
  const workload = snapshot.workload(pod.uid);
  const hbone = req.via === 'hbone';
  const serviceHost = hbone ? knownServiceHost(snapshot, req.forwarded) : undefined;
  const byIp = snapshot.workloadByIp(req.src.ip);
  // over HBONE the workload at the source address is the client only if its identity matches
  const source = byIp !== undefined && hbone && spiffeIdOf(byIp) !== req.peer ? undefined : byIp;
  const refuse = (reason: InboundRefusalReason, detail: string, target?: SocketAddr): InboundRefusal => ({
    kind: 'refuse', reason, status: INBOUND_REFUSAL_STATUS[reason], responseFlag: responseFlag({ kind: 'inbound-refused', reason, via: req.via }),
    detail, workload, source, ...(target ? { target } : {}), ...(hbone ? { serviceHost } : {}),
  });

  let target: SocketAddr;
  if (hbone) {
    const t = authorityTarget(req.authority);
    if (req.draining) return refuse('draining', 'draining', t);
    if (t === undefined) return refuse('bad-authority', `bad authority ${JSON.stringify(req.authority.slice(0, 64))}`);
    target = t;
    if (target.ip !== req.local.ip && target.ip !== canonicalIp(req.local.ip)) {
      return refuse('authority-mismatch', `ip mismatch: authority ${target.ip}, connection arrived on ${req.local.ip}`, target);
    }
  } else {
    target = req.dst;
  }
  if (!isPodAddress(pod, target.ip)) return refuse('not-pod-address', `target ${target.ip} is not this pod's address`, target);
  if (o.agentPorts.includes(target.port)) return refuse('agent-port', `target port ${target.port} is an agent port`, target);
  if (workload === undefined) return refuse('pod-unknown', 'pod unknown to the mesh', target);

  let peer: Identity | undefined;
  if (hbone) {
    try {
      peer = parsedIdentity(req.peer);
    } catch (e) {
      return refuse('bad-peer-identity', `peer identity: ${errorMessage(e)}`, target);
    }
  }
  const decision = evaluateL4(snapshot.policiesFor(workload), {
    ...(peer ? { srcIdentity: peer } : {}), srcIp: req.src.ip, dstIp: target.ip, dstPort: target.port,
  });
  if (!decision.allowed) return refuse('policy-denied', `policy: ${decision.reason}`, target);
  return {
    kind: 'allow', target, workload, source,
    ...(pod.spoof ? { spoof: req.src.ip } : {}),
    ...(peer ? { peer } : {}),
    ...(hbone ? { serviceHost } : {}),
  };
}

/** `ip` (canonical) is one of the pod's addresses; the model's spelling is compared canonically when it differs. */
function isPodAddress(pod: InboundPod, ip: string): boolean {
  return pod.ips.includes(ip) || pod.ips.some((a) => canonicalIp(a) === ip);
}

/** An IP `ip:port` authority as a socket address (hostnames are not targets on a pod's 15008). */
function authorityTarget(authority: string): SocketAddr | undefined {
  try {
    const t = parseAuthority(authority);
    return 'address' in t ? { ip: t.address, port: t.port } : undefined;
  } catch {
    return undefined;
  }
}

/** `ip:port` of the refusal's target, or the (bounded) authority it could not read. */
export function refusedAddr(d: InboundRefusal, req: InboundRequest): string {
  if (d.target) return formatAddr(d.target.ip, d.target.port);
  return req.via === 'hbone' ? req.authority.slice(0, 64) : formatAddr(req.dst.ip, req.dst.port);
}
