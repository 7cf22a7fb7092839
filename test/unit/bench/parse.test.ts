/**
 * The bench's parsers against real tool output: the fixtures were captured from iperf3 3.12 and
 * wrk 4 on loopback (a 200/500 mix and a server dropping sockets give the error counters).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { BenchError } from '../../../bench/common/errors.js';
import { parseHeld, parseIperfJson, parseScriptJson, parseWrk } from '../../../bench/l4/parse.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');

test('iperf3 -J: bits per second received by the server', (t) => {
  t.is(parseIperfJson(fixture('iperf3-ok.json')), 27607615944.490852);
});

test('iperf3 -J: the tool\'s own error becomes a BenchError naming iperf3', (t) => {
  const e = t.throws(() => parseIperfJson(fixture('iperf3-refused.json')), { instanceOf: BenchError });
  t.is(e.step, 'iperf3');
  t.is(e.message, 'iperf3: unable to connect to server: Connection refused');
});

test('iperf3 -J: truncated output and a JSON without the receiver sum are refused clearly', (t) => {
  const ok = fixture('iperf3-ok.json');
  t.throws(() => parseIperfJson(ok.slice(0, ok.length / 2)), { instanceOf: BenchError, message: /output is not JSON/ });
  t.throws(() => parseIperfJson(''), { message: /output is not JSON/ });
  // e.g. a UDP run, or a newer version moving the field: no silent zero
  const doc = JSON.parse(ok) as { end: Record<string, unknown> };
  delete doc.end.sum_received;
  t.throws(() => parseIperfJson(JSON.stringify(doc)), { message: /no end\.sum_received\.bits_per_second/ });
  t.throws(() => parseIperfJson(JSON.stringify({ end: { sum_received: { bits_per_second: 'fast' } } })), { message: /bits_per_second/ });
});

// Valid JSON that is not an object ("null" from a wrapper, a crashed tool) is a BenchError naming
// iperf3, not a TypeError from reading its fields.
test('iperf3 -J: JSON null is a BenchError, not a TypeError', (t) => {
  t.throws(() => parseIperfJson('null'), { instanceOf: BenchError, message: /^iperf3: / });
});

test('wrk: requests per second, no errors, with or without --latency', (t) => {
  t.deepEqual(parseWrk(fixture('wrk-ok.txt')), { requestsPerSec: 69810.8, errors: 0 });
});

test('wrk: non-2xx/3xx responses count as errors', (t) => {
  t.deepEqual(parseWrk(fixture('wrk-non2xx.txt')), { requestsPerSec: 73131.52, errors: 7322 });
});

test('wrk: socket errors (connect, read, write, timeout) add to non-2xx', (t) => {
  t.deepEqual(parseWrk(fixture('wrk-socket-errors.txt')), { requestsPerSec: 52953.65, errors: 1188 + 8322 });
  const synthetic = 'Requests/sec:      10.00\n  Socket errors: connect 1, read 2, write 3, timeout 4\n';
  t.is(parseWrk(synthetic).errors, 10);
});

test('wrk: no report (refused connection prints to stderr only) is a BenchError quoting the tail', (t) => {
  t.throws(() => parseWrk(''), { instanceOf: BenchError, message: /^wrk: no "Requests\/sec:" line/ });
  const e = t.throws(() => parseWrk('Running 1s test @ http://x/\n  1 threads and 2 connections\n  0 requests in 1.00s, 0B read\n'));
  t.true(e.message.includes('0 requests in 1.00s'), e.message);
  // "Req/Sec" in the thread table is not the summary line
  t.throws(() => parseWrk('    Req/Sec    35.14k    10.09k   43.46k    85.00%\n'));
});

test('pod script result: the last line is the JSON, earlier chatter is ignored', (t) => {
  t.deepEqual(parseScriptJson<{ p50: number }>('latency', 'warming up\n{"p50": 41}\n'), { p50: 41 });
  t.throws(() => parseScriptJson('latency', 'warming up\n{"error": "connect ECONNREFUSED"}\n'), { message: 'latency: connect ECONNREFUSED' });
  t.throws(() => parseScriptJson('latency', 'Traceback\n  boom\n'), { message: /^latency: no JSON result line: Traceback/ });
  t.throws(() => parseScriptJson('latency', '42\n'), { message: /^latency: result is not an object: 42/ });
  t.throws(() => parseScriptJson('latency', 'null'), { message: /not an object/ });
  t.throws(() => parseScriptJson('latency', ''), { instanceOf: BenchError });
});

test('connection holder line: counts, errors as strings, malformed errors tolerated, bad lines refused', (t) => {
  t.deepEqual(parseHeld('HELD 998 2 0 ["ECONNRESET","timeout"]\n'), { ok: 998, failed: 2, pending: 0, errors: ['ECONNRESET', 'timeout'] });
  t.deepEqual(parseHeld('HELD 10 0 5 not-json'), { ok: 10, failed: 0, pending: 5, errors: [] });
  t.deepEqual(parseHeld('HELD 1 0 0 [404]').errors, ['404']);
  t.throws(() => parseHeld('HELD 1 2'), { instanceOf: BenchError, message: /^memory: unexpected holder line: HELD 1 2/ });
  t.throws(() => parseHeld('HELD -1 0 0 []'), { message: /unexpected holder line/ });
});
