/**
 * A little fuzzing: random mutations of the seed fixtures go through one Translator (so the
 * last-good and fail-closed paths run too) and then through the wire encoder. Nothing may throw,
 * and every rejection must name its object and say why. Seeded, so a failure reproduces.
 */
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { KubeObject } from '../../../src/control/config/types.js';
import { buildResourceTables } from '../../../src/xds/index.js';
import { objects, pod, translator } from './_support.js';

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function load(dir: string): KubeObject[] {
  const base = new URL(`../../fixtures/${dir}/`, import.meta.url);
  return readdirSync(fileURLToPath(base)).filter((f) => f.endsWith('.yaml')).sort()
    .flatMap((f) => objects(readFileSync(fileURLToPath(new URL(f, base)), 'utf8')));
}

const SEED_OBJECTS: KubeObject[] = [
  ...load('config'), ...load('l7'),
  pod('web-1', 'default', { app: 'web', version: 'v1' }, '10.0.0.1'),
  pod('web-2', 'default', { app: 'web', version: 'v2' }, '10.0.0.2'),
  pod('db-1', 'shop', { app: 'db' }, '10.0.0.3'),
];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function junk(rnd: () => number): Json {
  const pick = Math.floor(rnd() * 16);
  switch (pick) {
    case 0: return null;
    case 1: return -1;
    case 2: return 1e308;
    case 3: return 65536;
    case 4: return '';
    case 5: return 'x'.repeat(5000);
    case 6: return '*';
    case 7: return [];
    case 8: return {};
    case 9: return [null, 1, 'a', {}];
    case 10: return true;
    case 11: return { __proto__: 'x', constructor: 1, toString: 'y' } as unknown as Json;
    case 12: return '../../etc/passwd';
    case 13: return 'é\u0000\uffff';
    case 14: return 0.5;
    default: { let deep: Json = 'leaf'; for (let i = 0; i < 200; i++) deep = { a: [deep] }; return deep; }
  }
}

/** Every (container, key) pair in the value, so a mutation can hit any depth. */
function slots(v: Json, out: [Json[] | Record<string, Json>, string | number][] = []): typeof out {
  if (Array.isArray(v)) v.forEach((x, i) => { out.push([v, i]); slots(x, out); });
  else if (v && typeof v === 'object') for (const k of Object.keys(v)) { out.push([v, k]); slots(v[k]!, out); }
  return out;
}

function mutate(obj: KubeObject, rnd: () => number): KubeObject {
  const copy = structuredClone(obj) as unknown as Json;
  const all = slots(copy);
  const n = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n && all.length; i++) {
    const [c, k] = all[Math.floor(rnd() * all.length)]!;
    const op = rnd();
    if (op < 0.6) (c as Record<string, Json>)[k] = junk(rnd);
    else if (op < 0.8) { if (Array.isArray(c)) c.splice(k as number, 1); else delete (c as Record<string, Json>)[k]; }
    else (c as Record<string, Json>)[k] = structuredClone((c as Record<string, Json>)[k]!) as Json; // identical; keeps aliasing out
  }
  return copy as unknown as KubeObject;
}

test('random mutations of the fixtures never throw, through translate and encode, and rejections name their object', (t) => {
  const seed = Number(process.env.AMBIT_FUZZ_SEED ?? 20261125);
  const rnd = mulberry32(seed);
  const tr = translator();
  const iterations = 300;
  let rejections = 0;
  for (let i = 0; i < iterations; i++) {
    const set = SEED_OBJECTS.map((o) => (rnd() < 0.15 ? mutate(o, rnd) : o));
    let r;
    try {
      r = tr.update(set);
      buildResourceTables(r.snapshot, r.l7);
    } catch (e) {
      t.fail(`seed ${seed} iteration ${i}: ${(e as Error).stack ?? String(e)}`);
      return;
    }
    for (const x of r.rejected) {
      if (typeof x.message !== 'string' || !x.message || typeof x.kind !== 'string' || typeof x.field !== 'string') {
        t.fail(`seed ${seed} iteration ${i}: rejection without kind/field/message: ${JSON.stringify(x).slice(0, 300)}`);
        return;
      }
    }
    rejections += r.rejected.length;
  }
  // the mutations must actually hit validation, or the test proves nothing
  t.true(rejections > iterations / 4, `only ${rejections} rejections`);
  // and the unmutated set still translates to the full mesh afterwards
  const clean = tr.update(SEED_OBJECTS);
  t.is(clean.rejected.length, translator().update(SEED_OBJECTS).rejected.length);
});
