import test from 'ava';
import { setLogSink } from '../../../src/core/index.js';
import { AgentTelemetry, CONNECTION_LABELS, connectionLabels } from '../../../src/node-agent/admin/telemetry.js';
import { svc, wl } from './fixtures.js';

test('labels follow Istio: every label present, unknown when missing', (t) => {
  const l = connectionLabels({ reporter: 'destination', mtls: false });
  t.deepEqual(Object.keys(l), [...CONNECTION_LABELS]);
  t.is(l.source_workload, 'unknown');
  t.is(l.request_protocol, 'tcp');
  t.is(l.connection_security_policy, 'unknown');
  t.is(l.response_flags, '-');
});

test('mTLS connection labels name both sides and the service', (t) => {
  const src = wl('client', '10.0.0.2', { canonicalRevision: 'v3' });
  const dst = wl('echo-v1', '10.0.1.1', { serviceAccount: 'echo', canonicalName: 'echo' });
  const l = connectionLabels({ reporter: 'source', source: src, destination: dst, service: svc('echo', '10.96.0.1', [[80, 8080]]), mtls: true });
  t.is(l.source_principal, 'spiffe://cluster.local/ns/default/sa/client');
  t.is(l.destination_principal, 'spiffe://cluster.local/ns/default/sa/echo');
  t.is(l.destination_service, 'echo.default.svc.cluster.local');
  t.is(l.destination_service_name, 'echo');
  t.is(l.source_version, 'v3');
  t.is(l.source_cluster, 'Kubernetes');
  t.is(l.connection_security_policy, 'mutual_tls');
});

test('bytes are counted at close; a denial counts as failed, never as opened or closed; one access-log line each', async (t) => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  try {
    const tel = new AgentTelemetry();
    const labels = connectionLabels({ reporter: 'destination', mtls: true, destination: wl('echo', '10.0.1.1') });
    tel.opened(labels);
    tel.closed({ direction: 'inbound', srcAddr: '10.0.0.2:1', dstAddr: '10.0.1.1:8080', labels, bytesRecv: 10, bytesSent: 20, durationMs: 3 }, true);
    tel.closed({ direction: 'inbound', srcAddr: '10.0.0.2:2', dstAddr: '10.0.1.1:8080', labels: { ...labels, response_flags: 'DENY' }, bytesRecv: 0, bytesSent: 0, durationMs: 1, error: 'policy' }, false);
    const m = await tel.metrics();
    t.regex(m, /istio_tcp_received_bytes_total\{[^}]*response_flags="-"[^}]*\} 10/);
    t.regex(m, /istio_tcp_sent_bytes_total\{[^}]*\} 20/);
    t.regex(m, /istio_tcp_connections_opened_total\{[^}]*response_flags="-"[^}]*\} 1/);
    t.regex(m, /istio_tcp_connections_closed_total\{[^}]*response_flags="-"[^}]*\} 1/);
    t.regex(m, /istio_tcp_connections_failed_total\{[^}]*response_flags="DENY"[^}]*\} 1/);
    // the failure is not an opened (nor a closed) connection: opened - closed stays what is open
    t.notRegex(m, /istio_tcp_connections_opened_total\{[^}]*response_flags="DENY"/);
    t.notRegex(m, /istio_tcp_connections_closed_total\{[^}]*response_flags="DENY"/);
    t.notRegex(m, /istio_tcp_connections_failed_total\{[^}]*response_flags="-"/);
    t.regex(m, /istio_tcp_sockets_open\{reporter="destination"\} 0/);
    const access = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'connection complete');
    t.is(access.length, 2);
    t.is(access[0]!.bytes_recv, 10);
    t.is(access[1]!.error, 'policy');
  } finally {
    setLogSink(prev);
  }
});
