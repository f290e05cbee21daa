// What a worker shows of its packets: trace events for the few packets a
// trace admits, and pcap captures at the four user/kernel crossings. The
// forwarder holds `observer: ForwarderObserver | undefined` and calls it only
// when it exists, so a node that observes nothing pays one comparison per
// stage. Allocation here is limited to traced packets (a handful).
import { WorkerTracer, type WorkerTraceConfig } from '../observe/worker-tracer.js';
import {
  WorkerCaptures,
  writeSyntheticUdpPrefix,
  writeSyntheticUdp6Prefix,
  udpPayloadSum,
  SYNTHETIC_UDP_PREFIX,
  SYNTHETIC_UDP6_PREFIX,
  wallClockNs,
} from '../observe/pcap-writer.js';
import type { TraceEvent, TraceLayers } from '../observe/trace-event.js';
import { formatIPv4 } from '../control/ipv4-address.js';
import { formatIPv6 } from '../control/ipv6-address.js';
import type { LeaseTable } from '../control/lease-table.js';

export interface CaptureConfig {
  dir: string;
  rotateBytes: number;
  maxFiles: number;
}

/** A traced packet queued for sendmmsg: its udp-send event is reported once the call returns. */
interface PendingSend {
  packet: number;
  buf: Uint8Array;
  queue: number;
  start: number;
  length: number;
  peer: number;
  /** Over the IPv6 underlay: the destination PublicIPv6 (16 bytes). */
  peer6: Uint8Array | undefined;
  srcPort: number;
  datagrams: number;
}

/** A traced packet handed to the coalescer: its tun-write is reported after the batch's writes. */
interface PendingWrite {
  packet: number;
  off: number;
  length: number;
}

export class ForwarderObserver {
  tracer: WorkerTracer | undefined;
  captures: WorkerCaptures | undefined;
  /** The loop's last clock reading, for the trace limiter (no clock read per packet). */
  nowMs = 0;
  /** Scratch for a capture record's synthetic headers, either family. */
  private readonly prefix = new Uint8Array(SYNTHETIC_UDP6_PREFIX);
  /** localIp6 as four big-endian int32 words, for IPv6-underlay captures (zeros without one). */
  private readonly localIp6Words = new Int32Array(4);
  private pendingSends: PendingSend[] = [];
  private pendingWrites: PendingWrite[] = [];
  private captureTimeNs = 0;

  constructor(
    readonly worker: number,
    private readonly localIp: number,
    private readonly localPort: number,
    private readonly peerPort: number,
    /** Source port of each send socket (VXLAN: one per flow hash). */
    private readonly sendPorts: number[],
    private readonly payloadLayers: TraceLayers,
    /** This node's public IPv6 (16 bytes), when it has the IPv6 underlay: the outer source traces show. */
    private readonly localIp6: Uint8Array | undefined = undefined,
  ) {
    if (localIp6 !== undefined) {
      for (let w = 0; w < 4; w++) {
        this.localIp6Words[w] = (localIp6[4 * w] << 24) | (localIp6[4 * w + 1] << 16) | (localIp6[4 * w + 2] << 8) | localIp6[4 * w + 3];
      }
    }
  }

  /** Starts (or replaces) the trace; events go to `post`. */
  startTrace(cfg: WorkerTraceConfig, post: (ev: TraceEvent) => void): void {
    this.tracer = new WorkerTracer(cfg, post);
    this.pendingSends = [];
    this.pendingWrites = [];
  }

  stopTrace(): void {
    this.tracer = undefined;
  }

  startCapture(cfg: CaptureConfig): void {
    this.captures = new WorkerCaptures(cfg.dir, this.worker, { rotateBytes: cfg.rotateBytes, maxFiles: cfg.maxFiles });
  }

  get idle(): boolean {
    return this.tracer === undefined && this.captures === undefined;
  }

  /** Once per loop turn: the clock for the limiter and captures, and a flush at most every 100 ms. */
  tick(nowMs: number): void {
    this.nowMs = nowMs;
    if (this.captures) {
      this.captureTimeNs = wallClockNs();
      this.captures.maybeFlush(nowMs);
    }
  }

