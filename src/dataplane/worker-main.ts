// Entry point of a forwarding worker thread: builds the worker on the
// descriptors the main thread opened (worker-build.ts) and runs its loop. The
// loop is synchronous and never returns to the event loop while it runs;
// control messages are pulled with receiveMessageOnPort when the main thread
// signals them.
import { parentPort, workerData } from 'node:worker_threads';
import { buildWorker, type WorkerData } from './worker-build.js';
import type { WorkerReport } from './worker-messages.js';
import { setThreadName } from './libc.js';

const data = workerData as WorkerData;
// Forwarding threads findable by name (top -H, perf, the benchmark's CPU per ping).
setThreadName(`flannel-w${data.workerIndex}`);
const { loop, forwarder } = buildWorker(data, (report: WorkerReport) => parentPort!.postMessage(report));
// The heap as the loop starts (the rehearsal's garbage included): it stays so, nothing in the loop allocates.
forwarder.sampleHeap();
parentPort!.postMessage({ type: 'ready' } satisfies WorkerReport);
loop.run(0);
forwarder.close();
// Let the thread exit: an open port would keep its event loop alive.
data.controlPort.close();
