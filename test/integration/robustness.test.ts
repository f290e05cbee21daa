// Issue 7, live: the agent survives bad input, faults and load, and lets no
// one in. Real agents in namespaces (createCluster), crafted datagrams from
// raw sockets (test/support/udp-inject.ts), real TCP and iperf3 traffic.
// Everything a test creates (processes, iptables rules, the attacker
// namespace, lease edits) is undone in finally; clusters in after().
//
// Not repeated here: a second agent on the same TUN name refuses to start
// (test/integration/agent-lifecycle.test.ts, "SIGTERM removes the TUN device
// and its route and exits 0; a second agent on the same TUN is refused"), and
// a crashed worker is restarted mid-transfer (worker-faults.test.ts).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { isRunning, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { ping } from '../../src/testbed/measure.js';
import { eventually, udpIcmpProbe } from '../support/pod-traffic.js';
import {
  readAgentStats,
  dropDelta,
  sumValues,
  snmpCounters,
  counterDelta,
  residentBytes,
  linkDrops,
  InputCounters,
  type AgentStats,
} from '../support/agent-stats.js';
import { addAttacker } from '../support/attacker.js';
import { startStreamingTransfer, startMarkerListener, inject, injectPlan } from '../support/live-probes.js';
import { MALFORMED_KINDS, type MalformedKind } from '../support/malformed.js';

const MiB = 1024 * 1024;
/**
 * Drop reasons for packets the agent could not hand on (the kernel refused a
 * send or a TUN write): forwarding failures of legitimate traffic under load,
 * never the verdict of an input check, so they are not counted as "dropped
 * injected datagrams".
 */
const FORWARDING_FAILURES = ['send-failed', 'tun-write-failed', 'too-many-segments'];

