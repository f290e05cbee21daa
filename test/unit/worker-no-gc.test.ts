// A forwarding worker in the steady state allocates nothing, so it never
// collects garbage (issue 21: a full mark-compact of ~10 ms ran in a worker
// and sat in front of a packet). The agent's own worker, built by
// buildWorker (rehearsal included) from its WorkerData in a real worker
// thread with a 1 MB young generation, as worker-main.ts builds it, runs its
// real loop (no poll timeout when idle) while the test drives, in one
// measured window: idle (the worker asleep in poll(), which must not wake it
// at all), packets one at a time each way (every one a wake-up of a sleeping
// poll), and packets a few ms apart. A GC observer
// inside the worker records every collection; none may fall in the window.
// With a 1 MB young generation, 40 bytes per wake-up would force a scavenge.
//
// The positive control is the same worker and window with lease updates
// posted to it as the main thread posts them (control messages allocate:
// a structured clone and a new table): the observer must see collections
// there, so the first result is not an observer that sees nothing.
//
// The worker also reports V8's optimisation status of its loop after the
// window (needs --allow-natives-syntax): the loop is still optimised code
// (TurboFan on Node 20, Maglev or TurboFan on Node 24: test/unit/rehearsal.test.ts).
// No timing is asserted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';

const src = (path: string) => JSON.stringify(new URL(`../../src/${path}`, import.meta.url).href);
const support = (path: string) => JSON.stringify(new URL(`../support/${path}`, import.meta.url).href);

// V8's OptimizationStatus bits (src/runtime/runtime-test.cc): optimised code of either tier.
const OPTIMIZED = 1 << 4;

interface Result {
  gcs: number;
  gcKinds: number[];
  out: number;
  in: number;
  polls: number;
  idlePolls: number;
  waitingWhileIdle: number;
  heartbeats: number;
  runStatus: number;
  packets: number;
  leaseUpdates: number;
}

