// CPU time from /proc: the whole machine's busy time (so that kernel data
// planes, whose cost is softirq time charged to whoever runs, can be compared
// with the agent) and one process's own time (all its threads).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

/** USER_HZ, the unit of /proc/stat and /proc/<pid>/stat; almost always 100. */
export function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

export interface MachineCpuSample {
  /** user + nice + system + irq + softirq, in seconds summed over all CPUs. */
  busyS: number;
  /** Everything including idle and iowait, in seconds summed over all CPUs. */
  totalS: number;
  /** Stolen by the hypervisor: not our work, but worth knowing on a noisy VM. */
  stealS: number;
  atMs: number;
}

export function sampleMachineCpu(): MachineCpuSample {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is already inside user)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  const hz = clockTicksPerSecond();
  const busy = user! + nice! + system! + irq! + softirq!;
  return {
    busyS: busy / hz,
    totalS: (busy + idle! + iowait! + (steal ?? 0)) / hz,
    stealS: (steal ?? 0) / hz,
    atMs: performance.now(),
  };
}

export interface MachineCpuDelta {
  busyS: number;
  stealS: number;
  wallS: number;
}

export function machineCpuDelta(before: MachineCpuSample, after: MachineCpuSample): MachineCpuDelta {
  return { busyS: after.busyS - before.busyS, stealS: after.stealS - before.stealS, wallS: (after.atMs - before.atMs) / 1000 };
}

/** utime + stime of a process, all threads included, in seconds; NaN once it has gone. */
export function processCpuSeconds(pid: number): number {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return NaN;
  }
  // The command name may hold spaces and parentheses, so count fields from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of the man page; the slice starts at field 3.
  return (Number(fields[11]) + Number(fields[12])) / clockTicksPerSecond();
}
