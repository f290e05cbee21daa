// VXLAN mode against the real thing: a node whose kernel vxlan device is
// programmed exactly as flannel's vxlan backend programs it, talking to a
// node running this agent with --backend vxlan; then two agents together.
// Then both again dual-stack: IPv6 pods in frames with ethertype 0x86dd
// (the kernel side: flannel.1 carrying flannel-v6.1's programming, see
// programVxlan6 in src/testbed/cluster.ts for why one device).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { replaceKernelVxlanWithAgent } from '../../src/testbed/vxlan-agents.js';
import { iperf3Tcp, ping } from '../../src/testbed/measure.js';
import { tcpTransfer, udpIcmpProbe } from '../support/pod-traffic.js';
import { requireTools } from '../support/required-tool.js';

/** The pod as tcpTransfer sees it, addressed by its IPv6 address. */
const over6 = (pod: PodInfo): PodInfo => ({ ...pod, ip: pod.ip6! });

function replaceWithAgent(cluster: Cluster, i: number, extra: string[] = []) {
  return replaceKernelVxlanWithAgent(cluster, i, extra, 2);
}

const mixed = suite('agent (vxlan) ⇄ Linux kernel vxlan, programmed as flannel does');
let cluster: Cluster;

mixed.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'kernel-vxlan' });
  // The kernel hands a veth frames whose inner TCP/UDP checksum is left for
  // "the NIC" to finish, and a veth never does; a real NIC would. Make node
  // 2's underlay behave like one (docs/design.md: checksum offload).
  await cluster.exec(cluster.node(2).ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  await replaceWithAgent(cluster, 1);
});
mixed.after(async () => {
  await cluster?.destroy();
});

mixed('ping both ways between the agent node and the kernel node', async () => {
  const there = await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip, { count: 5, intervalS: 0.2 });
  const back = await ping(cluster, cluster.pod(2).ns, cluster.pod(1).ip, { count: 5, intervalS: 0.2 });
  assert.is(there.received, 5, `agent → kernel: ${JSON.stringify(there)}`);
  assert.is(back.received, 5, `kernel → agent: ${JSON.stringify(back)}`);
});

mixed('TCP transfers arrive intact both ways (sha256)', async () => {
  const bytes = 48 * 1024 * 1024;
  const out = await tcpTransfer(cluster, cluster.pod(1), cluster.pod(2), bytes);
  assert.is(out.received.bytes, bytes);
  assert.is(out.received.sha256, out.sent.sha256, 'agent → kernel');
  const back = await tcpTransfer(cluster, cluster.pod(2), cluster.pod(1), bytes);
  assert.is(back.received.bytes, bytes);
  assert.is(back.received.sha256, back.sent.sha256, 'kernel → agent');
});

mixed('a subnet with no lease still gets ICMP net unreachable in VXLAN mode', async () => {
  const r = await udpIcmpProbe(cluster, cluster.pod(1), '10.244.99.7', 9999);
  assert.ok(r.received);
  assert.is(r.code, 0);
});

mixed.run();

const agents = suite('agent (vxlan) ⇄ agent (vxlan), zero and real outer checksums');
let both: Cluster;

agents.before(async () => {
  both = await createCluster({ nodes: 2, dataplane: 'kernel-vxlan' });
  // Node 1 with the default (a real outer checksum), node 2 with RFC 7348's zero checksum.
  await replaceWithAgent(both, 1);
  await replaceWithAgent(both, 2, ['--vxlan-udp-checksum', 'zero']);
});
agents.after(async () => {
  await both?.destroy();
});

agents('ping and TCP both ways', async () => {
  assert.is((await ping(both, both.pod(1).ns, both.pod(2).ip, { count: 3, intervalS: 0.2 })).received, 3);
  const bytes = 48 * 1024 * 1024;
  const r = await tcpTransfer(both, both.pod(1), both.pod(2), bytes);
  assert.is(r.received.sha256, r.sent.sha256);
  const back = await tcpTransfer(both, both.pod(2), both.pod(1), bytes);
  assert.is(back.received.sha256, back.sent.sha256);
});

agents.run();

const mixed6 = suite('dual-stack: agent (vxlan) ⇄ Linux kernel vxlan, IPv6 pods in 0x86dd frames');
let dual: Cluster;

