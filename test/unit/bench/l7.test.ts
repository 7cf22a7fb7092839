/** bench/l7: the peers' configurations, the table, added p99 against the right baseline, and issue 10's targets. */
import test from 'ava';
import { haproxyHttpConfig, nginxConfig } from '../../../bench/l7/proxies.js';
import { addedP99, baselineOf, cpuBudgetLines, emptyL7, formatL7Table, l7Targets, type L7Metrics, type L7Outcomes } from '../../../bench/l7/report.js';
import { gatewayYaml } from '../../../bench/l7/waypoint.js';

const m = (over: Partial<L7Metrics>): L7Metrics => ({ ...emptyL7(), ...over });

function outcomes(waypoint: L7Metrics | null, error?: string): L7Outcomes {
  return {
    direct: { metrics: m({ rps: 20_000, p50Us: 200, p90Us: 300, p99Us: 500 }) },
    haproxy: { metrics: m({ rps: 12_000, p50Us: 300, p90Us: 450, p99Us: 700, cpuSecPer1k: 0.0581, idleRssKb: 15_462, rssKbPer1kConn: 3338 }) },
    nginx: { metrics: m({ rps: 11_000, p50Us: 320, p90Us: 480, p99Us: 760 }) },
    node: { metrics: m({ rps: 8_000, p50Us: 400, p90Us: 600, p99Us: 900 }) },
    ambit: { metrics: m({ rps: 10_000, p50Us: 350, p90Us: 500, p99Us: 800 }) },
    waypoint: { metrics: waypoint, ...(error ? { error } : {}) },
  };
}

test('added p99: the peers and ambit against direct, the waypoint against the mesh without it (its own hop)', (t) => {
  const o = outcomes(m({ rps: 6000, p99Us: 1150 }));
  t.is(baselineOf('waypoint'), 'ambit');
  t.is(addedP99(o, 'haproxy'), 200);
  t.is(addedP99(o, 'ambit'), 300);
  t.is(addedP99(o, 'waypoint'), 350);
  t.is(addedP99(o, 'direct'), null);
  t.is(addedP99({ ...o, ambit: { metrics: null, error: 'x' } }, 'waypoint'), null);
});

test('targets: waypoint req/s >= 0.5x haproxy\'s and its hop\'s added p99 <= 2x haproxy\'s, boundaries included', (t) => {
  t.deepEqual(l7Targets(outcomes(m({ rps: 6000, p99Us: 1200 }))).map((c) => [c.value, c.met]), [[0.5, true], [400, true]]);
  t.deepEqual(l7Targets(outcomes(m({ rps: 5999, p99Us: 1201 }))).map((c) => c.met), [false, false]);
  t.is(l7Targets(outcomes(m({})))[1]!.goal, '<= 2x haproxy\'s 200 us');
});

test('no waypoint: n/a, never a pass, and the table says why', (t) => {
  const o = outcomes(null, 'no waypoint program in this tree');
  t.deepEqual(l7Targets(o).map((c) => c.met), [null, null]);
  const lines = formatL7Table(o, 1000).split('\n');
  t.regex(lines[0]!, /^path\s+req\/s c=16\s+p50 us @1000\/s\s+p90 us\s+p99 us\s+added p99 us\s+CPU s\/1k req\s+idle RSS MB\s+MB\/1k idle conns$/);
  t.deepEqual(lines[3]!.split(/\s+/), ['haproxy', '12000', '300', '450', '700', '200', '0.058', '15.1', '3.26']);
  t.deepEqual(lines[5]!.split(/\s+/).slice(0, 2), ['node', '8000']);
  t.deepEqual(lines[7]!.split(/\s+/), ['waypoint', '-', '-', '-', '-', '-', '-', '-', '-']);
  t.is(lines[8], '  waypoint: not run: no waypoint program in this tree');
});

test('CPU budget: the machine\'s cost per request split into proxy, agents and the rest; the waypoint\'s ceiling if it cost nothing', (t) => {
  const o = outcomes(m({ rps: 6000, cpuSecPer1k: 0.15, meshCpuSecPer1k: 0.08, machineCpuSecPer1k: 0.33, machineBusy: 0.99 }));
  const withMachine = { ...o, haproxy: { metrics: { ...o.haproxy.metrics!, machineCpuSecPer1k: 0.08, machineBusy: 0.98 } } };
  const lines = cpuBudgetLines(withMachine, 2);
  t.is(lines[0], 'CPU s per 1,000 requests during wrk:');
  t.is(lines[1], '  haproxy: machine 0.080 (busy 98 %), haproxy 0.058, rest (client, server, kernel) 0.022');
  // the rest is 0.33 - 0.15 - 0.08 = 0.10; without the waypoint's 0.15: 2 CPUs / 0.18 ms = 11,111 req/s
  t.is(lines[2], '  waypoint: machine 0.330 (busy 99 %), waypoint 0.150, agents 0.080, rest (client, server, kernel) 0.100; with a waypoint costing nothing: at most 11111 req/s (0.93x haproxy)');
  t.is(lines.length, 3, 'paths without a machine reading are left out');
  t.deepEqual(cpuBudgetLines(outcomes(null), 2), []);
});

test('haproxy http mode: keep-alive both sides, server connections reused, long idle timeouts', (t) => {
  const lines = haproxyHttpConfig(8081, '10.0.0.9:8080').split('\n').map((l) => l.trim());
  for (const want of ['mode http', 'option http-keep-alive', 'bind :8081', 'http-reuse always', 'server app 10.0.0.9:8080', 'timeout http-keep-alive 600s']) {
    t.true(lines.includes(want), want);
  }
});

test('nginx: upstream keepalive (HTTP/1.1, no Connection header), foreground, temp paths in the bench dir', (t) => {
  const text = nginxConfig({ port: 8082, upstream: '10.0.0.9:8080', dir: '/tmp/b' });
  t.regex(text, /upstream app \{ server 10\.0\.0\.9:8080; keepalive 64;/);
  t.regex(text, /proxy_http_version 1\.1;/);
  t.regex(text, /proxy_set_header Connection "";/);
  t.regex(text, /^daemon off;$/m);
  t.regex(text, /listen 8082;/);
  t.regex(text, /pid \/tmp\/b\/nginx\.pid;/);
});

test('the waypoint Gateway is the one ambit waypoint apply writes for services', (t) => {
  const y = gatewayYaml('bench-l7-mesh');
  t.regex(y, /kind: Gateway/);
  t.regex(y, /namespace: bench-l7-mesh/);
  t.regex(y, /istio\.io\/waypoint-for: service/);
  t.regex(y, /gatewayClassName: istio-waypoint/);
});