function table(record: Record<string, number>): string {
  return Object.entries(record)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

/** Waits until the agent has taken `expected` more datagrams off its socket than in `before` (or the deadline passes); returns the last stats. */
async function settle(cluster: Cluster, i: number, before: AgentStats, expected: number, deadlineMs = 15_000): Promise<AgentStats> {
  let last = await readAgentStats(cluster.agent(i)!);
  await eventually(async () => {
    last = await readAgentStats(cluster.agent(i)!);
    return last.totals.UdpReceivedPackets - before.totals.UdpReceivedPackets >= expected;
  }, deadlineMs, 200);
  return last;
}

// ---------------------------------------------------------------------------

const hostile = suite('malformed datagrams at a running agent');
let cluster: Cluster;

hostile.before(async () => {
  cluster = await createCluster({ nodes: 3, dataplane: 'agent', workers: 2 });
});
hostile.after(async () => {
  await cluster?.destroy();
});

hostile('≥ 100 000 malformed datagrams during a 64+ MiB TCP transfer: the transfer arrives intact, the agent stays up, every datagram is counted as a drop', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const receiver = cluster.node(2);
  const agent = cluster.agent(2)!;
  const pid = agent.pid;
  // Two senders at once. Node 3, from its own namespace with its own address
  // (a leased node): the input checks behind the source check are what it
  // exercises. And an attacker host on the underlay holding no lease. Both
  // use source ports 40000-40063 (never 8285, which node 3's agent sends
  // from), so two INPUT rules on node 2 count exactly the injected datagrams.
  const attacker = await addAttacker(cluster, 66);
  const counters = new InputCounters(cluster, receiver.ns, [
    ['-s', cluster.node(3).underlayIp, '-p', 'udp', '--dport', '8285', '!', '--sport', '8285'],
    ['-s', attacker.ip, '-p', 'udp', '--dport', '8285'],
  ]);
  const counts = (each: number, garbage: number) => {
    const c: Partial<Record<MalformedKind, number>> = {};
    for (const kind of MALFORMED_KINDS) c[kind] = kind === 'garbage-65000' ? garbage : each;
    return c;
  };
  const inner = { src: '10.244.3.5', dst: p2.ip, elsewhere: [p1.ip, cluster.pod(3).ip, '10.244.200.1', '8.8.8.8', '192.0.2.1'], unleased: '10.244.250.9' };
  const transfer = await startStreamingTransfer(cluster, p1, p2, 64 * MiB);
  try {
    await counters.install();
    // The transfer is under way before the first malformed datagram leaves.
    await transfer.progress(16);
    const before = await readAgentStats(agent);
    const kernelBefore = await snmpCounters(cluster, receiver.ns);
    const arrivedBefore = await counters.packets();

    const [fromNode3, fromAttacker] = await Promise.all([
      inject(cluster, cluster.node(3).ns, injectPlan({ src: cluster.node(3).underlayIp, dst: receiver.underlayIp, seed: 7, counts: counts(10_500, 2_000), inner })),
      inject(undefined, attacker.ns, injectPlan({ src: attacker.ip, dst: receiver.underlayIp, seed: 8, counts: counts(1_200, 200), inner })),
    ]);
    const injected = fromNode3.datagrams + fromAttacker.datagrams;

    const arrivedAfter = await counters.packets();
    const arrived = arrivedAfter[0] - arrivedBefore[0] + arrivedAfter[1] - arrivedBefore[1];
    const kernelMid = await snmpCounters(cluster, receiver.ns);
    const kernelDropped = counterDelta(kernelBefore, kernelMid, 'Udp.InErrors');
    // Whatever the kernel queued on the agent's sockets has been read before the counters are compared.
    const after = await settle(cluster, 2, before, counterDelta(kernelBefore, kernelMid, 'Udp.InDatagrams'));
    const result = await transfer.finish();
    const kernelAfter = await snmpCounters(cluster, receiver.ns);

    const drops = dropDelta(before, after);
    const inputDrops = sumValues(drops, FORWARDING_FAILURES);
    for (const [who, r] of [['node 3 (leased)', fromNode3], [`${attacker.ip} (no lease)`, fromAttacker]] as const) {
      console.log(`    from ${who}: ${r.datagrams} datagrams (${r.sent['garbage-65000'] ?? 0} of 65000 bytes, as ${r.fragments} fragments) in ${r.seconds.toFixed(1)} s: ${table(r.sent)}`);
    }
    console.log(`    reached node 2's UDP layer (INPUT rules): ${arrived} of ${injected}; kernel UDP drops (InErrors): ${kernelDropped} (RcvbufErrors ${counterDelta(kernelBefore, kernelAfter, 'Udp.RcvbufErrors')})`);
    console.log(`    agent drops: ${table(drops)} = ${inputDrops} (+ forwarding failures ${sumValues(drops) - inputDrops})`);
    console.log(`    transfer: ${(result.received.bytes / MiB).toFixed(0)} MiB in ${result.seconds.toFixed(1)} s, sha256 ${result.received.sha256 === result.sent.sha256 ? 'matches' : 'DIFFERS'}`);

    assert.ok(injected >= 100_000, `only ${injected} datagrams injected`);
    // The transfer: started before, finished after the flood, intact.
    assert.ok(result.sent.bytes >= 64 * MiB, `only ${result.sent.bytes} bytes sent`);
    assert.is(result.received.bytes, result.sent.bytes);
    assert.is(result.received.sha256, result.sent.sha256);
    // The agent: the same process, still forwarding.
    assert.ok(isRunning(agent) && agent.pid === pid, `the agent on node 2 is gone:\n${agent.log.tail(20)}`);
    assert.is((await ping(cluster, p1.ns, p2.ip, { count: 3, intervalS: 0.2 })).received, 3, 'ping pod1 → pod2 after the flood');
    // The accounting. Every injected datagram that reached node 2's UDP layer
    // (counted by the INPUT rules, after IP reassembly) was then either
    // dropped by the kernel before the socket (Udp InErrors: receive buffer
    // full, bad checksum; this counter may include legitimate datagrams too,
    // which only makes the bound looser) or read by the agent, which must
    // have dropped it under an input-check reason:
    //     agent input-check drops + Udp InErrors ≥ arrived.
    // The rest (injected − arrived) was lost between the senders and node 2's
    // IP input (bridge/veth backlog): reported, never the agent's to count.
    // How much is lost there depends on the machine's load, so the first check
    // asks not for a share of the flood but for enough of it to prove the
    // accounting: ten thousand datagrams, every kind among them.
    assert.ok(arrived <= injected && arrived >= 10_000, `only ${arrived} of ${injected} injected datagrams reached node 2's UDP layer: the test proves little`);
    assert.ok(
      inputDrops + kernelDropped >= arrived,
      `${arrived} injected datagrams reached node 2, but the agent dropped only ${inputDrops} (${table(drops)}) and the kernel ${kernelDropped}: ${arrived - inputDrops - kernelDropped} unaccounted (forwarded?)`,
    );
  } finally {
    await transfer.stop();
    await counters.remove();
    await attacker.remove();
  }
});

