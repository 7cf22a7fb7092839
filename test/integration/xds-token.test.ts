/**
 * Rotating bearer tokens on the control channel: the client asks its token source on every
 * (re)connect, a token file is re-read each time, and a missing or bad token file makes the
 * attempt fail and back off (never a crash). Real ws server, real push server, real files.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { MeshError } from '../../src/core/index.js';
import { PushServer } from '../../src/control/push/index.js';
import type { Authenticator, Principal } from '../../src/control/push/index.js';
import { Snapshot } from '../../src/model/index.js';
import { MAX_TOKEN_BYTES, XdsClient, buildResourceTables, tokenFromFile } from '../../src/xds/index.js';
import type { TokenSource } from '../../src/xds/index.js';
import { agentSettings } from '../../src/node-agent/index.js';
import { servePush } from '../helpers/push-harness.js';

/** Accepts the tokens in `valid` (a rotation: the API server stops accepting old ones), records every header. */
class RecordingAuthenticator implements Authenticator {
  readonly seen: string[] = [];
  readonly valid = new Set<string>();
  async authenticate(req: IncomingMessage): Promise<Principal> {
    const h = req.headers.authorization ?? '';
    this.seen.push(h);
    if (!this.valid.has(h.replace(/^Bearer /, ''))) throw new MeshError('AMBIT_XDS_UNAUTHENTICATED', 'token not valid (any more)');
    return { role: 'agent', node: String(req.headers['x-ambit-node'] ?? ''), subject: 'test' };
  }
}

interface Harness {
  url: string;
  auth: RecordingAuthenticator;
  /** a control-plane restart behind the same port: every client reconnects */
  restart(): Promise<void>;
  client(token: TokenSource): XdsClient;
}

/** A push server with (empty) configuration: it refuses peers until it has some. */
function newPush(auth: Authenticator): PushServer {
  const p = new PushServer({ authenticator: auth, debounceMs: 1 });
  p.update(buildResourceTables(Snapshot.empty()).tables);
  p.flush();
  return p;
}