function child(vnet: boolean, leaseUpdates: number, perRound: number, idleMs: number): string {
  return `
import { Worker, MessageChannel } from 'node:worker_threads';
import * as libc from ${src('dataplane/libc.js')};
import { KernelBind } from ${src('dataplane/kernel-bind.js')};
import { WorkerMemory } from ${src('dataplane/worker-memory.js')};
import { DatagramBatch, SendBatch } from ${src('dataplane/batches.js')};
import { openWorkerSockets } from ${src('dataplane/worker-sockets.js')};
import { allocateStats, workerCounters, Counter } from ${src('dataplane/worker-stats.js')};
import { buildLeaseTableSnapshot } from ${src('control/lease-table.js')};
import { packet, plainFrame, leaseOf, ip } from ${support('forwarder-harness.js')};
const VNET = ${vnet};
const LOOPBACK = 0x7f000001;
const [tunFd, testFd] = libc.socketpair(libc.AF_UNIX, libc.SOCK_DGRAM | libc.SOCK_NONBLOCK | libc.SOCK_CLOEXEC);
const agent = openWorkerSockets({ bindAddress: LOOPBACK, port: 0, socketBufferBytes: 4 << 20, offload: VNET });
const peer = openWorkerSockets({ bindAddress: LOOPBACK, port: 0, socketBufferBytes: 4 << 20, offload: false });
const leases = [leaseOf('10.244.1.0/24', '127.0.0.9'), leaseOf('10.244.2.0/24', '127.0.0.1')];
const { port1, port2 } = new MessageChannel();
const stats = allocateStats(1);
const control = new SharedArrayBuffer(4);
const window = new SharedArrayBuffer(16);
const win = new Float64Array(window);
const data = {
  workerIndex: 0, tunFd, udpFd: agent.udpFd, wakeFd: agent.wakeFd, sendFds: agent.sendFds, sendPorts: agent.sendPorts,
  stats, control, controlPort: port2,
  leases: buildLeaseTableSnapshot(leases, 1), backend: 'udp', vni: 1, vtepMac: new Uint8Array([2, 0, 0, 0, 0, 1]), node: '10.244.1.0-24', publicIp: LOOPBACK,
  capture: undefined, trace: undefined, peerPort: peer.sendPorts[0], batchSize: 64, mtu: 1472, pathMtu: 1472,
  vnetHeader: VNET, udpGro: agent.udpGro, udpGso: agent.udpGso, tunUso: VNET, busyPollUs: 0, rehearsal: true,
  offload: VNET, udpChecksum: true, ownNetwork: ip('10.244.1.0'), ownMask: 0xffffff00,
};
// What worker-main.ts does, with a GC observer first and the loop's status last.
const workerCode = \`
import { workerData, parentPort } from 'node:worker_threads';
import { PerformanceObserver } from 'node:perf_hooks';
const { buildWorker } = await import(${src('dataplane/worker-build.js')});
const { WorkerLoop } = await import(${src('dataplane/worker-loop.js')});
const gcs = [];
new PerformanceObserver((l) => gcs.push(...l.getEntries())).observe({ entryTypes: ['gc'] });
const { data, window } = workerData;
const { loop, forwarder } = buildWorker(data, () => {});
forwarder.sampleHeap();
parentPort.postMessage({ ready: true });
loop.run(0);
const runStatus = %GetOptimizationStatus(WorkerLoop.prototype.run);
forwarder.close();
// GC entries are delivered on the event loop, which the loop kept waiting. No
// condition says they have all arrived (there may be none: that is the test),
// so the event loop gets a fixed 200 ms.
await new Promise((r) => setTimeout(r, 200));
const w = new Float64Array(window);
const inWindow = gcs.filter((e) => performance.timeOrigin + e.startTime >= w[0] && performance.timeOrigin + e.startTime <= w[1]);
parentPort.postMessage({ gcs: inWindow.length, gcKinds: inWindow.map((e) => e.detail?.kind ?? e.kind), runStatus });
\`;
const w = new Worker(workerCode, { eval: true, workerData: { data, window }, transferList: [port2], resourceLimits: { maxYoungGenerationSizeMb: 1 } });
w.on('error', (err) => { console.error(err); process.exit(1); });
await new Promise((r) => w.once('message', r));
const counters = workerCounters(stats, 0);

// The peer node and the pod: a frame into the TUN stand-in, a datagram to the agent's socket, each answered before the next.
const dmem = new WorkerMemory(8, false, 2048);
const dbind = new KernelBind({ receiveFd: peer.udpFd, sendFds: [peer.udpFd], pool: dmem.pool, firstSlot: dmem.firstReceiveSlot, batchSize: 8, gro: false, gso: false, maxMessages: 8, maxPieces: 8, counters: new Float64Array(256) });
const out = packet({ src: ip('10.244.1.5'), dst: ip('10.244.2.7'), payload: 64 });
const frame = VNET ? plainFrame(out) : out;
const frameMemory = new libc.NativeMemory(4096);
frameMemory.bytes.set(frame, 0);
const inner = packet({ src: ip('10.244.2.7'), dst: ip('10.244.1.5'), payload: 64 });
dmem.pool.bytes.set(inner, dmem.readSlots[1]);
const one = new SendBatch(1, 1);
one.begin(LOOPBACK, agent.sendPorts[0] ?? 0, 0, 1);
one.add(dmem.readSlots[1], inner.length);
one.end();
const received = new DatagramBatch(8);
const drain = new libc.NativeMemory(70000);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
function pingPong(n, gapMs) {
  for (let i = 0; i < n; i++) {
    const outBefore = counters[Counter.UdpSentPackets], inBefore = counters[Counter.TunWrittenPackets];
    libc.write(testFd, frameMemory.pointer, frame.length);
    dbind.send(0, one, 0);
    // Both forwarded (the worker's own counters say so) before the next: a wake-up each.
    while (counters[Counter.UdpSentPackets] === outBefore || counters[Counter.TunWrittenPackets] === inBefore) Atomics.wait(sleeper, 0, 0, 0.05);
    dbind.receive(received);
    while (libc.read(testFd, drain.pointer, 70000) >= 0);
    if (gapMs > 0) Atomics.wait(sleeper, 0, 0, gapMs);
  }
}
const wakeOne = new libc.NativeMemory(8);
wakeOne.setU64(0, 1);
function post(msg) {
  port1.postMessage(msg);
  Atomics.add(new Int32Array(control), 0, 1);
  libc.write(agent.wakeFd, wakeOne.pointer, 8);
}
pingPong(3000, 0); // past the first packets
// Asleep in poll() before the idle part starts (its last packet may still be on its way out).
while (counters[Counter.Waiting] !== 1) Atomics.wait(sleeper, 0, 0, 1);
const heartbeat0 = counters[Counter.HeartbeatMs];
win[0] = performance.timeOrigin + performance.now();
const polls0 = counters[Counter.SyscallsPoll];
Atomics.wait(sleeper, 0, 0, ${idleMs}); // idle: the worker must not wake at all; the thing measured, not a wait for anything
const idlePolls = counters[Counter.SyscallsPoll] - polls0;
const waitingWhileIdle = counters[Counter.Waiting];
let packets = 0;
for (let round = 0; round < 10; round++) {
  pingPong(${perRound}, 0);
  pingPong(20, 5);
  packets += ${perRound} + 20;
  for (let u = 0; u < ${leaseUpdates} / 10; u++) {
    const many = [...leases];
    for (let k = 0; k < 64; k++) many.push(leaseOf('10.245.' + k + '.0/24', '127.0.1.' + (k + 1)));
    post({ type: 'leases', snapshot: buildLeaseTableSnapshot(many, 2 + round) });
  }
}
win[1] = performance.timeOrigin + performance.now();
const polls = counters[Counter.SyscallsPoll] - polls0;
const heartbeats = counters[Counter.HeartbeatMs] > heartbeat0 ? 1 : 0;
const result = new Promise((res) => w.on('message', (m) => m.gcs !== undefined && res(m)));
post({ type: 'stop' });
const r = await result;
await w.terminate();
process.stdout.write(JSON.stringify({ ...r, out: counters[Counter.UdpSentPackets], in: counters[Counter.TunWrittenPackets], polls, idlePolls, waitingWhileIdle, heartbeats, packets, leaseUpdates: ${leaseUpdates} }) + '\\n');
process.exit(0);
`;
}

