/**
 * Small programs run with `node -e` inside pods. They are plain JavaScript strings (not modules
 * of this package) so they run the same from sources (tsx) and from dist/, and start fast: no
 * TypeScript loader in the measured processes. Each prints one JSON line (or a marker line).
 */

/**
 * TCP echo server, argv: port. Echo keeps the server trivial and identical for every path; the
 * latency, connection-rate and memory measurements all talk to it.
 */
export const ECHO_SERVER = `
const net = require('node:net');
const port = Number(process.argv[1]);
const srv = net.createServer({ noDelay: true }, (s) => { s.on('error', () => {}); s.pipe(s); });
srv.maxConnections = 20000;
srv.on('error', (e) => { console.error(String(e)); process.exit(1); });
srv.listen(port, () => console.log('LISTENING ' + port));
`;

/**
 * Request/response latency at c=1, one connection driven in runs, argv: host port size. Prints
 * "CONNECTED" once connected; then each stdin line "<warmup> <count>" is one run: \`warmup\`
 * untimed and \`count\` timed round trips, each writing \`size\` bytes and waiting until \`size\`
 * bytes came back. A run answers "RR {"samples": [microseconds, 0.1 us resolution]}", and any
 * failure "RR {"error": ...}" (then the process exits). The connection stays open between runs,
 * so the bench can alternate runs between paths (bench/l4/latency.ts); stdin closed ends it.
 */
export const RR_SESSION = `
const net = require('node:net');
const readline = require('node:readline');
const [host, port, size] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
const payload = Buffer.alloc(size, 0x61);
let lat = null, got = 0, i = 0, warm = 0, total = 0, t0 = 0n, ending = false;
const fail = (error) => { console.log('RR ' + JSON.stringify({ error })); process.exit(1); };
const s = net.connect({ host, port, noDelay: true });
s.setTimeout(15000, () => fail(lat ? 'timeout after ' + i + ' round trips of the run' : 'connect timeout'));
s.on('error', (e) => fail(e.code || e.message));
s.on('close', () => { if (!ending) fail('connection closed by the peer'); });
const next = () => { got = 0; t0 = process.hrtime.bigint(); s.write(payload); };
const finish = () => {
  // no idle timeout between runs: the other paths take their turns meanwhile
  s.setTimeout(0);
  const samples = lat;
  lat = null;
  console.log('RR ' + JSON.stringify({ samples }));
};
s.on('connect', () => {
  s.setTimeout(0);
  console.log('CONNECTED');
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const m = /^(\\d+) (\\d+)$/.exec(line.trim());
    if (!m) return fail('bad command: ' + line.slice(0, 40));
    if (lat) return fail('command while a run is in progress');
    lat = []; i = 0; warm = Number(m[1]); total = warm + Number(m[2]);
    if (total === 0) return finish();
    s.setTimeout(15000);
    next();
  });
  rl.on('close', () => { ending = true; s.destroy(); process.exit(0); });
});
s.on('data', (d) => {
  if (!lat) return fail('data outside a run');
  got += d.length;
  if (got < size) return;
  if (got > size) return fail('echo returned more bytes than were sent');
  const us = Number(process.hrtime.bigint() - t0) / 1000;
  if (i >= warm) lat.push(Math.round(us * 10) / 10);
  i++;
  if (i < total) return next();
  finish();
});
`;

/**
 * New connections per second, argv: host port durationMs concurrency. Each worker loops: connect,
 * send 1 byte, read 1 byte, close. Counts completed exchanges; failures are counted, not retried.
 */
export const CONN_CLIENT = `
const net = require('node:net');
const [host, port, dur, conc] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
let ok = 0, failed = 0, running = conc;
const firstErr = [];
const start = Date.now();
const end = start + dur;
const one = () => {
  if (Date.now() >= end) { if (--running === 0) done(); return; }
  const s = net.connect({ host, port, noDelay: true });
  let fine = false;
  s.setTimeout(5000, () => s.destroy(new Error('timeout')));
  s.on('connect', () => s.write('x'));
  s.on('data', () => { fine = true; s.destroy(); });
  s.on('error', (e) => { if (firstErr.length < 3) firstErr.push(e.code || e.message); });
  s.on('close', () => { if (fine) ok++; else failed++; setImmediate(one); });
};
const done = () => {
  const secs = (Date.now() - start) / 1000;
  console.log(JSON.stringify({ ok, failed, seconds: secs, rate: ok / secs, errors: firstErr }));
};
for (let i = 0; i < conc; i++) one();
`;

