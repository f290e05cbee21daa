// What a worker reports for each stage a traced packet passes: one TraceEvent
// per stage, posted to the main thread (structured clone), streamed to
// `flannel-udp trace` as JSON lines and drawn by trace-render.ts.
//
// Tracing is for a few packets, so building an event may allocate; deciding
// *whether* to trace (the filter, TraceLimiter.admit) must not, because it
// runs for every packet while a trace is on.

/** The stages of the data path, in the order a packet meets them (drop can end either direction). */
export type TraceStage =
  | 'tun-read'
  | 'lease-lookup'
  | 'encapsulate'
  | 'udp-send'
  | 'udp-receive'
  | 'validate'
  | 'decapsulate'
  | 'tun-write'
  | 'drop';

export type TraceSyscall = 'read' | 'sendmmsg' | 'recvmmsg' | 'write' | 'writev';
export type TraceCrossing = 'kernel→user' | 'user→kernel';

/**
 * How to read headerBytes:
 * - 'ip': an IPv4 packet (what crosses the TUN);
 * - 'udp-payload': the UDP payload of UDP mode, which is itself the IPv4 packet;
 * - 'vxlan-payload': VXLAN header + Ethernet + IPv4 (the UDP payload of VXLAN mode);
 * - 'outer-ip': outer IPv4 + UDP + payload, as the worker reconstructs it for display
 *   (the kernel writes the real outer headers; the worker knows every field of them
 *   but the IPv4 id, which it shows as 0).
 */
export type TraceLayers = 'ip' | 'udp-payload' | 'vxlan-payload' | 'outer-ip';

export interface TraceEvent {
  /** Which agent: its subnet key or host name, as the agent chooses. */
  node: string;
  worker: number;
  /** Per-worker sequence number of the traced packet; all stages of one packet share it. */
  packet: number;
  stage: TraceStage;
  /** Monotonic clock (CLOCK_MONOTONIC, process.hrtime), ns: comparable across workers and processes of one machine. */
  timeNs: number;
  /** The syscall that moved the packet across the user/kernel boundary at this stage, if any. */
  syscall?: TraceSyscall;
  crossing?: TraceCrossing;
  /** Length of the packet as it is at this stage (e.g. the inner packet, or the whole outer datagram for 'outer-ip'). */
  bytes?: number;
  /** lease-lookup: the lease that covers the destination, or null when none does. */
  lease?: { key: string; publicIp: string } | null;
  /** Free text: what the stage decided ("TTL 64 → 63", "batch of 12", "ICMP net unreachable written back"). */
  note?: string;
  /** stage 'drop': the drop reason's name (drop-reasons.ts dropReasonNames, e.g. "no-lease"). */
  drop?: string;
  layers: TraceLayers;
  /** A copy of up to the first TRACE_HEADER_BYTES bytes of the packet at this stage, starting at its first layer. */
  headerBytes: Uint8Array;
}

/** Packets a trace follows when no limit is given (--trace-limit, `trace --limit`). */
export const DEFAULT_TRACE_LIMIT = 100;

/** How many bytes of each stage's packet an event carries: every header of an outer VXLAN frame fits. */
export const TRACE_HEADER_BYTES = 128;

export const TRACE_STAGES: readonly TraceStage[] = [
  'tun-read',
  'lease-lookup',
  'encapsulate',
  'udp-send',
  'udp-receive',
  'validate',
  'decapsulate',
  'tun-write',
  'drop',
];

/** Stages after which a packet has left this node's user space (or been dropped): nothing more is reported for it. */
export const TERMINAL_STAGES: ReadonlySet<TraceStage> = new Set<TraceStage>(['udp-send', 'tun-write', 'drop']);

export interface TraceStageInfo {
  /** Short label for the rendering: [TUN read]. */
  label: string;
  /** What happens there, for the guide and for `trace` readers. */
  meaning: string;
  /** The syscall and crossing the worker reports at this stage (writev for a coalesced TUN write). */
  syscall?: TraceSyscall;
  crossing?: TraceCrossing;
  /** The file descriptor the syscall works on, as shown: "tun fd", "udp fd". */
  fd?: string;
}

