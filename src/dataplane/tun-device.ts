// The TUN side of the data plane: one multi-queue device, one file descriptor
// per worker. The kernel spreads flows across queues by hash, so each worker
// sees whole flows and packets of one flow stay in order.
//
// With offloads on, the device is opened with IFF_VNET_HDR: every read and
// write carries a 10-byte virtio_net_hdr in front of the packet, and after
// TUNSETOFFLOAD the kernel hands us TCP super-packets of up to 64 KB (one
// read instead of ~45) and accepts coalesced ones back.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as libc from './libc.js';

const TUNSETIFF = 0x400454ca;
const TUNSETPERSIST = 0x400454cb;
const TUNSETOFFLOAD = 0x400454d0;
const TUNSETQUEUE = 0x400454d9;
const IFF_ATTACH_QUEUE = 0x0200;
const IFF_DETACH_QUEUE = 0x0400;
const IFF_PERSIST = 0x0800;
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
  /**
   * created: the device is new; restart: a persistent device an earlier agent
   * left (its address and routes kept, no queue attached); handover: another
   * agent still forwards on it, so these queues are opened disabled and
   * enableTunQueues() turns them on once the workers are ready.
   */
  origin: TunOrigin;
  /** Reads and writes carry a virtio_net_hdr. */
  vnetHeader: boolean;
  /** TUN_F_* flags the kernel accepted (0 without vnet headers). */
  offloads: number;
}

export type TunOrigin = 'created' | 'restart' | 'handover';

/** What /sys says about a device of this name: absent, a TUN (its flags, carrier), or another kind. */
export type TunState = { kind: 'absent' } | { kind: 'other' } | { kind: 'tun'; flags: number; carrier: boolean; queues: number };

export function inspectTun(name: string, sysClassNet = '/sys/class/net'): TunState {
  const dir = `${sysClassNet}/${name}`;
  if (!existsSync(dir)) return { kind: 'absent' };
  let flags: number;
  try {
    flags = Number.parseInt(readFileSync(`${dir}/tun_flags`, 'utf8').trim(), 16);
  } catch {
    return { kind: 'other' }; // not a TUN/TAP device
  }
  let carrier = false;
  try {
    carrier = readFileSync(`${dir}/carrier`, 'utf8').trim() === '1';
  } catch {
    /* EINVAL while the link is administratively down: no agent forwards on it */
  }
  let queues = 0;
  try {
    queues = readdirSync(`${dir}/queues`).filter((q: string) => q.startsWith('tx-')).length;
  } catch {
    /* no queues directory */
  }
  return { kind: 'tun', flags, carrier, queues };
}

/** A device this project left for the next agent: a persistent multi-queue TUN without packet info. */
export function isReusableTun(state: TunState, vnetHeader: boolean): boolean {
  if (state.kind !== 'tun') return false;
  const want = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_PERSIST;
  return (state.flags & want) === want && ((state.flags & IFF_VNET_HDR) !== 0) === vnetHeader;
}

/**
 * Opens `queues` file descriptors on TUN device `name` (IFF_MULTI_QUEUE).
 *
 * Not persistent (persist false): the device is created exclusively and lives
 * exactly as long as its descriptors, so closing them (or being killed)
 * removes it with its addresses and routes.
 *
 * Persistent (TUNSETPERSIST): the device, its address and its routes outlive
 * the agent. A restarted agent attaches its queues to it; while no agent is
 * attached the kernel drops what is routed into it (the carrier is off),
 * and the address and routes stay, so nothing has to be configured again.
 * A device left with other settings (no persistence, other offload headers)
 * is replaced when no agent is attached, refused when one is.
 */
