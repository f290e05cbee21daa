// Entry point of a forwarding worker thread. The loop is synchronous and never
// returns to the event loop while it runs; control messages are pulled with
// receiveMessageOnPort when the main thread signals them.
import { parentPort, workerData } from 'node:worker_threads';
import { Forwarder, type ForwarderConfig } from './forwarder.js';
import { workerCounters } from './worker-stats.js';

export interface WorkerData extends Omit<ForwarderConfig, 'counters' | 'controlSequence'> {
  stats: SharedArrayBuffer;
  control: SharedArrayBuffer;
}

const data = workerData as WorkerData;
const forwarder = new Forwarder({
  ...data,
  counters: workerCounters(data.stats, data.workerIndex),
  controlSequence: new Int32Array(data.control, data.workerIndex * 4, 1),
});
parentPort!.postMessage({ type: 'ready' });
forwarder.run();
// Let the thread exit: an open port would keep its event loop alive.
data.controlPort.close();
