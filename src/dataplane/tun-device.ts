// The TUN side of the data plane: one multi-queue device, one file descriptor
// per worker. The kernel spreads flows across queues by hash, so each worker
// sees whole flows and packets of one flow stay in order.
//
// With offloads on, the device is opened with IFF_VNET_HDR: every read and
// write carries a 10-byte virtio_net_hdr in front of the packet, and after
// TUNSETOFFLOAD the kernel hands us TCP super-packets of up to 64 KB (one
// read instead of ~45) and accepts coalesced ones back.
import { existsSync } from 'node:fs';
import * as libc from './libc.js';

const TUNSETIFF = 0x400454ca;
const TUNSETOFFLOAD = 0x400454d0;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000; // no 4-byte packet-info prefix: reads start at the IPv4 header
const IFF_MULTI_QUEUE = 0x0100;
const IFF_VNET_HDR = 0x4000;
const IFF_TUN_EXCL = 0x8000; // fail if the name already exists (another agent owns it)
const IFNAMSIZ = 16;

export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

/**
 * Offload sets to try, best first. The kernel takes USO4 only together with
 * USO6 (EINVAL otherwise), and TSO6 rides along because IPv6 never reaches
 * this device (disabled on it) so it costs nothing.
 */
const OFFLOAD_PREFERENCE = [
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
  TUN_F_CSUM | TUN_F_TSO4,
  TUN_F_CSUM,
];

export function describeOffloads(flags: number): string {
  const names: string[] = [];
  if (flags & TUN_F_CSUM) names.push('csum');
  if (flags & TUN_F_TSO4) names.push('tso4');
  if (flags & TUN_F_TSO6) names.push('tso6');
  if (flags & TUN_F_USO4) names.push('uso4');
  if (flags & TUN_F_USO6) names.push('uso6');
  return names.length ? names.join('+') : 'none';
}

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

export interface TunQueues {
  fds: number[];
  /** Reads and writes carry a virtio_net_hdr. */
  vnetHeader: boolean;
  /** TUN_F_* flags the kernel accepted (0 without vnet headers). */
  offloads: number;
}

/**
 * Opens `queues` file descriptors on one new TUN device (IFF_MULTI_QUEUE).
 * The device lives exactly as long as its descriptors: closing them all
 * removes it together with its addresses and routes, which is how the agent
 * cleans up even when it is killed.
 */
export function openTunQueues(name: string, queues: number, vnetHeader: boolean): TunQueues {
  validateTunName(name);
  if (existsSync(`/sys/class/net/${name}`)) throw new TunInUseError(name);
  const ifreq = new libc.NativeMemory(libc.SIZEOF_IFREQ);
  ifreq.bytes.set(Buffer.from(name, 'ascii').subarray(0, IFNAMSIZ - 1), 0);
  const fds: number[] = [];
  let offloads = 0;
  try {
    for (let q = 0; q < queues; q++) {
      const fd = libc.openPath('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC);
      fds.push(fd);
      // The first queue creates the device exclusively; later queues attach to it.
      const flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (vnetHeader ? IFF_VNET_HDR : 0) | (q === 0 ? IFF_TUN_EXCL : 0);
      ifreq.view.setUint16(IFNAMSIZ, flags, true);
      try {
        libc.ioctlPtr(fd, TUNSETIFF, ifreq.address, `TUNSETIFF ${name} queue ${q}`);
      } catch (err) {
        if (q === 0 && err instanceof libc.SyscallError && err.code === libc.EBUSY) throw new TunInUseError(name);
        throw err;
      }
      // Offloads are a device feature; setting them through the first queue covers all.
      if (q === 0 && vnetHeader) offloads = enableOffloads(fd);
    }
  } catch (err) {
    for (const fd of fds) libc.close(fd);
    throw err;
  }
  return { fds, vnetHeader, offloads };
}

function enableOffloads(fd: number): number {
  for (const flags of OFFLOAD_PREFERENCE) {
    if (libc.tryIoctlInt(fd, TUNSETOFFLOAD, flags) === 0) return flags;
  }
  return 0;
}

export function closeTunQueues(fds: readonly number[]): void {
  for (const fd of fds) libc.close(fd);
}