export function openTunQueues(name: string, queues: number, vnetHeader: boolean, persist = false): TunQueues {
  validateTunName(name);
  const state = inspectTun(name);
  let origin: TunOrigin = 'created';
  if (state.kind !== 'absent') {
    if (!persist || state.kind !== 'tun') throw new TunInUseError(name);
    if (!isReusableTun(state, vnetHeader)) {
      if (state.carrier) throw new TunInUseError(name);
      removePersistentTun(name, state.flags);
    } else origin = state.carrier ? 'handover' : 'restart';
  }
  const ifreq = new libc.NativeMemory(libc.SIZEOF_IFREQ);
  ifreq.bytes.set(Buffer.from(name, 'ascii').subarray(0, IFNAMSIZ - 1), 0);
  const fds: number[] = [];
  let offloads = 0;
  try {
    for (let q = 0; q < queues; q++) {
      const fd = libc.openPath('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC);
      fds.push(fd);
      // A new device: the first queue creates it exclusively; later queues (and every queue of a kept device) attach.
      const excl = q === 0 && origin === 'created' ? IFF_TUN_EXCL : 0;
      const flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (vnetHeader ? IFF_VNET_HDR : 0) | excl;
      ifreq.view.setUint16(IFNAMSIZ, flags, true);
      try {
        libc.ioctlPtr(fd, TUNSETIFF, ifreq.address, `TUNSETIFF ${name} queue ${q}`);
      } catch (err) {
        if (q === 0 && err instanceof libc.SyscallError && err.code === libc.EBUSY) throw new TunInUseError(name);
        throw err;
      }
      // Hand-over: the old agent's workers keep every flow until ours are warm.
      if (origin === 'handover') setQueue(fd, IFF_DETACH_QUEUE, name);
      if (q === 0 && persist && origin === 'created') setPersist(fd, true, name);
      // Offloads are a device feature; setting them through the first queue covers all.
      if (q === 0 && vnetHeader) offloads = enableOffloads(fd);
    }
  } catch (err) {
    if (persist && origin === 'created' && fds.length > 0) libc.tryIoctlInt(fds[0], TUNSETPERSIST, 0);
    for (const fd of fds) libc.close(fd);
    throw err;
  }
  return { fds, vnetHeader, offloads, origin };
}

function setPersist(fd: number, on: boolean, name: string): void {
  const r = libc.tryIoctlInt(fd, TUNSETPERSIST, on ? 1 : 0);
  if (r < 0) throw new libc.SyscallError('ioctl', -r, `TUNSETPERSIST ${name} ${on ? 'on' : 'off'}`);
}

function setQueue(fd: number, flag: number, name: string): void {
  const ifreq = new libc.NativeMemory(libc.SIZEOF_IFREQ);
  ifreq.view.setUint16(IFNAMSIZ, flag, true);
  libc.ioctlPtr(fd, TUNSETQUEUE, ifreq.address, `TUNSETQUEUE ${name} ${flag === IFF_ATTACH_QUEUE ? 'attach' : 'detach'}`);
}

/** Hand-over: the new agent's workers are ready; its queues start taking flows alongside the old agent's. */
export function enableTunQueues(name: string, fds: readonly number[]): void {
  for (const fd of fds) setQueue(fd, IFF_ATTACH_QUEUE, name);
}

/** Hand-over, the old agent's side: its queues stop taking flows (the kernel hashes them over the others'). */
export function disableTunQueues(name: string, fds: readonly number[]): void {
  for (const fd of fds) setQueue(fd, IFF_DETACH_QUEUE, name);
}

/**
 * Removes a persistent TUN nobody is attached to: attach one queue with the
 * device's own flags, clear persistence, close it.
 */
export function removePersistentTun(name: string, deviceFlags: number): void {
  const ifreq = new libc.NativeMemory(libc.SIZEOF_IFREQ);
  ifreq.bytes.set(Buffer.from(name, 'ascii').subarray(0, IFNAMSIZ - 1), 0);
  ifreq.view.setUint16(IFNAMSIZ, deviceFlags & (IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR | 0x0002), true);
  const fd = libc.openPath('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC);
  try {
    libc.ioctlPtr(fd, TUNSETIFF, ifreq.address, `TUNSETIFF ${name} (to remove it)`);
    setPersist(fd, false, name);
  } finally {
    libc.close(fd);
  }
}

/**
 * A clean exit: makes the device go with the last descriptor, unless another
 * agent is attached (a hand-over in progress), which then keeps it.
 * Returns whether the device will be removed.
 */
export function unpersistUnlessShared(name: string, fds: readonly number[]): boolean {
  if (fds.length === 0) return false;
  const state = inspectTun(name);
  if (state.kind === 'tun' && state.queues > fds.length) return false;
  libc.tryIoctlInt(fds[0], TUNSETPERSIST, 0);
  return true;
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