  close(): void {
    this.captures?.close();
    this.captures = undefined;
  }

  // ---- TUN → UDP ----

  /** A packet read from the TUN: captured, and admitted to the trace or not (returns its trace number or -1). */
  tunRead(buf: Uint8Array, off: number, length: number, superPacket: boolean): number {
    this.captures?.tunIn.write(buf, off, length, this.captureTimeNs);
    const t = this.tracer;
    if (t === undefined) return -1;
    const packet = t.admit(buf, off, this.nowMs);
    if (packet >= 0) {
      t.emit(packet, 'tun-read', 'ip', buf, off, length, {
        note: superPacket ? `a TSO super-packet of ${length} bytes: the kernel handed over many TCP segments in one read` : undefined,
      });
    }
    return packet;
  }

  leaseLookup(packet: number, buf: Uint8Array, off: number, length: number, table: LeaseTable, lease: number): void {
    const t = this.tracer;
    if (t === undefined || packet < 0) return;
    if (lease < 0) {
      t.emit(packet, 'lease-lookup', 'ip', buf, off, length, { lease: null, note: 'no lease covers the destination' });
      return;
    }
    const v6 = buf[off] >>> 4 === 6;
    const key = leaseKey(table, lease, v6);
    t.emit(packet, 'lease-lookup', 'ip', buf, off, length, {
      lease: { key, publicIp: formatIPv4(table.publicIpAt(lease)) },
      note: `longest prefix match${v6 ? ' in the IPv6 table' : ''}: ${key.replace(/-(\d+)$/, '/$1')} is node ${formatIPv4(table.publicIpAt(lease))}; ${v6 ? 'hop limit' : 'TTL'} decremented`,
    });
  }

  encapsulated(packet: number, buf: Uint8Array, start: number, length: number, segments: number): void {
    const t = this.tracer;
    if (t === undefined || packet < 0) return;
    t.emit(packet, 'encapsulate', this.payloadLayers, buf, start, length, {
      note:
        segments > 1
          ? `cut into ${segments} wire-sized packets (headers rebuilt in an arena, payloads left in place); the first is shown`
          : this.payloadLayers === 'udp-payload'
            ? 'UDP mode: the UDP payload is the bare inner packet; the kernel adds outer IPv4 and UDP'
            : 'VXLAN and Ethernet headers written into the headroom in front of the packet',
    });
  }

  /** A traced packet is in send queue `queue`; reported as udp-send after that queue's sendmmsg. */
  queuedSend(packet: number, queue: number, buf: Uint8Array, start: number, length: number, peer: number, datagrams: number, peer6?: Uint8Array): void {
    if (this.tracer === undefined || packet < 0) return;
    this.pendingSends.push({ packet, buf, queue, start, length, peer, peer6, srcPort: this.sendPorts[queue] ?? this.peerPort, datagrams });
  }

  /** After sendmmsg on queue `queue`: the udp-send events of its traced packets. */
  sent(queue: number, messages: number): void {
    const t = this.tracer;
    if (t === undefined || this.pendingSends.length === 0) return;
    const rest: PendingSend[] = [];
    for (const p of this.pendingSends) {
      if (p.queue !== queue) {
        rest.push(p);
        continue;
      }
      const note = `sendmmsg: ${messages} message(s) in one call${p.datagrams > 1 ? `; this one becomes ${p.datagrams} datagrams (UDP GSO)` : ''}`;
      if (p.peer6 !== undefined) {
        t.emitOuter6(p.packet, 'udp-send', this.localIp6 ?? new Uint8Array(16), p.peer6, p.srcPort, this.peerPort, p.buf, p.start, p.length, {
          note: `${note}; over the IPv6 underlay, to the lease's PublicIPv6`,
        });
      } else {
        t.emitOuter(p.packet, 'udp-send', this.localIp, p.peer, p.srcPort, this.peerPort, p.buf, p.start, p.length, { note });
      }
    }
    this.pendingSends = rest;
  }

