// What one repetition on one data plane yields, and the list of headline
// figures (name, unit, which way is better) that the tables and the chart share.

export interface RepResult {
  planeId: string;
  rep: number;
  /** Set when the repetition failed; the figures below are then missing. */
  error?: string;
  figures: Partial<Record<MetricKey, number>>;
  /** Everything behind the figures, for the JSON. */
  detail: Record<string, unknown>;
}

export type MetricKey =
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
  | 'idleBusyCpus';

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
}

export const METRICS: readonly MetricSpec[] = [
  { key: 'tcp1Gbps', header: 'TCP 1 stream', title: 'iperf3 TCP, 1 stream', unit: 'Gbit/s', better: 'higher', decimals: 2, chart: true },
  { key: 'tcp4Gbps', header: 'TCP 4 streams', title: 'iperf3 TCP, 4 streams', unit: 'Gbit/s', better: 'higher', decimals: 2, chart: true },
  { key: 'udpLosslessKpps', header: 'UDP 64 B lossless', title: 'UDP 64 B, highest rate with < 1 % loss', unit: 'k pps', better: 'higher', decimals: 1, chart: true },
  { key: 'udpLosslessInPathKpps', header: 'UDP 64 B lossless, path only', title: 'UDP 64 B, < 1 % loss before the receiving socket', unit: 'k pps', better: 'higher', decimals: 1, chart: false },
  { key: 'udpPeakKpps', header: 'UDP 64 B peak rx', title: 'UDP 64 B, most received at any rate', unit: 'k pps', better: 'higher', decimals: 1, chart: true },
  { key: 'pingMinMs', header: 'ping min', title: 'ping RTT, min of 50', unit: 'ms', better: 'lower', decimals: 3, chart: false },
  { key: 'pingAvgMs', header: 'ping avg', title: 'ping RTT, average of 50', unit: 'ms', better: 'lower', decimals: 3, chart: true },
  { key: 'machineCpuSPerGB', header: 'machine CPU', title: 'whole machine busy CPU per GB (TCP 1 stream)', unit: 's/GB', better: 'lower', decimals: 2, chart: true },
  { key: 'agentCpuSPerGB', header: 'agent CPU', title: "agents' own CPU per GB (TCP 1 stream)", unit: 's/GB', better: 'lower', decimals: 2, agentOnly: true, chart: true },
  { key: 'syscallsPerPacket', header: 'syscalls/pkt', title: 'agent syscalls per tunnelled packet (both nodes, whole run)', unit: '', better: 'lower', decimals: 2, agentOnly: true, chart: true },
  { key: 'heapBeforeMiB', header: 'heap before', title: 'agent worker heap before', unit: 'MiB', better: 'none', decimals: 1, agentOnly: true, chart: false },
  { key: 'heapAfterMiB', header: 'heap after', title: 'agent worker heap after', unit: 'MiB', better: 'none', decimals: 1, agentOnly: true, chart: false },
  // Not a property of the plane: how disturbed the machine was; well above 0 means someone else was busy.
  { key: 'idleBusyCpus', header: 'busy before traffic', title: 'CPUs busy with no traffic of ours', unit: 'CPUs', better: 'none', decimals: 2, chart: false },
];

export function metric(key: MetricKey): MetricSpec {
  return METRICS.find((m) => m.key === key)!;
}
