import test from 'ava';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UpSocketServer, parseRestartRequest, parseUpRequest, sendRestart, upSocketPath, type UpRequest } from '../../src/cli/up-socket.js';
import { namespaceLabels } from '../../src/cli/up.js';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'ambit-up-socket-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('restart requests: agent needs a node, waypoint takes [namespace/]name, control takes none', (t) => {
  t.deepEqual(parseRestartRequest({ op: 'restart', target: 'agent', name: 'node-1' }), { op: 'restart', target: 'agent', name: 'node-1' });
  t.deepEqual(parseRestartRequest({ op: 'restart', target: 'control' }), { op: 'restart', target: 'control' });
  t.deepEqual(parseRestartRequest({ op: 'restart', target: 'waypoint', name: 'default/waypoint' }), { op: 'restart', target: 'waypoint', name: 'default/waypoint' });
  t.throws(() => parseRestartRequest({ op: 'restart', target: 'agent' }), { message: /restart agent: missing: give a node name/ });
  t.throws(() => parseRestartRequest({ op: 'restart', target: 'agent', name: 'default/node-1' }), { message: /give a node name/ });
  t.throws(() => parseRestartRequest({ op: 'restart', target: 'agent', name: '../x' }), { message: /"\.\.\/x"/ });
  t.throws(() => parseRestartRequest({ op: 'restart', target: 'control', name: 'x' }), { message: /takes no name/ });
  t.throws(() => parseRestartRequest({ op: 'restart', target: 'pod', name: 'x' }), { message: /not one of agent, control, waypoint/ });
  t.throws(() => parseRestartRequest({ op: 'stop', target: 'control' }), { message: /unknown op/ });
  t.throws(() => parseRestartRequest([]), { message: /not an object/ });
});

test('the up socket: progress lines and the result reach the client; a failure is an error; requests run through the handler', async (t) => {
  const dir = tempDir(t);
  const seen: string[] = [];
  const server = await UpSocketServer.listen(dir, async (r: UpRequest, say) => {
    if (r.op === 'namespace') { seen.push(`namespace ${r.name} ${r.enroll}`); return `namespace ${r.name} ${r.enroll ? 'enrolled' : 'unenrolled'}`; }
    seen.push(r.target);
    if (r.target === 'control') throw new Error('control plane did not start');
    say('step one');
    say('step two');
    return `${r.target} ${r.name} replaced`;
  });
  t.teardown(() => server.close());
  t.is(statSync(upSocketPath(dir)).mode & 0o777, 0o600, 'only its owner (root) may ask');
  const lines: string[] = [];
  t.is(await sendRestart(dir, { op: 'restart', target: 'agent', name: 'node-1' }, (l) => lines.push(l)), 'agent node-1 replaced');
  t.deepEqual(lines, ['step one', 'step two']);
  await t.throwsAsync(sendRestart(dir, { op: 'restart', target: 'control' }, () => undefined), { message: 'control plane did not start' });
  t.is(await sendRestart(dir, { op: 'namespace', name: 'shop', enroll: false }, () => undefined), 'namespace shop unenrolled');
  t.deepEqual(seen, ['agent', 'control', 'namespace shop false']);
});

test('namespace requests: a DNS-label name and enroll true|false; other ops go to the restart checks', (t) => {
  t.deepEqual(parseUpRequest({ op: 'namespace', name: 'shop', enroll: true }), { op: 'namespace', name: 'shop', enroll: true });
  t.throws(() => parseUpRequest({ op: 'namespace', name: 'Shop!', enroll: true }), { message: /"Shop!" is not a namespace name/ });
  t.throws(() => parseUpRequest({ op: 'namespace', enroll: true }), { message: /missing name/ });
  t.throws(() => parseUpRequest({ op: 'namespace', name: 'shop', enroll: 'yes' }), { message: /"enroll" must be true or false/ });
  t.throws(() => parseUpRequest({ op: 'stop' }), { message: /unknown op/ });
});

test('namespace labels: enroll sets istio.io/dataplane-mode=ambient, unenroll removes it, other labels stay', (t) => {
  t.deepEqual(namespaceLabels({ team: 'a' }, true), { team: 'a', 'istio.io/dataplane-mode': 'ambient' });
  t.deepEqual(namespaceLabels({ team: 'a', 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'wp' }, false), { team: 'a', 'istio.io/use-waypoint': 'wp' });
});

test('the up socket refuses a bad or oversized request with a reason, and without calling the handler', async (t) => {
  const dir = tempDir(t);
  let calls = 0;
  const server = await UpSocketServer.listen(dir, async () => { calls++; return 'no'; });
  t.teardown(() => server.close());
  const ask = (text: string): Promise<string> => new Promise((resolve, reject) => {
    const s = createConnection(upSocketPath(dir));
    let answer = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => { answer += d; });
    s.on('end', () => resolve(answer));
    s.on('error', reject);
    s.write(text);
  });
  t.regex(await ask('not json\n'), /"ok":false,"error":"request is not JSON"/);
  t.regex(await ask(`${JSON.stringify({ op: 'restart', target: 'pod' })}\n`), /not one of agent, control, waypoint/);
  t.regex(await ask('x'.repeat(5000)), /request longer than 1024 bytes/);
  t.is(calls, 0);
});

test('sendRestart without a running up names the socket and what to check', async (t) => {
  const dir = tempDir(t);
  await t.throwsAsync(sendRestart(dir, { op: 'restart', target: 'control' }, () => undefined),
    { message: new RegExp(`cannot reach ambit up at ${upSocketPath(dir).replace(/[.]/g, '\\.')}: ENOENT`) });
});
