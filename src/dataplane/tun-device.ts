// The TUN side of the data plane: one multi-queue device, one file descriptor
// per worker. The kernel spreads flows across queues by hash, so each worker
// sees whole flows and packets of one flow stay in order.
import { existsSync } from 'node:fs';
import * as libc from './libc.js';

const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000; // no 4-byte packet-info prefix: reads start at the IPv4 header
const IFF_MULTI_QUEUE = 0x0100;
const IFF_TUN_EXCL = 0x8000; // fail if the name already exists (another agent owns it)
const IFNAMSIZ = 16;

export class TunInUseError extends Error {
  constructor(readonly tunName: string) {
    super(
      `a network device named ${tunName} already exists: another flannel-udp agent (or flanneld) ` +
        `is probably running here. Stop it, or pick another name with --tun.`,
    );
    this.name = 'TunInUseError';
  }
}

export function validateTunName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    throw new Error(`--tun: "${name}" is not a valid interface name (1-15 characters: letters, digits, _ . -)`);
  }
}

/**
 * Opens `queues` file descriptors on one new TUN device (IFF_MULTI_QUEUE).
 * The device lives exactly as long as its descriptors: closing them all
 * removes it together with its addresses and routes, which is how the agent
 * cleans up even when it is killed.
 */
export function openTunQueues(name: string, queues: number): number[] {
  validateTunName(name);
  if (existsSync(`/sys/class/net/${name}`)) throw new TunInUseError(name);
  const ifreq = new libc.NativeMemory(libc.SIZEOF_IFREQ);
  const nameBytes = Buffer.from(name, 'ascii');
  ifreq.bytes.set(nameBytes.subarray(0, IFNAMSIZ - 1), 0);
  const fds: number[] = [];
  try {
    for (let q = 0; q < queues; q++) {
      const fd = libc.openPath('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC);
      fds.push(fd);
      // The first queue creates the device exclusively; later queues attach to it.
      const flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (q === 0 ? IFF_TUN_EXCL : 0);
      ifreq.view.setUint16(IFNAMSIZ, flags, true);
      try {
        libc.ioctlPtr(fd, TUNSETIFF, ifreq.address, `TUNSETIFF ${name} queue ${q}`);
      } catch (err) {
        if (q === 0 && err instanceof libc.SyscallError && err.code === libc.EBUSY) throw new TunInUseError(name);
        throw err;
      }
    }
  } catch (err) {
    for (const fd of fds) libc.close(fd);
    throw err;
  }
  return fds;
}

export function closeTunQueues(fds: readonly number[]): void {
  for (const fd of fds) libc.close(fd);
}
