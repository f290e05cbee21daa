// What one agent process costs its node, read from /proc: resident memory
// split into anonymous and file-backed, threads, descriptors, and CPU time
// and context switches (wake-ups) summed over its threads, so two samples
// give CPU per second and wake-ups per second.
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcSample {
  pid: number;
  at: number;
  rssKiB: number;
  anonKiB: number;
  fileKiB: number;
  shmemKiB: number;
  threads: number;
  fds: number;
  /** user + system CPU, in seconds */
  cpuSeconds: number;
  /** voluntary + involuntary context switches of all threads */
  switches: number;
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

function statusField(text: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

export function sampleProcess(pid: number): ProcSample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime, stime are fields 14 and 15 of stat (1-based), i.e. 11 and 12 after the state field.
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  let switches = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const t = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      switches += statusField(t, 'voluntary_ctxt_switches') + statusField(t, 'nonvoluntary_ctxt_switches');
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return {
    pid,
    at: Date.now(),
    rssKiB: statusField(status, 'VmRSS'),
    anonKiB: statusField(status, 'RssAnon'),
    fileKiB: statusField(status, 'RssFile'),
    shmemKiB: statusField(status, 'RssShmem'),
    threads: statusField(status, 'Threads'),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    cpuSeconds,
    switches,
  };
}

export interface ProcRates {
  cpuPerSecond: number;
  wakeupsPerSecond: number;
}

export function rates(a: ProcSample, b: ProcSample): ProcRates {
  const seconds = (b.at - a.at) / 1000;
  return { cpuPerSecond: (b.cpuSeconds - a.cpuSeconds) / seconds, wakeupsPerSecond: (b.switches - a.switches) / seconds };
}

/** p50, p99 and max of a list of numbers (nearest rank); undefined for an empty list. */
export function percentiles(values: number[]): { p50: number; p99: number; max: number; n: number } | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((x, y) => x - y);
  const rank = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
  return { p50: rank(50), p99: rank(99), max: s[s.length - 1], n: s.length };
}

export function median(values: number[]): number {
  return percentiles(values)?.p50 ?? NaN;
}
