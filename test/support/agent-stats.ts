// What the robustness tests and the soak read from a running agent and from
// the kernel around it: the agent's own counters (SIGUSR1: one JSON line on
// stderr, kept in cluster.agent(i).log), its resident memory, a node's UDP
// counters (/proc/net/snmp of its namespace) and iptables packet counters.
import { readFileSync } from 'node:fs';
import type { Cluster } from '../../src/testbed/cluster.js';
import type { CapturedChild } from '../../src/testbed/exec.js';
import { isStatsLine, requestStatsLine } from '../../src/testbed/agent-signal.js';

export interface WorkerStats {
  worker: number;
  counters: Record<string, number>;
  drops: Record<string, number>;
}

export interface AgentStats {
  workers: WorkerStats[];
  leases: string[];
  /** Every worker's counters added up. */
  totals: Record<string, number>;
  /** Every worker's drops added up, by reason name. */
  drops: Record<string, number>;
  /** From the signal to the line (the answer time, reported, never asserted). */
  answeredMs: number;
  /** Date.now() when the line arrived, to compare heartbeats with. */
  at: number;
}

/** SIGUSR1, then the agent's counters summed over its workers (src/testbed/agent-signal.ts). */
export async function readAgentStats(agent: CapturedChild, timeoutMs = 10_000): Promise<AgentStats> {
  const { line, answeredMs } = await requestStatsLine(agent, timeoutMs);
  return parseAgentStats(line, answeredMs);
}

export { isStatsLine };

export function parseAgentStats(line: string, answeredMs = 0): AgentStats {
  const parsed = JSON.parse(line) as { workers: WorkerStats[]; leases?: string[] };
  const totals: Record<string, number> = {};
  const drops: Record<string, number> = {};
  for (const w of parsed.workers) {
    for (const [name, value] of Object.entries(w.counters)) totals[name] = (totals[name] ?? 0) + value;
    for (const [name, value] of Object.entries(w.drops)) drops[name] = (drops[name] ?? 0) + value;
  }
  return { workers: parsed.workers, leases: parsed.leases ?? [], totals, drops, answeredMs, at: Date.now() };
}

/** after − before for every drop reason that changed (reasons new in `after` included). */
export function dropDelta(before: AgentStats, after: AgentStats): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, value] of Object.entries(after.drops)) {
    const d = value - (before.drops[name] ?? 0);
    if (d !== 0) out[name] = d;
  }
  return out;
}

export function sumValues(record: Record<string, number>, except: readonly string[] = []): number {
  return Object.entries(record).reduce((n, [name, v]) => (except.includes(name) ? n : n + v), 0);
}

/** VmRSS of a process in bytes (/proc/<pid>/status). */
export function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

export type SnmpCounters = Record<string, number>;

/** Udp:, Ip: and IpExt-free counters of a namespace, keyed "Udp.InErrors", "Ip.ReasmFails", … */
export async function snmpCounters(cluster: Cluster, ns: string): Promise<SnmpCounters> {
  const { stdout } = await cluster.exec(ns, 'cat', ['/proc/net/snmp']);
  const lines = stdout.split('\n');
  const out: SnmpCounters = {};
  for (let i = 0; i + 1 < lines.length; i++) {
    const names = lines[i].split(/\s+/);
    const values = lines[i + 1].split(/\s+/);
    if (names[0] !== values[0] || !/^(Ip|Udp):$/.test(names[0])) continue;
    const group = names[0].slice(0, -1);
    for (let k = 1; k < names.length; k++) out[`${group}.${names[k]}`] = Number(values[k]);
    i++;
  }
  if (out['Udp.InErrors'] === undefined) throw new Error(`no Udp counters in /proc/net/snmp of ${ns}`);
  return out;
}

export function counterDelta(before: SnmpCounters, after: SnmpCounters, name: string): number {
  return (after[name] ?? 0) - (before[name] ?? 0);
}

/**
 * Counting rules (no target: they only count) in a chain of our own, jumped
 * to from the top of a namespace's INPUT chain. INPUT runs after IP
 * reassembly and before UDP's own checks, so a rule's packet counter is the
 * number of datagrams matching it that reached the node's UDP layer.
 */
export class InputCounters {
  static readonly CHAIN = 'FLANNEL-UDP-TEST-COUNT';

  constructor(
    private readonly cluster: Cluster,
    private readonly ns: string,
    private readonly rules: string[][],
  ) {}

  async install(): Promise<void> {
    const chain = InputCounters.CHAIN;
    await this.iptables('-N', chain);
    for (const match of this.rules) await this.iptables('-A', chain, ...match);
    await this.iptables('-I', 'INPUT', '1', '-j', chain);
  }

  async remove(): Promise<void> {
    const chain = InputCounters.CHAIN;
    for (const args of [['-D', 'INPUT', '-j', chain], ['-F', chain], ['-X', chain]]) {
      await this.cluster.exec(this.ns, 'iptables', ['-w', ...args], { allowFailure: true }).catch(() => undefined);
    }
  }

  /** Packets each rule has counted so far, in the order given. */
  async packets(): Promise<number[]> {
    const { stdout } = await this.iptables('-n', '-v', '-x', '-L', InputCounters.CHAIN);
    // "Chain …", the column header, then one line per rule.
    const counts = stdout.trim().split('\n').slice(2).map((line) => Number(line.trim().split(/\s+/)[0]));
    if (counts.length !== this.rules.length || counts.some((n) => !Number.isFinite(n))) throw new Error(`cannot read the counting rules in ${this.ns}:\n${stdout}`);
    return counts;
  }

  private iptables(...args: string[]) {
    return this.cluster.exec(this.ns, 'iptables', ['-w', ...args]);
  }
}

export interface LinkDrops {
  rxDropped: number;
  txDropped: number;
}

/** The kernel's drop counters of one interface (for a TUN, tx-dropped = packets the reader did not take in time). */
export async function linkDrops(cluster: Cluster, ns: string, dev: string): Promise<LinkDrops> {
  const { stdout } = await cluster.exec(ns, 'ip', ['-j', '-s', 'link', 'show', 'dev', dev]);
  const [link] = JSON.parse(stdout) as { stats64?: { rx?: { dropped?: number }; tx?: { dropped?: number } } }[];
  return { rxDropped: link?.stats64?.rx?.dropped ?? 0, txDropped: link?.stats64?.tx?.dropped ?? 0 };
}
