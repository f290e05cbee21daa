// Dual-stack pod networks over the UDP data plane (issue 24): real agents in
// namespaces, leases-file source with '&' keys, pods with IPv4 and IPv6
// addresses. IPv6 pod traffic (ping -6, an iperf3 -6 run, a TCP transfer
// whose sha256 matches on both ends) and IPv4 in the same cluster; then an
// IPv6-only cluster. Every cluster is destroyed in finally/after.
import { suite } from 'uvu';
import { readFileSync, writeFileSync } from 'node:fs';
import * as assert from 'uvu/assert';
import { agentCliPath, createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { isRunning, stopChild } from '../../src/testbed/exec.js';
import { traceEventFromJson, type TraceEvent } from '../../src/observe/trace-event.js';
import { describeLayers } from '../../src/observe/trace-render.js';
import type { AgentStats } from '../../src/observe/metrics.js';
import { iperf3Tcp, ping } from '../../src/testbed/measure.js';
import { tcpTransfer } from '../support/pod-traffic.js';
import { requireTools } from '../support/required-tool.js';

/** The pod as tcpTransfer sees it, addressed by its IPv6 address. */
const over6 = (pod: PodInfo): PodInfo => ({ ...pod, ip: pod.ip6! });

const dual = suite('dual-stack, two nodes, udp mode');
let cluster: Cluster;

dual.before(async () => {
  requireTools('ping', 'iperf3');
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 2, ipFamilies: 'dual-stack' });
});
dual.after(async () => {
  await cluster?.destroy();
});

dual('flannel0 carries the IPv6 subnet address with the network prefix, and the IPv6 network route', async () => {
  const { stdout: addr } = await cluster.exec(cluster.node(1).ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'flannel0']);
  assert.match(addr, /inet6 fd00:10:244:1::\/48 /);
  assert.not.match(addr, /fe80::/, 'no link-local address (addrgenmode none)');
  const { stdout: route } = await cluster.exec(cluster.node(1).ns, 'ip', ['-6', 'route', 'show', 'fd00:10:244::/48']);
  assert.match(route, /dev flannel0/);
  const { stdout: v4 } = await cluster.exec(cluster.node(1).ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'flannel0']);
  assert.match(v4, /inet 10\.244\.1\.0\/16 /);
});

dual('pods ping each other over IPv6 across nodes, both ways', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  assert.match(p1.ip6!, /^fd00:10:244:1::/);
  const there = await ping(cluster, p1.ns, p2.ip6!, { count: 5, intervalS: 0.2 });
  const back = await ping(cluster, p2.ns, p1.ip6!, { count: 5, intervalS: 0.2 });
  // No loss; ping keeps sending until it has its 5 replies (-w), so a first reply delayed by neighbour discovery may bring a 6th.
  assert.ok(there.lossPct === 0 && there.received >= 5, `pod1 → pod2: ${JSON.stringify(there)}`);
  assert.ok(back.lossPct === 0 && back.received >= 5, `pod2 → pod1: ${JSON.stringify(back)}`);
});

dual('IPv4 still works in the same cluster', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const there = await ping(cluster, p1.ns, p2.ip, { count: 3, intervalS: 0.2 });
  assert.ok(there.lossPct === 0 && there.received >= 3, JSON.stringify(there));
  const r = await tcpTransfer(cluster, p2, p1, 16 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
  assert.is(r.received.bytes, 16 * 1024 * 1024);
});

dual('a 64 MiB TCP transfer over IPv6 arrives intact (sha256 matches on both ends), both directions', async () => {
  const bytes = 64 * 1024 * 1024;
  for (const [from, to] of [[cluster.pod(1), cluster.pod(2)], [cluster.pod(2), cluster.pod(1)]]) {
    const r = await tcpTransfer(cluster, over6(from), over6(to), bytes);
    assert.is(r.sent.bytes, bytes);
    assert.is(r.received.bytes, bytes);
    assert.is(r.received.sha256, r.sent.sha256);
    console.log(`    64 MiB over IPv6 pod${from.node} → pod${to.node} in ${r.seconds.toFixed(1)} s`);
  }
});

dual('iperf3 -6 between pods moves data', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const tcp = await iperf3Tcp(cluster, p2.ns, p2.ip6!, p1.ns, { seconds: 3 });
  console.log(`    iperf3 TCP over IPv6 pod1 → pod2: ${(tcp.bitsPerSecond / 1e9).toFixed(2)} Gbit/s, ${tcp.retransmits} retransmits (noisy shared machine)`);
  assert.ok(tcp.bitsPerSecond > 0, 'iperf3 -6 moved no data');
});

dual('a pod IPv6 address without a lease: ping -6 gets destination unreachable (no route) from the agent', async () => {
  const { stdout } = await cluster.exec(cluster.pod(1).ns, 'ping', ['-n', '-c', '1', '-w', '3', 'fd00:10:244:99::5'], { allowFailure: true, timeoutMs: 15_000 });
  assert.match(stdout, /From fd00:10:244:99::5.*Destination unreachable: No route/, stdout);
});

