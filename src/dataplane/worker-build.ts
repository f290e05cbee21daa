// One forwarding worker, put together from its WorkerData: the rehearsal
// (rehearsal.ts), then the kernel devices on the descriptors the main thread
// opened, the forwarder between them, and the loop. worker-main.ts runs it on
// the thread's workerData; a unit test runs it on a structured clone of its
// own, so the construction the test checks is the agent's.
import { Forwarder, type ForwarderConfig } from './forwarder.js';
import { WorkerMemory } from './worker-memory.js';
import { WorkerLoop } from './worker-loop.js';
import { workerCounters } from './worker-stats.js';
import { buildKernelDevices, type DeviceOptions, type DeviceFds } from './worker-devices.js';
import { rehearse, type RehearsalResult } from './rehearsal.js';
import type { WorkerReport } from './worker-messages.js';

export interface WorkerData extends Omit<ForwarderConfig, 'counters' | 'controlSequence'>, DeviceOptions, DeviceFds {
  stats: SharedArrayBuffer;
  control: SharedArrayBuffer;
  wakeFd: number;
  busyPollUs: number;
  /** Rehearse before reporting ready (rehearsal.ts); --rehearsal off turns it off. */
  rehearsal: boolean;
  /** How the send sockets were opened, for the rehearsal's copies. */
  offload: boolean;
  udpChecksum: boolean;
  /** The IPv6 underlay: an epoll descriptor readable when either UDP socket is (absent: poll udpFd itself). */
  udpPollFd?: number;
}

export interface BuiltWorker {
  forwarder: Forwarder;
  loop: WorkerLoop;
  rehearsal?: RehearsalResult;
}

export function buildWorker(data: WorkerData, post: (report: WorkerReport) => void): BuiltWorker {
  const counters = workerCounters(data.stats, data.workerIndex);
  const memory = new WorkerMemory(data.batchSize, data.vnetHeader, data.mtu);
  const { tun, bind } = buildKernelDevices(data, data, memory, counters);
  const forwarder = new Forwarder(
    { ...data, counters, controlSequence: new Int32Array(data.control, data.workerIndex * 4, 1) },
    tun,
    bind,
    memory,
    post,
  );
  // With the IPv6 underlay the loop polls an epoll descriptor holding both UDP sockets (worker-sockets.ts).
  const loop = new WorkerLoop(forwarder, { tunFd: data.tunFd, udpFd: data.udpPollFd ?? data.udpFd, wakeFd: data.wakeFd, busyPollUs: data.busyPollUs, counters });
  // The rehearsal comes after the real objects are built: building them
  // later would change what V8 has learnt about the fields of these classes
  // and throw away the code the rehearsal optimised.
  const rehearsal = data.rehearsal ? rehearseOrSkip(data, memory, post) : undefined;
  return { forwarder, loop, rehearsal };
}

/**
 * Warms the forwarding path before the first real packet (rehearsal.ts says
 * why) and logs what it did. A rehearsal that cannot run (no loopback in this
 * network namespace, no descriptors left) costs latency, never the node: the
 * worker starts without it and the log says why.
 */
export function rehearseOrSkip(data: WorkerData, memory: WorkerMemory, post: (report: WorkerReport) => void): RehearsalResult | undefined {
  const worker = `worker ${data.workerIndex}`;
  let r: RehearsalResult;
  try {
    r = rehearse({ ...data, sendSockets: data.sendFds.length, underlay6: data.udp6Fd !== undefined && data.udp6Fd >= 0 }, memory);
  } catch (err) {
    post({ type: 'log', line: `${worker}: rehearsal skipped, the first packets will run unoptimised code: ${err instanceof Error ? err.message : String(err)}` });
    return undefined;
  }
  const complete = r.outboundForwarded === r.outboundSent && r.inboundForwarded === r.inboundSent && r.drops === 0;
  post({
    type: 'log',
    line:
      `${worker}: rehearsal: ${r.outboundForwarded}/${r.outboundSent} packets out, ${r.inboundForwarded}/${r.inboundSent} in, ${r.ms} ms` +
      (complete ? '' : ` (${r.drops} dropped: the forwarding path is warmed only in part)`),
  });
  return r;
}