hostile('inner destinations outside the receiving node\'s subnet are dropped (not-for-this-node), never written to its TUN', async () => {
  const [p2, p3] = [cluster.pod(2), cluster.pod(3)];
  const sender = cluster.node(1);
  const agent = cluster.agent(2)!;
  const tag = randomBytes(4).toString('hex');
  const stray = `STRAY-${tag}`;
  const control = `CONTROL-${tag}`;
  // Listeners where the packets would end up if node 2 wrote them to its TUN
  // (node 2's kernel would route pod 3's address back out through flannel0).
  const atPod3 = await startMarkerListener(cluster, p3, [stray]);
  const atPod2 = await startMarkerListener(cluster, p2, [control]);
  try {
    const before = await readAgentStats(agent);
    const kernelBefore = await snmpCounters(cluster, cluster.node(2).ns);
    const plan = (marker: string, innerDst: string, count: number) => injectPlan({
      src: sender.underlayIp, dst: cluster.node(2).underlayIp, srcPortFirst: 8285, srcPorts: 1, seed: 11, rate: 2000,
      valid: { count, innerSrc: '10.244.1.77', innerDst, marker },
    });
    // From node 1 with node 1's address and an inner source of node 1's subnet: a legitimate peer, a wrong destination.
    const strays = (await inject(cluster, sender.ns, plan(stray, p3.ip, 300))).datagrams + (await inject(cluster, sender.ns, plan(stray, '8.8.8.8', 300))).datagrams;
    // The same path with the right destination arrives (the listeners and the path work).
    const controls = (await inject(cluster, sender.ns, plan(control, p2.ip, 5))).datagrams;
    const after = await settle(cluster, 2, before, strays + controls);
    const kernelDropped = counterDelta(kernelBefore, await snmpCounters(cluster, cluster.node(2).ns), 'Udp.InErrors');
    // The controls were sent last: once they are at pod 2, node 2 has handled every stray (the drop
    // counters are the proof; pod 3's listener a second look). If some controls were lost, the
    // deadline ends the wait; the assertion below needs only one.
    await atPod2.waitFor(control, controls, 5000);
    const seen3 = await atPod3.stop();
    const seen2 = await atPod2.stop();
    const drops = dropDelta(before, after);
    console.log(`    ${strays} stray datagrams: pod 3 saw ${seen3.seen[stray]}; control: pod 2 saw ${seen2.seen[control]} of ${controls}; node 2 drops ${table(drops)}`);
    assert.ok(seen2.seen[control] > 0, 'the control datagrams never reached pod 2: the path or the listener is broken');
    assert.is(seen3.seen[stray], 0, 'a packet for another node\'s subnet went through node 2\'s TUN');
    assert.ok((drops['not-for-this-node'] ?? 0) + kernelDropped >= strays, `not-for-this-node grew by ${drops['not-for-this-node'] ?? 0} for ${strays} strays`);
    assert.ok(after.totals.TunWrittenPackets - before.totals.TunWrittenPackets <= controls + 20, 'node 2 wrote more to its TUN than the controls (and background traffic) explain');
  } finally {
    await Promise.all([stopChild(atPod3.child, 'SIGKILL', 1000), stopChild(atPod2.child, 'SIGKILL', 1000)]);
  }
});