dual('flannel-udp trace --filter icmp6 follows a ping -6 through every stage, showing the IPv6 header; stats count the IPv6 packets', async () => {
  const [n1, n2] = [cluster.node(1), cluster.node(2)];
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  // Two packets on node 1: the echo request out, the echo reply back. IPv4 pings meanwhile must not be traced.
  const trace = cluster.spawn(n1.ns, process.execPath, [agentCliPath, 'trace', '--filter', `icmp6 and host ${p1.ip6} and host ${p2.ip6}`, '--limit', '2', '--json']);
  try {
    const deadline = Date.now() + 15_000;
    let replies = 0;
    while (isRunning(trace)) {
      assert.ok(Date.now() < deadline, `the trace client did not end within 15 s of pinging (${replies} replies):\n${trace.log.tail()}`);
      await ping(cluster, p1.ns, p2.ip, { count: 1 });
      replies += (await ping(cluster, p1.ns, p2.ip6!, { count: 1 })).received;
    }
    await trace.exited;
    assert.is(trace.exitCode, 0, trace.log.tail());
    const events = trace.log
      .snapshot()
      .filter((l) => l.startsWith('{') && !l.includes('"done"'))
      .map((l) => traceEventFromJson(JSON.parse(l)));
    const byPacket = new Map<string, TraceEvent[]>();
    for (const ev of events) byPacket.set(`${ev.worker}/${ev.packet}`, [...(byPacket.get(`${ev.worker}/${ev.packet}`) ?? []), ev]);
    assert.is(byPacket.size, 2, `two packets traced: ${JSON.stringify(events.map((e) => [e.worker, e.packet, e.stage]))}`);
    const request = [...byPacket.values()].find((evs) => evs[0].stage === 'tun-read') ?? [];
    const reply = [...byPacket.values()].find((evs) => evs[0].stage === 'udp-receive') ?? [];
    assert.equal(request.map((e) => e.stage), ['tun-read', 'lease-lookup', 'encapsulate', 'udp-send']);
    assert.equal(reply.map((e) => e.stage), ['udp-receive', 'validate', 'decapsulate', 'tun-write']);
    const fields = (ev: TraceEvent, i: number) => Object.fromEntries(describeLayers(ev)[i]?.fields ?? []);
    const [read, lookup, , send] = request;
    assert.equal(
      (({ src, dst, next, hlim, plen }) => ({ src, dst, next, hlim, plen }))(fields(read, 0)),
      { src: p1.ip6, dst: p2.ip6, next: 'ICMPv6', hlim: '63', plen: '64' },
      'the pod sent hop limit 64 and 56 bytes of ping data; node 1 routed it once into flannel0',
    );
    assert.is(fields(read, 1).type, 'echo-request (128)');
    assert.equal(lookup.lease, { key: 'fd00:10:244:2::-64', publicIp: n2.underlayIp });
    assert.equal(describeLayers(send).map((l) => l.name), ['IPv4', 'UDP', 'IPv6', 'ICMPv6', 'payload'], 'IPv6 in the UDP payload, over the IPv4 underlay');
    assert.equal((({ src, dst }) => ({ src, dst }))(fields(send, 0)), { src: n1.underlayIp, dst: n2.underlayIp });
    assert.is(fields(send, 2).hlim, '62', 'the agent decremented the hop limit');
    const write = reply[3];
    assert.equal((({ src, dst, hlim }) => ({ src, dst, hlim }))(fields(write, 0)), { src: p2.ip6, dst: p1.ip6, hlim: '61' });
    assert.is(fields(write, 1).type, 'echo-reply (129)');

    const stats = JSON.parse((await cluster.exec(n1.ns, process.execPath, [agentCliPath, 'stats', '--json'], { timeoutMs: 30_000 })).stdout) as AgentStats;
    const total = (name: string) => stats.workers.reduce((a, w) => a + (w.counters[name] ?? 0), 0);
    assert.ok(total('Ipv6TunReadPackets') >= replies && total('Ipv6UdpReceivedPackets') >= replies, JSON.stringify(stats.workers.map((w) => w.counters)));
    assert.ok(total('TunReadPackets') > total('Ipv6TunReadPackets'), 'the IPv4 pings are counted, not as IPv6');
  } finally {
    await stopChild(trace);
  }
});

dual('a restart (SIGTERM, then a new agent) attaches to the kept dual-stack flannel0 as it is, and IPv6 flows again', async () => {
  const stopped = await cluster.stopAgent(1, 'SIGTERM');
  assert.is(stopped.code, 0);
  await cluster.startAgent(1);
  const log = cluster.agent(1)!.log.text();
  assert.match(log, /flannel0: kept from the previous agent with its address, MTU and route/, log);
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const there = await ping(cluster, p1.ns, p2.ip6!, { count: 3, intervalS: 0.2 });
  assert.ok(there.lossPct === 0 && there.received >= 3, JSON.stringify(there));
});

