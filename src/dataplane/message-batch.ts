// An array of struct mmsghdr for recvmmsg/sendmmsg, wired once to a range of
// pool slots. One syscall then moves up to `count` datagrams; per packet the
// hot path only rewrites a length, a base address and a destination. With
// `controlBytes`, each message also gets room for control messages (UDP_GRO
// reports the size of the datagrams the kernel coalesced into one message).
// `ipv6`: the sender names are sockaddr_in6 (the IPv6 underlay's socket).
import * as libc from './libc.js';
import type { PacketPool } from './packet-pool.js';
import { writeSockaddrIn, writeSockaddrIn6 } from './udp-socket.js';

export class MessageBatch {
  readonly memory: libc.NativeMemory;
  private readonly iovBase: number;
  private readonly nameBase: number;
  private readonly controlBase: number;
  /** sizeof the sender's sockaddr: sockaddr_in, or sockaddr_in6 on the IPv6 underlay. */
  private readonly nameSize: number;

  constructor(
    readonly pool: PacketPool,
    readonly firstSlot: number,
    readonly count: number,
    readonly controlBytes = 0,
    ipv6 = false,
  ) {
    const nameSize = ipv6 ? libc.SIZEOF_SOCKADDR_IN6 : libc.SIZEOF_SOCKADDR_IN;
    this.nameSize = nameSize;
    this.iovBase = count * libc.SIZEOF_MMSGHDR;
    this.nameBase = this.iovBase + count * libc.SIZEOF_IOVEC;
    // Rounded up to 8 bytes: the control messages after the names hold 8-byte fields.
    this.controlBase = this.nameBase + ((count * nameSize + 7) & ~7);
    this.memory = new libc.NativeMemory(this.controlBase + count * controlBytes);
    const base = this.memory.address;
    for (let i = 0; i < count; i++) {
      const msg = i * libc.SIZEOF_MMSGHDR;
      this.memory.setU64(msg + libc.MSGHDR_NAME, base + this.nameBase + i * nameSize);
      this.memory.setU64(msg + libc.MSGHDR_IOV, base + this.iovBase + i * libc.SIZEOF_IOVEC);
      this.memory.setU64(msg + libc.MSGHDR_IOVLEN, 1);
      if (ipv6) writeSockaddrIn6(this.memory, this.nameBase + i * nameSize, undefined, 0);
      else writeSockaddrIn(this.memory, this.nameBase + i * nameSize, 0, 0);
      this.memory.setU64(this.iovBase + i * libc.SIZEOF_IOVEC, pool.memory.address + pool.packetOffsets[firstSlot + i]);
      this.memory.view.setUint32(this.iovBase + i * libc.SIZEOF_IOVEC + 8, pool.capacity, true);
      this.memory.view.setUint32(msg + libc.MSGHDR_NAMELEN, nameSize, true);
      if (controlBytes > 0) this.memory.setU64(msg + libc.MSGHDR_CONTROL, base + this.controlBase + i * controlBytes);
    }
  }

  get address(): number {
    return this.memory.address;
  }

  /** Before recvmmsg: the kernel overwrites msg_namelen and msg_controllen, so restore them, and the full slot capacity. */
  prepareReceive(n: number): void {
    const view = this.memory.view;
    const nameSize = this.nameSize;
    for (let i = 0; i < n; i++) {
      const msg = i * libc.SIZEOF_MMSGHDR;
      view.setUint32(msg + libc.MSGHDR_NAMELEN, nameSize, true);
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
    return this.memory.view.getInt32(this.nameBase + i * this.nameSize + 4, false);
  }

  /** IPv6 underlay: word w (0..3) of the sender's IPv6 address, big-endian, as int32. */
  sourceWord6(i: number, w: number): number {
    return this.memory.view.getInt32(this.nameBase + i * this.nameSize + libc.SOCKADDR_IN6_ADDR + 4 * w, false);
  }

  /** The sender's family as the kernel wrote it (AF_INET or AF_INET6). */
  sourceFamily(i: number): number {
    return this.memory.view.getUint16(this.nameBase + i * this.nameSize, true);
  }

  sourcePort(i: number): number {
    return this.memory.view.getUint16(this.nameBase + i * this.nameSize + 2, false);
  }
}
