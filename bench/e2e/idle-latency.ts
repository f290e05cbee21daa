// Round-trip time after idle, and what a ping costs the forwarder (issue 21):
// pings from pod 1 to pod 2 at three spacings (0.02 s, 0.2 s, 1 s between
// pings), each ping's RTT kept for the average and the 99th percentile, and
// the forwarding threads' CPU time over the pings (the agent's workers, the
// C proxy's and the reference forwarder's only thread; each thread's run
// time from /proc/<pid>/task/<tid>/schedstat, in ns: /stat counts 10 ms
// ticks, too coarse for a few hundred µs per ping), per ping, both nodes summed.
// Kernel planes have no process: their cost is softirq time, not shown here.
import { readFileSync, readdirSync } from 'node:fs';
import type { Cluster } from '../../src/testbed/cluster.js';

export interface IdleSpacing {
  intervalS: number;
  count: number;
}

/** Spacings and counts: the 1 s run is the long one (its pings are the rarest). */
export const IDLE_SPACINGS: readonly IdleSpacing[] = [
  { intervalS: 0.02, count: 100 },
  { intervalS: 0.2, count: 40 },
  { intervalS: 1, count: 15 },
];

export interface IdleLatency {
  intervalS: number;
  sent: number;
  received: number;
  avgMs: number;
  p99Ms: number;
  /** Forwarders' CPU per ping in µs (both nodes, all threads); NaN without forwarder processes. */
  cpuUsPerPing: number;
}

/** CPU time of the forwarding threads of the processes (the agent's flannel-w<i>, else every thread), in seconds (a thread that ended meanwhile is not counted). */
export function threadsCpuSeconds(pids: readonly number[]): number {
  let ns = 0;
  for (const pid of pids) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    // The agent names its forwarding threads flannel-w<i>: only they count when there are any.
    const comm = (tid: string) => {
      try {
        return readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      } catch {
        return '';
      }
    };
    const named = tids.filter((t) => comm(t).startsWith('flannel-w'));
    for (const tid of named.length > 0 ? named : tids) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        /* the thread ended */
      }
    }
  }
  return ns / 1e9;
}

/** Nearest-rank percentile of the values (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Every reply's time= from ping's per-packet lines. */
export function parsePingTimes(text: string): number[] {
  return [...text.matchAll(/ time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

export async function measureIdleLatency(cluster: Cluster, forwarderPids: readonly number[], spacings = IDLE_SPACINGS): Promise<IdleLatency[]> {
  const [from, to] = [cluster.pod(1), cluster.pod(2)];
  const out: IdleLatency[] = [];
  for (const { intervalS, count } of spacings) {
    // A first ping the others are not measured against: the ARP/neighbour entries exist, the path is up.
    await cluster.exec(from.ns, 'ping', ['-n', '-q', '-c', '1', '-w', '3', to.ip], { allowFailure: true });
    await new Promise((r) => setTimeout(r, intervalS * 1000));
    const cpu0 = threadsCpuSeconds(forwarderPids);
    const deadlineS = Math.ceil(count * intervalS) + 5;
    const { stdout } = await cluster.exec(from.ns, 'ping', ['-n', '-c', String(count), '-i', String(intervalS), '-w', String(deadlineS), to.ip], {
      allowFailure: true,
      timeoutMs: (deadlineS + 10) * 1000,
    });
    const cpuS = threadsCpuSeconds(forwarderPids) - cpu0;
    const times = parsePingTimes(stdout);
    out.push({
      intervalS,
      sent: count,
      received: times.length,
      avgMs: times.length ? times.reduce((a, b) => a + b, 0) / times.length : NaN,
      p99Ms: percentile(times, 99),
      cpuUsPerPing: forwarderPids.length ? (cpuS / count) * 1e6 : NaN,
    });
  }
  return out;
}
