// uvu's own runner (node_modules/uvu/run), plus the wall time of each test file,
// printed slowest first after uvu's summary, so the suite's cost is visible per file.
// Usage: node scripts/uvu-timed.mjs <dir> <pattern>
import { parse } from 'uvu/parse';

const [dir, pattern] = process.argv.slice(2);
const { suites } = await parse(dir, pattern);

globalThis.UVU_DEFER = 1;
const uvu = await import('uvu');
const seconds = new Map();
const hookFailures = [];
let idx = 0;
for (const suite of suites) {
  globalThis.UVU_INDEX = idx++;
  const group = [suite.name];
  globalThis.UVU_QUEUE.push(group);
  const imported = performance.now();
  await import('file:///' + suite.file);
  seconds.set(suite.name, (performance.now() - imported) / 1000); // top-level code counts too
  // Each queued entry runs one suite of this file; time them all as the file's cost.
  for (let i = 1; i < group.length; i++) {
    const run = group[i];
    group[i] = async () => {
      const start = performance.now();
      try {
        const result = await run();
        // uvu's runner returns from a `finally`, so a before/after hook that throws is swallowed:
        // no error printed, the suite's tests just not run, and exit code 0. Said here instead.
        const [errors, passed, skipped, total] = result;
        if (errors === true && passed + skipped < total) hookFailures.push(`${suite.name}: ${total - passed - skipped} of ${total} tests did not run`);
        return result;
      } finally {
        seconds.set(suite.name, seconds.get(suite.name) + (performance.now() - start) / 1000);
      }
    };
  }
}
await uvu.exec(false);
if (hookFailures.length > 0) {
  process.stdout.write(`\n  A before/after hook threw (uvu does not print its error; run the file alone with the hook's body in a try/catch to see it):\n`);
  for (const line of hookFailures) process.stdout.write(`    ✘ ${line}\n`);
  process.exitCode = 1;
}

const rows = [...seconds].sort((a, b) => b[1] - a[1]);
process.stdout.write('  Per-file wall time (s), slowest first:\n');
for (const [name, s] of rows) process.stdout.write(`  ${s.toFixed(1).padStart(7)}  ${name}\n`);
