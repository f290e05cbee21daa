// The underlay side: one UDP socket per worker, all bound to the same port
// with SO_REUSEPORT, so every worker can send from the well-known port
// (flannel's peers expect datagrams from port 8285) and the kernel spreads
// incoming datagrams across workers: by the outer 4-tuple's hash, or in UDP
// mode by the inner flow (setReceiveSpread, reuseport-cbpf.ts).
import * as libc from './libc.js';
import { innerFlowProgram } from './reuseport-cbpf.js';

export interface UdpSocketOptions {
  bindAddress: number; // uint32, host order; 0 = any
  /**
   * An AF_INET6 socket bound to this IPv6 address (16 bytes) instead: the IPv6
   * underlay (IPV6_V6ONLY, so IPv4 stays on the IPv4 socket). bindAddress is then unused.
   */
  bindAddress6?: Uint8Array;
  port: number;
  /** Socket buffer size in bytes: large, because a burst from the TUN is sent in one batch. */
  bufferBytes: number;
  /** Ask for UDP GRO: the kernel may hand back many same-size datagrams in one receive. */
  gro: boolean;
  /**
   * Send with a zero UDP checksum (VXLAN's RFC 7348 default). The kernel
   * refuses UDP GSO on such a socket (udp_send_skb: EINVAL), so gso is false.
   */
  zeroChecksum?: boolean;
  /**
   * Hand-over (data-plane.ts): open and configure, but bind later with
   * bindUdpSocket(), once the worker is ready: bound, the socket would join
   * the old agent's SO_REUSEPORT group and take flows it cannot read yet.
   */
  deferBind?: boolean;
}

export interface UdpSocket {
  fd: number;
  /** The port it is bound to (the kernel's choice when asked for port 0). */
  port: number;
  /** The kernel accepted UDP_GRO on this socket. */
  gro: boolean;
  /** The kernel supports UDP_SEGMENT (GSO) sends. */
  gso: boolean;
}

export function writeSockaddrIn(mem: libc.NativeMemory, offset: number, addr: number, port: number): void {
  mem.view.setUint16(offset, libc.AF_INET, true);
  mem.view.setUint16(offset + 2, port, false);
  mem.view.setUint32(offset + 4, addr >>> 0, false);
  mem.view.setUint32(offset + 8, 0, true);
  mem.view.setUint32(offset + 12, 0, true);
}

/**
 * sockaddr_in6 for addr (16 bytes; undefined: the unspecified address ::) and
 * port, flow label and scope id 0 (the underlay addresses are global ones).
 */
export function writeSockaddrIn6(mem: libc.NativeMemory, offset: number, addr: Uint8Array | undefined, port: number): void {
  const v = mem.view;
  v.setUint16(offset, libc.AF_INET6, true);
  v.setUint16(offset + 2, port, false);
  v.setUint32(offset + 4, 0, true);
  for (let i = 0; i < 16; i++) v.setUint8(offset + libc.SOCKADDR_IN6_ADDR + i, addr === undefined ? 0 : addr[i]);
  v.setUint32(offset + 24, 0, true);
}

export function openUdpSocket(opts: UdpSocketOptions): UdpSocket {
  const v6 = opts.bindAddress6 !== undefined;
  const fd = libc.socket(v6 ? libc.AF_INET6 : libc.AF_INET, libc.SOCK_DGRAM | libc.SOCK_NONBLOCK | libc.SOCK_CLOEXEC, 0);
  const scratch = new libc.NativeMemory(64);
  try {
    scratch.view.setInt32(0, 1, true);
    libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_REUSEPORT, scratch.address, 4, 'SO_REUSEPORT');
    if (v6) libc.setsockopt(fd, libc.IPPROTO_IPV6, libc.IPV6_V6ONLY, scratch.address, 4, 'IPV6_V6ONLY');
    // IPv6 UDP always carries a checksum (RFC 8200; a kernel vxlan drops zero-checksum IPv6 datagrams by default).
    if (opts.zeroChecksum && !v6) libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_NO_CHECK, scratch.address, 4, 'SO_NO_CHECK');
    setBuffer(fd, scratch, libc.SO_RCVBUF, libc.SO_RCVBUFFORCE, opts.bufferBytes);
    setBuffer(fd, scratch, libc.SO_SNDBUF, libc.SO_SNDBUFFORCE, opts.bufferBytes);
    if (!opts.deferBind) {
      if (v6) bindUdpSocket6(fd, opts.bindAddress6!, opts.port);
      else bindUdpSocket(fd, opts.bindAddress, opts.port);
    }
    let gro = false;
    if (opts.gro) {
      scratch.view.setInt32(0, 1, true);
      gro = libc.trySetsockopt(fd, libc.SOL_UDP, libc.UDP_GRO, scratch.address, 4) === 0;
    }
    // Reading UDP_SEGMENT back succeeds exactly on kernels that can do GSO sends (4.18+).
    scratch.view.setUint32(8, 4, true);
    let gso = v6 || !opts.zeroChecksum;
    try {
      if (gso) libc.getsockopt(fd, libc.SOL_UDP, libc.UDP_SEGMENT, scratch.address, scratch.address + 8, 'UDP_SEGMENT');
    } catch {
      gso = false;
    }
    if (opts.deferBind) return { fd, port: opts.port, gro, gso };
    // The port sits at offset 2 of sockaddr_in and sockaddr_in6 alike.
    scratch.view.setUint32(60, v6 ? libc.SIZEOF_SOCKADDR_IN6 : libc.SIZEOF_SOCKADDR_IN, true);
    libc.getsockname(fd, scratch.address + 16, scratch.address + 60);
    const port = scratch.view.getUint16(16 + 2, false);
    return { fd, port, gro, gso };
  } catch (err) {
    libc.close(fd);
    throw err;
  }
}

