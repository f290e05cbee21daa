// Request/response latency between two pods with sockperf ping-pong (one
// message in flight, paced, each answered by the server), over UDP and TCP,
// on an otherwise idle path and while one iperf3 TCP stream runs through the
// same nodes: a data plane whose buffers or batches build a standing queue
// shows it in the loaded p99.
import type { Cluster, PodInfo } from '../../src/testbed/cluster.js';
import { stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { interfaceCounters } from '../../src/testbed/measure.js';
import { parseSockperf, type SockperfLatency, type SockperfRun } from './sockperf-output.js';

export interface LatencyPlan {
  /** sockperf -t: seconds per run (sockperf leaves its first 0.4 s of warm-up out of the figures). */
  seconds: number;
  /** sockperf --mps: requests per second, i.e. a pause of 1/mps between a reply and the next request. */
  messagesPerSecond: number;
  /** sockperf -m: request and reply size. */
  messageBytes: number;
}

export type RrProtocol = 'udp' | 'tcp';

let nextPort = 11_000;

/** One sockperf ping-pong run from `client` to a sockperf server started in `server`. */
export async function sockperfPingPong(cluster: Cluster, client: PodInfo, server: PodInfo, protocol: RrProtocol, plan: LatencyPlan): Promise<SockperfRun> {
  const port = String(nextPort++);
  const tcp = protocol === 'tcp' ? ['--tcp'] : [];
  const sockperfServer = cluster.spawn(server.ns, 'sockperf', ['server', '-i', server.ip, '-p', port, ...tcp]);
  try {
    await waitForLine(sockperfServer, /to block on socket/, 10_000);
    const { stdout, stderr } = await cluster.exec(
      client.ns,
      'sockperf',
      ['ping-pong', '-i', server.ip, '-p', port, ...tcp, '-t', String(plan.seconds), '--mps', String(plan.messagesPerSecond), '-m', String(plan.messageBytes), '--full-rtt'],
      { timeoutMs: (plan.seconds + 30) * 1000 },
    );
    return parseSockperf(stdout + stderr);
  } finally {
    await stopChild(sockperfServer, 'SIGTERM', 2000);
  }
}

export interface TcpLoad {
  /** What the stream moved into the server pod while the measurements ran. */
  gbitPerSecond: number;
}

/**
 * Runs `during` while one iperf3 TCP stream goes from `client` to `server`
 * (the same pods, so the same nodes and the same data plane); returns its
 * result and the stream's rate over that time.
 */
export async function underTcpStream<T>(cluster: Cluster, client: PodInfo, server: PodInfo, maxSeconds: number, during: () => Promise<T>): Promise<{ result: T; load: TcpLoad }> {
  const port = String(nextPort++);
  const iperfServer = cluster.spawn(server.ns, 'iperf3', ['-s', '-1', '--forceflush', '-B', server.ip, '-p', port]);
  let iperfClient: CapturedChild | undefined;
  try {
    await waitForLine(iperfServer, /Server listening on/, 10_000);
    iperfClient = cluster.spawn(client.ns, 'iperf3', ['-c', server.ip, '-p', port, '-t', String(maxSeconds), '-i', '1', '--forceflush', '--connect-timeout', '3000']);
    // The first one-second report: the stream is up and past its first round trips.
    await waitForLine(iperfClient, /\]\s+0\.00-1\.0\d\s+sec/, 15_000);
    const before = await interfaceCounters(cluster, server.ns, 'eth0');
    const started = performance.now();
    const result = await during();
    const seconds = (performance.now() - started) / 1000;
    const after = await interfaceCounters(cluster, server.ns, 'eth0');
    if (iperfClient.exitCode !== null) throw new Error(`the iperf3 stream ended before the measurement did:\n${iperfClient.log.tail(10)}`);
    return { result, load: { gbitPerSecond: ((after.rxBytes - before.rxBytes) * 8) / seconds / 1e9 } };
  } finally {
    if (iperfClient) await stopChild(iperfClient, 'SIGTERM', 3000);
    await stopChild(iperfServer, 'SIGTERM', 3000);
  }
}

export interface RrMeasurement {
  /** From the first run in which every request was answered; absent when none was. */
  latency?: SockperfLatency;
  /** Runs that stalled on a lost reply (sockperf waits for it forever) and were run again. */
  stalledRuns: number;
  runs: SockperfRun[];
}

/** sockperf leaves its first 0.4 s out as warm-up and a little at the end; a stall cuts the rest short. */
const SOCKPERF_UNMEASURED_S = 0.5;
const STALLED_BELOW = 0.8;

/**
 * A run that lost a reply: sockperf waited for it until the end, so its
 * figures cover only the time before the loss. (A request still in flight
 * when the timer ends also leaves sent > received, so the duration decides.)
 */
export function stalled(run: SockperfRun, plan: LatencyPlan): boolean {
  return !run.latency || (run.unanswered > 0 && run.validSeconds < STALLED_BELOW * (plan.seconds - SOCKPERF_UNMEASURED_S));
}

/**
 * sockperf ping-pong, run again when a lost UDP reply stalled it, up to
 * `attempts` runs in all. The stalls are counted: a plane that loses
 * requests shows it there.
 */
export async function measureRr(cluster: Cluster, client: PodInfo, server: PodInfo, protocol: RrProtocol, plan: LatencyPlan, attempts = 3): Promise<RrMeasurement> {
  const runs: SockperfRun[] = [];
  for (let n = 0; n < attempts; n++) {
    const run = await sockperfPingPong(cluster, client, server, protocol, plan);
    runs.push(run);
    if (!stalled(run, plan)) return { latency: run.latency, stalledRuns: n, runs };
  }
  return { stalledRuns: attempts, runs };
}
