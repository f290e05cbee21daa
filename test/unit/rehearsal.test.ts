// The rehearsal (src/dataplane/rehearsal.ts) forwards every made-up packet it
// sends, in both modes, with and without virtio headers, and leaves the
// worker's forwarding path optimised where a fresh worker has it in the
// interpreter: by TurboFan on Node 20; on Node 24 by Maglev, the mid tier V8
// now optimises through first (TurboFan-only tiering, --no-maglev, measured
// no better there: README, "Node.js versions"). Optimisation is read with V8's own
// %GetOptimizationStatus in a child process (--allow-natives-syntax), with
// compilation on the main thread (--no-concurrent-recompilation) so the status
// is final when read. The control case, the same child without the rehearsal,
// shows the assertion can fail. No timing is asserted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';

const src = (path: string) => JSON.stringify(new URL(`../../src/${path}`, import.meta.url).href);

// V8's OptimizationStatus bits (src/runtime/runtime-test.cc): optimised code
// of either optimising tier, and which one.
const OPTIMIZED = 1 << 4;
const MAGLEVVED = 1 << 5;
const TURBOFANNED = 1 << 6;
const tier = (s: number) => ((s & TURBOFANNED) !== 0 ? 'TurboFan' : (s & MAGLEVVED) !== 0 ? 'Maglev' : (s & OPTIMIZED) !== 0 ? 'optimised' : 'not optimised');

// The child's last step in both shapes: V8's status of each step of the
// forwarding path (needs Forwarder, WorkerLoop, KernelTun, KernelBind, LeaseTable imported).
const PATH_STATUS = `
const fns = {
  'WorkerLoop.run': WorkerLoop.prototype.run,
  'Forwarder.forwardOutbound': Forwarder.prototype.forwardOutbound,
  'Forwarder.forwardInbound': Forwarder.prototype.forwardInbound,
  'KernelTun.read': KernelTun.prototype.read,
  'KernelBind.receive': KernelBind.prototype.receive,
};
if (DUAL_STACK) {
  // The IPv6 branches are functions of their own: a dual-stack rehearsal must leave them optimised too.
  fns['Forwarder.forwardPacket6'] = Forwarder.prototype.forwardPacket6;
  fns['Forwarder.receive6'] = Forwarder.prototype.receive6;
  fns['LeaseTable.lookup6'] = LeaseTable.prototype.lookup6;
}
const status = Object.fromEntries(Object.entries(fns).map(([name, f]) => [name, %GetOptimizationStatus(f)]));`;

function child(backend: 'udp' | 'vxlan', vnet: boolean, rehearse: boolean, dualStack = false, statusOf6 = dualStack): string {
  return `
const DUAL_STACK = ${statusOf6};
import { rehearse } from ${src('dataplane/rehearsal.js')};
import { WorkerMemory } from ${src('dataplane/worker-memory.js')};
import { Forwarder } from ${src('dataplane/forwarder.js')};
import { WorkerLoop } from ${src('dataplane/worker-loop.js')};
import { KernelTun } from ${src('dataplane/kernel-tun.js')};
import { KernelBind } from ${src('dataplane/kernel-bind.js')};
import { LeaseTable } from ${src('control/lease-table.js')};
const memory = new WorkerMemory(64, ${vnet}, 1472);
const result = ${rehearse}
  ? rehearse({ backend: '${backend}', batchSize: 64, vnetHeader: ${vnet}, udpGro: ${vnet}, tunUso: ${vnet}, udpGso: ${vnet},
      vni: 1, vtepMac: new Uint8Array([2, 0, 0, 0, 0, 1]), mtu: 1472, pathMtu: 1472,
      sendSockets: ${backend === 'vxlan' ? 4 : 1}, offload: ${vnet}, udpChecksum: true${dualStack ? ', ownPrefix6: 64' : ''} }, memory)
  : null;
${PATH_STATUS}
process.stdout.write(JSON.stringify({ result, status }) + '\\n');
`;
}

