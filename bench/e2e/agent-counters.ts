// The agent's own counters, asked for with SIGUSR1 (it answers with one JSON
// line on stderr), summed over its workers.
import type { CapturedChild } from '../../src/testbed/exec.js';
import { requestStatsLine } from '../../src/testbed/agent-signal.js';

export interface AgentCounters {
  /** Every worker's counters added up, by counter name. */
  totals: Record<string, number>;
  /** Sum of the workers' V8 heaps, as last sampled by each (once a second). */
  heapUsedBytes: number;
  workers: number;
}

/** SIGUSR1, then the agent's counters summed over its workers (src/testbed/agent-signal.ts). */
export async function readAgentCounters(agent: CapturedChild, timeoutMs = 5000): Promise<AgentCounters> {
  return parseAgentCounters((await requestStatsLine(agent, timeoutMs)).line);
}

export function parseAgentCounters(line: string): AgentCounters {
  const parsed = JSON.parse(line) as { workers: { counters: Record<string, number> }[] };
  const totals: Record<string, number> = {};
  for (const w of parsed.workers) for (const [name, value] of Object.entries(w.counters)) totals[name] = (totals[name] ?? 0) + value;
  return { totals, heapUsedBytes: totals.HeapUsedBytes ?? 0, workers: parsed.workers.length };
}

/** Counters of several agents (one per node) as if they were one. */
export function sumAgents(agents: readonly AgentCounters[]): AgentCounters {
  const totals: Record<string, number> = {};
  for (const a of agents) for (const [name, value] of Object.entries(a.totals)) totals[name] = (totals[name] ?? 0) + value;
  return { totals, heapUsedBytes: totals.HeapUsedBytes ?? 0, workers: agents.reduce((n, a) => n + a.workers, 0) };
}

export interface SyscallCost {
  syscalls: number;
  /** Packets (wire datagrams) that crossed the tunnel: each is sent once by one agent. */
  packets: number;
  perPacket: number;
}

/** Syscalls of every agent per packet tunnelled between two samples. */
export function syscallsPerPacket(before: AgentCounters, after: AgentCounters): SyscallCost {
  const delta = (name: string) => (after.totals[name] ?? 0) - (before.totals[name] ?? 0);
  // Every counter named Syscalls* (TUN read/write/writev, sendmmsg, recvmmsg, poll), so new ones count without an edit here.
  const syscalls = Object.keys(after.totals).filter((name) => name.startsWith('Syscalls')).reduce((sum, name) => sum + delta(name), 0);
  // Datagrams on the wire, so a GSO send of many segments counts as many packets.
  const packets = delta('UdpSentPackets');
  return { syscalls, packets, perPacket: packets > 0 ? syscalls / packets : NaN };
}