export function bindUdpSocket(fd: number, address: number, port: number): void {
  const addr = new libc.NativeMemory(libc.SIZEOF_SOCKADDR_IN);
  writeSockaddrIn(addr, 0, address, port);
  libc.bind(fd, addr.address, libc.SIZEOF_SOCKADDR_IN, `UDP port ${port}`);
}

export function bindUdpSocket6(fd: number, address: Uint8Array, port: number): void {
  const addr = new libc.NativeMemory(libc.SIZEOF_SOCKADDR_IN6);
  writeSockaddrIn6(addr, 0, address, port);
  libc.bind(fd, addr.address, libc.SIZEOF_SOCKADDR_IN6, `UDP port ${port} (IPv6)`);
}

/**
 * Hand-over, the old agent's side: connected to an address no peer sends
 * from, the socket stays bound (its worker drains what it holds) but the
 * SO_REUSEPORT group stops giving it datagrams: a connected member only
 * matches its own peer, so every flow goes to the new agent's sockets.
 */
export function withdrawUdpSocket(fd: number, ownAddress: number): void {
  const addr = new libc.NativeMemory(libc.SIZEOF_SOCKADDR_IN);
  writeSockaddrIn(addr, 0, ownAddress || 0x7f000001, 9); // discard: nothing sends from there
  libc.connect(fd, addr.address, libc.SIZEOF_SOCKADDR_IN, 'UDP socket (withdrawing it from the port)');
}

/** withdrawUdpSocket for the IPv6 underlay's socket: connected to its own address's discard port. */
export function withdrawUdpSocket6(fd: number, ownAddress: Uint8Array): void {
  const addr = new libc.NativeMemory(libc.SIZEOF_SOCKADDR_IN6);
  writeSockaddrIn6(addr, 0, ownAddress, 9);
  libc.connect(fd, addr.address, libc.SIZEOF_SOCKADDR_IN6, 'IPv6 UDP socket (withdrawing it from the port)');
}

/**
 * Which worker a datagram reaches, for the whole SO_REUSEPORT group of the
 * bound socket `fd` (a hand-over's old agent included): 'inner-flow' attaches
 * the program that hashes the inner IPv4 flow at `ipOffset` into `sockets`
 * sockets; 'kernel-hash' detaches any program (an earlier agent's too), so
 * the kernel's outer 4-tuple hash decides. Returns 0 or -errno.
 */
export function setReceiveSpread(fd: number, mode: 'inner-flow' | 'kernel-hash', sockets: number, ipOffset = 0): number {
  if (mode === 'inner-flow') return libc.trySetReuseportCbpf(fd, innerFlowProgram(sockets, ipOffset));
  const ret = libc.trySetReuseportCbpf(fd, null);
  return ret === -ENOENT ? 0 : ret; // no program attached: already the kernel's hash
}
const ENOENT = 2;

const SIOCINQ = 0x541b;
/** Bytes waiting in the socket's receive queue. */
export function queuedBytes(fd: number): number {
  const n = new libc.NativeMemory(8);
  libc.ioctlPtr(fd, SIOCINQ, n.address, 'SIOCINQ');
  return n.view.getInt32(0, true);
}

// The FORCE variant ignores net.core.rmem_max (we run as root); fall back to
// the capped one when it is refused (e.g. without CAP_NET_ADMIN).
function setBuffer(fd: number, scratch: libc.NativeMemory, name: number, forceName: number, bytes: number): void {
  scratch.view.setInt32(0, bytes, true);
  if (libc.trySetsockopt(fd, libc.SOL_SOCKET, forceName, scratch.address, 4) < 0) {
    libc.trySetsockopt(fd, libc.SOL_SOCKET, name, scratch.address, 4);
  }
}
