// End-to-end benchmark of the pod network: every data plane (plain routing,
// kernel vxlan, this agent in its configurations) on the same 2-node
// namespace testbed, measured with iperf3 and ping, with the CPU and syscall
// cost of each. Prints a table and the project's target ratios, and writes
// bench/results/latest.{md,json,svg}. Figures only: nothing here passes or fails on a timing.
//
//   npm run bench -- [--quick] [--latency-only] [--reps N] [--only host-gw,agent] [--out DIR]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeMachine } from './e2e/machine.js';
import type { RepResult } from './e2e/metrics.js';
import { USAGE, parsePlan } from './e2e/options.js';
import { consoleReport, markdownReport } from './e2e/report.js';
import type { BenchResults } from './e2e/results.js';
import { runPlaneRep } from './e2e/run-plane.js';
import { summarise } from './e2e/summary.js';
import { renderSvg } from './e2e/svg-chart.js';
import { C_PROXY_REFERENCE, evaluateTargets, type Baseline } from './e2e/targets.js';

// Compiled to dist/bench/e2e.js; results belong in the source tree's bench/results.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const INTERRUPTS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

async function main(): Promise<void> {
  const plan = parsePlan(process.argv.slice(2), join(repoRoot, 'bench/results'));
  if (plan === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  // Read before anything is written: with the default --out this run replaces it.
  const baseline = loadBaseline(plan.baselineFile);
  const machine = describeMachine();
  const started = performance.now();
  const log = (line: string) => process.stdout.write(`${line}\n`);
  log(`${plan.quick ? 'quick' : 'full'} run: ${plan.planes.map((p) => p.id).join(', ')}; ${plan.reps} repetition(s); ${machine.cpuCount} CPU(s), load ${machine.loadAverageAtStart.toFixed(2)}`);

  // The testbed tears its clusters down on these signals by itself; this only keeps the loop from
  // building the next one meanwhile. A second signal stops waiting ('exit' still removes everything).
  let interrupted: NodeJS.Signals | undefined;
  for (const signal of INTERRUPTS) {
    process.on(signal, () => {
      if (interrupted) process.exit(128 + constants.signals[signal]);
      interrupted = signal;
    });
  }

  const reps: RepResult[] = [];
  // Repetitions outermost: a slow drift in the machine's load then touches every plane, not just one.
  for (let rep = 1; rep <= plan.reps && !interrupted; rep++) {
    for (const plane of plan.planes) {
      if (interrupted) break;
      log(`[rep ${rep}/${plan.reps}] ${plane.id}: ${plane.label}`);
      reps.push(await runPlaneRep(plane, rep, plan, log));
    }
  }
  if (interrupted) {
    log(`${interrupted}: stopped; testbeds removed, results not written`);
    process.exitCode = 128 + constants.signals[interrupted];
    return;
  }

  const summaries = summarise(reps, plan.planes.map((p) => p.id));
  const { planes, outDir, ...planFigures } = plan;
  const results: BenchResults = {
    mode: plan.quick ? 'quick' : 'full',
    machine,
    plan: planFigures,
    planes: planes.map(({ id, short, label }) => ({ id, short, label })),
    durationS: (performance.now() - started) / 1000,
    summaries,
    targets: evaluateTargets(summaries, baseline),
    reference: C_PROXY_REFERENCE,
    ...(baseline ? { baseline: { file: baseline.file, describe: baseline.describe } } : {}),
    reps,
  };

  log('');
  log(consoleReport(results));
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'latest.md'), markdownReport(results));
  writeFileSync(join(outDir, 'latest.json'), JSON.stringify(results, null, 2) + '\n');
  writeFileSync(join(outDir, 'latest.svg'), renderSvg(results));
  log(`\n${results.durationS.toFixed(0)} s; wrote ${['latest.md', 'latest.json', 'latest.svg'].map((f) => join(outDir, f)).join(', ')}`);
  if (reps.some((r) => r.error)) process.exitCode = 1;
}

/** An earlier run's latest.json; undefined when there is none or it cannot be read (those targets are then n/a). */
function loadBaseline(file: string): Baseline | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const earlier = JSON.parse(readFileSync(file, 'utf8')) as Partial<BenchResults>;
    if (!earlier.summaries) return undefined;
    const m = earlier.machine;
    const describe = `${earlier.mode ?? '?'} run of ${m?.date ?? '?'}, source ${m?.gitDescribe ?? '?'}, load ${m?.loadAverageAtStart?.toFixed(2) ?? '?'} at start`;
    return { file, describe, summaries: earlier.summaries };
  } catch (err) {
    process.stderr.write(`bench: ignoring baseline ${file}: ${(err as Error).message}\n`);
    return undefined;
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
