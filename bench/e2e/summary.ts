// Repetitions folded into min / median / max per data plane and figure.
import { METRICS, type MetricKey, type RepResult } from './metrics.js';

export interface Spread {
  min: number;
  median: number;
  max: number;
  /** Repetitions that produced the figure. */
  n: number;
}

export type PlaneSummary = Partial<Record<MetricKey, Spread>>;

export function spread(values: readonly number[]): Spread | undefined {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return undefined;
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { min: sorted[0]!, median, max: sorted[sorted.length - 1]!, n: sorted.length };
}

export function summarise(reps: readonly RepResult[], planeIds: readonly string[]): Record<string, PlaneSummary> {
  const out: Record<string, PlaneSummary> = {};
  for (const id of planeIds) {
    const mine = reps.filter((r) => r.planeId === id && !r.error);
    const summary: PlaneSummary = {};
    for (const m of METRICS) {
      const s = spread(mine.map((r) => r.figures[m.key]).filter((v): v is number => v !== undefined));
      if (s) summary[m.key] = s;
    }
    out[id] = summary;
  }
  return out;
}
