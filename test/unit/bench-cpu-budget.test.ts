// The CPU-budget parts of the benchmark that parse what the kernel and perf
// print: a thread's /proc stat line, and a perf report summed into the shares
// kernel / our JavaScript / glue (bench/e2e/cpu-budget.ts, profile-shares.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseThreadStat, threadCpu } from '../../bench/e2e/cpu-budget.js';
import { classifyReport, formatShares } from '../../bench/e2e/profile-shares.js';

test('a thread stat line: name with spaces and parentheses, utime and stime in ticks', () => {
  const line = '4242 (node (wk) 1) R 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3 0 100 0 0';
  const t = parseThreadStat(4242, line, 100);
  assert.is(t.name, 'node (wk) 1');
  assert.is(t.userS, 2.5);
  assert.is(t.systemS, 0.75);
});

test('threadCpu of this process lists its threads with CPU it has used; of a gone pid, nothing', () => {
  let spin = 0;
  for (let i = 0; i < 2e7; i++) spin += i;
  const threads = threadCpu(process.pid);
  assert.ok(spin > 0);
  assert.ok(threads.length >= 1);
  assert.ok(threads.some((t) => t.tid === process.pid && t.userS + t.systemS > 0), JSON.stringify(threads.slice(0, 3)));
  assert.equal(threadCpu(2 ** 22 + 7), []);
});

const REPORT = `# Samples: 24K of event 'cpu-clock'
#
# Overhead  Symbol
# ........  ......
#
    12.80%  [k] _copy_from_iter
     7.70%  [k] _copy_to_iter
     3.00%  [.] JS:*splitSuperPacketRange file:///work/x/dist/src/encap/segmentation.js:120:38
     2.60%  [.] JS:wasm-function[0]-0-turbofan
     1.80%  [.] v8::internal::ConcurrentMarking::RunMajor
     0.40%  [.] JS:^ node:internal/util/inspect:181:5
`;

test('perf report summed: [k] is the kernel, dist/src JS and our wasm are ours, the rest glue', () => {
  const shares = classifyReport(REPORT);
  assert.is(Number(shares.total.kernel.toFixed(2)), 20.5);
  assert.is(Number(shares.total.ours.toFixed(2)), 5.6);
  assert.is(Number(shares.total.glue.toFixed(2)), 2.2);
  assert.is(shares.symbols.length, 6);
  const text = formatShares(shares, 2);
  assert.match(text, /our JavaScript\s+5\.6 %\s+\*splitSuperPacketRange \(segmentation\.js\) 3\.0, JS:wasm-function\[0\]-0-turbofan 2\.6/);
  assert.match(text, /kernel, in our syscalls\s+20\.5 %/);
});

test.run();
