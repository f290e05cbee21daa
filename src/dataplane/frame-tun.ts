// What every TUN device implementation shares: turning frames into packets
// on read and packets into frames on write. A frame is what crosses the
// kernel boundary: a bare IPv4 packet, or (IFF_VNET_HDR) a virtio_net_hdr
// followed by a packet that may be a TSO/USO super-packet. Subclasses supply
// only the two frame primitives (kernel-tun.ts: read()/write()/writev() on a
// file descriptor; memory-tun.ts: arrays, for tests), so the tests run the
// same split and merge code as the agent.
//
// Reads: a super-packet is cut here (segmentation.ts) into wire-sized
// segments whose headers go to the tx arena, each with the encapsulation's
// headroom in front; payloads stay in the slot. The arena bounds the
// segments per batch; a super-packet with more than fit is handed over in
// runs over consecutive reads (its slot is kept aside meanwhile), so no
// segment count is too many. Writes: with vnet headers, the batch's TCP (and,
// with USO, UDP) segments of one flow are merged (coalescing.ts) into one
// super-packet written with one writev(); without, one write() per packet.
import { Counter, DROPS_BASE } from './worker-stats.js';
import type { PacketPool } from './packet-pool.js';
import type { PacketList, TunReadBatch } from './batches.js';
import type { TunDevice, TunWriteCapture } from './tun.js';
import { DropReason } from '../encap/drop-reasons.js';
import { validateIPv4, ipv4TotalLength, IPV4_OFFSET_PROTOCOL } from '../encap/ipv4.js';
import {
  VirtioNetHeader,
  VIRTIO_NET_HDR_LEN,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  completePartialChecksum,
} from '../encap/virtio-net-header.js';
import { splitSuperPacketRange, splitSuperPacketRange6 } from '../encap/segmentation.js';
import { validateIPv6, ipv6TotalLength, IPV6_HEADER } from '../encap/ipv6.js';
import { CoalesceBatch, COALESCE_MAX_TCP_SEGMENTS } from '../encap/coalescing.js';

/** Largest IPv4 packet, and so the largest super-packet or merged write. */
export const MAX_PACKET = 65535;
/** Per segment header in the tx arena: encapsulation headroom + IPv4 (≤ 60) + TCP (≤ 60), rounded up. */
export const TX_ARENA_STRIDE = 160;
/** Per merged write in the rx arena: virtio header + IPv4 + TCP headers. */
export const RX_ARENA_STRIDE = 144;
/** Pieces of one write: a header, then one per merged segment (writev's UIO_MAXIOV in all). */
export const MAX_WRITE_PIECES = 1 + COALESCE_MAX_TCP_SEGMENTS;
/** Result of a frame primitive when the kernel queue is empty. */
export const FRAME_EMPTY = -11; // -EAGAIN

export interface FrameTunOptions {
  pool: PacketPool;
  /** Pool offsets of the slots reads go into (where the IPv4 header lands). */
  readSlots: Int32Array;
  /** Frames carry a virtio_net_hdr (offloads). */
  vnetHeader: boolean;
  /** The device takes merged UDP writes (TUN_F_USO4). */
  uso: boolean;
  /** VXLAN: verify each TCP segment's checksum before merging (nothing else vouches for the inner bytes). */
  verifyBeforeMerge: boolean;
  /** Tx arena (segment headers) and rx arena (merged write headers), pool offsets and sizes. */
  txArenaOffset: number;
  txArenaSegments: number;
  rxArenaOffset: number;
  rxArenaWrites: number;
  /** Bytes each segment header leaves in front of itself for the encapsulation. */
  segmentHeadroom: number;
  /** The most packets one write() call of the forwarder hands over. */
  maxWritePackets: number;
  counters: Float64Array;
}

export abstract class FrameTun implements TunDevice {
  capture: TunWriteCapture | undefined;
  protected readonly pool: PacketPool;
  protected readonly bytes: Uint8Array;
  protected readonly c: Float64Array;
  private readonly vnet: boolean;
  private readonly headerLength: number;
  private readonly frameCapacity: number;
  private readonly slots: Int32Array;
  private readonly vh = new VirtioNetHeader();
  private readonly coalescer: CoalesceBatch | undefined;
  private readonly rxArenaOffset: number;
  /** A super-packet whose later segments are still to be handed over: its read position, or -1. */
  private pendingPosition = -1;
  private pendingLength = 0;
  private pendingNext = 0;
  /** The pieces of the frame being written, as pool offsets. */
  protected readonly pieceOffset = new Int32Array(MAX_WRITE_PIECES);
  protected readonly pieceLength = new Int32Array(MAX_WRITE_PIECES);

