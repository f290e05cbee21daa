// What one repetition on one data plane yields, and the list of headline
// figures (name, unit, which way is better) that the tables and the chart share.
import { CPU_BUDGET_METRICS, type CpuBudgetMetricKey } from './cpu-budget-metrics.js';

export interface RepResult {
  planeId: string;
  rep: number;
  /** Set when the repetition failed; the figures below are then missing. */
  error?: string;
  figures: Partial<Record<MetricKey, number>>;
  /** Everything behind the figures, for the JSON. */
  detail: Record<string, unknown>;
}

/** sockperf ping-pong round-trip percentiles: protocol, idle or under a TCP stream, percentile. */
export type RrMetricKey = `${'udp' | 'tcp'}Rr${'' | 'Loaded'}${'P50' | 'P99' | 'P999'}Us`;

export type MetricKey =
  | RrMetricKey
  | 'rrLoadTcpGbps'
  | 'rrStalledRuns'
  | 'tcp1Gbps'
  | 'tcp4Gbps'
  | 'udpLosslessKpps'
  | 'udpLosslessInPathKpps'
  | 'udpPeakKpps'
  | 'pingMinMs'
  | 'pingAvgMs'
  | 'machineCpuSPerGB'
  | 'agentCpuSPerGB'
  | 'syscallsPerPacket'
  | 'heapBeforeMiB'
  | 'heapAfterMiB'
  | 'idleBusyCpus'
  | IdleMetricKey
  | CpuBudgetMetricKey;

/** Issue 21: ping RTT avg / p99 and forwarding threads' CPU per ping, pings 0.02 s, 0.2 s or 1 s apart (bench/e2e/idle-latency.ts). */
export type IdleMetricKey = `idle${'002' | '02' | '1'}${'AvgMs' | 'P99Ms' | 'CpuUs'}`;

export function idleKey(intervalS: number, what: 'AvgMs' | 'P99Ms' | 'CpuUs'): IdleMetricKey {
  return `idle${intervalS === 0.02 ? '002' : intervalS === 0.2 ? '02' : '1'}${what}`;
}

function idleMetrics(): MetricSpec[] {
  const out: MetricSpec[] = [];
  for (const s of [0.02, 0.2, 1]) {
    out.push(
      { key: idleKey(s, 'AvgMs'), header: `ping avg, ${s} s apart, fresh`, title: `ping RTT avg, pings ${s} s apart, fresh forwarders`, unit: 'ms', better: 'lower', decimals: 3, chart: false, table: 'latency' },
      { key: idleKey(s, 'P99Ms'), header: `ping p99, ${s} s apart, fresh`, title: `ping RTT p99, pings ${s} s apart, fresh forwarders`, unit: 'ms', better: 'lower', decimals: 3, chart: false, table: 'latency' },
      { key: idleKey(s, 'CpuUs'), header: `forwarding CPU per ping, ${s} s apart`, title: `forwarding threads' CPU per ping, pings ${s} s apart`, unit: 'µs', better: 'lower', decimals: 0, chart: false, table: 'latency' },
    );
  }
  return out;
}

export interface MetricSpec {
  key: MetricKey;
  /** Column header. */
  header: string;
  /** Chart title. */
  title: string;
  unit: string;
  better: 'higher' | 'lower' | 'none';
  decimals: number;
  /** Only agents have it. */
  agentOnly?: boolean;
  /** Drawn in the chart (heap figures are not: they tell "flat", not "fast"). */
  chart: boolean;
  /** Which table of the report it is a row of. */
  table: 'throughput' | 'latency';
}

/** The percentiles reported, with the SockperfLatency field each comes from. */
export const RR_PERCENTILES = [
  { suffix: 'P50', label: 'p50', field: 'p50Us' },
  { suffix: 'P99', label: 'p99', field: 'p99Us' },
  { suffix: 'P999', label: 'p99.9', field: 'p999Us' },
] as const;

export function rrKey(protocol: 'udp' | 'tcp', loaded: boolean, suffix: 'P50' | 'P99' | 'P999'): RrMetricKey {
  return `${protocol}Rr${loaded ? 'Loaded' : ''}${suffix}Us`;
}

