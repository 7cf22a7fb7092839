/** The control plane's Prometheus metrics, in a registry of its own (tests run several planes in one process). */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PushMetrics } from '../push/index.js';

export class ControlMetrics {
  readonly registry = new Registry();
  readonly connected = new Gauge({ name: 'ambit_control_connected_clients', help: 'Connected control-channel clients', labelNames: ['role'], registers: [this.registry] });
  readonly pushes = new Counter({ name: 'ambit_control_pushes_total', help: 'Config pushes by resource type', labelNames: ['type'], registers: [this.registry] });
  readonly convergence = new Histogram({
    name: 'ambit_control_push_convergence_seconds', help: 'From a config change until every client ACKed it',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry],
  });
  readonly nacks = new Counter({ name: 'ambit_control_nacks_total', help: 'Responses rejected (in part) by a client', labelNames: ['type'], registers: [this.registry] });
  readonly rejected = new Gauge({ name: 'ambit_control_rejected_config', help: 'Config resources (or parts) currently rejected', labelNames: ['kind'], registers: [this.registry] });
  readonly slow = new Counter({ name: 'ambit_control_slow_client_disconnects_total', help: 'Clients disconnected for not reading or not ACKing', registers: [this.registry] });
  readonly certificates = new Counter({ name: 'ambit_control_certificates_total', help: 'Certificate requests by result', labelNames: ['result'], registers: [this.registry] });
  readonly refused = new Counter({ name: 'ambit_control_refused_connections_total', help: 'Connections refused, by reason (max_connections: closed by a full control listener before any request; status_max_connections: the same on the status port; others: control-channel upgrades refused)', labelNames: ['reason'], registers: [this.registry] });
  readonly configUpdates = new Counter({ name: 'ambit_control_config_updates_total', help: 'Config changes translated', registers: [this.registry] });

  /** The hooks the push server calls. */
  push(): PushMetrics {
    const short = (t: string) => t.slice(t.lastIndexOf('.') + 1);
    return {
      connected: (role, d) => this.connected.inc({ role }, d),
      pushed: (type) => this.pushes.inc({ type: short(type) }),
      nack: (type) => this.nacks.inc({ type: short(type) }),
      slowDisconnect: () => this.slow.inc(),
      converged: (s) => this.convergence.observe(s),
      refused: (reason) => this.refused.inc({ reason }),
    };
  }

  setRejected(byKind: ReadonlyMap<string, number>): void {
    this.rejected.reset();
    for (const [kind, n] of byKind) this.rejected.set({ kind }, n);
  }
}
