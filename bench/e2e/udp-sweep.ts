// The UDP small-packet sweep: offer rising packet rates from one pod to the
// other and record what arrives, to find the highest rate the path carries
// with under 1 % loss.
import type { Cluster, PodInfo } from '../../src/testbed/cluster.js';
import { iperf3Udp, udpSocketCounters } from '../../src/testbed/measure.js';

export interface SweepPoint {
  targetPps: number;
  /** What the iperf3 clients actually sent, summed. */
  sentPps: number;
  receivedPps: number;
  /** End to end, as iperf3 counts it. */
  lossPct: number;
  /** The part of the loss that happened at the receiving iperf3's socket (its buffer overflowed): the tool, not the path. */
  receiverSocketDropPct: number;
}

export interface SweepResult {
  points: SweepPoint[];
  /** Received pps at the highest target with loss under LOSSLESS_PCT; 0 when even the first point lost more. */
  losslessPps: number;
  /** As losslessPps, counting only loss before the receiving socket: what the path itself carries when iperf3 is the slower reader. */
  losslessInPathPps: number;
  peakReceivedPps: number;
  /** Why the sweep ended before its last rate, if it did. */
  stoppedEarly?: string;
}

export interface SweepOptions {
  ratesPps: readonly number[];
  secondsPerRate: number;
  packetLen: number;
  parallel: number;
  /** Extra rates tried between the last lossless and the first lossy one. */
  refineSteps: number;
}

export const LOSSLESS_PCT = 1;
// Past this much loss the path is saturated; higher rates only repeat that.
const STOP_LOSS_PCT = 5;
// When the senders reach less than this share of the target, the load generator is the limit, not the path.
const SENDER_LIMITED_SHARE = 0.9;

export async function udpSweep(cluster: Cluster, client: PodInfo, server: PodInfo, opts: SweepOptions): Promise<SweepResult> {
  const points: SweepPoint[] = [];
  let stoppedEarly: string | undefined;
  for (const [i, targetPps] of opts.ratesPps.entries()) {
    const point = await measureRate(cluster, client, server, targetPps, opts);
    points.push(point);
    const last = i === opts.ratesPps.length - 1;
    if (last) break;
    if (point.lossPct >= STOP_LOSS_PCT) {
      stoppedEarly = `loss ${point.lossPct.toFixed(1)} % at ${targetPps / 1000}k pps`;
      break;
    }
    if (point.sentPps < targetPps * SENDER_LIMITED_SHARE) {
      stoppedEarly = `iperf3 sent only ${(point.sentPps / 1000).toFixed(1)}k of ${targetPps / 1000}k pps (sender-limited)`;
      break;
    }
  }
  await refine(cluster, client, server, points, opts);
  points.sort((a, b) => a.targetPps - b.targetPps);
  const lossless = points.filter((p) => p.lossPct < LOSSLESS_PCT);
  const losslessInPath = points.filter((p) => p.lossPct - p.receiverSocketDropPct < LOSSLESS_PCT);
  return {
    points,
    losslessPps: lossless.length ? Math.max(...lossless.map((p) => p.receivedPps)) : 0,
    losslessInPathPps: losslessInPath.length ? Math.max(...losslessInPath.map((p) => p.receivedPps)) : 0,
    peakReceivedPps: Math.max(0, ...points.map((p) => p.receivedPps)),
    stoppedEarly,
  };
}

/**
 * Halves the gap between the highest lossless rate and the lowest lossy one
 * above it, so that two planes that both pass 60k and both fail 90k are told
 * apart rather than tied at 60k.
 */
async function refine(cluster: Cluster, client: PodInfo, server: PodInfo, points: SweepPoint[], opts: SweepOptions): Promise<void> {
  for (let step = 0; step < opts.refineSteps; step++) {
    const good = points.filter((p) => p.lossPct < LOSSLESS_PCT).map((p) => p.targetPps);
    const below = good.length ? Math.max(...good) : 0;
    const bad = points.filter((p) => p.lossPct >= LOSSLESS_PCT && p.targetPps > below).map((p) => p.targetPps);
    if (bad.length === 0) return;
    const above = Math.min(...bad);
    // Whole thousands keep the figures readable; a gap that small is noise anyway.
    const middle = Math.round((below + above) / 2000) * 1000;
    if (middle <= below || middle >= above) return;
    points.push(await measureRate(cluster, client, server, middle, opts));
  }
}

async function measureRate(cluster: Cluster, client: PodInfo, server: PodInfo, targetPps: number, opts: SweepOptions): Promise<SweepPoint> {
  const socketsBefore = await udpSocketCounters(cluster, server.ns);
  // Separate iperf3 pairs (each on its own port, so also its own flow) share the rate.
  const runs = await Promise.all(
    Array.from({ length: opts.parallel }, () =>
      iperf3Udp(cluster, server.ns, server.ip, client.ns, {
        seconds: opts.secondsPerRate,
        packetLen: opts.packetLen,
        packetsPerSecond: targetPps / opts.parallel,
      }),
    ),
  );
  const socketsAfter = await udpSocketCounters(cluster, server.ns);
  const sent = runs.reduce((n, r) => n + r.sentPackets, 0);
  const lost = runs.reduce((n, r) => n + r.lostPackets, 0);
  const socketDrops = socketsAfter.receiveBufferErrors - socketsBefore.receiveBufferErrors;
  return {
    targetPps,
    sentPps: runs.reduce((n, r) => n + r.sentPps, 0),
    receivedPps: runs.reduce((n, r) => n + r.receivedPps, 0),
    lossPct: sent ? (lost / sent) * 100 : 100,
    receiverSocketDropPct: sent ? (socketDrops / sent) * 100 : 0,
  };
}
