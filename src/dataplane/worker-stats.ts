// Per-worker counters live in one SharedArrayBuffer: the worker increments
// plain Float64 slots (a single writer, no atomics needed on the hot path) and
// the main thread reads them whenever it reports, with no messages exchanged.
import { DROP_REASON_COUNT, dropReasonNames } from '../encap/drop-reasons.js';

export const Counter = {
  TunReadPackets: 0,
  TunReadBytes: 1,
  UdpSentPackets: 2,
  UdpSentBytes: 3,
  UdpReceivedPackets: 4,
  UdpReceivedBytes: 5,
  TunWrittenPackets: 6,
  TunWrittenBytes: 7,
  IcmpSent: 8,
  SyscallsTunRead: 9, // read() on the TUN, including the one that finds it empty
  SyscallsTunWrite: 10,
  SyscallsSend: 11, // sendmmsg()
  SyscallsReceive: 12, // recvmmsg()
  SyscallsPoll: 13,
  SendBatches: 14,
  ReceiveBatches: 15,
  LeaseTableVersion: 16,
  HeartbeatMs: 17, // Date.now() of the worker's last loop turn (with Waiting: detects a stuck worker)
  Restarts: 18, // maintained by the main thread
  PoolSlots: 19, // fixed at start: pool size, to show the pool never grows
  HeapUsedBytes: 20, // the worker isolate's V8 heap, sampled at start and after control messages: nothing else allocates (worker-no-gc.test.ts)
  SuperPacketsSplit: 21, // TSO/USO super-packets read from the TUN and cut into wire-sized packets
  SegmentsFromSplit: 22,
  GsoSends: 23, // messages sent with UDP_SEGMENT (each becomes several datagrams)
  CoalescedWrites: 24, // TUN writes carrying several received segments merged (GRO)
  SegmentsCoalesced: 25,
  GroReceives: 26, // received messages the kernel had coalesced (UDP_GRO)
  SyscallsTunWritev: 27,
  OuterFragmented: 28, // inner packets larger than the underlay allows, without DF: sent, the kernel fragments the outer datagram
  // flannel_udp_batch_size (observe/metrics.ts): messages per sendmmsg / recvmmsg, one counter per
  // bucket (not cumulative), then +Inf, then the sum.
  SendBatchSizeLe1: 29,
  SendBatchSizeLe2: 30,
  SendBatchSizeLe4: 31,
  SendBatchSizeLe8: 32,
  SendBatchSizeLe16: 33,
  SendBatchSizeLe32: 34,
  SendBatchSizeLe64: 35,
  SendBatchSizeLe128: 36,
  SendBatchSizeLeInf: 37,
  SendBatchSizeSum: 38,
  ReceiveBatchSizeLe1: 39,
  ReceiveBatchSizeLe2: 40,
  ReceiveBatchSizeLe4: 41,
  ReceiveBatchSizeLe8: 42,
  ReceiveBatchSizeLe16: 43,
  ReceiveBatchSizeLe32: 44,
  ReceiveBatchSizeLe64: 45,
  ReceiveBatchSizeLe128: 46,
  ReceiveBatchSizeLeInf: 47,
  ReceiveBatchSizeSum: 48,
  IcmpSuppressed: 49, // ICMP errors not sent: over the per-source or the global rate limit (icmp-rate-limit.ts)
  // A dual-stack node's IPv6 share of TunReadPackets and UdpReceivedPackets (the rest is IPv4): one
  // increment on the IPv6 path only, nothing on the IPv4 path. A node without an IPv6 subnet counts
  // IPv6 packets as not-ipv4 drops, as before.
  Ipv6TunReadPackets: 50,
  Ipv6UdpReceivedPackets: 51,
  // 1 while the worker sleeps in poll() with no timeout (nothing due: an idle worker is never woken), else 0.
  // An old HeartbeatMs with Waiting 1 is an idle worker; with Waiting 0, a stuck one.
  Waiting: 52,
  // The outer family: datagrams sent to / received from a peer's PublicIPv6 (the IPv6 underlay). The
  // rest of UdpSentPackets / UdpReceivedPackets went over IPv4. Zero on a node without a public IPv6.
  UnderlayIpv6SentPackets: 53,
  UnderlayIpv6ReceivedPackets: 54,
} as const;

const FIXED_COUNTERS = 55;
export const DROPS_BASE = FIXED_COUNTERS;
export const COUNTERS_PER_WORKER = FIXED_COUNTERS + DROP_REASON_COUNT;
export const counterNames = Object.keys(Counter);

export function allocateStats(workers: number): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * COUNTERS_PER_WORKER * Float64Array.BYTES_PER_ELEMENT);
}

/** The counter slice of one worker, as a view on the shared buffer. */
export function workerCounters(stats: SharedArrayBuffer, worker: number): Float64Array {
  return new Float64Array(stats, worker * COUNTERS_PER_WORKER * 8, COUNTERS_PER_WORKER);
}

export interface WorkerStatsSnapshot {
  worker: number;
  counters: Record<string, number>;
  drops: Record<string, number>;
}

export function snapshotWorker(stats: SharedArrayBuffer, worker: number): WorkerStatsSnapshot {
  const c = workerCounters(stats, worker);
  const counters: Record<string, number> = {};
  counterNames.forEach((name, i) => (counters[name] = c[i]));
  const drops: Record<string, number> = {};
  for (let r = 1; r < DROP_REASON_COUNT; r++) if (c[DROPS_BASE + r] > 0) drops[dropReasonNames[r]] = c[DROPS_BASE + r];
  return { worker, counters, drops };
}
