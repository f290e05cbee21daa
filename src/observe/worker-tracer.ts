// The worker's side of a trace: decides per packet whether to trace it (the
// compiled filter, then the limiter: no allocation) and builds the events of
// a traced packet's stages (allocation is fine there, it is a handful of
// packets). The forwarder holds `tracer: WorkerTracer | undefined` and checks
// it before each stage, so a node without a trace pays one comparison.
import { buildOuterIPv4Udp, OUTER_IPV4_UDP_HEADERS, UDP_HEADER, writeUdpHeader } from '../encap/udp-frame.js';
import { buildIPv6Header, IPV6_DEFAULT_HOP_LIMIT, IPV6_HEADER } from '../encap/ipv6.js';
import { IP_PROTOCOL_UDP } from '../encap/ipv4.js';
import { compileTraceFilter, type TraceFilter } from './trace-filter.js';
import {
  TRACE_HEADER_BYTES,
  TRACE_STAGE_INFO,
  TraceLimiter,
  copyHeaderBytes,
  traceClockNs,
  type TraceEvent,
  type TraceLayers,
  type TraceStage,
} from './trace-event.js';

export interface WorkerTraceConfig {
  node: string;
  worker: number;
  /** Filter expression (trace-filter.ts); compiled in the worker, since closures cannot cross threads. */
  filter: string;
  /** Packets in all (0 = unlimited) and per second (0 = unlimited). */
  limit: number;
  perSecond: number;
  /** Int32Array(1) on a SharedArrayBuffer given to every worker: `limit` is then for all workers together (TraceLimiter). */
  sharedCount?: Int32Array;
}

/** Optional fields of one stage's event; syscall and crossing default to the stage's (TRACE_STAGE_INFO). */
export type TraceExtra = Partial<Pick<TraceEvent, 'syscall' | 'crossing' | 'bytes' | 'lease' | 'note' | 'drop'>>;

export class WorkerTracer {
  readonly filter: TraceFilter;
  readonly limiter: TraceLimiter;
  private nextPacket = 0;
  private outerScratch = new Uint8Array(TRACE_HEADER_BYTES);

  constructor(
    readonly cfg: WorkerTraceConfig,
    private readonly post: (ev: TraceEvent) => void,
  ) {
    this.filter = compileTraceFilter(cfg.filter);
    this.limiter = new TraceLimiter(cfg.limit, cfg.perSecond, undefined, cfg.sharedCount);
  }

  /**
   * At a packet's first stage, with its inner IPv4 packet at buf[off]: the
   * number to trace it under, or -1 when it is not traced. No allocation
   * when `nowMs` is given (the loop's last clock reading; see TraceLimiter).
   */
  admit(buf: Uint8Array, off: number, nowMs?: number): number {
    if (!this.filter(buf, off)) return -1;
    if (!this.limiter.admit(nowMs)) return -1;
    return this.nextPacket++;
  }

  /** No more packets will be admitted: the worker may drop the tracer once in-flight packets are reported. */
  get exhausted(): boolean {
    return this.limiter.exhausted;
  }

  /** Reports one stage of packet `packet`, whose bytes at this stage are buf[off .. off+len) read as `layers`. */
  emit(packet: number, stage: TraceStage, layers: TraceLayers, buf: Uint8Array, off: number, len: number, extra: TraceExtra = {}): void {
    const info = TRACE_STAGE_INFO[stage];
    const ev: TraceEvent = {
      node: this.cfg.node,
      worker: this.cfg.worker,
      packet,
      stage,
      timeNs: traceClockNs(),
      layers,
      headerBytes: copyHeaderBytes(buf, off, len),
      bytes: len,
    };
    const syscall = extra.syscall ?? info.syscall;
    const crossing = extra.crossing ?? info.crossing;
    if (syscall !== undefined) ev.syscall = syscall;
    if (crossing !== undefined) ev.crossing = crossing;
    if (extra.bytes !== undefined) ev.bytes = extra.bytes;
    if (extra.lease !== undefined) ev.lease = extra.lease;
    if (extra.note !== undefined) ev.note = extra.note;
    if (extra.drop !== undefined) ev.drop = extra.drop;
    this.post(ev);
  }

  /**
   * Reports a stage as the wire sees it ('outer-ip'): the outer IPv4 and UDP
   * headers the kernel writes (or wrote) around the UDP payload at
   * buf[off .. off+len), rebuilt here for display with IPv4 id 0 and no UDP
   * checksum, since the kernel chooses those.
   */
  emitOuter(
    packet: number,
    stage: TraceStage,
    srcIp: number,
    dstIp: number,
    srcPort: number,
    dstPort: number,
    buf: Uint8Array,
    off: number,
    len: number,
    extra: TraceExtra = {},
  ): void {
    const scratch = this.outerScratch;
    const shown = Math.min(len, TRACE_HEADER_BYTES - OUTER_IPV4_UDP_HEADERS);
    scratch.set(buf.subarray(off, off + shown), OUTER_IPV4_UDP_HEADERS);
    buildOuterIPv4Udp(scratch, 0, srcIp >>> 0, dstIp >>> 0, srcPort, dstPort, len, 0, false);
    this.emit(packet, stage, 'outer-ip', scratch, 0, OUTER_IPV4_UDP_HEADERS + shown, {
      bytes: OUTER_IPV4_UDP_HEADERS + len,
      ...extra,
    });
  }

  /**
   * emitOuter over the IPv6 underlay: an outer IPv6 header (hop limit 64,
   * flow label 0: the kernel's defaults) and UDP around the payload, src6 and
   * dst6 16 bytes each. Only traced packets come here, so it may allocate.
   */
  emitOuter6(
    packet: number,
    stage: TraceStage,
    src6: Uint8Array,
    dst6: Uint8Array,
    srcPort: number,
    dstPort: number,
    buf: Uint8Array,
    off: number,
    len: number,
    extra: TraceExtra = {},
  ): void {
    const headers = IPV6_HEADER + UDP_HEADER;
    const scratch = new Uint8Array(TRACE_HEADER_BYTES);
    const shown = Math.min(len, TRACE_HEADER_BYTES - headers);
    scratch.set(buf.subarray(off, off + shown), headers);
    buildIPv6Header(scratch, 0, UDP_HEADER + len, IP_PROTOCOL_UDP, IPV6_DEFAULT_HOP_LIMIT, src6, 0, dst6, 0);
    writeUdpHeader(scratch, IPV6_HEADER, srcPort, dstPort, UDP_HEADER + len, 0);
    this.emit(packet, stage, 'outer-ip', scratch, 0, headers + shown, { bytes: headers + len, ...extra });
  }
}