hostile.run();

// ---------------------------------------------------------------------------
// Who may send (the forwarder's anti-spoofing: drop reasons unknown-peer and
// spoofed-source). Without it both fail, saying how many datagrams got
// through to the pod; so do the flood accounting above (its
// inner-source-unleased datagrams) and the load test.

const who = suite('who may send: only leased nodes, only for their own subnets');
let gate: Cluster;

who.before(async () => {
  gate = await createCluster({ nodes: 3, dataplane: 'agent', workers: 2 });
});
who.after(async () => {
  await gate?.destroy();
});

/** Sends `count` valid inner packets with `marker` from `ns`, then controls from node 1; returns what pod 2 saw and node 2's drops. */
async function sendAndWatch(opts: { ns: string; src: string; innerSrcs: string[]; count: number; attackerNs?: boolean }) {
  const tag = randomBytes(4).toString('hex');
  const attack = `ATTACK-${tag}`;
  const control = `CONTROL-${tag}`;
  const p2 = gate.pod(2);
  const agent = gate.agent(2)!;
  const listener = await startMarkerListener(gate, p2, [attack, control]);
  try {
    const before = await readAgentStats(agent);
    const kernelBefore = await snmpCounters(gate, gate.node(2).ns);
    let attacks = 0;
    for (const innerSrc of opts.innerSrcs) {
      // Source port 8285, exactly like a real peer's agent.
      const plan = injectPlan({ src: opts.src, dst: gate.node(2).underlayIp, srcPortFirst: 8285, srcPorts: 1, seed: 21, rate: 2000, valid: { count: opts.count, innerSrc, innerDst: p2.ip, marker: attack } });
      attacks += (await inject(opts.attackerNs ? undefined : gate, opts.ns, plan)).datagrams;
    }
    // Control: node 1 itself, for its own subnet, the same way: must arrive.
    const controlPlan = injectPlan({ src: gate.node(1).underlayIp, dst: gate.node(2).underlayIp, srcPortFirst: 8285, srcPorts: 1, seed: 22, rate: 2000, valid: { count: 5, innerSrc: '10.244.1.77', innerDst: p2.ip, marker: control } });
    const controls = (await inject(gate, gate.node(1).ns, controlPlan)).datagrams;
    const after = await settle(gate, 2, before, attacks + controls);
    const kernelDropped = counterDelta(kernelBefore, await snmpCounters(gate, gate.node(2).ns), 'Udp.InErrors');
    // The controls were sent last: once they are at pod 2, so is any attack datagram node 2 let through.
    // (If some were lost, the deadline ends the wait; the callers need only one.)
    await listener.waitFor(control, controls, 5000);
    const { seen } = await listener.stop();
    return { attacks, controls, seenAttack: seen[attack], seenControl: seen[control], drops: dropDelta(before, after), kernelDropped };
  } finally {
    await stopChild(listener.child, 'SIGKILL', 1000);
  }
}

who('a datagram from an address no lease covers never reaches a pod, and is counted (unknown-peer)', async () => {
  const attacker = await addAttacker(gate, 66);
  try {
    // Inner sources: one of node 1's pods (a plausible lie) and one no lease covers.
    const r = await sendAndWatch({ ns: attacker.ns, src: attacker.ip, innerSrcs: ['10.244.1.9', '10.244.66.5'], count: 100, attackerNs: true });
    console.log(`    from ${attacker.ip} (no lease): ${r.attacks} sent, pod 2 saw ${r.seenAttack}; control ${r.seenControl}/${r.controls}; node 2 drops ${table(r.drops)}`);
    assert.ok(r.seenControl > 0, 'the control datagrams never reached pod 2: the path or the listener is broken');
    assert.ok(
      r.seenAttack === 0 && (r.drops['unknown-peer'] ?? 0) + r.kernelDropped >= r.attacks,
      `${r.seenAttack} of ${r.attacks} datagrams from ${attacker.ip}, which holds no lease, reached pod 2; unknown-peer drops: ${r.drops['unknown-peer'] ?? 0} (all drops: ${table(r.drops) || 'none'})`,
    );
  } finally {
    await attacker.remove();
  }
});

