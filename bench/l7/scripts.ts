/** Programs run with `node -e` in the client pod (plain JavaScript, like bench/l4/pod-scripts.ts). */

/**
 * Open-loop HTTP load at a fixed rate, argv: host port ratePerSec warmupMs measureMs connections.
 * Requests are due on a fixed schedule; a due request goes out on a free keep-alive connection,
 * or waits in a queue until one is free (no pipelining), whether or not earlier ones are done.
 * Each latency is counted from the request's scheduled time, so a stall is not hidden by sending
 * less (no coordinated omission). Requests due during the warm-up are not timed. Raw sockets and
 * a minimal response parser (status line, Content-Length or chunked bodies are not expected: the
 * servers send a fixed body) keep the generator's own cost per request small. lateSends counts
 * requests that left more than 2 ms after they were due (the generator starved of CPU). Prints
 * "OPEN {samples: [us, integers], sent, failed, errors, lateSends}" when every request is done.
 */
export const OPEN_LOOP = `
const net = require('node:net');
const [host, port, rate, warmupMs, measureMs, conns] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
const total = Math.round(((warmupMs + measureMs) * rate) / 1000);
const firstTimed = Math.round((warmupMs * rate) / 1000);
const stepNs = 1e9 / rate;
const req = Buffer.from('GET / HTTP/1.1\\r\\nHost: ' + host + '\\r\\n\\r\\n');
const samples = [];
const errors = {};
const backlog = [];
const free = [];
let due = 0, done = 0, failed = 0, lateSends = 0, t0 = 0n, finished = false;
const finish = () => {
  if (finished) return;
  finished = true;
  console.log('OPEN ' + JSON.stringify({ samples, sent: due, failed, errors, lateSends }));
  process.exit(0);
};
const complete = (i, err) => {
  done++;
  if (err) { failed++; errors[err] = (errors[err] || 0) + 1; }
  else if (i >= firstTimed) samples.push(Math.round(Number(process.hrtime.bigint() - (t0 + BigInt(Math.round(i * stepNs)))) / 1000));
  if (done === total) finish();
};
const open = () => {
  const s = net.connect({ host, port, noDelay: true });
  const c = { s, cur: -1, buf: Buffer.alloc(0), need: -1 };
  s.on('connect', () => { free.push(c); pump(); ready(); });
  s.on('data', (d) => {
    c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
    for (;;) {
      if (c.need < 0) {
        const h = c.buf.indexOf('\\r\\n\\r\\n');
        if (h < 0) return;
        const head = c.buf.subarray(0, h).toString('latin1');
        const m = /\\r\\ncontent-length:\\s*(\\d+)/i.exec(head);
        if (!m) { s.destroy(new Error('no content-length')); return; }
        c.status = head.slice(9, 12);
        c.need = Number(m[1]);
        c.buf = c.buf.subarray(h + 4);
      }
      if (c.buf.length < c.need) return;
      c.buf = c.buf.subarray(c.need);
      c.need = -1;
      const i = c.cur;
      c.cur = -1;
      complete(i, c.status === '200' ? null : 'status ' + c.status);
      free.push(c);
      pump();
      if (c.buf.length === 0) return;
    }
  });
  s.on('error', () => {});
  s.on('close', () => {
    if (c.cur >= 0) { const i = c.cur; c.cur = -1; complete(i, 'closed'); }
    const k = free.indexOf(c);
    if (k >= 0) free.splice(k, 1);
    if (!finished && done < total) setTimeout(open, 10);
  });
};
const pump = () => {
  while (backlog.length && free.length) {
    const c = free.pop();
    c.cur = backlog.shift();
    c.s.write(req);
  }
};
const tick = () => {
  const now = process.hrtime.bigint();
  const want = Math.min(total, Math.floor(Number(now - t0) / stepNs) + 1);
  // sent more than 2 ms after it was due: the generator, not the path, is behind
  while (due < want) {
    if (Number(now - t0) - due * stepNs > 2e6) lateSends++;
    backlog.push(due++);
  }
  pump();
  if (due < total) setTimeout(tick, 1);
};
let opened = 0;
const ready = () => { if (++opened === conns) { t0 = process.hrtime.bigint(); tick(); } };
for (let k = 0; k < conns; k++) open();
setTimeout(() => { for (let i = done; i < total; i++) complete(i, 'timeout'); finish(); }, warmupMs + measureMs + 30000).unref();
`;

/**
 * Idle keep-alive connections, argv: host port count concurrency deadlineMs. Opens \`count\`
 * connections (at most \`concurrency\` opening at once), each doing one GET and then staying
 * open; prints "HELD <ok> <failed> <pending> <errors>" and keeps them until stdin closes.
 */
export const HTTP_HOLD = `
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
const req = 'GET / HTTP/1.1\\r\\nHost: ' + host + '\\r\\nConnection: keep-alive\\r\\n\\r\\n';
const pump = () => {
  while (active < conc && started < count) {
    started++; active++;
    const s = net.connect({ host, port });
    let settled = false, got = '';
    const settle = (good) => {
      if (settled) return;
      settled = true; active--;
      if (good) { ok++; held.push(s); } else { failed++; s.destroy(); }
      if (ok + failed === count) { clearTimeout(timer); report(); } else pump();
    };
    s.setEncoding('latin1');
    s.on('connect', () => s.write(req));
    // a whole response: the 1 kB body after the headers
    s.on('data', (d) => { got += d; const h = got.indexOf('\\r\\n\\r\\n'); if (h >= 0 && got.length - h - 4 >= 1024) settle(got.startsWith('HTTP/1.1 200')); });
    s.on('error', (e) => { if (firstErr.length < 3) firstErr.push(e.code || e.message); settle(false); });
    s.on('close', () => settle(false));
  }
};
pump();
process.stdin.on('data', () => {});
process.stdin.on('end', () => { for (const s of held) s.destroy(); process.exit(0); });
`;
