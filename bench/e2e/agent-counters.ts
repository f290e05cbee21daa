// The agent's own counters, asked for with SIGUSR1 (it answers with one JSON
// line on stderr), summed over its workers.
import type { CapturedChild } from '../../src/testbed/exec.js';

export interface AgentCounters {
  /** Every worker's counters added up, by counter name. */
  totals: Record<string, number>;
  /** Sum of the workers' V8 heaps, as last sampled by each (once a second). */
  heapUsedBytes: number;
  workers: number;
}

/** Resolves with the first stats line printed after the signal, so an older line in the log is never taken. */
export function readAgentCounters(agent: CapturedChild, timeoutMs = 5000): Promise<AgentCounters> {
  const pid = agent.pid;
  if (pid === undefined) return Promise.reject(new Error('the agent has no pid (it never started)'));
  return new Promise((resolve, reject) => {
    const onLine = (line: string) => {
      // The agent's SIGUSR1 answer: one JSON line with its AgentStats (node, backend, ready, workers, leases).
      if (!line.startsWith('{') || !line.includes('"workers":[')) return;
      finish();
      try {
        resolve(parseAgentCounters(line));
      } catch (err) {
        reject(err);
      }
    };
    const finish = () => {
      clearTimeout(timer);
      agent.log.off('line', onLine);
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`agent pid ${pid} printed no counters within ${timeoutMs} ms after SIGUSR1; its output:\n${agent.log.tail(10)}`));
    }, timeoutMs);
    agent.log.on('line', onLine);
    try {
      process.kill(pid, 'SIGUSR1');
    } catch (err) {
      finish();
      reject(new Error(`cannot signal agent pid ${pid}: ${(err as Error).message}`));
    }
  });
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
