// The ratios the project aims for, each computed from medians of this run,
// and the figures reported for flannel's real C proxy (quoted, never measured here).
import { metric, type MetricKey } from './metrics.js';
import type { PlaneSummary } from './summary.js';

export interface TargetSpec {
  name: string;
  metric: MetricKey;
  numerator: string;
  denominator: string;
  /** ratio >= limit, ratio <= limit, or ratio < limit ("below"). */
  op: '>=' | '<=' | '<';
  limit: number;
}

export const TARGETS: readonly TargetSpec[] = [
  { name: 'agent TCP 1 stream ÷ kernel vxlan', metric: 'tcp1Gbps', numerator: 'agent', denominator: 'kernel-vxlan', op: '>=', limit: 0.5 },
  { name: 'agent UDP 64 B lossless rate ÷ C-proxy stand-in', metric: 'udpLosslessKpps', numerator: 'agent', denominator: 'cproxy-standin', op: '>=', limit: 1.5 },
  { name: 'agent ping RTT (avg) ÷ kernel vxlan', metric: 'pingAvgMs', numerator: 'agent', denominator: 'kernel-vxlan', op: '<=', limit: 1.5 },
  { name: 'agent CPU s/GB ÷ C-proxy stand-in (below 1)', metric: 'agentCpuSPerGB', numerator: 'agent', denominator: 'cproxy-standin', op: '<', limit: 1 },
  // VXLAN mode in both outer-checksum settings: the zero default cannot use UDP GSO (docs/design.md).
  { name: 'agent VXLAN mode (zero checksum) TCP 1 stream ÷ UDP mode (within 10 %)', metric: 'tcp1Gbps', numerator: 'agent-vxlan', denominator: 'agent', op: '>=', limit: 0.9 },
  { name: 'agent VXLAN mode (--vxlan-udp-checksum on) TCP 1 stream ÷ UDP mode (within 10 %)', metric: 'tcp1Gbps', numerator: 'agent-vxlan-csum', denominator: 'agent', op: '>=', limit: 0.9 },
];

export interface TargetOutcome {
  spec: TargetSpec;
  numeratorValue?: number;
  denominatorValue?: number;
  ratio?: number;
  verdict: 'met' | 'NOT met' | 'n/a';
  /** Why the verdict is n/a. */
  why?: string;
}

export function evaluateTargets(summaries: Record<string, PlaneSummary>): TargetOutcome[] {
  return TARGETS.map((spec) => {
    const num = summaries[spec.numerator]?.[spec.metric]?.median;
    const den = summaries[spec.denominator]?.[spec.metric]?.median;
    const missing = [spec.numerator, spec.denominator].filter((id) => summaries[id]?.[spec.metric] === undefined);
    if (missing.length) return { spec, verdict: 'n/a', why: `no ${metric(spec.metric).header} figure for ${missing.join(', ')} in this run` };
    if (!den) return { spec, numeratorValue: num, denominatorValue: den, verdict: 'n/a', why: 'the denominator is 0' };
    const ratio = num! / den;
    const met = spec.op === '>=' ? ratio >= spec.limit : spec.op === '<=' ? ratio <= spec.limit : ratio < spec.limit;
    return { spec, numeratorValue: num, denominatorValue: den, ratio, verdict: met ? 'met' : 'NOT met' };
  });
}

/** flannel's C proxy (udp backend) as reported in the project's issue; reference, not measured in this run. */
export const C_PROXY_REFERENCE: { label: string; figures: Partial<Record<MetricKey, number>> } = {
  label: "flannel's C proxy, figures from the issue (reference, not measured in this run)",
  figures: { tcp1Gbps: 0.87, tcp4Gbps: 0.97, udpPeakKpps: 56, pingAvgMs: 0.2 },
};
