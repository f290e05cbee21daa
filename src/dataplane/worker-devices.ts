// The kernel devices of one worker, built on given descriptors: the agent's
// TUN queue and UDP sockets in worker-build.ts, private stand-ins in the
// rehearsal (rehearsal.ts). One builder for both, so the rehearsal drives the
// very classes and options the real worker runs, and the code V8 optimises
// for it is the code real traffic takes.
import { KernelTun } from './kernel-tun.js';
import { KernelBind } from './kernel-bind.js';
import { VXLAN_HEADROOM } from '../encap/vxlan.js';
import type { WorkerMemory } from './worker-memory.js';

export interface DeviceOptions {
  backend: 'udp' | 'vxlan';
  batchSize: number;
  /** The TUN carries virtio_net_hdr (opened with IFF_VNET_HDR). */
  vnetHeader: boolean;
  /** The socket has UDP_GRO on. */
  udpGro: boolean;
  /** The TUN accepted USO: same-size UDP datagrams of a flow can be merged into one write. */
  tunUso: boolean;
  /** The kernel takes UDP_SEGMENT sends. */
  udpGso: boolean;
  /** The IPv6 underlay's sockets have UDP_GRO on / take UDP_SEGMENT sends (absent: no IPv6 underlay). */
  udp6Gro?: boolean;
  udp6Gso?: boolean;
}

export interface DeviceFds {
  tunFd: number;
  udpFd: number;
  /** Sockets to send from: UDP mode [udpFd] (peers expect the well-known source port); VXLAN several, one per source port. */
  sendFds: number[];
  /** The IPv6 underlay: its receive socket and senders (absent or -1: this node has no public IPv6). */
  udp6Fd?: number;
  send6Fds?: number[];
}

export function buildKernelDevices(opts: DeviceOptions, fds: DeviceFds, memory: WorkerMemory, counters: Float64Array): { tun: KernelTun; bind: KernelBind } {
  const tun = new KernelTun(fds.tunFd, {
    pool: memory.pool,
    readSlots: memory.readSlots,
    vnetHeader: opts.vnetHeader,
    uso: opts.vnetHeader && opts.tunUso,
    // Without an outer checksum nothing vouches for the inner bytes, so a VXLAN
    // receiver verifies each TCP segment before merging (a bad one is written
    // alone, and the kernel drops it as it would have).
    verifyBeforeMerge: opts.backend === 'vxlan',
    txArenaOffset: memory.txArenaOffset,
    txArenaSegments: memory.txArenaSegments,
    rxArenaOffset: memory.rxArenaOffset,
    rxArenaWrites: memory.rxArenaWrites,
    segmentHeadroom: opts.backend === 'vxlan' ? VXLAN_HEADROOM : 0,
    maxWritePackets: memory.maxDatagrams,
    counters,
  });
  const bind = new KernelBind({
    receiveFd: fds.udpFd,
    sendFds: fds.sendFds,
    pool: memory.pool,
    firstSlot: memory.firstReceiveSlot,
    batchSize: opts.batchSize,
    gro: opts.udpGro,
    // One GSO switch for both families: a message goes as GSO only if every socket takes it.
    gso: opts.udpGso && (fds.udp6Fd === undefined || fds.udp6Fd < 0 || opts.udp6Gso === true),
    maxMessages: memory.txArenaSegments + opts.batchSize,
    maxPieces: 2 * memory.txArenaSegments + opts.batchSize,
    counters,
    ...(fds.udp6Fd !== undefined && fds.udp6Fd >= 0 ? { receiveFd6: fds.udp6Fd, sendFds6: fds.send6Fds ?? [fds.udp6Fd], gro6: opts.udp6Gro === true } : {}),
  });
  return { tun, bind };
}
