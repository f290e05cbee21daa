// One worker's memory, laid out once at start: the pool slots both
// directions use and the header arenas of the offload path. Both device
// implementations and the forwarder are built on it.
import { PacketPool } from './packet-pool.js';
import { MAX_PACKET, TX_ARENA_STRIDE, RX_ARENA_STRIDE } from './frame-tun.js';
import { GSO_MAX_SEGMENTS } from './send-policy.js';

/** Room in front of every packet: the virtio header on TUN reads, the encapsulation's header on sends. */
export const HEADROOM = 32;
/** Segment headers one TUN read batch may cut (the tx arena); a larger super-packet comes in runs. */
export const TX_ARENA_SEGMENTS = 1024;

export class WorkerMemory {
  readonly pool: PacketPool;
  /** Slots [0, B): TUN reads, the source of the send batch. */
  readonly readSlots: Int32Array;
  /** Slots [B, 2B): the receive batch, written to the TUN from where it landed. */
  readonly receiveSlots: Int32Array;
  readonly firstReceiveSlot: number;
  /** One more slot for the ICMP errors this node answers with. */
  readonly icmpOffset: number;
  readonly txArenaOffset: number;
  readonly txArenaSegments: number;
  readonly rxArenaOffset: number;
  readonly rxArenaWrites: number;
  /** Datagrams one receive may hand over (a GRO message is up to 64). */
  readonly maxDatagrams: number;

  constructor(
    readonly batchSize: number,
    readonly vnetHeader: boolean,
    mtu: number,
  ) {
    // Plain slots hold one packet; with offloads one super-packet or GRO message.
    // Either way the capacity leaves room past the largest legal packet, so an
    // oversized datagram shows up as such (MSG_TRUNC) instead of being cut silently.
    const capacity = vnetHeader ? MAX_PACKET + 1 : Math.max(mtu, 2048) + 64;
    this.maxDatagrams = vnetHeader ? batchSize * GSO_MAX_SEGMENTS : batchSize;
    this.txArenaSegments = vnetHeader ? TX_ARENA_SEGMENTS : 0;
    this.rxArenaWrites = vnetHeader ? this.maxDatagrams : 0;
    const txBytes = this.txArenaSegments * TX_ARENA_STRIDE;
    this.pool = new PacketPool(2 * batchSize + 1, capacity, HEADROOM, txBytes + this.rxArenaWrites * RX_ARENA_STRIDE);
    this.readSlots = this.pool.packetOffsets.slice(0, batchSize);
    this.receiveSlots = this.pool.packetOffsets.slice(batchSize, 2 * batchSize);
    this.firstReceiveSlot = batchSize;
    this.icmpOffset = this.pool.packetOffsets[2 * batchSize];
    this.txArenaOffset = this.pool.extraOffset;
    this.rxArenaOffset = this.pool.extraOffset + txBytes;
  }
}