export const TRACE_STAGE_INFO: Readonly<Record<TraceStage, TraceStageInfo>> = {
  'tun-read': {
    label: 'TUN read',
    meaning: 'the kernel routed the packet to flannel0; read() copied it from the TUN queue into a pool slot',
    syscall: 'read',
    crossing: 'kernel→user',
    fd: 'tun fd',
  },
  'lease-lookup': {
    label: 'lease lookup',
    meaning: "the destination's longest-prefix match in the lease table: which node's public IP to send to",
  },
  encapsulate: {
    label: 'encapsulate',
    meaning:
      'TTL − 1 (checksum patched, RFC 1624); UDP mode sends the packet itself as the UDP payload, VXLAN mode writes a VXLAN and an Ethernet header into the headroom in front of it: no copy either way',
  },
  'udp-send': {
    label: 'UDP send',
    meaning: "sendmmsg() handed the batch to the kernel, which adds the outer IPv4 and UDP headers and sends it out of the node's underlay interface",
    syscall: 'sendmmsg',
    crossing: 'user→kernel',
    fd: 'udp fd',
  },
  'udp-receive': {
    label: 'UDP receive',
    meaning: 'recvmmsg() took a batch of datagrams from the UDP socket; the kernel has already removed the outer headers',
    syscall: 'recvmmsg',
    crossing: 'kernel→user',
    fd: 'udp fd',
  },
  validate: {
    label: 'validate',
    meaning: "the inner IPv4 header checked (version, lengths, checksum) and its destination in this node's subnet",
  },
  decapsulate: {
    label: 'decapsulate',
    meaning:
      'UDP mode: the payload is the inner packet, nothing to strip; VXLAN: flags, VNI, destination MAC and ethertype checked and the 22 bytes in front of the inner packet skipped; then TTL − 1',
  },
  'tun-write': {
    label: 'TUN write',
    meaning: 'write() (writev() with offloads) put the packet into the TUN; the kernel routes it to cni0 and the pod',
    syscall: 'write',
    crossing: 'user→kernel',
    fd: 'tun fd',
  },
  drop: {
    label: 'drop',
    meaning: 'the packet is not forwarded; it is counted under exactly one drop reason',
  },
};

/** Copies up to TRACE_HEADER_BYTES of buf[off .. off+len) for an event (an owned copy: the slot is reused). */
export function copyHeaderBytes(buf: Uint8Array, off: number, len: number): Uint8Array {
  const n = Math.max(0, Math.min(len, TRACE_HEADER_BYTES, buf.length - off));
  return buf.slice(off, off + n);
}

