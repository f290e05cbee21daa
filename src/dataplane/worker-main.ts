// Entry point of a forwarding worker thread: builds the kernel devices on the
// descriptors the main thread opened, the forwarder between them, and runs
// the loop. The loop is synchronous and never returns to the event loop while
// it runs; control messages are pulled with receiveMessageOnPort when the
// main thread signals them.
import { parentPort, workerData } from 'node:worker_threads';
import { Forwarder, type ForwarderConfig } from './forwarder.js';
import { WorkerMemory } from './worker-memory.js';
import { WorkerLoop } from './worker-loop.js';
import { workerCounters } from './worker-stats.js';
import { buildKernelDevices, type DeviceOptions, type DeviceFds } from './worker-devices.js';
import { rehearse } from './rehearsal.js';
import type { WorkerReport } from './worker-messages.js';

export interface WorkerData extends Omit<ForwarderConfig, 'counters' | 'controlSequence'>, DeviceOptions, DeviceFds {
  stats: SharedArrayBuffer;
  control: SharedArrayBuffer;
  wakeFd: number;
  busyPollUs: number;
  /** Rehearse before reporting ready (rehearsal.ts); off with FLANNEL_UDP_REHEARSAL=off. */
  rehearsal: boolean;
  /** How the send sockets were opened, for the rehearsal's copies. */
  offload: boolean;
  udpChecksum: boolean;
}

const data = workerData as WorkerData;
const counters = workerCounters(data.stats, data.workerIndex);
const memory = new WorkerMemory(data.batchSize, data.vnetHeader, data.mtu);
const post = (report: WorkerReport) => parentPort!.postMessage(report);
if (data.rehearsal) {
  // Warm the forwarding path before the first real packet (rehearsal.ts says why).
  const r = rehearse({ ...data, sendSockets: data.sendFds.length }, memory);
  const complete = r.outboundForwarded === r.outboundSent && r.inboundForwarded === r.inboundSent && r.drops === 0;
  post({
    type: 'log',
    line:
      `worker ${data.workerIndex}: rehearsal: ${r.outboundForwarded}/${r.outboundSent} packets out, ${r.inboundForwarded}/${r.inboundSent} in, ${r.ms} ms` +
      (complete ? '' : ` (${r.drops} dropped: the forwarding path is warmed only in part)`),
  });
}
const { tun, bind } = buildKernelDevices(data, data, memory, counters);
const forwarder = new Forwarder(
  { ...data, counters, controlSequence: new Int32Array(data.control, data.workerIndex * 4, 1) },
  tun,
  bind,
  memory,
  post,
);
post({ type: 'ready' });
new WorkerLoop(forwarder, { tunFd: data.tunFd, udpFd: data.udpFd, wakeFd: data.wakeFd, busyPollUs: data.busyPollUs, counters }).run();
// Let the thread exit: an open port would keep its event loop alive.
data.controlPort.close();