who('a datagram from a leased node whose inner source claims another node\'s subnet (or no lease\'s) never reaches a pod, and is counted (spoofed-source)', async () => {
  // From node 1's namespace with node 1's own address: a leased peer lying about its inner source.
  const r = await sendAndWatch({ ns: gate.node(1).ns, src: gate.node(1).underlayIp, innerSrcs: ['10.244.3.9', '10.244.99.9'], count: 100 });
  console.log(`    from node 1 claiming 10.244.3.0/24 and 10.244.99.0/24: ${r.attacks} sent, pod 2 saw ${r.seenAttack}; control ${r.seenControl}/${r.controls}; node 2 drops ${table(r.drops)}`);
  assert.ok(r.seenControl > 0, 'the control datagrams never reached pod 2: the path or the listener is broken');
  assert.ok(
    r.seenAttack === 0 && (r.drops['spoofed-source'] ?? 0) + r.kernelDropped >= r.attacks,
    `${r.seenAttack} of ${r.attacks} datagrams from node 1 with inner sources outside its subnet reached pod 2; spoofed-source drops: ${r.drops['spoofed-source'] ?? 0} (all drops: ${table(r.drops) || 'none'})`,
  );
});

who.run();

// ---------------------------------------------------------------------------

const faults = suite('faults: SIGTERM and restart');
let pair: Cluster;
const supportDir = join(dirname(fileURLToPath(import.meta.url)), '../support');

faults.before(async () => {
  pair = await createCluster({ nodes: 2, dataplane: 'agent', workers: 1 });
});
faults.after(async () => {
  await pair?.destroy();
});

faults('SIGINT (a clean exit) removes flannel0, its route and the UDP socket; after a restart an idle TCP connection between pods carries data again', async () => {
  const [p1, p2] = [pair.pod(1), pair.pod(2)];
  const node = pair.node(1);
  const port = 17000 + Math.floor(Math.random() * 1000);
  const server = pair.spawn(p2.ns, process.execPath, [join(supportDir, 'tcp-echo.js'), 'server', p2.ip, String(port)]);
  let client: CapturedChild | undefined;
  try {
    await waitForLine(server, /^listening$/, 10_000);
    client = pair.spawn(p1.ns, process.execPath, [join(supportDir, 'tcp-echo.js'), 'client', p2.ip, String(port)]);
    const first = await waitForLine(client, /^echo 1 /, 15_000);
    const localPort = /from port (\d+)/.exec(first)![1];

    const exit = await pair.stopAgent(1, 'SIGINT');
    assert.is(exit.code, 0, `agent output:\n${pair.agent(1)!.log.tail()}`);
    const links = (await pair.exec(node.ns, 'ip', ['-o', 'link', 'show'])).stdout;
    const routes = (await pair.exec(node.ns, 'ip', ['route', 'show'])).stdout;
    const sockets = (await pair.exec(node.ns, 'ss', ['-uln'])).stdout;
    assert.not.match(links, /flannel0/, 'flannel0 is still there after SIGINT');
    assert.not.match(routes, /flannel0|10\.244\.0\.0\/16/, `a route is left after SIGINT:\n${routes}`);
    assert.not.match(sockets, /:8285\b/, `a socket on port 8285 is left after SIGINT:\n${sockets}`);

    await pair.startAgent(1);
    // The connection sat idle through the restart; the same one (same local port) must carry data again.
    client.kill('SIGUSR2');
    const second = await waitForLine(client, /^echo 2 |^error|^closed/, 60_000);
    assert.match(second, new RegExp(`^echo 2 from port ${localPort}$`), `after the restart: ${second}\n${client.log.tail()}`);
    assert.is((await ping(pair, p1.ns, p2.ip, { count: 3, intervalS: 0.2 })).received, 3);

    // The receiving side too.
    await pair.stopAgent(2, 'SIGTERM');
    await pair.startAgent(2);
    client.kill('SIGUSR2');
    const third = await waitForLine(client, /^echo 3 |^error|^closed/, 60_000);
    assert.match(third, new RegExp(`^echo 3 from port ${localPort}$`), `after restarting node 2's agent: ${third}`);
  } finally {
    if (client) await stopChild(client, 'SIGKILL', 1000);
    await stopChild(server, 'SIGKILL', 1000);
    // Whatever happened, leave both agents running for the suite's later tests.
    for (const i of [1, 2]) if (!isRunning(pair.agent(i)!)) await pair.startAgent(i).catch(() => undefined);
  }
});