/** One JSON line (no newline) for an event; headerBytes as a hex string. */
export function traceEventToJson(ev: TraceEvent): string {
  return JSON.stringify({ ...ev, headerBytes: Buffer.from(ev.headerBytes.buffer, ev.headerBytes.byteOffset, ev.headerBytes.byteLength).toString('hex') });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The inverse of traceEventToJson, from the parsed JSON value (a line of the
 * control socket's trace stream). Throws on anything that is not an event.
 */
export function traceEventFromJson(value: unknown): TraceEvent {
  if (!isObject(value)) throw new Error('trace event: not a JSON object');
  const { node, worker, packet, stage, timeNs, layers, headerBytes } = value;
  if (typeof node !== 'string') throw new Error('trace event: "node" is not a string');
  if (typeof worker !== 'number' || typeof packet !== 'number' || typeof timeNs !== 'number') {
    throw new Error('trace event: "worker", "packet" and "timeNs" must be numbers');
  }
  if (typeof stage !== 'string' || !(TRACE_STAGES as readonly string[]).includes(stage)) throw new Error(`trace event: unknown stage ${JSON.stringify(stage)}`);
  if (layers !== 'ip' && layers !== 'udp-payload' && layers !== 'vxlan-payload' && layers !== 'outer-ip') {
    throw new Error(`trace event: unknown layers ${JSON.stringify(layers)}`);
  }
  if (typeof headerBytes !== 'string' || !/^([0-9a-f]{2})*$/i.test(headerBytes)) throw new Error('trace event: "headerBytes" is not hex');
  const ev: TraceEvent = {
    node,
    worker,
    packet,
    stage: stage as TraceStage,
    timeNs,
    layers,
    headerBytes: Uint8Array.from(Buffer.from(headerBytes, 'hex')),
  };
  if (typeof value.syscall === 'string') ev.syscall = value.syscall as TraceSyscall;
  if (value.crossing === 'kernel→user' || value.crossing === 'user→kernel') ev.crossing = value.crossing;
  if (typeof value.bytes === 'number') ev.bytes = value.bytes;
  if (value.lease === null) ev.lease = null;
  else if (isObject(value.lease) && typeof value.lease.key === 'string' && typeof value.lease.publicIp === 'string') {
    ev.lease = { key: value.lease.key, publicIp: value.lease.publicIp };
  }
  if (typeof value.note === 'string') ev.note = value.note;
  if (typeof value.drop === 'string') ev.drop = value.drop;
  return ev;
}

/** The clock of TraceEvent.timeNs (allocates a BigInt: for traced packets only). */
export function traceClockNs(): number {
  return Number(process.hrtime.bigint());
}

/**
 * Bounds what a trace costs: at most `limit` packets in all (0 = no total
 * limit) and at most `perSecond` in any one-second window (0 = no rate limit).
 * The worker asks admit() once per packet that passed the filter, at the
 * packet's first stage, and traces every stage of an admitted packet.
 *
 * admit(nowMs) compares numbers and allocates nothing. Pass the time when a
 * rate is set: every JS clock (Date.now, performance.now) returns a fresh
 * heap number, so the worker passes the time it already read for its loop
 * (any millisecond clock will do, only differences matter). Without it,
 * admit() reads the constructor's clock.
 */
export class TraceLimiter {
  private admitted = 0;
  private windowStartMs = -Infinity;
  private inWindow = 0;

  /**
   * `shared`: an Int32Array on a SharedArrayBuffer given to every worker's
   * limiter, so that `limit` bounds the packets of all workers together
   * (Atomics.add, no allocation); without it the limit is this limiter's own.
   * The rate is always per limiter.
   */
  constructor(
    readonly limit: number,
    readonly perSecond: number,
    private readonly nowMs: () => number = () => performance.now(),
    private readonly shared?: Int32Array,
  ) {
    if (!Number.isInteger(limit) || limit < 0) throw new Error(`trace limit ${limit} is not a whole number ≥ 0`);
    if (!Number.isInteger(perSecond) || perSecond < 0) throw new Error(`trace rate ${perSecond} is not a whole number ≥ 0`);
  }

  admit(nowMs?: number): boolean {
    if (this.exhausted) return false;
    if (this.perSecond !== 0) {
      const now = nowMs ?? this.nowMs();
      if (now - this.windowStartMs >= 1000) {
        this.windowStartMs = now;
        this.inWindow = 0;
      }
      if (this.inWindow >= this.perSecond) return false;
    }
    // Claimed last, so a packet refused by the rate does not use up the total.
    if (this.shared !== undefined && this.limit !== 0 && Atomics.add(this.shared, 0, 1) >= this.limit) return false;
    this.inWindow++;
    this.admitted++;
    return true;
  }

  /** Packets this limiter admitted. */
  get count(): number {
    return this.admitted;
  }

  /** The total limit is used up (by all workers, with `shared`): the trace is over. A rate alone never ends it. */
  get exhausted(): boolean {
    if (this.limit === 0) return false;
    return (this.shared !== undefined ? Atomics.load(this.shared, 0) : this.admitted) >= this.limit;
  }
}
