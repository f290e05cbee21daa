// The ratios the project aims for, each computed from medians of this run
// (one, marked, against an earlier recorded run), and the figures reported
// for flannel's real C proxy (quoted, never measured here).
import { metric, rrKey, idleKey, type MetricKey } from './metrics.js';
import type { PlaneSummary } from './summary.js';

export interface TargetSpec {
  name: string;
  metric: MetricKey;
  numerator: string;
  denominator: string;
  /** The denominator's figure, when it is another one than `metric` (loaded p99 ÷ idle p99 of one plane). */
  denominatorMetric?: MetricKey;
  /** The denominator comes from the baseline (an earlier recorded run), not from this run. */
  fromBaseline?: boolean;
  /** ratio >= limit, ratio <= limit, or ratio < limit ("below"). */
  op: '>=' | '<=' | '<';
  limit: number;
}

export const TARGETS: readonly TargetSpec[] = [
  // Latency (issue 11): the reference forwarder is the in-run stand-in for flannel's C proxy.
  { name: 'agent UDP mode ping RTT (avg) ÷ reference forwarder', metric: 'pingAvgMs', numerator: 'agent', denominator: 'reference', op: '<=', limit: 1.0 },
  { name: 'agent UDP mode ping RTT (avg) ÷ kernel vxlan (goal)', metric: 'pingAvgMs', numerator: 'agent', denominator: 'kernel-vxlan', op: '<=', limit: 1.5 },
  ...(['agent', 'agent-vxlan'] as const).flatMap((plane) =>
    (['udp', 'tcp'] as const).map(
      (protocol): TargetSpec => ({
        name: `${plane === 'agent' ? 'agent UDP mode' : 'agent VXLAN mode'} ${protocol.toUpperCase()} RR p99 under a TCP stream ÷ idle`,
        metric: rrKey(protocol, true, 'P99'),
        denominatorMetric: rrKey(protocol, false, 'P99'),
        numerator: plane,
        denominator: plane,
        op: '<=',
        limit: 3,
      }),
    ),
  ),
  // Issue 21: against flannel's own C proxy measured in the same run (n/a without --cproxy).
  ...[0.02, 0.2, 1].flatMap((s): TargetSpec[] => [
    { name: `agent UDP mode ping avg, ${s} s apart, fresh ÷ C proxy`, metric: idleKey(s, 'AvgMs'), numerator: 'agent', denominator: 'cproxy', op: '<=', limit: 1.0 },
    { name: `agent UDP mode ping p99, ${s} s apart, fresh ÷ C proxy`, metric: idleKey(s, 'P99Ms'), numerator: 'agent', denominator: 'cproxy', op: '<=', limit: 1.5 },
  ]),
  { name: "agent UDP mode forwarding threads' CPU per ping, 0.2 s apart ÷ C proxy", metric: idleKey(0.2, 'CpuUs'), numerator: 'agent', denominator: 'cproxy', op: '<=', limit: 1.3 },
  // No regression.
  { name: 'agent TCP 1 stream ÷ kernel vxlan', metric: 'tcp1Gbps', numerator: 'agent', denominator: 'kernel-vxlan', op: '>=', limit: 0.5 },
  {
    name: 'agent UDP 64 B lossless rate ÷ the baseline run\'s (not lower than before; across runs)',
    metric: 'udpLosslessKpps',
    numerator: 'agent',
    denominator: 'agent',
    fromBaseline: true,
    op: '>=',
    limit: 1.0,
  },
  // VXLAN mode in both outer-checksum settings: with a zero checksum the kernel refuses UDP GSO (docs/design.md).
  { name: 'agent VXLAN mode (default: outer checksum on) TCP 1 stream ÷ UDP mode (within 10 %)', metric: 'tcp1Gbps', numerator: 'agent-vxlan', denominator: 'agent', op: '>=', limit: 0.9 },
  { name: 'agent VXLAN mode (--vxlan-udp-checksum zero) TCP 1 stream ÷ UDP mode (within 10 %)', metric: 'tcp1Gbps', numerator: 'agent-vxlan-zero', denominator: 'agent', op: '>=', limit: 0.9 },
  // Issue 23: CPU cycles per byte. "before" is the earlier build run side by side (BENCH_BASE_BUILD).
  { name: 'agent TCP 1 stream ÷ kernel vxlan (issue 23)', metric: 'tcp1Gbps', numerator: 'agent', denominator: 'kernel-vxlan', op: '>=', limit: 0.6 },
  { name: 'agent TCP 4 streams ÷ kernel vxlan (issue 23)', metric: 'tcp4Gbps', numerator: 'agent', denominator: 'kernel-vxlan', op: '>=', limit: 0.4 },
  { name: 'agent CPU per GB ÷ the build before, side by side (issue 23: -30 %)', metric: 'agentCpuSPerGB', numerator: 'agent', denominator: 'agent-base', op: '<=', limit: 0.7 },
  { name: 'agent VXLAN mode TCP 1 stream ÷ UDP mode, MSS 1400 (within 10 %)', metric: 'tcpMss1400Gbps', numerator: 'agent-vxlan', denominator: 'agent', op: '>=', limit: 0.9 },
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

/** An earlier run's medians, for the targets that compare with "before". */
export interface Baseline {
  file: string;
  /** When and from which source it was run, and whether it was a quick one. */
  describe: string;
  summaries: Record<string, PlaneSummary>;
}

export function evaluateTargets(summaries: Record<string, PlaneSummary>, baseline?: Baseline): TargetOutcome[] {
  return TARGETS.map((spec) => {
    const denominatorMetric = spec.denominatorMetric ?? spec.metric;
    const num = summaries[spec.numerator]?.[spec.metric]?.median;
    if (num === undefined) return { spec, verdict: 'n/a', why: `no ${metric(spec.metric).header} figure for ${spec.numerator} in this run` };
    let den: number | undefined;
    if (spec.fromBaseline) {
      if (!baseline) return { spec, numeratorValue: num, verdict: 'n/a', why: 'no baseline run to compare with' };
      den = baseline.summaries[spec.denominator]?.[denominatorMetric]?.median;
      if (den === undefined) return { spec, numeratorValue: num, verdict: 'n/a', why: `the baseline (${baseline.file}) has no ${metric(denominatorMetric).header} figure for ${spec.denominator}` };
    } else {
      den = summaries[spec.denominator]?.[denominatorMetric]?.median;
      if (den === undefined) return { spec, numeratorValue: num, verdict: 'n/a', why: `no ${metric(denominatorMetric).header} figure for ${spec.denominator} in this run` };
    }
    if (!den) return { spec, numeratorValue: num, denominatorValue: den, verdict: 'n/a', why: 'the denominator is 0' };
    const ratio = num / den;
    const met = spec.op === '>=' ? ratio >= spec.limit : spec.op === '<=' ? ratio <= spec.limit : ratio < spec.limit;
    return { spec, numeratorValue: num, denominatorValue: den, ratio, verdict: met ? 'met' : 'NOT met' };
  });
}

/** flannel's C proxy (udp backend) as reported in the project's issue; reference, not measured in this run. */
export const C_PROXY_REFERENCE: { label: string; figures: Partial<Record<MetricKey, number>> } = {
  label: "flannel's C proxy, figures from the issue (reference, not measured in this run)",
  figures: { tcp1Gbps: 0.87, tcp4Gbps: 0.97, udpPeakKpps: 56, pingAvgMs: 0.2 },
};
