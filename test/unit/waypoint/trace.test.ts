import test from 'ava';
import { CRYPTO_RANDOM } from '../../../src/waypoint/trace.js';
import { propagateTrace } from '../../../src/waypoint/index.js';

test('pooled trace randomness: ids have the asked length, are hex, and do not repeat across pool refills', (t) => {
  const seen = new Set<string>();
  // 4 KiB pool: 1,000 draws of 8 + 16 bytes refill it several times
  for (let i = 0; i < 1000; i++) {
    const span = CRYPTO_RANDOM.hex(8);
    const trace = CRYPTO_RANDOM.hex(16);
    t.regex(span, /^[0-9a-f]{16}$/);
    t.regex(trace, /^[0-9a-f]{32}$/);
    seen.add(span); seen.add(trace);
  }
  t.is(seen.size, 2000);
  t.regex(CRYPTO_RANDOM.hex(5000), /^[0-9a-f]{10000}$/, 'a draw larger than the pool');
});

test('a request without trace headers gets a fresh trace and span id each time', (t) => {
  const a = propagateTrace([]);
  const b = propagateTrace([]);
  t.not(a.traceId, b.traceId);
  t.not(a.spanId, b.spanId);
  t.regex(a.traceId, /^[0-9a-f]{32}$/);
});
