// The agents' CPU budget over one metered iperf3 run, per node: user and
// kernel seconds per GB (summed over the agent's threads from
// /proc/<pid>/task/*/stat), system calls per GB (the agent's own Syscalls*
// counters), and the busiest thread's share of one CPU — which tells a
// saturated worker apart from a machine that is simply out of CPUs.
import { readdirSync, readFileSync } from 'node:fs';
import type { CapturedChild } from '../../src/testbed/exec.js';
import { requestStatsLine } from '../../src/testbed/agent-signal.js';
import { parseAgentCounters, type AgentCounters } from './agent-counters.js';
import { clockTicksPerSecond } from './cpu.js';

export interface ThreadCpu {
  tid: number;
  /** The thread's name (comm): Node names its worker threads, libuv's pool and V8's helpers. */
  name: string;
  userS: number;
  systemS: number;
}

/** Every live thread's utime and stime; [] once the process has gone. */
export function threadCpu(pid: number): ThreadCpu[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const hz = clockTicksPerSecond();
  const out: ThreadCpu[] = [];
  for (const tid of tids) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // the thread ended between the listing and the read
    }
    out.push(parseThreadStat(Number(tid), text, hz));
  }
  return out;
}

/** One /proc/<pid>/task/<tid>/stat line: the name sits in parentheses and may hold both. */
export function parseThreadStat(tid: number, text: string, hz: number): ThreadCpu {
  const close = text.lastIndexOf(')');
  const name = text.slice(text.indexOf('(') + 1, close);
  // Fields 14 (utime) and 15 (stime) of proc(5); the slice starts at field 3.
  const fields = text.slice(close + 2).split(' ');
  return { tid, name, userS: Number(fields[11]) / hz, systemS: Number(fields[12]) / hz };
}

export interface NodeCpuBudget {
  node: number;
  userSPerGB: number;
  kernelSPerGB: number;
  syscallsPerGB: number;
  /** The busiest thread's CPU seconds per wall second (1 = one whole CPU). */
  busiestThreadCpus: number;
  busiestThreadName: string;
  /** Per worker: datagrams it sent to the wire, in worker order (how a multi-stream load spreads). */
  sentPacketsByWorker: number[];
}

interface Mark {
  atMs: number;
  threads: Map<number, ThreadCpu>[];
  counters: AgentCounters[];
  perWorkerSent: number[][];
}

function threadMap(pid: number): Map<number, ThreadCpu> {
  return new Map(threadCpu(pid).map((t) => [t.tid, t]));
}

export function sentByWorker(line: string): number[] {
  const parsed = JSON.parse(line) as { workers: { counters: Record<string, number> }[] };
  return parsed.workers.map((w) => w.counters.UdpSentPackets ?? 0);
}

async function mark(agents: readonly CapturedChild[]): Promise<Mark> {
  const counters: AgentCounters[] = [];
  const perWorkerSent: number[][] = [];
  for (const a of agents) {
    const { line } = await requestStatsLine(a, 5000);
    counters.push(parseAgentCounters(line));
    perWorkerSent.push(sentByWorker(line));
  }
  return { atMs: performance.now(), threads: agents.map((a) => threadMap(a.pid!)), counters, perWorkerSent };
}

/** Starts metering; call finish() with the GB that went through once the run is over. */
export async function meterAgents(agents: readonly CapturedChild[]): Promise<{ finish: (gb: number) => Promise<NodeCpuBudget[]> }> {
  const before = await mark(agents);
  return {
    finish: async (gb: number) => {
      const after = await mark(agents);
      return agents.map((_, i) => budget(i + 1, before, after, i, gb));
    },
  };
}

function budget(node: number, before: Mark, after: Mark, i: number, gb: number): NodeCpuBudget {
  const wallS = (after.atMs - before.atMs) / 1000;
  let userS = 0;
  let systemS = 0;
  let busiest = { cpuS: 0, name: '' };
  for (const [tid, t] of after.threads[i]!) {
    const b = before.threads[i]!.get(tid);
    const u = t.userS - (b?.userS ?? 0);
    const s = t.systemS - (b?.systemS ?? 0);
    userS += u;
    systemS += s;
    if (u + s > busiest.cpuS) busiest = { cpuS: u + s, name: t.name };
  }
  const delta = (name: string) => (after.counters[i]!.totals[name] ?? 0) - (before.counters[i]!.totals[name] ?? 0);
  const syscalls = Object.keys(after.counters[i]!.totals).filter((n) => n.startsWith('Syscalls')).reduce((sum, n) => sum + delta(n), 0);
  return {
    node,
    userSPerGB: userS / gb,
    kernelSPerGB: systemS / gb,
    syscallsPerGB: syscalls / gb,
    busiestThreadCpus: wallS > 0 ? busiest.cpuS / wallS : NaN,
    busiestThreadName: busiest.name,
    sentPacketsByWorker: after.perWorkerSent[i]!.map((v, w) => v - (before.perWorkerSent[i]![w] ?? 0)),
  };
}
