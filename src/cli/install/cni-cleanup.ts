/**
 * Before `ambit uninstall` deletes the agents: every running agent pod is asked to take its CNI
 * plugin off its node (`POST /cni/uninstall` on its loopback admin port, through the API server's
 * port-forward, as `ambit status` reads its /config_dump). The agents never do that when they stop
 * (a rolling update stops them too, and a removed plugin would let pods start outside the mesh),
 * so without this the nodes would keep a plugin whose agent is gone, and every ambient pod created
 * there would wait for it. A node whose agent cannot be asked is named, with what to run there;
 * the uninstall goes on.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { errorMessage } from '../../core/index.js';
import { podRequest } from '../kube-port-forward.js';
import { request, statusMessage } from './kube-apply.js';

/** The agents' admin port (loopback only; KUBE_PORTS.admin of `ambit status`). */
const AGENT_ADMIN_PORT = 15000;
const AGENT_LABEL = 'app=ambit-agent';
const MANUAL = 'run `ambit agent --cni-uninstall --cni-bin-dir DIR --cni-conf-dir DIR` there';

interface AgentPod { name: string; node: string; running: boolean }

/** One line per agent pod (what was removed, or why not and what to do). */
export async function removeCniPlugins(kc: KubeConfig, namespace: string, progress: (line: string) => void): Promise<void> {
  const a = await request(kc, 'GET', `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods?labelSelector=${encodeURIComponent(AGENT_LABEL)}`);
  if (a.status === 404) return;
  if (a.status !== 200) {
    progress(`CNI plugin: cannot list the agent pods in ${namespace} (HTTP ${a.status}: ${statusMessage(a)}); on every node, ${MANUAL}`);
    return;
  }
  const list = JSON.parse(a.body) as { items?: Array<{ metadata?: { name?: string }; spec?: { nodeName?: string }; status?: { phase?: string } }> };
  const pods: AgentPod[] = (list.items ?? []).map((p) => ({ name: p.metadata?.name ?? '', node: p.spec?.nodeName ?? '?', running: p.status?.phase === 'Running' }))
    .filter((p) => p.name !== '').sort((x, y) => x.node.localeCompare(y.node) || x.name.localeCompare(y.name));
  for (const pod of pods) {
    const where = `node ${pod.node} (agent ${namespace}/${pod.name})`;
    if (!pod.running) { progress(`${where}: not running, its CNI plugin stays; ${MANUAL}`); continue; }
    try {
      const r = await podRequest(kc, { namespace, pod: pod.name, port: AGENT_ADMIN_PORT }, 'POST', '/cni/uninstall');
      if (r.status === 404) { progress(`${where}: installs no CNI plugin (no AMBIT_CNI_BIN_DIR)`); continue; }
      if (r.status !== 200) { progress(`${where}: CNI plugin not removed: HTTP ${r.status}: ${r.body.trim().slice(0, 300)}; ${MANUAL}`); continue; }
      const done = JSON.parse(r.body) as { conf?: string | null; removed?: string[] };
      progress(`${where}: CNI plugin removed (${done.conf ? `unchained from ${done.conf}` : 'was not chained'}; ${(done.removed ?? []).length} files removed)`);
    } catch (e) {
      progress(`${where}: CNI plugin not removed: ${errorMessage(e)}; ${MANUAL}`);
    }
  }
}
