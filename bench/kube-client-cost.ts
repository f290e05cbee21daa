// What loading the Kubernetes client costs an agent: in fresh processes,
// the time to import the module, and RSS and heap before and after (after a
// forced GC), plus the process's peak RSS. Compare two builds by pointing
// --module at each one's dist/src/control/kube-client.js.
//
//   npm run build && node dist/bench/kube-client-cost.js [--module PATH] [--runs 5]
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    module: { type: 'string', default: fileURLToPath(new URL('../src/control/kube-client.js', import.meta.url)) },
    runs: { type: 'string', default: '5' },
  },
});

// Runs in the child: measures around one dynamic import.
const probe = `
const gc = globalThis.gc;
gc(); const before = process.memoryUsage();
const t0 = process.hrtime.bigint();
await import(process.argv[1]);
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
gc(); gc(); const after = process.memoryUsage();
console.log(JSON.stringify({ ms, rssBefore: before.rss, rssAfter: after.rss, heapBefore: before.heapUsed, heapAfter: after.heapUsed, maxRssKiB: process.resourceUsage().maxRSS }));
`;

const mb = (b: number) => (b / 2 ** 20).toFixed(1);
console.log(`kube client import cost: ${values.module}, Node ${process.version}, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log('run  import ms  RSS before → after GC (MiB)  +RSS  heap +MiB  peak RSS MiB');
const rows: { ms: number; dRss: number; dHeap: number; peak: number }[] = [];
for (let i = 0; i < Number(values.runs); i++) {
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', probe, values.module!], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').at(-1)!);
  const row = { ms: r.ms, dRss: r.rssAfter - r.rssBefore, dHeap: r.heapAfter - r.heapBefore, peak: r.maxRssKiB * 1024 };
  rows.push(row);
  console.log(`${String(i + 1).padStart(3)}  ${r.ms.toFixed(0).padStart(9)}  ${mb(r.rssBefore).padStart(12)} → ${mb(r.rssAfter).padEnd(12)}  ${mb(row.dRss).padStart(5)}  ${mb(row.dHeap).padStart(9)}  ${mb(row.peak).padStart(12)}`);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `median: import ${median(rows.map((r) => r.ms)).toFixed(0)} ms, +${mb(median(rows.map((r) => r.dRss)))} MiB RSS, +${mb(median(rows.map((r) => r.dHeap)))} MiB heap, peak RSS ${mb(median(rows.map((r) => r.peak)))} MiB`,
);