mixed6.before(async () => {
  requireTools('ping', 'iperf3', 'ethtool');
  dual = await createCluster({ nodes: 2, dataplane: 'kernel-vxlan', ipFamilies: 'dual-stack' });
  // As above: node 2's veth must finish the checksums the kernel leaves to "the NIC", IPv6 ones included (tx off covers both).
  await dual.exec(dual.node(2).ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  await replaceWithAgent(dual, 1);
});
mixed6.after(async () => {
  await dual?.destroy();
});

mixed6('the kernel node routes the agent node\'s IPv6 subnet through its vxlan device, onlink via the permanent neighbour', async () => {
  const { stdout: route } = await dual.exec(dual.node(2).ns, 'ip', ['-6', 'route', 'show', 'fd00:10:244:1::/64']);
  assert.match(route, /via fd00:10:244:1:: dev flannel\.1 .*onlink/);
  const { stdout: neigh } = await dual.exec(dual.node(2).ns, 'ip', ['-6', 'neigh', 'show', 'fd00:10:244:1::', 'dev', 'flannel.1']);
  assert.match(neigh, /lladdr [0-9a-f:]{17} PERMANENT/);
});

mixed6('ping -6 both ways between the agent node and the kernel node', async () => {
  const there = await ping(dual, dual.pod(1).ns, dual.pod(2).ip6!, { count: 5, intervalS: 0.2 });
  const back = await ping(dual, dual.pod(2).ns, dual.pod(1).ip6!, { count: 5, intervalS: 0.2 });
  assert.ok(there.lossPct === 0 && there.received >= 5, `agent → kernel: ${JSON.stringify(there)}`);
  assert.ok(back.lossPct === 0 && back.received >= 5, `kernel → agent: ${JSON.stringify(back)}`);
});

mixed6('TCP over IPv6 arrives intact both ways (sha256), and iperf3 -6 moves data', async () => {
  const bytes = 48 * 1024 * 1024;
  for (const [from, to] of [[dual.pod(1), dual.pod(2)], [dual.pod(2), dual.pod(1)]]) {
    const r = await tcpTransfer(dual, over6(from), over6(to), bytes);
    assert.is(r.received.bytes, bytes);
    assert.is(r.received.sha256, r.sent.sha256, `pod${from.node} → pod${to.node}`);
  }
  const tcp = await iperf3Tcp(dual, dual.pod(2).ns, dual.pod(2).ip6!, dual.pod(1).ns, { seconds: 2 });
  assert.ok(tcp.bitsPerSecond > 0, 'iperf3 -6 moved no data');
});

mixed6('IPv4 still works in the same cluster, and an IPv6 destination without a lease gets ICMPv6 no route', async () => {
  const there = await ping(dual, dual.pod(1).ns, dual.pod(2).ip, { count: 3, intervalS: 0.2 });
  assert.ok(there.lossPct === 0 && there.received >= 3, JSON.stringify(there));
  const r = await tcpTransfer(dual, dual.pod(2), dual.pod(1), 16 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
  const { stdout } = await dual.exec(dual.pod(1).ns, 'ping', ['-n', '-c', '1', '-w', '3', 'fd00:10:244:99::5'], { allowFailure: true, timeoutMs: 15_000 });
  assert.match(stdout, /Destination unreachable: No route/, stdout);
});

mixed6.run();

const agents6 = suite('dual-stack: agent (vxlan) ⇄ agent (vxlan)');
let dualAgents: Cluster;

agents6.before(async () => {
  requireTools('ping');
  dualAgents = await createCluster({ nodes: 2, dataplane: 'kernel-vxlan', ipFamilies: 'dual-stack' });
  await replaceWithAgent(dualAgents, 1);
  await replaceWithAgent(dualAgents, 2, ['--vxlan-udp-checksum', 'zero']);
});
agents6.after(async () => {
  await dualAgents?.destroy();
});

agents6('ping -6, ping and TCP over IPv6 both ways', async () => {
  const c = dualAgents;
  const six = await ping(c, c.pod(1).ns, c.pod(2).ip6!, { count: 3, intervalS: 0.2 });
  assert.ok(six.lossPct === 0 && six.received >= 3, JSON.stringify(six));
  assert.is((await ping(c, c.pod(2).ns, c.pod(1).ip, { count: 3, intervalS: 0.2 })).received, 3);
  const bytes = 32 * 1024 * 1024;
  for (const [from, to] of [[c.pod(1), c.pod(2)], [c.pod(2), c.pod(1)]]) {
    const r = await tcpTransfer(c, over6(from), over6(to), bytes);
    assert.is(r.received.sha256, r.sent.sha256, `pod${from.node} → pod${to.node}`);
  }
});

agents6.run();
