// Outgoing datagrams gathered for one sendmmsg() call. A message is a list
// of (address, length) pieces (iovecs) that the kernel concatenates, so a TCP
// segment cut from a TUN super-packet goes out as [its rebuilt header, its
// payload slice of the super-packet] without being copied. A message may carry
// a UDP_SEGMENT control message: the kernel then cuts it into datagrams of
// that size (UDP GSO), one message for up to 64 KB of traffic.
import * as libc from './libc.js';
import { writeSockaddrIn } from './udp-socket.js';

export class SendQueue {
  readonly memory: libc.NativeMemory;
  private readonly iovBase: number;
  private readonly nameBase: number;
  private readonly controlBase: number;
  /** Datagrams each message becomes on the wire (GSO messages become several). */
  readonly datagrams: Int32Array;
  /** Bytes each message carries. */
  readonly bytes: Int32Array;
  messages = 0;
  private iovecs = 0;
  private messageFirstIovec = 0;

  constructor(
    readonly maxMessages: number,
    readonly maxIovecs: number,
  ) {
    this.iovBase = maxMessages * libc.SIZEOF_MMSGHDR;
    this.nameBase = this.iovBase + maxIovecs * libc.SIZEOF_IOVEC;
    this.controlBase = this.nameBase + maxMessages * libc.SIZEOF_SOCKADDR_IN;
    this.memory = new libc.NativeMemory(this.controlBase + maxMessages * libc.CMSG_SPACE_INT);
    this.datagrams = new Int32Array(maxMessages);
    this.bytes = new Int32Array(maxMessages);
    const base = this.memory.address;
    for (let m = 0; m < maxMessages; m++) {
      const msg = m * libc.SIZEOF_MMSGHDR;
      this.memory.setU64(msg + libc.MSGHDR_NAME, base + this.nameBase + m * libc.SIZEOF_SOCKADDR_IN);
      this.memory.view.setUint32(msg + libc.MSGHDR_NAMELEN, libc.SIZEOF_SOCKADDR_IN, true);
      writeSockaddrIn(this.memory, this.nameBase + m * libc.SIZEOF_SOCKADDR_IN, 0, 0);
      // The UDP_SEGMENT control message is fixed but for its value.
      const cmsg = this.controlBase + m * libc.CMSG_SPACE_INT;
      this.memory.setU64(cmsg, libc.CMSG_LEN_U16);
      this.memory.view.setInt32(cmsg + 8, libc.SOL_UDP, true);
      this.memory.view.setInt32(cmsg + 12, libc.UDP_SEGMENT, true);
    }
  }

  /** Whether `messages` more messages with `iovecs` more pieces still fit. */
  hasRoom(messages: number, iovecs: number): boolean {
    return this.messages + messages <= this.maxMessages && this.iovecs + iovecs <= this.maxIovecs;
  }

  /**
   * Starts a message to addr:port. gsoSize > 0 makes the kernel split it into
   * datagrams of gsoSize bytes (the last may be shorter).
   */
  begin(addr: number, port: number, gsoSize: number, datagrams: number): void {
    const m = this.messages;
    const msg = m * libc.SIZEOF_MMSGHDR;
    const view = this.memory.view;
    const name = this.nameBase + m * libc.SIZEOF_SOCKADDR_IN;
    view.setUint16(name + 2, port, false);
    view.setUint32(name + 4, addr, false);
    this.memory.setU64(msg + libc.MSGHDR_IOV, this.memory.address + this.iovBase + this.iovecs * libc.SIZEOF_IOVEC);
    if (gsoSize > 0) {
      const cmsg = this.controlBase + m * libc.CMSG_SPACE_INT;
      view.setUint16(cmsg + libc.SIZEOF_CMSGHDR, gsoSize, true);
      this.memory.setU64(msg + libc.MSGHDR_CONTROL, this.memory.address + cmsg);
      this.memory.setU64(msg + libc.MSGHDR_CONTROLLEN, libc.CMSG_SPACE_INT);
    } else {
      this.memory.setU64(msg + libc.MSGHDR_CONTROL, 0);
      this.memory.setU64(msg + libc.MSGHDR_CONTROLLEN, 0);
    }
    this.messageFirstIovec = this.iovecs;
    this.datagrams[m] = datagrams;
    this.bytes[m] = 0;
  }

  /** Appends a piece at a kernel-visible address to the current message. */
  add(address: number, length: number): void {
    const iov = this.iovBase + this.iovecs * libc.SIZEOF_IOVEC;
    this.memory.setU64(iov, address);
    this.memory.setU64(iov + 8, length);
    this.iovecs++;
    this.bytes[this.messages] += length;
  }

  end(): void {
    const msg = this.messages * libc.SIZEOF_MMSGHDR;
    this.memory.setU64(msg + libc.MSGHDR_IOVLEN, this.iovecs - this.messageFirstIovec);
    this.messages++;
  }

  /** Address of message m's mmsghdr, to resume a partially completed sendmmsg. */
  addressOfMessage(m: number): number {
    return this.memory.address + m * libc.SIZEOF_MMSGHDR;
  }

  reset(): void {
    this.messages = 0;
    this.iovecs = 0;
  }
}