function run(backend: 'udp' | 'vxlan', vnet: boolean, rehearse: boolean, dualStack = false, statusOf6 = dualStack) {
  return new Promise<{ result: Record<string, number> | null; status: Record<string, number> }>((resolve, reject) =>
    execFile(
      process.execPath,
      ['--allow-natives-syntax', '--no-concurrent-recompilation', ...V8_TRACE_FLAGS, '--input-type=module', '-e', child(backend, vnet, rehearse, dualStack, statusOf6)],
      { timeout: 120_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${err.message}\n${stderr}`));
        const out = JSON.parse(stdout.trim().split('\n').pop()!);
        resolve({ ...out, status: effective(out.status, stdout) });
      },
    ),
  );
}

// A Forwarder step that TurboFan inlined into WorkerLoop.run's optimised code
// runs as part of it: it is never called on its own, so its own status stays
// unoptimised (whether V8 inlines it depends on the loop's size). The children
// run with --trace-opt --trace-turbo-inlining (sequential, with
// --no-concurrent-recompilation), and a step counts as optimised if the last
// compilation of run that completed inlined it and run is optimised now. Only
// Forwarder's steps: their names are unique in src/ (read, receive are not).
const INLINABLE = ['forwardInbound', 'forwardOutbound', 'forwardPacket6', 'receive6'];
const V8_TRACE_FLAGS = ['--trace-opt', '--trace-turbo-inlining'];

/** The Forwarder steps inlined by the last completed optimising compilation of WorkerLoop.run, from the child's stdout. */
function inlinedIntoRun(stdout: string): Set<string> {
  let current: Set<string> | undefined;
  let last = new Set<string>();
  for (const line of stdout.split('\n')) {
    if (/^\[compiling method .*<JSFunction run /.test(line)) current = new Set();
    else if (/^\[completed compiling .*<JSFunction run /.test(line) && current) [last, current] = [current, undefined];
    else if (current) {
      const m = /^Inlining .*?<SharedFunctionInfo (\w+)>\} into /.exec(line);
      if (m && INLINABLE.includes(m[1]!)) current.add(m[1]!);
    }
  }
  return last;
}

/** The child's statuses, a Forwarder step inlined into an optimised run counted as run's. */
function effective(status: Record<string, number>, stdout: string): Record<string, number> {
  const inlined = inlinedIntoRun(stdout);
  const run = status['WorkerLoop.run']!;
  if ((run & OPTIMIZED) === 0) return status;
  return Object.fromEntries(
    Object.entries(status).map(([name, st]) => [name, (st & OPTIMIZED) === 0 && inlined.has(name.split('.')[1]!) ? run : st]),
  );
}

const optimised = (status: Record<string, number>) => Object.entries(status).filter(([, s]) => (s & OPTIMIZED) !== 0).map(([name]) => name);
const tiers = (status: Record<string, number>) => JSON.stringify(Object.fromEntries(Object.entries(status).map(([name, s]) => [name, `${tier(s)} (${s})`])));

test('control: without the rehearsal, none of the forwarding path is optimised (the check below can fail)', async () => {
  const { status } = await run('udp', false, false);
  assert.equal(optimised(status), [], tiers(status));
});

for (const backend of ['udp', 'vxlan'] as const) {
  for (const vnet of [false, true]) {
    test(`${backend} mode, offloads ${vnet ? 'on' : 'off'}: every rehearsal packet is forwarded both ways, and the path is left optimised`, async () => {
      const { result, status } = await run(backend, vnet, true);
      assert.ok(result);
      assert.ok(result.outboundSent > 1000, `${result.outboundSent} packets out`);
      assert.is(result.outboundForwarded, result.outboundSent, 'TUN → UDP: every packet sent on');
      assert.is(result.inboundForwarded, result.inboundSent, 'UDP → TUN: every packet written');
      assert.is(result.inboundSent, result.outboundSent);
      assert.is(result.drops, 0);
      assert.equal(optimised(status), Object.keys(status), tiers(status));
    });
  }
}

for (const [backend, vnet] of [['udp', false], ['udp', true], ['vxlan', false], ['vxlan', true]] as const) {
  test(`dual-stack ${backend} mode, offloads ${vnet ? 'on' : 'off'}: IPv6 packets are rehearsed too, every one forwarded, and the IPv6 branches are left optimised`, async () => {
    const { result, status } = await run(backend, vnet, true, true);
    assert.ok(result);
    assert.ok(result.outboundSent > 1000, `${result.outboundSent} packets out`);
    assert.is(result.outboundForwarded, result.outboundSent);
    assert.is(result.inboundForwarded, result.inboundSent);
    assert.is(result.drops, 0);
    assert.ok(result.unleasedSent > 0, 'the kernel\'s MLD report is rehearsed');
    assert.is(result.noLeaseDrops, result.unleasedSent, 'each one a no-lease drop, nothing else dropped');
    assert.ok('Forwarder.forwardPacket6' in status && 'Forwarder.receive6' in status);
    assert.equal(optimised(status), Object.keys(status), tiers(status));
  });
}

for (const backend of ['udp', 'vxlan'] as const) {
  test(`control, ${backend} mode: an IPv4-only rehearsal leaves the IPv6 branches cold (so the check above can fail)`, async () => {
    const { status } = await run(backend, false, true, false, true);
    assert.equal(
      Object.keys(status).filter((name) => name.endsWith('6') && (status[name] & OPTIMIZED) !== 0),
      [],
      tiers(status),
    );
    assert.ok(optimised(status).includes('Forwarder.forwardOutbound'), 'the IPv4 path is warm');
  });
}

// The agent's own construction (worker-build.ts) on a structured clone of its
// WorkerData, as a worker thread receives it, then a few real packets each way
// through the loop: the code the rehearsal left optimised must stay optimised
// (a config or device options of another shape than the rehearsal's used to
// throw it away on the first packet: V8's "wrong map" deoptimisation).
//
// Dual-stack, the first packet is the MLDv2 report the kernel sends into the
// TUN at every start (no lease covers it: it took branches a rehearsal of
// leased packets never ran, and threw forwardPacket6's and lookup6's
// optimised code away), then an ICMPv6 echo each way follows every IPv4
// packet: in VXLAN mode its frame (ethertype 0x86dd, the peer's IPv6 VTEP MAC)
// takes branches of the encapsulation that an IPv4-only rehearsal never ran.
function agentChild(backend: 'udp' | 'vxlan', vnet: boolean, dualStack = false): string {
  return `
const DUAL_STACK = ${dualStack};
import { MessageChannel } from 'node:worker_threads';
import * as libc from ${src('dataplane/libc.js')};
import { buildWorker } from ${src('dataplane/worker-build.js')};
import { Forwarder } from ${src('dataplane/forwarder.js')};
import { WorkerLoop } from ${src('dataplane/worker-loop.js')};
import { KernelTun } from ${src('dataplane/kernel-tun.js')};
import { KernelBind } from ${src('dataplane/kernel-bind.js')};
import { WorkerMemory } from ${src('dataplane/worker-memory.js')};
import { SendBatch } from ${src('dataplane/batches.js')};
import { openWorkerSockets } from ${src('dataplane/worker-sockets.js')};
import { allocateStats, workerCounters, Counter, DROPS_BASE } from ${src('dataplane/worker-stats.js')};
import { DropReason } from ${src('encap/drop-reasons.js')};
import { buildLeaseTableSnapshot, LeaseTable } from ${src('control/lease-table.js')};
import { buildKernelMldReport } from ${src('dataplane/rehearsal.js')};
import { makeCidr6, parseIPv6 } from ${src('control/ipv6-address.js')};
import { buildIcmpv6Echo, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY } from ${src('encap/icmpv6.js')};
import { packet, plainFrame, leaseOf, ip } from ${JSON.stringify(new URL('../support/forwarder-harness.js', import.meta.url).href)};
const VXLAN = ${backend === 'vxlan'};
const LOOPBACK = 0x7f000001;
const [tunFd, testFd] = libc.socketpair(libc.AF_UNIX, libc.SOCK_DGRAM | libc.SOCK_NONBLOCK | libc.SOCK_CLOEXEC);
const agent = openWorkerSockets({ bindAddress: LOOPBACK, port: 0, socketBufferBytes: 1 << 20, offload: ${vnet}, vxlan: VXLAN ? { sourcePorts: 4, udpChecksum: true } : undefined });
const peer = openWorkerSockets({ bindAddress: LOOPBACK, port: 0, socketBufferBytes: 1 << 20, offload: false });
const peerMac = '02:00:00:00:00:02';
const peerMac6 = '02:00:00:00:06:02';
const leases = [leaseOf('10.244.1.0/24', '127.0.0.9'), leaseOf('10.244.2.0/24', '127.0.0.1', { VNI: 1, VtepMAC: peerMac })];
if (DUAL_STACK) {
  leases[0] = { ...leases[0], ipv6Subnet: makeCidr6(parseIPv6('fd00:10:244:1::'), 64), backendV6Data: { VNI: 1, VtepMAC: '02:00:00:00:00:01' } };
  leases[1] = { ...leases[1], ipv6Subnet: makeCidr6(parseIPv6('fd00:10:244:2::'), 64), backendV6Data: { VNI: 1, VtepMAC: peerMac6 } };
}
const channel = new MessageChannel();
const vtepMac = new Uint8Array([2, 0, 0, 0, 0, 1]);
const data = structuredClone({
  workerIndex: 0, tunFd, udpFd: agent.udpFd, wakeFd: agent.wakeFd, sendFds: agent.sendFds, sendPorts: agent.sendPorts,
  stats: allocateStats(1), control: new SharedArrayBuffer(4), controlPort: channel.port2,
  leases: buildLeaseTableSnapshot(leases, 1), backend: '${backend}', vni: 1, vtepMac, node: '10.244.1.0-24', publicIp: LOOPBACK,
  capture: undefined, trace: undefined, peerPort: peer.sendPorts[0], batchSize: 64, mtu: 1422, pathMtu: 1422,
  vnetHeader: ${vnet}, udpGro: agent.udpGro, udpGso: agent.udpGso, tunUso: ${vnet}, busyPollUs: 0, rehearsal: true,
  offload: ${vnet}, udpChecksum: true, ownNetwork: ip('10.244.1.0'), ownMask: 0xffffff00,
  ...(DUAL_STACK ? { ownNetwork6: parseIPv6('fd00:10:244:1::'), ownPrefix6: 64 } : {}),
}, { transfer: [channel.port2] });
const { loop, rehearsal } = buildWorker(data, () => {});
const counters = workerCounters(data.stats, 0);

// The peer: frames into the TUN stand-in, datagrams to the agent's socket.
const dmem = new WorkerMemory(8, false, 2048);
const dbind = new KernelBind({ receiveFd: peer.udpFd, sendFds: [peer.udpFd], pool: dmem.pool, firstSlot: dmem.firstReceiveSlot, batchSize: 8, gro: false, gso: false, maxMessages: 8, maxPieces: 8, counters: new Float64Array(200) });
const out = packet({ src: ip('10.244.1.5'), dst: ip('10.244.2.7'), payload: 64 });
const frame = ${vnet} ? plainFrame(out) : out;
dmem.pool.bytes.set(frame, dmem.readSlots[0]);
const inner = packet({ src: ip('10.244.2.7'), dst: ip('10.244.1.5'), payload: 64 });
const vx = VXLAN ? 22 : 0;
const d = dmem.readSlots[1];
if (VXLAN) {
  dmem.pool.bytes.set([8, 0, 0, 0, 0, 0, 1, 0], d);
  dmem.pool.bytes.set(vtepMac, d + 8);
  dmem.pool.bytes.set([2, 0, 0, 0, 0, 2, 8, 0], d + 14);
}
dmem.pool.bytes.set(inner, d + vx);
// IPv6: an echo request out from our pod, a reply in from the peer's pod.
const vn = ${vnet} ? 10 : 0;
const pod6 = parseIPv6('fd00:10:244:1::5');
const peerPod6 = parseIPv6('fd00:10:244:2::7');
const f6 = dmem.readSlots[2];
dmem.pool.bytes.fill(0, f6, f6 + vn);
const frame6Length = vn + buildIcmpv6Echo(dmem.pool.bytes, f6 + vn, pod6, peerPod6, ICMPV6_ECHO_REQUEST, 7, 1, 56);
const d6 = dmem.readSlots[3];
if (VXLAN) {
  dmem.pool.bytes.set([8, 0, 0, 0, 0, 0, 1, 0], d6);
  dmem.pool.bytes.set(vtepMac, d6 + 8);
  dmem.pool.bytes.set([2, 0, 0, 0, 6, 2, 0x86, 0xdd], d6 + 14);
}
const datagram6Length = vx + buildIcmpv6Echo(dmem.pool.bytes, d6 + vx, peerPod6, pod6, ICMPV6_ECHO_REPLY, 7, 1, 56);
const batch = new SendBatch(1, 1);
const scratch = new libc.NativeMemory(70000);
if (DUAL_STACK) {
  const m = dmem.readSlots[4];
  dmem.pool.bytes.fill(0, m, m + vn);
  libc.write(testFd, dmem.pool.memory.address + m, vn + buildKernelMldReport(dmem.pool.bytes, m + vn));
  loop.run(1);
}
const agentPort = agent.sendPorts.length && !VXLAN ? agent.sendPorts[0] : portOf(agent.udpFd);
for (let i = 0; i < 5; i++) {
  libc.write(testFd, dmem.pool.memory.address + dmem.readSlots[0], frame.length);
  batch.reset(); batch.begin(LOOPBACK, agentPort, 0, 1); batch.add(d, vx + inner.length); batch.end();
  dbind.send(0, batch, 0);
  if (DUAL_STACK) {
    libc.write(testFd, dmem.pool.memory.address + f6, frame6Length);
    batch.reset(); batch.begin(LOOPBACK, agentPort, 0, 1); batch.add(d6, datagram6Length); batch.end();
    dbind.send(0, batch, 0);
  }
  loop.run(1);
  while (libc.read(testFd, scratch.address, 70000) >= 0);
  while (libc.read(peer.udpFd, scratch.address, 70000) >= 0);
}
function portOf(fd) {
  const m = new libc.NativeMemory(32);
  m.view.setUint32(16, 16, true);
  libc.getsockname(fd, m.address, m.address + 16);
  return m.view.getUint16(2, false);
}
${PATH_STATUS}
const forwarded = { out: counters[Counter.UdpSentPackets], in: counters[Counter.TunWrittenPackets], drops: counters.slice(DROPS_BASE).reduce((a, b) => a + b, 0), noLease: counters[DROPS_BASE + DropReason.NoLease] };
process.stdout.write(JSON.stringify({ rehearsal, status, forwarded }) + '\\n');
process.exit(0);
`;
}

for (const [backend, vnet, dualStack] of [
  ['udp', false, false],
  ['udp', true, false],
  ['vxlan', true, false],
  ['udp', true, true],
  ['vxlan', false, true],
  ['vxlan', true, true],
] as const) {
  test(`${dualStack ? 'dual-stack ' : ''}${backend} mode, offloads ${vnet ? 'on' : 'off'}: the agent's own worker, built from a structured clone, keeps the rehearsed code optimised through its first real packets`, async () => {
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ['--allow-natives-syntax', '--no-concurrent-recompilation', ...V8_TRACE_FLAGS, '--input-type=module', '-e', agentChild(backend, vnet, dualStack)],
        { timeout: 120_000, maxBuffer: 64 << 20 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      ),
    );
    const { rehearsal, status: own, forwarded } = JSON.parse(out.trim().split('\n').pop()!) as {
      rehearsal: Record<string, number>;
      status: Record<string, number>;
      forwarded: { out: number; in: number; drops: number; noLease: number };
    };
    const status = effective(own, out);
    assert.is(rehearsal.drops, 0);
    const each = dualStack ? 10 : 5;
    const unleased = dualStack ? 1 : 0;
    assert.equal(
      forwarded,
      { out: each, in: each, drops: unleased, noLease: unleased },
      `five real packets each way${dualStack ? ' in each family, the MLD report dropped as no-lease' : ''}`,
    );
    assert.equal(optimised(status), Object.keys(status), tiers(status));
  });
}

test.run();
