import test from 'ava';
import { Backoff, Drain, ConfigError, MeshError, isMeshError, logger, setLogSink, setLogLevel, enableTrace } from '../../../src/core/index.js';

test('backoff grows by the factor, stays under the cap, and resets', (t) => {
  const b = new Backoff({ initialMs: 10, maxMs: 100, factor: 2, jitter: 0, random: () => 0.5 });
  t.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [10, 20, 40, 80, 100]);
  t.is(b.attempts, 5);
  b.reset();
  t.is(b.next(), 10);
});

test('backoff jitter only shortens a delay: its band is [base * (1 - jitter), base]', (t) => {
  const lo = new Backoff({ initialMs: 1000, jitter: 0.2, random: () => 1 });
  const hi = new Backoff({ initialMs: 1000, jitter: 0.2, random: () => 0 });
  t.is(lo.next(), 800);
  t.is(hi.next(), 1000);
});

test('no backoff delay exceeds the stated cap, whatever the jitter draws', (t) => {
  // the control channel's reconnect delays once went up to 17.7 s under a stated 15 s cap
  for (const r of [0, 0.25, 0.5, 0.75, 0.999, 1]) {
    const b = new Backoff({ initialMs: 10, maxMs: 2_000, jitter: 0.5, random: () => r });
    const delays = Array.from({ length: 80 }, () => b.next());
    t.true(delays.every((d) => d >= 0 && d <= 2_000), `random ${r}: ${delays.join(',')}`);
    t.true(delays.slice(-10).every((d) => d >= 1_000), 'at the cap the delay stays in its jitter band');
  }
  t.is(new Backoff({ initialMs: 5_000, maxMs: 2_000, jitter: 0 }).next(), 5_000, 'a larger first delay raises the cap');
});

test('drain waits for tracked work and reports success', async (t) => {
  const d = new Drain();
  let notified = 0;
  d.onDrain(() => notified++);
  let finish!: () => void;
  d.track(new Promise<void>((r) => { finish = r; }));
  const done = d.start(10_000);
  t.true(d.draining);
  t.is(notified, 1);
  finish();
  t.true(await done);
  t.is(d.inFlight, 0);
});

test('drain forces what outlives the deadline', async (t) => {
  const d = new Drain();
  d.track(new Promise(() => {}));
  let forced = false;
  t.false(await d.start(1, () => { forced = true; }));
  t.true(forced);
});

test('subscribing after drain started still notifies', async (t) => {
  const d = new Drain();
  await d.start(0);
  await new Promise<void>((resolve) => d.onDrain(resolve));
  t.pass();
});

test('config errors name resource and field and keep a stable code', (t) => {
  const e = new ConfigError('AuthorizationPolicy default/deny-all', 'spec.rules[0].from', 'unknown field "form"');
  t.is(e.code, 'AMBIT_CONFIG_INVALID');
  t.regex(e.message, /^AuthorizationPolicy default\/deny-all: spec\.rules\[0\]\.from: unknown field/);
  t.true(isMeshError(e, 'AMBIT_CONFIG_INVALID'));
  t.false(isMeshError(new Error('x')));
  t.false(isMeshError(new MeshError('AMBIT_LIMIT', 'x'), 'AMBIT_BUG'));
});

test('logger writes one JSON object per line and gates trace by scope', (t) => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  try {
    const log = logger('pool');
    log.info('opened', { peer: 'a', err: new Error('boom') });
    log.trace('hidden');
    enableTrace('pool');
    log.trace('shown');
  } finally {
    setLogSink(prev);
  }
  t.is(lines.length, 2);
  const first = JSON.parse(lines[0]!);
  t.like(first, { level: 'info', scope: 'pool', msg: 'opened', peer: 'a', err: 'boom' });
  t.is(JSON.parse(lines[1]!).msg, 'shown');
});

test.serial('logger.enabled follows the level: what it says is dropped is dropped', (t) => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  const log = logger('gate');
  try {
    setLogLevel('warn');
    t.false(log.enabled('info'));
    t.true(log.enabled('warn'));
    log.info('dropped');
    log.warn('kept');
    setLogLevel('info');
    t.true(log.enabled('info'));
  } finally {
    setLogLevel('info');
    setLogSink(prev);
  }
  t.deepEqual(lines.map((l) => (JSON.parse(l) as { msg: string }).msg), ['kept']);
});
