/** bench/common: the CPU model and flags every run reports, and CPU seconds from /proc stat lines. */
import test from 'ava';
import { BenchError } from '../../../bench/common/errors.js';
import { machineLine, parseCpuinfo } from '../../../bench/common/machine.js';
import { parseProcStat, parseStatCpuSeconds } from '../../../bench/common/proc.js';

const CPUINFO = [
  'processor\t: 0', 'vendor_id\t: GenuineIntel', 'model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz',
  'flags\t\t: fpu vme sse2 aes avx2 avx512f vaes vpclmulqdq sha_ni', '',
  'processor\t: 1', 'model name\t: Other', 'flags\t\t: fpu', '',
].join('\n');

test('parseCpuinfo: the first CPU\'s model and the TLS-relevant flags it has, in a fixed order', (t) => {
  t.deepEqual(parseCpuinfo(CPUINFO), { model: 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz', flags: ['aes', 'vaes', 'vpclmulqdq', 'avx2', 'avx512f', 'sha_ni'] });
  t.deepEqual(parseCpuinfo('processor : 0\nflags : fpu sse2\n'), { model: null, flags: [] });
  // a flag is matched whole: "avx512fp16" alone is not avx512f
  t.deepEqual(parseCpuinfo('model name : X\nflags : avx512fp16 aes\n').flags, ['aes']);
});

test('machineLine names model, CPU count, flags, kernel and Node', (t) => {
  t.is(machineLine({ cpuModel: 'AMD EPYC', cpus: 2, cpuFlags: ['aes', 'avx2'], kernel: '6.18', node: 'v20.20.2' }),
    'CPU: AMD EPYC (2 CPUs; aes avx2), kernel 6.18, Node v20.20.2');
  t.regex(machineLine({ cpuModel: 'x', cpus: 1, cpuFlags: [], kernel: 'k', node: 'n' }), /no aes\/avx flags/);
});

test('parseStatCpuSeconds: utime + stime after the command name, even one with spaces and parentheses', (t) => {
  const rest = 'S 1 1 0 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 3 0 100 1000 50';
  t.is(parseStatCpuSeconds(`4242 (node) ${rest}`), 3.8);
  t.is(parseStatCpuSeconds(`4242 (a (b) c) ${rest}`), 3.8);
  t.throws(() => parseStatCpuSeconds('4242 (node) S 1'), { instanceOf: BenchError });
});

test('parseProcStat: the aggregate cpu line; busy is everything but idle and iowait, in seconds', (t) => {
  const text = 'cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 50 2 25 400 10 1 1 5 0 0\nintr 1 2 3\n';
  t.deepEqual(parseProcStat(text), { busy: 1.7, total: 9.9 });
  t.throws(() => parseProcStat('intr 1 2 3\n'), { instanceOf: BenchError });
});
