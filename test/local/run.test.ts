import test from 'ava';
import { runCommand } from '../../src/local/run.js';

test('a command that exits without reading its stdin gives its exit code, not an EPIPE crash', async (t) => {
  // large input so the write cannot complete into the pipe buffer before the child exits
  for (let i = 0; i < 5; i++) {
    const r = await runCommand(process.execPath, ['-e', 'process.exit(3)'], { input: 'x'.repeat(1024 * 1024) });
    t.is(r.code, 3);
  }
});
