// uvu's own runner (node_modules/uvu/run), plus the wall time of each test file,
// printed slowest first after uvu's summary, so the suite's cost is visible per file.
// Usage: node scripts/uvu-timed.mjs <dir> <pattern>
import { parse } from 'uvu/parse';

const [dir, pattern] = process.argv.slice(2);
const { suites } = await parse(dir, pattern);

globalThis.UVU_DEFER = 1;
const uvu = await import('uvu');
const seconds = new Map();
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
        return await run();
      } finally {
        seconds.set(suite.name, seconds.get(suite.name) + (performance.now() - start) / 1000);
      }
    };
  }
}
await uvu.exec(false);

const rows = [...seconds].sort((a, b) => b[1] - a[1]);
process.stdout.write('  Per-file wall time (s), slowest first:\n');
for (const [name, s] of rows) process.stdout.write(`  ${s.toFixed(1).padStart(7)}  ${name}\n`);
