// Which V8 tier runs the wake-up path after the agent sat idle (issue 21):
//
//   npm run build && node dist/bench/idle-tier.js [--idle 1,10,60] [--pings 10] [-- AGENT ARGS]
//
// A fresh two-node testbed, agents with --workers 1 and
// NODE_OPTIONS=--perf-basic-prof (V8 writes /tmp/perf-PID.map, naming every
// JS function with its tier: `*` TurboFan, `^` baseline/Sparkplug, `~`
// interpreter). For each idle time: nothing for that long, then pings 0.2 s
// apart from pod 1 to pod 2 while `perf record -e cpu-clock -g -t TID`
// samples the forwarding worker thread of node 2. Prints, per phase, every
// function of the agent's own code (dist/src) seen in a sample, with the
// samples per tier, and how many samples were in the garbage collector.
// The worker thread is the agent's busiest thread after the main one: the
// rehearsal keeps it on the CPU for about a second at start.
// Needs root, perf, ping.
import { parseArgs } from 'node:util';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { createCluster, type Cluster } from '../src/testbed/cluster.js';
import { run, spawnCaptured, stopChild } from '../src/testbed/exec.js';
import { ping } from '../src/testbed/measure.js';

const { values, positionals } = parseArgs({
  options: { idle: { type: 'string', default: '1,10,60' }, pings: { type: 'string', default: '10' } },
  allowPositionals: true,
});
const idles = values.idle.split(',').map(Number);
const pings = Number(values.pings);
if (idles.some((s) => !(s >= 0)) || !(pings > 0)) throw new Error('--idle takes seconds separated by commas, --pings a count');

/** The agent's busiest thread besides its main thread: the forwarding worker (with --workers 1). */
export function workerTid(pid: number): number {
  let best = 0;
  let bestTicks = -1;
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    if (tid === pid) continue;
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
    if (ticks > bestTicks) [best, bestTicks] = [tid, ticks];
  }
  return best;
}

interface Phase {
  idleS: number;
  samples: number;
  gcSamples: number;
  /** function name → samples per tier marker ('*', '^', '~', '' for native/other). */
  functions: Map<string, Record<string, number>>;
  /** The sampled (innermost) frame's symbol → samples. */
  leaves: Map<string, number>;
}

/** Every JS frame of our code in each sample counts once per sample (a recursive frame once). */
function parseScript(text: string, idleS: number): Phase {
  const phase: Phase = { idleS, samples: 0, gcSamples: 0, functions: new Map(), leaves: new Map() };
  for (const sample of text.split('\n\n')) {
    const lines = sample.split('\n').filter((l) => l.trim());
    if (lines.length < 2) continue;
    phase.samples++;
    const frames = lines.slice(1).map((l) => l.trim().replace(/^[0-9a-f]+ /, ''));
    if (frames.some((f) => /Heap::CollectGarbage|MarkCompactCollector|ScavengerCollector|Heap::PerformGarbageCollection/.test(f))) phase.gcSamples++;
    const leaf = frames[0].replace(/ \(\S*\)$/, '').replace(/ file:\S*\/dist\/src\//, ' ');
    phase.leaves.set(leaf, (phase.leaves.get(leaf) ?? 0) + 1);
    const seen = new Set<string>();
    for (const f of frames) {
      // perf-basic-prof names: "JS:*name file:///…/dist/src/….js:L:C (…)" (Node 20: "LazyCompile:*name …" too).
      const m = /^(?:JS|LazyCompile|Function):([*^~]?)(\S*) (\S*\/dist\/src\/\S+?\.js):(\d+)/.exec(f);
      if (!m) continue;
      const name = `${m[2] || '(anonymous)'} ${m[3].replace(/.*\/dist\/src\//, '')}:${m[4]}`;
      const key = `${name}\u0000${m[1]}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const tiers = phase.functions.get(name) ?? {};
      tiers[m[1]] = (tiers[m[1]] ?? 0) + 1;
      phase.functions.set(name, tiers);
    }
  }
  return phase;
}

const TIER_NAMES: Record<string, string> = { '*': 'TurboFan', '^': 'baseline', '~': 'interpreter', '': '?' };

async function measurePhase(cluster: Cluster, pid: number, tid: number, idleS: number): Promise<Phase> {
  await new Promise((r) => setTimeout(r, idleS * 1000));
  const data = `/tmp/idle-tier-${process.pid}-${idleS}.data`;
  const perf = spawnCaptured('perf', ['record', '-q', '-e', 'cpu-clock', '-F', '20000', '-g', '-t', String(tid), '-o', data]);
  try {
    await new Promise((r) => setTimeout(r, 300)); // perf attached
    const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
    const r = await ping(cluster, p1.ns, p2.ip, { count: pings, intervalS: 0.2 });
    if (r.received < pings) throw new Error(`pings lost: ${r.received}/${pings}`);
  } finally {
    await stopChild(perf, 'SIGINT', 10_000);
  }
  try {
    const { stdout } = await run('perf', ['script', '-i', data, '-F', 'tid,ip,sym'], { timeoutMs: 120_000});
    return parseScript(stdout, idleS);
  } finally {
    rmSync(data, { force: true });
  }
}

process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --perf-basic-prof`.trim();
const cluster = await createCluster({ nodes: 2, workers: 1, agentArgs: positionals });
try {
  const pid = cluster.agent(2)!.pid!;
  const tid = workerTid(pid);
  console.log(`agent on node 2: pid ${pid}, worker thread ${tid}; agent args: ${positionals.join(' ') || '(defaults)'}`);
  for (const idleS of idles) {
    const phase = await measurePhase(cluster, pid, tid, idleS);
    console.log(`\nafter ${idleS} s idle, ${pings} pings 0.2 s apart: ${phase.samples} samples on the worker thread, ${phase.gcSamples} in the GC`);
    const rows = [...phase.functions].sort((a, b) => Object.values(b[1]).reduce((x, y) => x + y) - Object.values(a[1]).reduce((x, y) => x + y));
    for (const [name, tiers] of rows) {
      const t = Object.entries(tiers).map(([k, n]) => `${TIER_NAMES[k]} ${n}`).join(', ');
      console.log(`  ${name.padEnd(60)} ${t}`);
    }
    console.log('  where the samples were (innermost frame):');
    for (const [leaf, n] of [...phase.leaves].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`    ${String(n).padStart(5)}  ${leaf.slice(0, 100)}`);
  }
} finally {
  await cluster.destroy();
}
