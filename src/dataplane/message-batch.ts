// An array of struct mmsghdr for recvmmsg/sendmmsg, wired once to a range of
// pool slots. One syscall then moves up to `count` datagrams; per packet the
// hot path only rewrites a length, a base address and a destination. With
// `controlBytes`, each message also gets room for control messages (UDP_GRO
// reports the size of the datagrams the kernel coalesced into one message).
import * as libc from './libc.js';
import type { PacketPool } from './packet-pool.js';
import { writeSockaddrIn } from './udp-socket.js';

export class MessageBatch {
  readonly memory: libc.NativeMemory;
  private readonly iovBase: number;
  private readonly nameBase: number;
  private readonly controlBase: number;

  constructor(
    readonly pool: PacketPool,
    readonly firstSlot: number,
    readonly count: number,
    readonly controlBytes = 0,
  ) {
    this.iovBase = count * libc.SIZEOF_MMSGHDR;
    this.nameBase = this.iovBase + count * libc.SIZEOF_IOVEC;
    this.controlBase = this.nameBase + count * libc.SIZEOF_SOCKADDR_IN;
    this.memory = new libc.NativeMemory(this.controlBase + count * controlBytes);
    const base = this.memory.address;
    for (let i = 0; i < count; i++) {
      const msg = i * libc.SIZEOF_MMSGHDR;
      this.memory.setU64(msg + libc.MSGHDR_NAME, base + this.nameBase + i * libc.SIZEOF_SOCKADDR_IN);
      this.memory.setU64(msg + libc.MSGHDR_IOV, base + this.iovBase + i * libc.SIZEOF_IOVEC);
      this.memory.setU64(msg + libc.MSGHDR_IOVLEN, 1);
      writeSockaddrIn(this.memory, this.nameBase + i * libc.SIZEOF_SOCKADDR_IN, 0, 0);
      this.memory.setU64(this.iovBase + i * libc.SIZEOF_IOVEC, pool.memory.address + pool.packetOffsets[firstSlot + i]);
      this.memory.view.setUint32(this.iovBase + i * libc.SIZEOF_IOVEC + 8, pool.capacity, true);
      this.memory.view.setUint32(msg + libc.MSGHDR_NAMELEN, libc.SIZEOF_SOCKADDR_IN, true);
      if (controlBytes > 0) this.memory.setU64(msg + libc.MSGHDR_CONTROL, base + this.controlBase + i * controlBytes);
    }
  }

  get address(): number {
    return this.memory.address;
  }

  /** Before recvmmsg: the kernel overwrites msg_namelen and msg_controllen, so restore them, and the full slot capacity. */
  prepareReceive(n: number): void {
    const view = this.memory.view;
    for (let i = 0; i < n; i++) {
      const msg = i * libc.SIZEOF_MMSGHDR;
      view.setUint32(msg + libc.MSGHDR_NAMELEN, libc.SIZEOF_SOCKADDR_IN, true);
      view.setUint32(msg + libc.MSGHDR_CONTROLLEN, this.controlBytes, true);
      view.setUint32(this.iovBase + i * libc.SIZEOF_IOVEC + 8, this.pool.capacity, true);
    }
  }

  /**
   * The datagram size the kernel reported with UDP_GRO for message i, or 0
   * when the message is a single datagram (no UDP_GRO control message).
   */
  groSegmentSize(i: number): number {
    if (this.controlBytes === 0) return 0;
    const view = this.memory.view;
    const controlLength = view.getUint32(i * libc.SIZEOF_MMSGHDR + libc.MSGHDR_CONTROLLEN, true);
    let c = this.controlBase + i * this.controlBytes;
    const end = c + controlLength;
    while (c + libc.SIZEOF_CMSGHDR <= end) {
      const len = view.getUint32(c, true);
      if (len < libc.SIZEOF_CMSGHDR) return 0;
      if (view.getInt32(c + 8, true) === libc.SOL_UDP && view.getInt32(c + 12, true) === libc.UDP_GRO) {
        return view.getInt32(c + libc.SIZEOF_CMSGHDR, true);
      }
      c += (len + 7) & ~7;
    }
    return 0;
  }

  /** Bytes the kernel received into (or sent from) message i. */
  messageLength(i: number): number {
    return this.memory.view.getUint32(i * libc.SIZEOF_MMSGHDR + libc.MMSGHDR_LEN, true);
  }

  messageFlags(i: number): number {
    return this.memory.view.getInt32(i * libc.SIZEOF_MMSGHDR + libc.MSGHDR_FLAGS, true);
  }

  /** The sender's IPv4 address as a signed 32-bit integer: never a heap number on the hot path (see LeaseTable.publicIps). */
  sourceAddress(i: number): number {
    return this.memory.view.getInt32(this.nameBase + i * libc.SIZEOF_SOCKADDR_IN + 4, false);
  }

  sourcePort(i: number): number {
    return this.memory.view.getUint16(this.nameBase + i * libc.SIZEOF_SOCKADDR_IN + 2, false);
  }
}
