// The CPU-budget measurements woven into one repetition (run-plane.ts): the
// per-node budget of the TCP 1- and 4-stream runs, and TCP at small MSS.
import type { Cluster } from '../../src/testbed/cluster.js';
import type { CapturedChild } from '../../src/testbed/exec.js';
import { interfaceCounters, iperf3Tcp } from '../../src/testbed/measure.js';
import { meterAgents, type NodeCpuBudget } from './cpu-budget.js';
import { MSS_RUNS } from './cpu-budget-metrics.js';
import type { RepResult } from './metrics.js';
import type { BenchPlan } from './options.js';

const GB = 1e9;

/** Meters the agents (if any) and the bytes into the server pod around one run. */
export async function meteredRun<T>(
  cluster: Cluster,
  agents: readonly CapturedChild[],
  run: () => Promise<T>,
): Promise<{ value: T; gb: number; budgets?: NodeCpuBudget[] }> {
  const server = cluster.pod(2);
  const meter = agents.length > 0 ? await meterAgents(agents) : undefined;
  const rxBefore = await interfaceCounters(cluster, server.ns, 'eth0');
  const value = await run();
  const rxAfter = await interfaceCounters(cluster, server.ns, 'eth0');
  const gb = (rxAfter.rxBytes - rxBefore.rxBytes) / GB;
  return { value, gb, budgets: meter ? await meter.finish(gb) : undefined };
}

/** Node 1 sends (pod 1 is the iperf3 client), node 2 receives. */
export function recordTcp1Budget(result: RepResult, budgets: NodeCpuBudget[]): string {
  const [send, recv] = budgets;
  const f = result.figures;
  f.sendAgentUserSPerGB = send!.userSPerGB;
  f.sendAgentKernelSPerGB = send!.kernelSPerGB;
  f.recvAgentUserSPerGB = recv!.userSPerGB;
  f.recvAgentKernelSPerGB = recv!.kernelSPerGB;
  f.agentSyscallsPerGB = budgets.reduce((s, b) => s + b.syscallsPerGB, 0) / 1000;
  result.detail.tcp1Budget = budgets;
  return `send ${send!.userSPerGB.toFixed(2)} user + ${send!.kernelSPerGB.toFixed(2)} kernel, ` +
    `receive ${recv!.userSPerGB.toFixed(2)} + ${recv!.kernelSPerGB.toFixed(2)} s/GB, ${f.agentSyscallsPerGB.toFixed(1)} k syscalls/GB`;
}

export function recordTcp4Budget(result: RepResult, budgets: NodeCpuBudget[]): string {
  const f = result.figures;
  f.tcp4AgentCpuSPerGB = budgets.reduce((s, b) => s + b.userSPerGB + b.kernelSPerGB, 0);
  f.tcp4BusiestThreadCpus = Math.max(...budgets.map((b) => b.busiestThreadCpus));
  result.detail.tcp4Budget = budgets;
  const spread = budgets.map((b) => `node ${b.node} sent by worker [${b.sentPacketsByWorker.join(', ')}], busiest thread ${b.busiestThreadName} ${b.busiestThreadCpus.toFixed(2)} CPUs`);
  return `agents ${f.tcp4AgentCpuSPerGB.toFixed(2)} s/GB; ${spread.join('; ')}`;
}

/** One TCP stream at each small MSS and at 1400, for the per-packet cost's share. */
export async function measureSmallMss(cluster: Cluster, plan: BenchPlan, result: RepResult, progress: (line: string) => void): Promise<void> {
  const client = cluster.pod(1);
  const server = cluster.pod(2);
  const parts: string[] = [];
  for (const { mss, key } of MSS_RUNS) {
    const r = await iperf3Tcp(cluster, server.ns, server.ip, client.ns, { seconds: plan.tcpSeconds, streams: 1, omitSeconds: plan.tcpOmitSeconds, mss });
    result.figures[key] = r.bitsPerSecond / 1e9;
    parts.push(`MSS ${mss} ${(r.bitsPerSecond / 1e9).toFixed(2)}`);
  }
  progress(`  TCP 1 stream by MSS: ${parts.join(', ')} Gbit/s`);
}