  constructor(protected readonly opts: FrameTunOptions) {
    this.pool = opts.pool;
    this.bytes = opts.pool.bytes;
    this.c = opts.counters;
    this.vnet = opts.vnetHeader;
    this.headerLength = opts.vnetHeader ? VIRTIO_NET_HDR_LEN : 0;
    this.frameCapacity = opts.pool.capacity + this.headerLength;
    this.slots = Int32Array.from(opts.readSlots);
    this.rxArenaOffset = opts.rxArenaOffset;
    this.coalescer = opts.vnetHeader
      ? new CoalesceBatch(opts.maxWritePackets, Math.min(opts.maxWritePackets, opts.rxArenaWrites), opts.verifyBeforeMerge, opts.uso)
      : undefined;
  }

  /** Reads one frame to pool offset `offset` (at most `maxLength` bytes): its length, FRAME_EMPTY, or another -errno. */
  protected abstract readFrame(offset: number, maxLength: number): number;
  /** Writes pieceOffset/pieceLength[0, pieces) as one frame of `total` bytes: the bytes written, or -errno. */
  protected abstract writeFrame(pieces: number, total: number): number;

  read(batch: TunReadBatch): void {
    const c = this.c;
    const bytes = this.bytes;
    const hl = this.headerLength;
    const segments = batch.segments;
    batch.reset();
    if (this.pendingPosition >= 0 && !this.resumeSuperPacket(batch)) return;
    while (batch.reads < batch.capacity && batch.count < batch.capacity && segments.count < segments.capacity) {
      const off = this.slots[batch.count];
      const n = this.readFrame(off - hl, this.frameCapacity);
      if (n < 0) {
        if (n === FRAME_EMPTY) batch.drained = true;
        break; // the kernel implementation throws on anything worse
      }
      batch.reads++;
      c[Counter.TunReadPackets]++;
      c[Counter.TunReadBytes] += n;
      if (n < hl) {
        c[DROPS_BASE + DropReason.TooShort]++;
        continue;
      }
      if (!this.vnet) {
        batch.addPacket(off, n);
        continue;
      }
      const vh = this.vh;
      vh.read(bytes, off - hl);
      const length = n - hl;
      if ((vh.gsoType & 0x7f) === VIRTIO_NET_HDR_GSO_NONE) {
        // A single packet whose L4 checksum the kernel left for the "hardware":
        // finish it, since the wire packet must be valid on its own. A malformed
        // one is left for the forwarder's validation to drop and count.
        if ((vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && validateIPv4(bytes, off, length) === DropReason.None) {
          if (!completePartialChecksum(bytes, off, ipv4TotalLength(bytes, off), vh.csumStart, vh.csumOffset)) {
            c[DROPS_BASE + DropReason.BadVirtioNetHeader]++;
            continue;
          }
        } else if ((vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && bytes[off] >>> 4 === 6 && validateIPv6(bytes, off, length) === DropReason.None) {
          // The same for IPv6 (TUN_F_CSUM covers both families).
          if (!completePartialChecksum(bytes, off, ipv6TotalLength(bytes, off), vh.csumStart, vh.csumOffset)) {
            c[DROPS_BASE + DropReason.BadVirtioNetHeader]++;
            continue;
          }
        }
        batch.addPacket(off, length);
        continue;
      }
      if (!this.addSuperPacket(batch, off, length, 0)) break;
    }
  }

  /**
   * Cuts segments [first, …) of the super-packet at off into the batch, as
   * many as the arena still holds. False when some are left for the next read.
   */
  private addSuperPacket(batch: TunReadBatch, off: number, length: number, first: number): boolean {
    const segments = batch.segments;
    const start = segments.count;
    const o = this.opts;
    // TSO6/USO6 super-packets are cut in userspace too (plain segments on the wire, as for IPv4).
    const v6 = this.bytes[off] >>> 4 === 6;
    const n = v6
      ? splitSuperPacketRange6(
          this.bytes, off, length, this.vh, first, segments.capacity - start,
          o.txArenaOffset, TX_ARENA_STRIDE, o.segmentHeadroom, segments, start,
        )
      : splitSuperPacketRange(
          this.bytes, off, length, this.vh, first, segments.capacity - start,
          o.txArenaOffset, TX_ARENA_STRIDE, o.segmentHeadroom, segments, start,
        );
    if (n < 0) {
      this.c[DROPS_BASE - n]++;
      return true;
    }
    const b = this.bytes;
    const ihl = v6 ? IPV6_HEADER : (b[off] & 0x0f) << 2;
    const l4 = (v6 ? b[off + 6] : b[off + IPV4_OFFSET_PROTOCOL]) === 6 ? (b[off + ihl + 12] >>> 4) << 2 : 8;
    batch.addSuperPacket(off, length, start, first, ihl + l4 + this.vh.gsoSize);
    if (first === 0) this.c[Counter.SuperPacketsSplit]++;
    this.c[Counter.SegmentsFromSplit] += n;
    if (first + n >= segments.total) return true;
    // The rest comes first in the next read: keep this slot out of its reads.
    const position = batch.count - 1;
    this.pendingPosition = position;
    this.pendingLength = length;
    this.pendingNext = first + n;
    return false;
  }

  /** The next run of a super-packet left over from the last read, as packet 0 of this one. */
  private resumeSuperPacket(batch: TunReadBatch): boolean {
    const slots = this.slots;
    const off = slots[this.pendingPosition];
    slots[this.pendingPosition] = slots[0];
    slots[0] = off;
    this.pendingPosition = -1;
    // The header was read with the packet; read it again from the slot (nothing wrote there since).
    this.vh.read(this.bytes, off - this.headerLength);
    return this.addSuperPacket(batch, off, this.pendingLength, this.pendingNext);
  }

  write(packets: PacketList): void {
    if (this.coalescer === undefined) {
      for (let i = 0; i < packets.count; i++) this.writeOne(packets.offset[i], packets.length[i]);
    } else {
      this.writeMerged(packets, this.coalescer);
    }
    packets.reset();
  }

  reply(off: number, length: number): boolean {
    const hl = this.headerLength;
    if (hl > 0) this.bytes.fill(0, off - hl, off); // a plain packet: no offload requested
    this.capture?.captureTunOut(this.bytes, off, length);
    this.pieceOffset[0] = off - hl;
    this.pieceLength[0] = length + hl;
    return this.writeFrame(1, length + hl) === length + hl;
  }

  private writeOne(off: number, length: number): void {
    this.capture?.captureTunOut(this.bytes, off, length);
    this.pieceOffset[0] = off;
    this.pieceLength[0] = length;
    const w = this.writeFrame(1, length);
    if (w !== length) {
      this.c[DROPS_BASE + DropReason.TunWriteFailed]++;
      return;
    }
    this.c[Counter.TunWrittenPackets]++;
    this.c[Counter.TunWrittenBytes] += length;
  }

  /** The packets, consecutive segments of a flow merged into one super-packet each. */
  private writeMerged(packets: PacketList, co: CoalesceBatch): void {
    const c = this.c;
    const bytes = this.bytes;
    for (let i = 0; i < packets.count; i++) co.add(bytes, packets.offset[i], packets.length[i]);
    const writes = co.finish(bytes, this.rxArenaOffset, RX_ARENA_STRIDE);
    for (let w = 0; w < writes; w++) {
      const firstSegment = co.writeSegmentStart[w];
      const segmentCount = co.writeSegmentEnd[w] - firstSegment;
      if (segmentCount + 1 > MAX_WRITE_PIECES) {
        // Unreachable while coalescing.ts closes groups at COALESCE_MAX_TCP_SEGMENTS: a guard, not a policy.
        c[DROPS_BASE + DropReason.TooManySegments] += segmentCount;
        continue;
      }
      const headerOffset = co.writeHeaderOffset[w];
      const headerLength = co.writeHeaderLength[w];
      this.pieceOffset[0] = headerOffset;
      this.pieceLength[0] = headerLength;
      let total = headerLength;
      for (let s = 0; s < segmentCount; s++) {
        this.pieceOffset[s + 1] = co.segmentOffset[firstSegment + s];
        this.pieceLength[s + 1] = co.segmentLength[firstSegment + s];
        total += co.segmentLength[firstSegment + s];
      }
      const cap = this.capture;
      if (cap !== undefined) {
        // The capture shows the IPv4 packet the kernel receives: without the virtio header.
        cap.captureTunOutBegin(total - VIRTIO_NET_HDR_LEN);
        cap.captureTunOutAppend(bytes, headerOffset + VIRTIO_NET_HDR_LEN, headerLength - VIRTIO_NET_HDR_LEN);
        for (let s = 1; s <= segmentCount; s++) cap.captureTunOutAppend(bytes, this.pieceOffset[s], this.pieceLength[s]);
        cap.captureTunOutEnd();
      }
      if (this.writeFrame(segmentCount + 1, total) !== total) {
        c[DROPS_BASE + DropReason.TunWriteFailed]++;
        continue;
      }
      c[Counter.TunWrittenPackets]++;
      c[Counter.TunWrittenBytes] += total - VIRTIO_NET_HDR_LEN;
      if (headerLength > VIRTIO_NET_HDR_LEN) {
        c[Counter.CoalescedWrites]++;
        c[Counter.SegmentsCoalesced] += segmentCount;
      }
    }
    co.reset();
  }
}