async function harness(t: ExecutionContext): Promise<Harness> {
  const auth = new RecordingAuthenticator();
  let push = newPush(auth);
  const server = createServer((_req, res) => { res.statusCode = 404; res.end(); });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => push.handleUpgrade(req, socket, head));
  const { url, track } = await servePush(t, server, () => push.close());
  return {
    url,
    auth,
    async restart() {
      const old = push;
      push = newPush(auth);
      await old.close();
    },
    client(token) {
      const c = new XdsClient({ url, token, node: 'node-a', role: 'agent', backoff: { initialMs: 5, maxMs: 50, jitter: 0 } });
      c.on('error', () => {});
      return track(c);
    },
  };
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `ambit-${process.pid.toString(36)}-token-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const TOKEN_A = 'token-a-0123456789abcdef';
const TOKEN_B = 'token-b-fedcba9876543210';

test('a token function is asked again on reconnect and the new token is presented', async (t) => {
  const h = await harness(t);
  h.auth.valid.add(TOKEN_A);
  let current = TOKEN_A;
  let calls = 0;
  const c = h.client(async () => { calls++; return current; });
  c.start();
  await c.ready;
  t.deepEqual(h.auth.seen, [`Bearer ${TOKEN_A}`]);

  // rotate: the old token stops being accepted, the source hands out the new one
  current = TOKEN_B;
  h.auth.valid.clear();
  h.auth.valid.add(TOKEN_B);
  const reconnected = once(c, 'connected');
  await h.restart();
  await reconnected;
  t.is(h.auth.seen.at(-1), `Bearer ${TOKEN_B}`);
  t.false(h.auth.seen.slice(1).includes(`Bearer ${TOKEN_A}`), 'the stale token is never sent after rotation');
  t.true(calls >= 2);
});

test('a token file is re-read on every connect; a missing or empty file backs off with an error naming the file', async (t) => {
  const h = await harness(t);
  const dir = await tempDir(t);
  const file = join(dir, 'token');
  h.auth.valid.add(TOKEN_A).add(TOKEN_B);
  const c = h.client(tokenFromFile(file));
  const errors: Error[] = [];
  c.on('error', (e) => errors.push(e));

  const firstError = once(c, 'error');
  c.start();
  const [missing] = (await firstError) as [MeshError];
  t.is(missing.code, 'AMBIT_CONFIG_INVALID');
  t.true(missing.message.includes(file), missing.message);
  t.is(h.auth.seen.length, 0, 'nothing is sent without a token');

  // an empty file (a projected volume being written) is an error too, then the real token appears
  await writeFile(file, '\n');
  const emptyError = await waitForError(c, (e) => e.message.includes('empty'));
  t.true(emptyError.message.includes(file));

  // the kubelet writes the token without a newline; editors add one: both are trimmed
  const connected = once(c, 'connected');
  await writeFile(file, `${TOKEN_A}\n`);
  await connected;
  t.is(h.auth.seen.at(-1), `Bearer ${TOKEN_A}`);

  await writeFile(file, TOKEN_B);
  const again = once(c, 'connected');
  await h.restart();
  await again;
  t.is(h.auth.seen.at(-1), `Bearer ${TOKEN_B}`);
  t.true(errors.length >= 2);
});

test('an oversized or non-ASCII token file is refused with its name, never read whole', async (t) => {
  const dir = await tempDir(t);
  const big = join(dir, 'big');
  await writeFile(big, 'x'.repeat(MAX_TOKEN_BYTES + 10));
  const e1 = await t.throwsAsync(tokenFromFile(big)());
  t.true(e1.message.includes(big) && e1.message.includes('larger than'), e1.message);

  const spaced = join(dir, 'spaced');
  await writeFile(spaced, 'two words\n');
  const e2 = await t.throwsAsync(tokenFromFile(spaced)());
  t.true(e2.message.includes(spaced), e2.message);

  const exact = join(dir, 'exact');
  await writeFile(exact, 'y'.repeat(MAX_TOKEN_BYTES) + '\n');
  t.is((await tokenFromFile(exact)()).length, MAX_TOKEN_BYTES);
});

test('a token function that throws or hangs fails the attempt and the client keeps retrying', async (t) => {
  const h = await harness(t);
  h.auth.valid.add(TOKEN_A);
  let mode: 'throw' | 'hang' | 'ok' = 'throw';
  const c = new XdsClient({
    url: h.url, node: 'node-a', role: 'agent', backoff: { initialMs: 5, maxMs: 20, jitter: 0 }, tokenTimeoutMs: 50,
    token: () => {
      if (mode === 'throw') { mode = 'hang'; throw new Error('provider broke'); }
      if (mode === 'hang') { mode = 'ok'; return new Promise<string>(() => {}); }
      return TOKEN_A;
    },
  });
  t.teardown(() => c.close());
  const errors: Error[] = [];
  c.on('error', (e) => errors.push(e));
  c.start();
  await c.ready;
  t.deepEqual(errors.map((e) => e.message.includes('provider broke') || e.message.includes('no answer in 50 ms')), [true, true]);
  t.deepEqual(h.auth.seen, [`Bearer ${TOKEN_A}`]);
});

test('a fixed token with a newline is refused per attempt instead of crashing in the ws library', async (t) => {
  const h = await harness(t);
  const c = h.client('bad\r\ntoken');
  const err = once(c, 'error');
  c.start();
  const [e] = (await err) as [MeshError];
  t.is(e.code, 'AMBIT_CONFIG_INVALID');
  t.is(h.auth.seen.length, 0);
});

test('the agent built from AMBIT_TOKEN_FILE reads the file on connect, not at settings time', async (t) => {
  const h = await harness(t);
  const dir = await tempDir(t);
  const file = join(dir, 'token');
  h.auth.valid.add(TOKEN_B);
  // the file does not exist yet: settings must not fail on it
  const s = agentSettings({ AMBIT_NODE_NAME: 'node-a', AMBIT_CONTROL_URL: h.url, AMBIT_TOKEN_FILE: file, AMBIT_STATE_DIR: dir });
  t.is(s.tokenFile, file);
  t.is(typeof s.token, 'function', 'a token file becomes a provider the control channel asks on every connect');
  // the agent hands its token option to its XdsClient as is (src/node-agent/app.ts)
  const control = new XdsClient({ url: s.controlUrl, token: s.token, node: s.node, role: 'agent' });
  t.teardown(() => control.close());
  control.on('error', () => {});
  await writeFile(file, TOKEN_B);
  control.start();
  await control.ready;
  t.is(h.auth.seen.at(-1), `Bearer ${TOKEN_B}`);
});

test('agentSettings: a fixed token wins over a file, and bad fixed tokens are refused up front', (t) => {
  const base = { AMBIT_NODE_NAME: 'n', AMBIT_CONTROL_URL: 'ws://127.0.0.1:1' };
  const s = agentSettings({ ...base, AMBIT_TOKEN: TOKEN_A, AMBIT_TOKEN_FILE: '/nonexistent' });
  t.is(s.token, TOKEN_A);
  t.is(s.control, undefined);
  t.throws(() => agentSettings(base), { message: /token missing/ });
  t.throws(() => agentSettings({ ...base, AMBIT_TOKEN: 'a b' }), { message: /AMBIT_TOKEN/ });
  t.throws(() => agentSettings({ ...base, AMBIT_TOKEN: 'x', AMBIT_CONTROL_CA_FILE: '/nonexistent/ca.pem' }), { message: /AMBIT_CONTROL_CA_FILE \/nonexistent\/ca.pem/ });
});

async function waitForError(c: XdsClient, pred: (e: Error) => boolean): Promise<Error> {
  return new Promise((resolve) => {
    const on = (e: Error) => { if (pred(e)) { c.off('error', on); resolve(e); } };
    c.on('error', on);
  });
}

test('a token path that is a FIFO or a directory is refused at once, never blocking a thread-pool thread', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-token-'));
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  t.teardown(async () => {
    // a reader stuck on the FIFO gets EOF, so the thread pool gets its thread back
    try { closeSync(openSync(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK)); } catch { /* no reader */ }
    await rm(dir, { recursive: true, force: true });
  });
  await symlink(fifo, join(dir, 'token'));
  await t.throwsAsync(tokenFromFile(join(dir, 'token'))(), { message: /not a regular file/ });
  await t.throwsAsync(tokenFromFile(dir)(), { message: /not a regular file/ });
});
