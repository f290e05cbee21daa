// What the figures were measured on, so that a result file says so itself.
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, release, totalmem } from 'node:os';

export interface MachineInfo {
  date: string;
  kernel: string;
  cpuModel: string;
  cpuCount: number;
  memoryGiB: number;
  node: string;
  iperf3: string;
  ping: string;
  sockperf?: string;
  /** Runs the reference forwarder. */
  python3?: string;
  /** The source the agent was built from (dirty = uncommitted changes). */
  gitDescribe: string;
  /** 1-minute load average when the run began: other work sharing the machine shows here. */
  loadAverageAtStart: number;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

export function describeMachine(): MachineInfo {
  return {
    date: new Date().toISOString(),
    kernel: release(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpuCount: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    iperf3: firstLine('iperf3', ['--version']),
    ping: firstLine('ping', ['-V']),
    sockperf: firstLine('sockperf', ['--version']).replace(/^sockperf,\s*/, 'sockperf '),
    python3: firstLine('python3', ['--version']),
    gitDescribe: firstLine('git', ['describe', '--always', '--dirty']),
    loadAverageAtStart: loadavg()[0]!,
  };
}