/**
 * Holds idle connections, argv: host port count concurrency deadlineMs. Opens \`count\`
 * connections (at most \`concurrency\` opening at once), each proven end to end by a 1-byte
 * echo, prints "HELD <ok> <failed> <pending> <errors>", then keeps the good ones open until stdin
 * closes. At the deadline it reports what it has, the still pending ones counted apart, so a
 * path that stalls yields a diagnosis instead of a timeout.
 */
export const HOLD_CLIENT = `
const net = require('node:net');
const [host, port, count, conc, deadline] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
const held = [];
let started = 0, ok = 0, failed = 0, active = 0, reported = false;
const firstErr = [];
const report = () => {
  if (reported) return;
  reported = true;
  console.log('HELD ' + ok + ' ' + failed + ' ' + (count - ok - failed) + ' ' + JSON.stringify(firstErr));
};
const timer = setTimeout(report, deadline);
const pump = () => {
  while (active < conc && started < count) {
    started++; active++;
    const s = net.connect({ host, port });
    let settled = false;
    const settle = (good) => {
      if (settled) return;
      settled = true; active--;
      if (good) { ok++; held.push(s); } else { failed++; s.destroy(); }
      if (ok + failed === count) { clearTimeout(timer); report(); } else pump();
    };
    s.on('connect', () => s.write('x'));
    s.once('data', () => settle(true));
    s.on('error', (e) => { if (firstErr.length < 3) firstErr.push(e.code || e.message); settle(false); });
    s.on('close', () => settle(false));
  }
};
pump();
process.stdin.on('data', () => {});
process.stdin.on('end', () => { for (const s of held) s.destroy(); process.exit(0); });
`;

/** haproxy serving a fixed body on every path: the HTTP server wrk measures. */
export function haproxyConfig(port: number, bodyBytes: number): string {
  if (!Number.isInteger(bodyBytes) || bodyBytes < 1 || bodyBytes > 16_384) throw new RangeError('haproxy body: 1..16384 bytes');
  return [
    'global',
    '  nbthread 1',
    '  maxconn 4096',
    'defaults',
    '  mode http',
    '  timeout connect 5s',
    '  timeout client 30s',
    '  timeout server 30s',
    'frontend bench',
    `  bind :${port}`,
    `  http-request return status 200 content-type text/plain string "${'a'.repeat(bodyBytes)}"`,
    '',
  ].join('\n');
}

/**
 * Waits until host:port accepts a TCP connection, argv: host port timeoutMs. Exit 0 when it did,
 * 1 at the deadline. Retries on a short fixed period: the server gives no other signal we can see
 * from another namespace.
 */
export const PORT_WAIT = `
const net = require('node:net');
const [host, port, timeout] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
const end = Date.now() + timeout;
let last = '';
const once = () => {
  const s = net.connect({ host, port });
  s.on('connect', () => { s.destroy(); process.exit(0); });
  s.on('error', (e) => {
    last = e.code || e.message;
    if (Date.now() > end) { console.error('not accepting: ' + last); process.exit(1); }
    setTimeout(once, 50);
  });
};
once();
`;

/**
 * One 1-byte echo exchange, retried until it works or the deadline passes, argv: host port
 * timeoutMs. Used to know a path carries traffic end to end (e.g. certificates fetched).
 */
export const ECHO_PROBE = `
const net = require('node:net');
const [host, port, timeout] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
const end = Date.now() + timeout;
let last = '';
const once = () => {
  const s = net.connect({ host, port });
  let ok = false;
  s.setTimeout(3000, () => s.destroy(new Error('timeout')));
  s.on('connect', () => s.write('x'));
  s.on('data', () => { ok = true; s.destroy(); });
  s.on('error', (e) => { last = e.code || e.message; });
  s.on('close', () => {
    if (ok) process.exit(0);
    if (!last) last = 'closed without an answer';
    if (Date.now() > end) { console.error('no echo: ' + last); process.exit(1); }
    setTimeout(once, 200);
  });
};
once();
`;

/** GET a URL and print the body, argv: url. Exit 1 on any failure (message on stderr). */
export const HTTP_GET = `
const url = process.argv[1];
fetch(url, { signal: AbortSignal.timeout(5000) })
  .then(async (r) => { if (!r.ok) throw new Error('status ' + r.status); process.stdout.write(await r.text()); })
  .catch((e) => { console.error(String(e && e.message || e)); process.exit(1); });
`;