  /** One datagram as it leaves: [a header piece, a payload piece] (the header piece may be empty). */
  captureUdpOut(buf: Uint8Array, headerOff: number, headerLength: number, payloadOff: number, payloadLength: number, peer: number, queue: number): void {
    const cap = this.captures;
    if (cap === undefined) return;
    const length = headerLength + payloadLength;
    writeSyntheticUdpPrefix(this.prefix, 0, undefined, undefined, this.localIp | 0, peer | 0, this.sendPorts[queue] ?? this.peerPort, this.peerPort, length, 0);
    cap.udpOut.begin(SYNTHETIC_UDP_PREFIX + length, this.captureTimeNs);
    cap.udpOut.append(this.prefix, 0, SYNTHETIC_UDP_PREFIX);
    if (headerLength > 0) cap.udpOut.append(buf, headerOff, headerLength);
    cap.udpOut.append(buf, payloadOff, payloadLength);
    cap.udpOut.end();
  }

  /**
   * captureUdpOut for a datagram over the IPv6 underlay, to the PublicIPv6 at
   * peer6[peer6At..+4) (the lease table's publicIpv6Words): an outer IPv6
   * header, and the UDP checksum computed over the pieces (see
   * writeSyntheticUdp6Prefix for why).
   */
  captureUdpOut6(buf: Uint8Array, headerOff: number, headerLength: number, payloadOff: number, payloadLength: number, peer6: Int32Array, peer6At: number, queue: number): void {
    const cap = this.captures;
    if (cap === undefined) return;
    const length = headerLength + payloadLength;
    const sum = udpPayloadSum(buf, headerOff, headerLength, buf, payloadOff, payloadLength);
    writeSyntheticUdp6Prefix(this.prefix, 0, this.localIp6Words, 0, peer6, peer6At, this.sendPorts[queue] ?? this.peerPort, this.peerPort, length, sum);
    cap.udpOut.begin(SYNTHETIC_UDP6_PREFIX + length, this.captureTimeNs);
    cap.udpOut.append(this.prefix, 0, SYNTHETIC_UDP6_PREFIX);
    if (headerLength > 0) cap.udpOut.append(buf, headerOff, headerLength);
    cap.udpOut.append(buf, payloadOff, payloadLength);
    cap.udpOut.end();
  }

  // ---- UDP → TUN ----

  captureUdpIn(buf: Uint8Array, off: number, length: number, peerIp: number, peerPort: number): void {
    const cap = this.captures;
    if (cap === undefined) return;
    writeSyntheticUdpPrefix(this.prefix, 0, undefined, undefined, peerIp | 0, this.localIp | 0, peerPort, this.localPort, length, 0);
    cap.udpIn.begin(SYNTHETIC_UDP_PREFIX + length, this.captureTimeNs);
    cap.udpIn.append(this.prefix, 0, SYNTHETIC_UDP_PREFIX);
    cap.udpIn.append(buf, off, length);
    cap.udpIn.end();
  }

  /** captureUdpIn for a datagram received over the IPv6 underlay, from the address at from6[from6At..+4) (the batch's sourceIp6). */
  captureUdpIn6(buf: Uint8Array, off: number, length: number, from6: Int32Array, from6At: number, peerPort: number): void {
    const cap = this.captures;
    if (cap === undefined) return;
    const sum = udpPayloadSum(buf, off, length, buf, off, 0);
    writeSyntheticUdp6Prefix(this.prefix, 0, from6, from6At, this.localIp6Words, 0, peerPort, this.localPort, length, sum);
    cap.udpIn.begin(SYNTHETIC_UDP6_PREFIX + length, this.captureTimeNs);
    cap.udpIn.append(this.prefix, 0, SYNTHETIC_UDP6_PREFIX);
    cap.udpIn.append(buf, off, length);
    cap.udpIn.end();
  }

