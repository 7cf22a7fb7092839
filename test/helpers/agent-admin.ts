/** Reading a running agent's admin endpoint from tests. */

interface Dump { snapshot: { authorizations: Array<{ namespace: string; name: string }> } }

/** Waits until the agent (admin port) has applied a snapshot with exactly these policies. */
export async function agentHasPolicies(adminPort: number, names: string[]): Promise<void> {
  const want = [...names].sort().join();
  for (;;) {
    const d = await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json() as Dump;
    if (d.snapshot.authorizations.map((a) => `${a.namespace}/${a.name}`).sort().join() === want) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
