// Entry point of a forwarding worker thread: builds the kernel devices on the
// descriptors the main thread opened, the forwarder between them, and runs
// the loop. The loop is synchronous and never returns to the event loop while
// it runs; control messages are pulled with receiveMessageOnPort when the
// main thread signals them.
import { parentPort, workerData } from 'node:worker_threads';
import { Forwarder, type ForwarderConfig } from './forwarder.js';
import { KernelTun } from './kernel-tun.js';
import { KernelBind } from './kernel-bind.js';
import { WorkerMemory } from './worker-memory.js';
import { runWorkerLoop } from './worker-loop.js';
import { workerCounters } from './worker-stats.js';
import { VXLAN_HEADROOM } from '../encap/vxlan.js';
import type { WorkerReport } from './worker-messages.js';

export interface WorkerData extends Omit<ForwarderConfig, 'counters' | 'controlSequence'> {
  stats: SharedArrayBuffer;
  control: SharedArrayBuffer;
  tunFd: number;
  udpFd: number;
  wakeFd: number;
  /** Sockets to send from: UDP mode [udpFd] (peers expect the well-known source port); VXLAN several, one per source port. */
  sendFds: number[];
  /** Packets (or super-packets) per read and per recvmmsg. */
  batchSize: number;
  /** The TUN carries virtio_net_hdr (opened with IFF_VNET_HDR). */
  vnetHeader: boolean;
  /** The socket has UDP_GRO on. */
  udpGro: boolean;
  /** The TUN accepted USO: same-size UDP datagrams of a flow can be merged into one write. */
  tunUso: boolean;
  /** The kernel takes UDP_SEGMENT sends. */
  udpGso: boolean;
  busyPollUs: number;
}

const data = workerData as WorkerData;
const counters = workerCounters(data.stats, data.workerIndex);
const memory = new WorkerMemory(data.batchSize, data.vnetHeader, data.mtu);
const tun = new KernelTun(data.tunFd, {
  pool: memory.pool,
  readSlots: memory.readSlots,
  vnetHeader: data.vnetHeader,
  uso: data.vnetHeader && data.tunUso,
  // Without an outer checksum nothing vouches for the inner bytes, so a VXLAN
  // receiver verifies each TCP segment before merging (a bad one is written
  // alone, and the kernel drops it as it would have).
  verifyBeforeMerge: data.backend === 'vxlan',
  txArenaOffset: memory.txArenaOffset,
  txArenaSegments: memory.txArenaSegments,
  rxArenaOffset: memory.rxArenaOffset,
  rxArenaWrites: memory.rxArenaWrites,
  segmentHeadroom: data.backend === 'vxlan' ? VXLAN_HEADROOM : 0,
  maxWritePackets: memory.maxDatagrams,
  counters,
});
const bind = new KernelBind({
  receiveFd: data.udpFd,
  sendFds: data.sendFds,
  pool: memory.pool,
  firstSlot: memory.firstReceiveSlot,
  batchSize: data.batchSize,
  gro: data.udpGro,
  gso: data.udpGso,
  maxMessages: memory.txArenaSegments + data.batchSize,
  maxPieces: 2 * memory.txArenaSegments + data.batchSize,
  counters,
});
const post = (report: WorkerReport) => parentPort!.postMessage(report);
const forwarder = new Forwarder(
  { ...data, counters, controlSequence: new Int32Array(data.control, data.workerIndex * 4, 1) },
  tun,
  bind,
  memory,
  post,
);
post({ type: 'ready' });
runWorkerLoop(forwarder, { tunFd: data.tunFd, udpFd: data.udpFd, wakeFd: data.wakeFd, busyPollUs: data.busyPollUs, counters });
// Let the thread exit: an open port would keep its event loop alive.
data.controlPort.close();