faults.run();

// ---------------------------------------------------------------------------

const load = suite('load: a flood at full rate through the agents');
let busy: Cluster;

load.before(async () => {
  busy = await createCluster({ nodes: 3, dataplane: 'agent', workers: 2 });
});
load.after(async () => {
  await busy?.destroy();
});

/**
 * RSS bound for the flood: the packet pool is allocated once at start (its
 * slot count is checked to stay the same), socket buffers are kernel memory,
 * and the per-packet path allocates nothing. What may grow is V8's heaps
 * (main thread and each worker: new-space semi-spaces of a few MiB) and
 * glibc arenas. 48 MiB is a few times what those can add, and well below
 * what a leak would cost: the flood moves ≥ 1.5 M packets through each
 * agent, so retaining even 32 bytes per packet would exceed it.
 */
const RSS_GROWTH_BOUND = 48 * MiB;
/** A worker's V8 heap, sampled once a second, moves by its young generation between GCs: a few MiB. */
const HEAP_RANGE_BOUND = 16 * MiB;

load('≈ 10 s of iperf3 UDP (64-byte datagrams, -b 0) plus raw-socket floods: memory stays bounded, drops are counted, SIGUSR1 and a lease edit are still answered', async () => {
  const [p1, p2, p3] = [busy.pod(1), busy.pod(2), busy.pod(3)];
  const agents = [busy.agent(1)!, busy.agent(2)!];
  const original = readFileSync(busy.leasesFile, 'utf8');
  const port = 5301;
  const server = busy.spawn(p2.ns, 'iperf3', ['-s', '-1', '--forceflush', '-B', p2.ip, '-p', String(port)]);
  const counters = new InputCounters(busy, busy.node(2).ns, [['-s', busy.node(3).underlayIp, '-p', 'udp', '--dport', '8285', '!', '--sport', '8285']]);
  try {
    await waitForLine(server, /Server listening/, 10_000);
    await counters.install();
    const rssBefore = agents.map((a) => residentBytes(a.pid!));
    const statsBefore = await Promise.all(agents.map((a) => readAgentStats(a)));
    const kernelBefore = await snmpCounters(busy, busy.node(2).ns);
    const [arrivedBefore] = await counters.packets();
    const tunBefore = await linkDrops(busy, busy.node(1).ns, 'flannel0');
    const podBefore = await snmpCounters(busy, p2.ns);

    const iperf = busy.exec(p1.ns, 'iperf3', ['-c', p2.ip, '-p', String(port), '-u', '-b', '0', '-l', '64', '-t', '10', '-P', '2', '-J', '--connect-timeout', '3000'], { timeoutMs: 60_000, allowFailure: true });
    let flooding = true;
    void iperf.finally(() => (flooding = false));
    // Raw senders alongside: malformed datagrams as fast as the socket takes them, from node 3.
    const small: Partial<Record<MalformedKind, number>> = {};
    for (const kind of MALFORMED_KINDS) if (kind !== 'garbage-65000') small[kind] = 22_000;
    const raw = inject(busy, busy.node(3).ns, injectPlan({ src: busy.node(3).underlayIp, dst: busy.node(2).underlayIp, seed: 31, counts: small, inner: { src: '10.244.3.5', dst: p2.ip, elsewhere: [p1.ip, '8.8.8.8'] } }));
    raw.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile

    // Sample once a second while the flood lasts; edit the leases after ~3 s.
    const samples: Array<{ stats: AgentStats[]; rss: number[] }> = [];
    let leaseEdit: { removedAt: number; effectiveAfterMs: number } | undefined;
    while (flooding) {
      await new Promise((r) => setTimeout(r, 1000)); // a sampling period, not a wait for anything
      samples.push({ stats: await Promise.all(agents.map((a) => readAgentStats(a))), rss: agents.map((a) => residentBytes(a.pid!)) });
      if (samples.length === 3 && !leaseEdit) {
        const leases = JSON.parse(original) as Record<string, unknown>;
        delete leases['10.244.3.0-24'];
        writeFileSync(busy.leasesFile + '.tmp', JSON.stringify(leases));
        renameSync(busy.leasesFile + '.tmp', busy.leasesFile);
        const removedAt = Date.now();
        const effective = await eventually(async () => (await udpIcmpProbe(busy, p1, p3.ip, 9999, 500)).received, 15_000);
        leaseEdit = { removedAt, effectiveAfterMs: effective ? Date.now() - removedAt : -1 };
      }
    }
    const report = JSON.parse((await iperf).stdout) as { end?: { sum?: { packets?: number; lost_packets?: number; bits_per_second?: number } }; error?: string };
    const injected = await raw;
    const [arrivedAfter] = await counters.packets();
    const arrived = arrivedAfter - arrivedBefore;
    const queued = counterDelta(kernelBefore, await snmpCounters(busy, busy.node(2).ns), 'Udp.InDatagrams');
    const statsAfter = [await readAgentStats(agents[0]), await settle(busy, 2, statsBefore[1], queued)];
    const rssAfter = agents.map((a) => residentBytes(a.pid!));
    const kernelAfter = await snmpCounters(busy, busy.node(2).ns);
    const tunAfter = await linkDrops(busy, busy.node(1).ns, 'flannel0');
    const podAfter = await snmpCounters(busy, p2.ns);

    const all = [{ stats: statsBefore, rss: rssBefore }, ...samples, { stats: statsAfter, rss: rssAfter }];
    const sum = report.end?.sum ?? {};
    const drops = agents.map((_, k) => dropDelta(statsBefore[k], statsAfter[k]));
    const answered = samples.flatMap((s) => s.stats.map((x) => x.answeredMs));
    console.log(`    iperf3: ${sum.packets ?? '?'} datagrams, ${sum.lost_packets ?? '?'} lost, ${((sum.bits_per_second ?? 0) / 1e6).toFixed(0)} Mbit/s${report.error ? ` (error: ${report.error})` : ''}; raw: ${injected.datagrams} malformed in ${injected.seconds.toFixed(1)} s`);
    for (let k = 0; k < agents.length; k++) {
      const rss = all.map((s) => s.rss[k] / MiB);
      const heaps = statsAfter[k].workers.map((w) => all.map((s) => s.stats[k].workers[w.worker].counters.HeapUsedBytes / MiB));
      console.log(
        `    agent ${k + 1}: RSS ${rss.map((x) => x.toFixed(1)).join(' ')} MiB; worker heaps ${heaps.map((h) => `${Math.min(...h).toFixed(1)}-${Math.max(...h).toFixed(1)}`).join(', ')} MiB; pool slots ${statsAfter[k].totals.PoolSlots}; drops ${table(drops[k]) || 'none'}`,
      );
    }
    console.log(`    node 2 kernel: Udp InDatagrams +${counterDelta(kernelBefore, kernelAfter, 'Udp.InDatagrams')}, RcvbufErrors +${counterDelta(kernelBefore, kernelAfter, 'Udp.RcvbufErrors')}, InErrors +${counterDelta(kernelBefore, kernelAfter, 'Udp.InErrors')}; malformed that reached it: ${arrived}`);
    // Where iperf3's lost datagrams went (reported, not asserted: legitimate traffic may also be lost where nobody counts, e.g. a veth backlog).
    console.log(
      `    iperf3 loss, counted where it happened: node 1 flannel0 tx-dropped (TUN queue full) +${tunAfter.txDropped - tunBefore.txDropped}, ` +
        `node 1 agent send-failed +${drops[0]['send-failed'] ?? 0}, node 2 socket RcvbufErrors +${counterDelta(kernelBefore, kernelAfter, 'Udp.RcvbufErrors')}, ` +
        `node 2 agent tun-write-failed +${drops[1]['tun-write-failed'] ?? 0}, pod 2 socket RcvbufErrors +${counterDelta(podBefore, podAfter, 'Udp.RcvbufErrors')}`,
    );
    console.log(`    SIGUSR1 answered ${answered.length} times during the flood, slowest ${Math.max(...answered).toFixed(0)} ms; lease removal effective after ${leaseEdit?.effectiveAfterMs} ms`);

    // Still up and answering.
    agents.forEach((a, k) => assert.ok(isRunning(a), `agent ${k + 1} died:\n${a.log.tail(20)}`));
    assert.ok(samples.length >= 5, `only ${samples.length} samples: the flood ended early (${report.error ?? 'no error'})`);
    assert.ok(leaseEdit && leaseEdit.effectiveAfterMs >= 0, 'removing node 3\'s lease during the flood never made its subnet answer with ICMP net unreachable');
    // No stuck worker: every worker's heartbeat moved between the first and the last sample, or the worker is
    // asleep in poll() (an idle worker has no poll timeout, so its heartbeat rests; a stuck one is never waiting).
    for (let k = 0; k < agents.length; k++) {
      for (const w of statsAfter[k].workers) {
        const moved = w.counters.HeartbeatMs > samples[0].stats[k].workers[w.worker].counters.HeartbeatMs;
        assert.ok(moved || w.counters.Waiting === 1, `agent ${k + 1} worker ${w.worker}: heartbeat did not advance and the worker is not waiting in poll()`);
      }
    }
    // Bounded memory.
    for (let k = 0; k < agents.length; k++) {
      const growth = Math.max(...all.map((s) => s.rss[k])) - rssBefore[k];
      assert.ok(growth < RSS_GROWTH_BOUND, `agent ${k + 1}: RSS grew by ${(growth / MiB).toFixed(1)} MiB during the flood (bound ${RSS_GROWTH_BOUND / MiB} MiB)`);
      for (const w of statsAfter[k].workers) {
        const heap = all.map((s) => s.stats[k].workers[w.worker].counters.HeapUsedBytes);
        assert.ok(Math.max(...heap) - Math.min(...heap) < HEAP_RANGE_BOUND, `agent ${k + 1} worker ${w.worker}: heap moved by ${((Math.max(...heap) - Math.min(...heap)) / MiB).toFixed(1)} MiB`);
        const slots = all.map((s) => s.stats[k].workers[w.worker].counters.PoolSlots);
        assert.ok(slots.every((n) => n === slots[0]), `agent ${k + 1} worker ${w.worker}: pool slots changed: ${slots.join(',')}`);
      }
    }
    // Drops with a reason: every malformed datagram that reached node 2 (see the first suite for the accounting).
    const inputDrops = sumValues(drops[1], FORWARDING_FAILURES);
    const kernelDropped = counterDelta(kernelBefore, kernelAfter, 'Udp.InErrors');
    assert.ok(arrived > 0, 'no malformed datagram reached node 2');
    assert.ok(inputDrops + kernelDropped >= arrived, `${arrived} malformed datagrams reached node 2 under load; agent input drops ${inputDrops}, kernel drops ${kernelDropped}`);
  } finally {
    writeFileSync(busy.leasesFile + '.tmp', original);
    renameSync(busy.leasesFile + '.tmp', busy.leasesFile);
    await counters.remove();
    await stopChild(server, 'SIGKILL', 1000);
  }
  // The lease is back: node 3 reachable again (the agents picked up the restored file).
  assert.ok(await eventually(async () => (await ping(busy, p1.ns, p3.ip, { count: 1, intervalS: 0.2 })).received === 1, 15_000), 'node 3 unreachable after restoring its lease');
});

load.run();
