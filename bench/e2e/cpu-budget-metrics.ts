// The CPU-budget rows of the report (issue 23): per node, the agents' user and
// kernel CPU per GB and their system calls per GB over the TCP 1-stream run;
// what the 4-stream run cost and how busy its busiest thread was; TCP at small
// segment sizes, since a per-packet cost shows there first.
import type { MetricSpec } from './metrics.js';

export type CpuBudgetMetricKey =
  | 'sendAgentUserSPerGB'
  | 'sendAgentKernelSPerGB'
  | 'recvAgentUserSPerGB'
  | 'recvAgentKernelSPerGB'
  | 'agentSyscallsPerGB'
  | 'tcp4AgentCpuSPerGB'
  | 'tcp4BusiestThreadCpus'
  | 'tcpMss400Gbps'
  | 'tcpMss536Gbps'
  | 'tcpMss1400Gbps';

/** The MSS values of the small-segment runs, each with its figure. */
export const MSS_RUNS = [
  { mss: 400, key: 'tcpMss400Gbps' },
  { mss: 536, key: 'tcpMss536Gbps' },
  { mss: 1400, key: 'tcpMss1400Gbps' },
] as const satisfies readonly { mss: number; key: CpuBudgetMetricKey }[];

const perGB = (key: CpuBudgetMetricKey, header: string, title: string): MetricSpec => ({
  key, header, title, unit: 's/GB', better: 'lower', decimals: 3, agentOnly: true, chart: false, table: 'throughput',
});

export const CPU_BUDGET_METRICS: readonly MetricSpec[] = [
  perGB('sendAgentUserSPerGB', 'sending agent user CPU', "sending node's agent, user CPU per GB (TCP 1 stream)"),
  perGB('sendAgentKernelSPerGB', 'sending agent kernel CPU', "sending node's agent, kernel CPU in its syscalls per GB (TCP 1 stream)"),
  perGB('recvAgentUserSPerGB', 'receiving agent user CPU', "receiving node's agent, user CPU per GB (TCP 1 stream)"),
  perGB('recvAgentKernelSPerGB', 'receiving agent kernel CPU', "receiving node's agent, kernel CPU in its syscalls per GB (TCP 1 stream)"),
  { key: 'agentSyscallsPerGB', header: 'agent syscalls per GB', title: 'both agents\' system calls per GB (TCP 1 stream)', unit: 'k', better: 'lower', decimals: 1, agentOnly: true, chart: false, table: 'throughput' },
  perGB('tcp4AgentCpuSPerGB', 'agent CPU, 4 streams', "agents' own CPU per GB (TCP 4 streams)"),
  { key: 'tcp4BusiestThreadCpus', header: 'busiest agent thread, 4 streams', title: "the busiest agent thread's CPU (1 = a whole CPU) during TCP 4 streams", unit: 'CPUs', better: 'none', decimals: 2, agentOnly: true, chart: false, table: 'throughput' },
  ...MSS_RUNS.map(({ mss, key }): MetricSpec => ({
    key, header: `TCP 1 stream, MSS ${mss}`, title: `iperf3 TCP, 1 stream, -M ${mss}`, unit: 'Gbit/s', better: 'higher', decimals: 2, chart: false, table: 'throughput',
  })),
];