  /** A received datagram whose inner packet is valid: admitted or not; reports receive, validation and decapsulation. */
  received(
    buf: Uint8Array,
    off: number,
    length: number,
    inner: number,
    innerLength: number,
    peerIp: number,
    peerPort: number,
    table: LeaseTable,
    peer: number,
    outer6 = false,
  ): number {
    const t = this.tracer;
    if (t === undefined) return -1;
    const packet = t.admit(buf, inner, this.nowMs);
    if (packet < 0) return -1;
    // Over the IPv6 underlay the sender is the lease's PublicIPv6 (it was found by it).
    const from6 = outer6 ? table.publicIpv6Bytes.slice(16 * peer, 16 * peer + 16) : undefined;
    if (from6 !== undefined) {
      t.emitOuter6(packet, 'udp-receive', from6, this.localIp6 ?? new Uint8Array(16), peerPort, this.localPort, buf, off, length, {
        note: 'recvmmsg on the IPv6 underlay\'s socket: a batch of datagrams in one call',
      });
    } else {
      t.emitOuter(packet, 'udp-receive', peerIp, this.localIp, peerPort, this.localPort, buf, off, length, {
        note: 'recvmmsg: a batch of datagrams in one call',
      });
    }
    const v6 = buf[inner] >>> 4 === 6;
    t.emit(packet, 'validate', 'ip', buf, inner, innerLength, {
      note: `sent by ${from6 !== undefined ? formatIPv6(from6) : formatIPv4(peerIp)}, the node of lease ${leaseKey(table, peer, v6)}; ${v6 ? 'payload length good (IPv6 has no header checksum)' : 'header checksum and lengths good'}`,
    });
    t.emit(packet, 'decapsulate', 'ip', buf, inner, innerLength, {
      note: inner === off ? 'UDP mode: the payload is the inner packet, nothing to strip' : `${inner - off} bytes of VXLAN and Ethernet header skipped; ${v6 ? 'hop limit' : 'TTL'} decremented`,
    });
    return packet;
  }

  /** A traced packet that will be written to the TUN (now, or with the batch's coalesced writes). */
  willWrite(packet: number, off: number, length: number): void {
    if (packet >= 0 && this.tracer !== undefined) this.pendingWrites.push({ packet, off, length });
  }

  /** After the TUN writes of a batch: the tun-write events. */
  written(buf: Uint8Array, syscall: 'write' | 'writev', coalesced: boolean): void {
    const t = this.tracer;
    if (t === undefined || this.pendingWrites.length === 0) return;
    for (const w of this.pendingWrites) {
      t.emit(w.packet, 'tun-write', 'ip', buf, w.off, w.length, {
        syscall,
        note: coalesced
          ? "written with the batch's TUN writes: a virtio-net header in front; consecutive TCP or UDP segments of one flow would be merged into one super-packet (GRO)"
          : undefined,
      });
    }
    this.pendingWrites = [];
  }

  captureTunOut(buf: Uint8Array, off: number, length: number): void {
    this.captures?.tunOut.write(buf, off, length, this.captureTimeNs);
  }

  /** A coalesced TUN write: its IPv4 header(s) then the payload slices, as one captured packet. */
  captureTunOutBegin(totalLength: number): void {
    this.captures?.tunOut.begin(totalLength, this.captureTimeNs);
  }

  captureTunOutAppend(buf: Uint8Array, off: number, length: number): void {
    this.captures?.tunOut.append(buf, off, length);
  }

  captureTunOutEnd(): void {
    this.captures?.tunOut.end();
  }

  /** A traced packet that is not forwarded. */
  dropped(packet: number, buf: Uint8Array, off: number, length: number, reason: string, note?: string): void {
    const t = this.tracer;
    if (t === undefined || packet < 0) return;
    t.emit(packet, 'drop', 'ip', buf, off, length, { drop: reason, note });
  }
}

/**
 * A lease as flannel keys it, for traces: the IPv4 half ("10.244.2.0-24"),
 * or with `v6` the IPv6 half ("fd00:10:244:2::-64"); a lease without the
 * half asked for gives the other (an IPv6-only lease has no IPv4 half).
 */
function leaseKey(table: LeaseTable, lease: number, v6: boolean): string {
  if ((v6 || (table.prefixLengthAt(lease) === 0 && table.subnetNetworkAt(lease) === 0)) && table.hasIpv6At(lease)) {
    const net = new Uint8Array(16);
    table.subnetNetwork6At(lease, net);
    return `${formatIPv6(net)}-${table.prefixLength6At(lease)}`;
  }
  return `${formatIPv4(table.subnetNetworkAt(lease))}-${table.prefixLengthAt(lease)}`;
}