dual.run();

const mtu = suite('dual-stack, underlay MTU below the pods\' MTU');
let small: Cluster;

mtu.before(async () => {
  requireTools('ping');
  // Pod MTU 1472 over a 1400-byte underlay: 1372 bytes fit one datagram.
  small = await createCluster({ nodes: 2, dataplane: 'agent', ipFamilies: 'dual-stack', underlayMtu: 1400, podMtu: 1472 });
});
mtu.after(async () => {
  await small?.destroy();
});

mtu('a packet that does not fit the underlay gets ICMPv6 packet too big with the path MTU: the pod learns 1372 and sends smaller ones', async () => {
  const [p1, p2] = [small.pod(1), small.pod(2)];
  const first = await small.exec(p1.ns, 'ping', ['-n', '-c', '3', '-i', '0.3', '-w', '5', '-s', '1400', p2.ip6!], { allowFailure: true, timeoutMs: 20_000 });
  // The pod's kernel took the agent's packet too big: its route to the peer pod now has the path MTU.
  const { stdout: route } = await small.exec(p1.ns, 'ip', ['-6', 'route', 'get', p2.ip6!]);
  assert.match(route, /mtu 1372/, `${route}\n${first.stdout}`);
  const stats = JSON.parse((await small.exec(small.node(1).ns, process.execPath, [small.agentCli, 'stats', '--json'])).stdout) as {
    workers: { counters: Record<string, number>; drops: Record<string, number> }[];
  };
  assert.ok(stats.workers[0].drops['ipv6-packet-too-big'] >= 1, JSON.stringify(stats.workers[0].drops));
  assert.ok(stats.workers[0].counters.IcmpSent >= 1);
  // Fragmented by the pod from then on: big pings and a TCP transfer get through.
  const again = await small.exec(p1.ns, 'ping', ['-n', '-c', '2', '-i', '0.3', '-w', '4', '-s', '1400', p2.ip6!], { allowFailure: true, timeoutMs: 20_000 });
  // With -w, ping sends until it has 2 replies: the reply direction learns its path MTU on the way too.
  assert.match(again.stdout, /, 2 received/, again.stdout);
  const r = await tcpTransfer(small, over6(p1), over6(p2), 8 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
});

mtu.run();

const only = suite('IPv6-only, two nodes, udp mode');
let cluster6: Cluster;

only.before(async () => {
  requireTools('ping');
  cluster6 = await createCluster({ nodes: 2, dataplane: 'agent', ipFamilies: 'ipv6-only' });
});
only.after(async () => {
  await cluster6?.destroy();
});

only('flannel0 has no IPv4 address or route; pods ping over IPv6 and a TCP transfer arrives intact', async () => {
  const { stdout: v4 } = await cluster6.exec(cluster6.node(1).ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'flannel0']);
  assert.is(v4.trim(), '', 'an IPv6-only flannel0 has no IPv4 address');
  const { stdout: routes } = await cluster6.exec(cluster6.node(1).ns, 'ip', ['-4', 'route', 'show']);
  assert.not.match(routes, /flannel0/);
  const [p1, p2] = [cluster6.pod(1), cluster6.pod(2)];
  const there = await ping(cluster6, p1.ns, p2.ip6!, { count: 3, intervalS: 0.2 });
  assert.ok(there.lossPct === 0 && there.received >= 3, JSON.stringify(there));
  const r = await tcpTransfer(cluster6, over6(p1), over6(p2), 16 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
  assert.is(r.received.bytes, 16 * 1024 * 1024);
});

only.run();

const upgrade = suite('an IPv4-only node restarted as dual-stack');
let plain: Cluster;

upgrade.before(async () => {
  plain = await createCluster({ nodes: 2, dataplane: 'agent' });
});
upgrade.after(async () => {
  await plain?.destroy();
});

upgrade('the kept flannel0 (IPv6 off, up) is configured again: IPv6 address and route, and still no link-local address', async () => {
  const node = plain.node(1);
  assert.is((await plain.stopAgent(1, 'SIGTERM')).code, 0);
  const env = readFileSync(node.subnetFile, 'utf8');
  writeFileSync(node.subnetFile, env.replace('FLANNEL_MTU=', 'FLANNEL_IPV6_NETWORK=fd00:10:244::/48\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU='));
  await plain.startAgent(1);
  const log = plain.agent(1)!.log.text();
  assert.match(log, /configuration changed \(IPv6 address none \(want fd00:10:244:1::\/48\)/, log);
  const { stdout } = await plain.exec(node.ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'flannel0']);
  assert.match(stdout, /inet6 fd00:10:244:1::\/48 /);
  assert.not.match(stdout, /fe80::/, stdout);
  // IPv4 keeps working across the change.
  const there = await ping(plain, plain.pod(1).ns, plain.pod(2).ip, { count: 3, intervalS: 0.2 });
  assert.ok(there.lossPct === 0 && there.received >= 3, JSON.stringify(there));
});

upgrade.run();