function runChild(vnet: boolean, leaseUpdates: number, perRound = 3000, idleMs = 3500): Promise<Result> {
  return new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      ['--allow-natives-syntax', '--input-type=module', '-e', child(vnet, leaseUpdates, perRound, idleMs)],
      { timeout: 300_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout.trim().split('\n').pop()!) as Result)),
    ),
  );
}

for (const vnet of [false, true]) {
  test(`offloads ${vnet ? 'on' : 'off'}: the agent's worker is not woken while idle, and collects no garbage over the idle part and ${'30 200'} single-packet wake-ups each way`, async () => {
    const r = await runChild(vnet, 0);
    console.log(`    offloads ${vnet ? 'on' : 'off'}: ${r.idlePolls} wake-ups in 3.5 s idle; ${r.packets} packets each way in the window, ${r.polls} polls; ${r.gcs} GCs in the worker (kinds ${r.gcKinds.join(',') || '-'}); loop status ${r.runStatus}`);
    assert.is(r.idlePolls, 0, `the idle worker was woken ${r.idlePolls} times: its poll() has a timeout`);
    assert.is(r.waitingWhileIdle, 1, 'the idle worker does not say it is waiting in poll()');
    assert.ok(r.out >= r.packets && r.in >= r.packets, `forwarded ${r.out} out, ${r.in} in`);
    assert.ok(r.polls >= r.packets, `${r.polls} polls for ${r.packets} packets: the loop did not sleep between them`);
    assert.is(r.heartbeats, 1, 'the heartbeat moved');
    assert.is(r.gcs, 0, `${r.gcs} garbage collections in the worker during the window`);
    assert.ok((r.runStatus & OPTIMIZED) !== 0, `WorkerLoop.run is not optimised code after the window (status ${r.runStatus})`);
  });
}

test('control: the same worker and window with lease updates (control messages allocate): the observer sees collections', async () => {
  // The allocation comes from the updates, so a tenth of the packets and no idle part prove it as well.
  const r = await runChild(false, 400, 300, 0);
  console.log(`    with ${r.leaseUpdates} lease updates: ${r.gcs} GCs in the worker (kinds ${r.gcKinds.join(',')})`);
  assert.ok(r.gcs > 0, 'no GC observed although the worker allocated: the observer sees nothing');
});

test.run();
