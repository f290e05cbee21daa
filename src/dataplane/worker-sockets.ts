// The sockets and the wake-up eventfd one forwarding worker uses, opened by
// the main thread before the worker starts (so every setup error surfaces
// first, and a restarted worker finds them again).
import * as libc from './libc.js';
import { openUdpSocket } from './udp-socket.js';

export interface WorkerSocketOptions {
  bindAddress: number;
  port: number;
  socketBufferBytes: number;
  offload: boolean;
  /** VXLAN: this many extra send sockets, each on its own source port; the outer UDP checksum or zero. */
  vxlan?: { sourcePorts: number; udpChecksum: boolean };
  /** Hand-over: the receive socket is bound later (udp-socket.ts bindUdpSocket). */
  deferBind?: boolean;
}

export interface WorkerSockets {
  udpFd: number;
  udpGro: boolean;
  udpGso: boolean;
  /** Sockets this worker sends from (UDP mode: udpFd itself), and their ports. */
  sendFds: number[];
  sendPorts: number[];
  wakeFd: number;
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
    const wakeFd = libc.eventfd(0, libc.EFD_NONBLOCK | libc.EFD_CLOEXEC);
    return { udpFd: socket.fd, udpGro: socket.gro, udpGso: opts.offload && gso, sendFds, sendPorts, wakeFd };
  } catch (err) {
    for (const fd of opened) libc.close(fd);
    throw err;
  }
}

export function closeWorkerSockets(s: WorkerSockets): void {
  for (const fd of s.sendFds) if (fd !== s.udpFd) libc.close(fd);
  libc.close(s.udpFd);
  libc.close(s.wakeFd);
}
