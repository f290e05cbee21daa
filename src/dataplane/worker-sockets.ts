// The sockets and the wake-up eventfd one forwarding worker uses, opened by
// the main thread before the worker starts (so every setup error surfaces
// first, and a restarted worker finds them again).
import * as libc from './libc.js';
import { openUdpSocket } from './udp-socket.js';
import { formatIPv6 } from '../control/ipv6-address.js';

const EADDRNOTAVAIL = 99;

export interface WorkerSocketOptions {
  bindAddress: number;
  port: number;
  socketBufferBytes: number;
  offload: boolean;
  /** VXLAN: this many extra send sockets, each on its own source port; the outer UDP checksum or zero. */
  vxlan?: { sourcePorts: number; udpChecksum: boolean };
  /** Hand-over: the receive socket is bound later (udp-socket.ts bindUdpSocket). */
  deferBind?: boolean;
  /**
   * The node's public IPv6 (16 bytes), when it has one and an IPv6 subnet:
   * the IPv6 underlay's sockets are opened beside the IPv4 ones, bound to it
   * (docs/design.md, "IPv6 underlay"). Absent: nothing IPv6 is opened.
   */
  bindAddress6?: Uint8Array;
}

export interface WorkerSockets {
  udpFd: number;
  udpGro: boolean;
  udpGso: boolean;
  /** Sockets this worker sends from (UDP mode: udpFd itself), and their ports. */
  sendFds: number[];
  sendPorts: number[];
  wakeFd: number;
  /** The IPv6 underlay (bindAddress6 given): its receive socket (-1: none), senders, their ports, offloads. */
  udp6Fd: number;
  send6Fds: number[];
  send6Ports: number[];
  udp6Gro: boolean;
  udp6Gso: boolean;
  /** With the IPv6 underlay: an epoll descriptor on both receive sockets, for the loop's poll() (-1: none). */
  udpPollFd: number;
}

/** Opens them all, or none: whatever opened before a failure is closed again. */
export function openWorkerSockets(opts: WorkerSocketOptions): WorkerSockets {
  const opened: number[] = [];
  try {
    const socket = openUdpSocket({ bindAddress: opts.bindAddress, port: opts.port, bufferBytes: opts.socketBufferBytes, gro: opts.offload, deferBind: opts.deferBind });
    opened.push(socket.fd);
    let sendFds = [socket.fd];
    let sendPorts = [socket.port];
    let gso = socket.gso;
    if (opts.vxlan) {
      const vxlan = opts.vxlan;
      sendFds = [];
      sendPorts = [];
      gso = true; // the senders decide: the receive socket never sends
      for (let k = 0; k < vxlan.sourcePorts; k++) {
        // Port 0: the kernel picks a free source port for each sender.
        const s = openUdpSocket({ bindAddress: opts.bindAddress, port: 0, bufferBytes: opts.socketBufferBytes, gro: false, zeroChecksum: !vxlan.udpChecksum });
        opened.push(s.fd);
        sendFds.push(s.fd);
        sendPorts.push(s.port);
        gso &&= s.gso;
      }
    }
    const six = opts.bindAddress6 !== undefined ? openUnderlay6(opts, opened) : { udp6Fd: -1, send6Fds: [], send6Ports: [], udp6Gro: false, udp6Gso: false };
    const udpPollFd = six.udp6Fd >= 0 ? libc.epollOf([socket.fd, six.udp6Fd]) : -1;
    if (udpPollFd >= 0) opened.push(udpPollFd);
    const wakeFd = libc.eventfd(0, libc.EFD_NONBLOCK | libc.EFD_CLOEXEC);
    return { udpFd: socket.fd, udpGro: socket.gro, udpGso: opts.offload && gso, sendFds, sendPorts, wakeFd, ...six, udpPollFd };
  } catch (err) {
    for (const fd of opened) libc.close(fd);
    throw err;
  }
}

/**
 * The IPv6 underlay's sockets, as the IPv4 ones: one receive socket on the
 * port (UDP mode sends from it too), and in VXLAN mode as many senders on
 * ports of the kernel's choice. Always with a UDP checksum (IPv6 requires it),
 * so UDP GSO is possible in both modes.
 */
function openUnderlay6(opts: WorkerSocketOptions, opened: number[]): Pick<WorkerSockets, 'udp6Fd' | 'send6Fds' | 'send6Ports' | 'udp6Gro' | 'udp6Gso'> {
  let socket: ReturnType<typeof openUdpSocket>;
  try {
    socket = openUdpSocket({ bindAddress: 0, bindAddress6: opts.bindAddress6, port: opts.port, bufferBytes: opts.socketBufferBytes, gro: opts.offload, deferBind: opts.deferBind });
  } catch (err) {
    // The likely mistake, said plainly: the IPv4 side binds to --public-ip the same way.
    if (err instanceof libc.SyscallError && err.code === EADDRNOTAVAIL) {
      throw new Error(`public IPv6 ${formatIPv6(opts.bindAddress6!)} is not an address of this node (the IPv6 underlay's sockets bind to it): ${err.message}`);
    }
    throw err;
  }
  opened.push(socket.fd);
  let send6Fds = [socket.fd];
  let send6Ports = [socket.port];
  let gso = socket.gso;
  if (opts.vxlan) {
    send6Fds = [];
    send6Ports = [];
    for (let k = 0; k < opts.vxlan.sourcePorts; k++) {
      const s = openUdpSocket({ bindAddress: 0, bindAddress6: opts.bindAddress6, port: 0, bufferBytes: opts.socketBufferBytes, gro: false });
      opened.push(s.fd);
      send6Fds.push(s.fd);
      send6Ports.push(s.port);
      gso &&= s.gso;
    }
  }
  return { udp6Fd: socket.fd, send6Fds, send6Ports, udp6Gro: socket.gro, udp6Gso: opts.offload && gso };
}

export function closeWorkerSockets(s: WorkerSockets): void {
  for (const fd of s.sendFds) if (fd !== s.udpFd) libc.close(fd);
  libc.close(s.udpFd);
  for (const fd of s.send6Fds) if (fd !== s.udp6Fd) libc.close(fd);
  if (s.udp6Fd >= 0) libc.close(s.udp6Fd);
  if (s.udpPollFd >= 0) libc.close(s.udpPollFd);
  libc.close(s.wakeFd);
}
