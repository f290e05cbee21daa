// The shape of one benchmark run's results: what latest.json holds and what
// the report and the chart are drawn from.
import type { MachineInfo } from './machine.js';
import type { MetricKey, RepResult } from './metrics.js';
import type { BenchPlan } from './options.js';
import type { PlaneSummary } from './summary.js';
import type { TargetOutcome } from './targets.js';

export interface BenchResults {
  mode: 'quick' | 'full';
  machine: MachineInfo;
  plan: Omit<BenchPlan, 'planes' | 'outDir'>;
  planes: { id: string; short: string; label: string }[];
  durationS: number;
  summaries: Record<string, PlaneSummary>;
  targets: TargetOutcome[];
  reference: { label: string; figures: Partial<Record<MetricKey, number>> };
  /** The earlier run the "before" targets compare with. */
  baseline?: { file: string; describe: string };
  reps: RepResult[];
}
