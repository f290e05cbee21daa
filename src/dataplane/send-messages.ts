// A SendBatch as the kernel wants it for sendmmsg(): an array of struct
// mmsghdr, each with its destination, its iovecs (the batch's pieces, as
// addresses into the pool) and, for a GSO message, a UDP_SEGMENT control
// message telling the kernel the datagram size. `ipv6`: the destinations
// are sockaddr_in6, from the batch's peer6 words (the IPv6 underlay's sockets).
import * as libc from './libc.js';
import { writeSockaddrIn, writeSockaddrIn6 } from './udp-socket.js';
import type { SendBatch } from './batches.js';

export class SendMessages {
  readonly memory: libc.NativeMemory;
  private readonly iovBase: number;
  private readonly nameBase: number;
  private readonly controlBase: number;
  private readonly nameSize: number;
  private readonly ipv6: boolean;

  constructor(
    readonly maxMessages: number,
    readonly maxPieces: number,
    ipv6 = false,
  ) {
    const nameSize = ipv6 ? libc.SIZEOF_SOCKADDR_IN6 : libc.SIZEOF_SOCKADDR_IN;
    this.nameSize = nameSize;
    this.ipv6 = ipv6;
    this.iovBase = maxMessages * libc.SIZEOF_MMSGHDR;
    this.nameBase = this.iovBase + maxPieces * libc.SIZEOF_IOVEC;
    this.controlBase = this.nameBase + ((maxMessages * nameSize + 7) & ~7);
    this.memory = new libc.NativeMemory(this.controlBase + maxMessages * libc.CMSG_SPACE_INT);
    const m = this.memory;
    for (let i = 0; i < maxMessages; i++) {
      const msg = i * libc.SIZEOF_MMSGHDR;
      m.setU64(msg + libc.MSGHDR_NAME, m.address + this.nameBase + i * nameSize);
      m.view.setUint32(msg + libc.MSGHDR_NAMELEN, nameSize, true);
      if (ipv6) writeSockaddrIn6(m, this.nameBase + i * nameSize, undefined, 0);
      else writeSockaddrIn(m, this.nameBase + i * nameSize, 0, 0);
      // The UDP_SEGMENT control message is fixed but for its value.
      const cmsg = this.controlBase + i * libc.CMSG_SPACE_INT;
      m.setU64(cmsg, libc.CMSG_LEN_U16);
      m.view.setInt32(cmsg + 8, libc.SOL_UDP, true);
      m.view.setInt32(cmsg + 12, libc.UDP_SEGMENT, true);
    }
  }

  /** Writes every message of the batch; pieces are pool offsets, made addresses with poolAddress. */
  load(batch: SendBatch, poolAddress: number): void {
    const m = this.memory;
    const view = m.view;
    for (let p = 0; p < batch.pieces; p++) {
      const iov = this.iovBase + p * libc.SIZEOF_IOVEC;
      m.setU64(iov, poolAddress + batch.pieceOffset[p]);
      m.setU64(iov + 8, batch.pieceLength[p]);
    }
    for (let i = 0; i < batch.messages; i++) {
      const msg = i * libc.SIZEOF_MMSGHDR;
      const name = this.nameBase + i * this.nameSize;
      view.setUint16(name + 2, batch.port[i], false);
      if (this.ipv6) {
        const a = name + libc.SOCKADDR_IN6_ADDR;
        const p6 = batch.peer6;
        view.setInt32(a, p6[4 * i], false);
        view.setInt32(a + 4, p6[4 * i + 1], false);
        view.setInt32(a + 8, p6[4 * i + 2], false);
        view.setInt32(a + 12, p6[4 * i + 3], false);
      } else {
        view.setInt32(name + 4, batch.peer[i], false);
      }
      m.setU64(msg + libc.MSGHDR_IOV, m.address + this.iovBase + batch.firstPiece[i] * libc.SIZEOF_IOVEC);
      m.setU64(msg + libc.MSGHDR_IOVLEN, batch.pieceCount[i]);
      const size = batch.segmentSize[i];
      if (size > 0) {
        const cmsg = this.controlBase + i * libc.CMSG_SPACE_INT;
        view.setUint16(cmsg + libc.SIZEOF_CMSGHDR, size, true);
        m.setU64(msg + libc.MSGHDR_CONTROL, m.address + cmsg);
        m.setU64(msg + libc.MSGHDR_CONTROLLEN, libc.CMSG_SPACE_INT);
      } else {
        m.setU64(msg + libc.MSGHDR_CONTROL, 0);
        m.setU64(msg + libc.MSGHDR_CONTROLLEN, 0);
      }
    }
  }

  /** Offset of message m's mmsghdr in memory, to resume a partially completed sendmmsg. */
  offsetOf(message: number): number {
    return message * libc.SIZEOF_MMSGHDR;
  }
}
