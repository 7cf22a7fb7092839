/**
 * Plan, event, link, failure, listener and log codes are defined once, in native/src/engine.h;
 * the addon exports them (engineCodes) and TypeScript's constants must be the same table.
 */
import test from 'ava';
import { addon, nativeAvailable } from '../../src/native/addon.js';
import { ENGINE_CODES, engineCodesMismatch } from '../../src/native/index.js';

const built = nativeAvailable() ? test : test.skip;

built('TypeScript\'s engine codes equal the table the addon exports from engine.h', (t) => {
  const native = (addon() as unknown as { engineCodes(): Record<string, Record<string, number>> }).engineCodes();
  t.deepEqual(native, JSON.parse(JSON.stringify(ENGINE_CODES)) as unknown);
  t.is(engineCodesMismatch(native), '');
});

test('a difference is named by group and code', (t) => {
  const native = JSON.parse(JSON.stringify(ENGINE_CODES)) as Record<string, Record<string, number>>;
  native['fail']!['LOCAL'] = 9;
  native['event']!['reset'] = 3;
  t.is(engineCodesMismatch(native), 'event.reset: ts undefined vs native 3; fail.LOCAL: ts 7 vs native 9');
});