function rrMetrics(): MetricSpec[] {
  const out: MetricSpec[] = [];
  for (const loaded of [false, true]) {
    for (const protocol of ['udp', 'tcp'] as const) {
      for (const { suffix, label } of RR_PERCENTILES) {
        const when = loaded ? ' under TCP stream' : ' idle';
        out.push({
          key: rrKey(protocol, loaded, suffix),
          header: `${protocol.toUpperCase()} RR ${label}${when}`,
          title: `sockperf ${protocol.toUpperCase()} ping-pong round trip, ${label},${when}`,
          unit: 'µs',
          better: 'lower',
          decimals: 0,
          // The chart shows the p99s only: the figure the latency targets are about.
          chart: suffix === 'P99',
          table: 'latency',
        });
      }
    }
  }
  return out;
}

export const METRICS: readonly MetricSpec[] = [
  { key: 'tcp1Gbps', header: 'TCP 1 stream', title: 'iperf3 TCP, 1 stream', unit: 'Gbit/s', better: 'higher', decimals: 2, chart: true, table: 'throughput' },
  { key: 'tcp4Gbps', header: 'TCP 4 streams', title: 'iperf3 TCP, 4 streams', unit: 'Gbit/s', better: 'higher', decimals: 2, chart: true, table: 'throughput' },
  { key: 'udpLosslessKpps', header: 'UDP 64 B lossless', title: 'UDP 64 B, highest rate with < 1 % loss', unit: 'k pps', better: 'higher', decimals: 1, chart: true, table: 'throughput' },
  { key: 'udpLosslessInPathKpps', header: 'UDP 64 B lossless, path only', title: 'UDP 64 B, < 1 % loss before the receiving socket', unit: 'k pps', better: 'higher', decimals: 1, chart: false, table: 'throughput' },
  { key: 'udpPeakKpps', header: 'UDP 64 B peak rx', title: 'UDP 64 B, most received at any rate', unit: 'k pps', better: 'higher', decimals: 1, chart: true, table: 'throughput' },
  { key: 'pingMinMs', header: 'ping min', title: 'ping RTT, min of 50', unit: 'ms', better: 'lower', decimals: 3, chart: false, table: 'latency' },
  { key: 'pingAvgMs', header: 'ping avg', title: 'ping RTT, average of 50', unit: 'ms', better: 'lower', decimals: 3, chart: true, table: 'latency' },
  { key: 'machineCpuSPerGB', header: 'machine CPU', title: 'whole machine busy CPU per GB (TCP 1 stream)', unit: 's/GB', better: 'lower', decimals: 2, chart: true, table: 'throughput' },
  { key: 'agentCpuSPerGB', header: 'agent CPU', title: "agents' own CPU per GB (TCP 1 stream)", unit: 's/GB', better: 'lower', decimals: 2, agentOnly: true, chart: true, table: 'throughput' },
  { key: 'syscallsPerPacket', header: 'syscalls/pkt', title: 'agent syscalls per tunnelled packet (both nodes, whole run)', unit: '', better: 'lower', decimals: 2, agentOnly: true, chart: true, table: 'throughput' },
  ...CPU_BUDGET_METRICS,
  { key: 'heapBeforeMiB', header: 'heap before', title: 'agent worker heap before', unit: 'MiB', better: 'none', decimals: 1, agentOnly: true, chart: false, table: 'throughput' },
  { key: 'heapAfterMiB', header: 'heap after', title: 'agent worker heap after', unit: 'MiB', better: 'none', decimals: 1, agentOnly: true, chart: false, table: 'throughput' },
  ...rrMetrics(),
  // How hard the concurrent stream pushed: a plane that carries less of it is also less loaded.
  { key: 'rrLoadTcpGbps', header: 'TCP stream during loaded RR', title: 'the iperf3 TCP stream alongside the loaded RR runs', unit: 'Gbit/s', better: 'none', decimals: 2, chart: false, table: 'latency' },
  { key: 'rrStalledRuns', header: 'RR runs stalled by a lost reply', title: 'sockperf runs stalled by a lost UDP reply (run again)', unit: '', better: 'lower', decimals: 0, chart: false, table: 'latency' },
  // Not a property of the plane: how disturbed the machine was; well above 0 means someone else was busy.
  ...idleMetrics(),
  { key: 'idleBusyCpus', header: 'busy before traffic', title: 'CPUs busy with no traffic of ours', unit: 'CPUs', better: 'none', decimals: 2, chart: false, table: 'throughput' },
];

export function metric(key: MetricKey): MetricSpec {
  return METRICS.find((m) => m.key === key)!;
}
