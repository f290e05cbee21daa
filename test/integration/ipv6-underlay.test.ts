// The IPv6 underlay (issue 24): nodes with a public IPv6 send IPv6 pod
// packets to the peer's PublicIPv6, in UDP mode (the bare inner packet) and
// in VXLAN mode (against the kernel's flannel-v6.1, programmed as flanneld
// programs it, then agent to agent), while IPv4 pods stay on the IPv4
// underlay; an IPv6-only cluster over an IPv6-only underlay; the path MTU
// over it (ICMPv6 packet too big); a datagram from an IPv6 address no lease
// has, counted as a drop; the trace's outer IPv6 header; --capture's. Where the outer packets went is read from the
// agents' counters (UnderlayIpv6SentPackets / ReceivedPackets) and, for the
// kernel node, from its own UDP counters per family (/proc/net/snmp6).
// One cluster per suite; every cluster is destroyed in after().
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { agentCliPath, createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { replaceKernelVxlanWithAgent } from '../../src/testbed/vxlan-agents.js';
import { ping } from '../../src/testbed/measure.js';
import { tcpTransfer } from '../support/pod-traffic.js';
import { readAgentStats } from '../support/agent-stats.js';
import { requireTools } from '../support/required-tool.js';
import { isRunning, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { runRequiredTool } from '../support/required-tool.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { traceEventFromJson } from '../../src/observe/trace-event.js';
import { describeLayers } from '../../src/observe/trace-render.js';

/** The pod as tcpTransfer sees it, addressed by its IPv6 address. */
const over6 = (pod: PodInfo): PodInfo => ({ ...pod, ip: pod.ip6! });

async function counters(agent: CapturedChild | undefined): Promise<Record<string, number> & { drops: Record<string, number> }> {
  if (!agent) throw new Error('no agent');
  const s = await readAgentStats(agent);
  return Object.assign({ ...s.totals }, { drops: s.drops });
}

/** A node's UDP datagrams sent over IPv6 (the kernel's own count, /proc/net/snmp6 of its namespace). */
async function udp6OutDatagrams(cluster: Cluster, i: number): Promise<number> {
  const { stdout } = await cluster.exec(cluster.node(i).ns, 'cat', ['/proc/net/snmp6']);
  const m = /^Udp6OutDatagrams\s+(\d+)/m.exec(stdout);
  if (!m) throw new Error(`no Udp6OutDatagrams in node ${i}'s /proc/net/snmp6`);
  return Number(m[1]);
}

const udp = suite('IPv6 underlay, udp mode: dual-stack pods over a dual-stack underlay');
let cluster: Cluster;

udp.before(async () => {
  requireTools('ping');
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 2, ipFamilies: 'dual-stack', underlay: 'dual-stack' });
});
udp.after(async () => {
  await cluster?.destroy();
});

udp('ping -6 crosses over the IPv6 underlay; IPv4 pings stay on the IPv4 underlay', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const before = await counters(cluster.agent(1));
  const r6 = await ping(cluster, p1.ns, p2.ip6!, { count: 5, intervalS: 0.1 });
  assert.is(r6.received, 5, JSON.stringify(r6));
  const mid = await counters(cluster.agent(1));
  assert.ok(mid.UnderlayIpv6SentPackets - before.UnderlayIpv6SentPackets >= 5, 'the echo requests left over IPv6');
  assert.ok(mid.UnderlayIpv6ReceivedPackets - before.UnderlayIpv6ReceivedPackets >= 5, 'the replies came back over IPv6');
  const r4 = await ping(cluster, p1.ns, p2.ip, { count: 5, intervalS: 0.1 });
  assert.is(r4.received, 5, JSON.stringify(r4));
  const after = await counters(cluster.agent(1));
  assert.ok(after.UdpSentPackets - mid.UdpSentPackets >= 5, 'the IPv4 pings were sent');
  assert.is(after.UnderlayIpv6SentPackets, mid.UnderlayIpv6SentPackets, 'not one IPv4 ping went over the IPv6 underlay');
  assert.is(after.UnderlayIpv6ReceivedPackets, mid.UnderlayIpv6ReceivedPackets);
});

udp('a 32 MiB TCP transfer over IPv6 arrives intact both ways (sha256), every datagram over the IPv6 underlay', async () => {
  const bytes = 32 * 1024 * 1024;
  const before = await counters(cluster.agent(1));
  const v6Before = await udp6OutDatagrams(cluster, 1);
  for (const [from, to] of [[cluster.pod(1), cluster.pod(2)], [cluster.pod(2), cluster.pod(1)]]) {
    const r = await tcpTransfer(cluster, over6(from), over6(to), bytes);
    assert.is(r.received.bytes, bytes);
    assert.is(r.received.sha256, r.sent.sha256, `${from.ip6} → ${to.ip6}`);
  }
  const after = await counters(cluster.agent(1));
  const sent = after.UnderlayIpv6SentPackets - before.UnderlayIpv6SentPackets;
  assert.ok(sent > bytes / 1500, `node 1 sent ${sent} datagrams over IPv6 for ${bytes} bytes`);
  // The kernel's count agrees: node 1's UDP over IPv6 (UDP GSO messages count once each, so at least one per 64).
  assert.ok((await udp6OutDatagrams(cluster, 1)) - v6Before >= sent / 64, 'the node\'s own IPv6 UDP counter moved');
  assert.is(after.drops['send-failed'] ?? 0, before.drops['send-failed'] ?? 0);
});

udp('an IPv6 packet larger than the IPv6 underlay allows gets ICMPv6 packet too big with MTU 1452 (1500 − 48)', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const before = await counters(cluster.agent(1));
  // 1420 bytes of data + 8 ICMPv6 + 40 IPv6 = 1468: fits the pod MTU (1472), not the IPv6 underlay (1452).
  const { stdout, stderr } = await cluster.exec(p1.ns, 'ping', ['-6', '-n', '-c', '2', '-i', '0.3', '-w', '4', '-s', '1420', '-M', 'do', p2.ip6!], {
    allowFailure: true,
    timeoutMs: 15_000,
  });
  assert.match(stdout + stderr, /mtu[ =:]+1452/i, `ping reported the path MTU: ${stdout}${stderr}`);
  // Counted when the agent answered: this ping's packet, or (the kernel caching the MTU) the TCP test's first full-size segments.
  const after = await counters(cluster.agent(1));
  assert.ok((after.drops['ipv6-packet-too-big'] ?? 0) >= 1, JSON.stringify(after.drops));
  void before;
  // The IPv4 underlay's path is unchanged: the same size over IPv4 fits (1468 ≤ 1472).
  const { stdout: out4 } = await cluster.exec(p1.ns, 'ping', ['-n', '-c', '1', '-w', '3', '-s', '1440', '-M', 'do', p2.ip], { allowFailure: true, timeoutMs: 15_000 });
  assert.match(out4, /1 received/, out4);
});

udp('datagrams from an IPv6 address that is no lease\'s PublicIPv6 are dropped as unknown-peer', async () => {
  const n1 = cluster.node(1);
  const ul = cluster.underlayNs;
  // A stranger on the underlay, with an address in the nodes' /64.
  await cluster.exec(ul, 'ip', ['-6', 'addr', 'add', '2001:db8::99/64', 'dev', 'br0', 'nodad']);
  const before = await counters(cluster.agent(1));
  const script = `
    const s = require('node:dgram').createSocket({ type: 'udp6' });
    s.bind({ address: '2001:db8::99', port: 8285 }, async () => {
      const b = Buffer.alloc(60); b[0] = 0x60; b.writeUInt16BE(20, 4); b[6] = 17; b[7] = 64;
      for (let i = 0; i < 5; i++) await new Promise((r) => s.send(b, 8285, '${n1.underlayIp6}', r));
      s.close();
    });`;
  await cluster.exec(ul, process.execPath, ['-e', script], { timeoutMs: 15_000 });
  let after = before;
  for (let t = 0; t < 50 && (after.drops['unknown-peer'] ?? 0) - (before.drops['unknown-peer'] ?? 0) < 5; t++) {
    await new Promise((r) => setTimeout(r, 100));
    after = await counters(cluster.agent(1));
  }
  assert.is((after.drops['unknown-peer'] ?? 0) - (before.drops['unknown-peer'] ?? 0), 5, JSON.stringify(after.drops));
  assert.is(after.UnderlayIpv6ReceivedPackets - before.UnderlayIpv6ReceivedPackets, 5, 'counted as received over the IPv6 underlay');
});

udp('flannel-udp trace shows the outer IPv6 header of a ping -6 on the way out and on the way back', async () => {
  const [n1, n2] = [cluster.node(1), cluster.node(2)];
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const trace = cluster.spawn(n1.ns, process.execPath, [agentCliPath, 'trace', '--filter', `icmp6 and host ${p1.ip6} and host ${p2.ip6}`, '--limit', '2', '--json']);
  try {
    const deadline = Date.now() + 15_000;
    while (isRunning(trace)) {
      assert.ok(Date.now() < deadline, `the trace did not end within 15 s:\n${trace.log.tail()}`);
      await ping(cluster, p1.ns, p2.ip6!, { count: 1 });
    }
    await trace.exited;
    const events = trace.log.snapshot().filter((l) => l.startsWith('{') && !l.includes('"done"')).map((l) => traceEventFromJson(JSON.parse(l)));
    const fields = (i: number, layer: number) => Object.fromEntries(describeLayers(events[i])[layer]?.fields ?? []);
    const send = events.findIndex((e) => e.stage === 'udp-send');
    const receive = events.findIndex((e) => e.stage === 'udp-receive');
    assert.ok(send >= 0 && receive >= 0, JSON.stringify(events.map((e) => e.stage)));
    assert.equal(describeLayers(events[send]).map((l) => l.name), ['IPv6', 'UDP', 'IPv6', 'ICMPv6', 'payload'], 'IPv6 in UDP over IPv6');
    assert.equal((({ src, dst }) => ({ src, dst }))(fields(send, 0)), { src: n1.underlayIp6, dst: n2.underlayIp6 });
    assert.equal((({ src, dst }) => ({ src, dst }))(fields(receive, 0)), { src: n2.underlayIp6, dst: n1.underlayIp6 });
  } finally {
    await stopChild(trace);
  }
});

udp('a hand-over (a new agent while the old one runs, then SIGTERM to the old) keeps IPv6 flowing over the IPv6 underlay', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const exit = await cluster.handOverAgent(1);
  assert.is(exit.code, 0, `the old agent exited ${JSON.stringify(exit)}`);
  assert.match(cluster.agent(1)!.log.text(), /taking over once this one is ready \(hand-over\)/);
  const r = await ping(cluster, p1.ns, p2.ip6!, { count: 5, intervalS: 0.1 });
  assert.is(r.received, 5, JSON.stringify(r));
  const c = await counters(cluster.agent(1));
  assert.ok(c.UnderlayIpv6SentPackets >= 5 && c.UnderlayIpv6ReceivedPackets >= 5, 'the new agent\'s IPv6 sockets send and receive');
});

udp('--capture: the datagrams over the IPv6 underlay are IP6 between the PublicIPv6s in udp-out and udp-in, UDP checksums good (tcpdump -vv)', async () => {
  const [n1, n2] = [cluster.node(1), cluster.node(2)];
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const dir = mkdtempSync(join(tmpdir(), 'flannel-udp-capture6-'));
  // Node 1's agent again, with --capture (the cluster gives every agent the same flags; only node 1 captures).
  assert.is((await cluster.stopAgent(1)).code, 0);
  const agent = cluster.spawn(n1.ns, process.execPath, [
    agentCliPath, 'up', '--subnet-file', n1.subnetFile, '--leases', cluster.leasesFile,
    '--public-ip', n1.underlayIp, '--public-ipv6', n1.underlayIp6, '--workers', '1', '--capture', dir,
  ]);
  try {
    await waitForLine(agent, /flannel-udp agent ready/, 15_000);
    assert.is((await ping(cluster, p1.ns, p2.ip6!, { count: 3, intervalS: 0.1 })).received, 3);
    // TCP: super-packets cut into segments, each captured from two pieces (header, payload).
    const r = await tcpTransfer(cluster, over6(p1), over6(p2), 1 << 20);
    assert.is(r.received.sha256, r.sent.sha256);
    assert.is((await stopChild(agent, 'SIGTERM', 5000)).code, 0, 'stopped: every capture closed and flushed');
    const lines = (file: string) =>
      runRequiredTool('tcpdump', 'tcpdump', ['-nn', '-vv', '-r', join(dir, file)], { stdio: ['ignore', 'pipe', 'pipe'] })
        .split('\n')
        .filter((l) => /^\d\d:\d\d:\d\d\.\d{6} /.test(l));
    const out = lines('udp-out-w0.pcap');
    const inbound = lines('udp-in-w0.pcap');
    const v6 = (from: string, to: string) => new RegExp(`IP6 \\(hlim 64, next-header UDP \\(17\\) payload length: \\d+\\) ${from}\\.\\d+ > ${to}\\.8285: \\[udp sum ok\\] UDP, length \\d+`);
    const outV6 = out.filter((l) => v6(n1.underlayIp6, n2.underlayIp6).test(l));
    const inV6 = inbound.filter((l) => v6(n2.underlayIp6, n1.underlayIp6).test(l));
    assert.ok(outV6.length >= 3 + (1 << 20) / 1500, `node 1 captured ${outV6.length} datagrams to ${n2.underlayIp6}:\n${out.slice(0, 5).join('\n')}`);
    assert.ok(inV6.length >= 3, `node 1 captured ${inV6.length} datagrams from ${n2.underlayIp6}:\n${inbound.slice(0, 5).join('\n')}`);
    for (const l of [...out, ...inbound]) assert.not.match(l, /bad udp cksum|0\.0\.0\.0/, l);
    assert.is(outV6.length, out.length, 'every datagram sent went over the IPv6 underlay, captured as such');
  } finally {
    await stopChild(agent);
    rmSync(dir, { recursive: true, force: true });
  }
});

udp.run();

const v6only = suite('IPv6 underlay, udp mode: an IPv6-only cluster over an IPv6-only underlay (no public IPv4)');
let only: Cluster;

v6only.before(async () => {
  requireTools('ping');
  only = await createCluster({ nodes: 2, dataplane: 'agent', ipFamilies: 'ipv6-only', underlay: 'ipv6' });
});
v6only.after(async () => {
  await only?.destroy();
});

v6only('the nodes have no IPv4 address; ping -6 and a TCP transfer (sha256) cross, all over IPv6', async () => {
  const { stdout } = await only.exec(only.node(1).ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  assert.is(stdout.trim(), '', 'eth0 has no IPv4 address');
  const [p1, p2] = [only.pod(1), only.pod(2)];
  const r = await ping(only, p1.ns, p2.ip6!, { count: 3, intervalS: 0.2 });
  assert.is(r.received, 3, JSON.stringify(r));
  const bytes = 16 * 1024 * 1024;
  const t = await tcpTransfer(only, over6(p2), over6(p1), bytes);
  assert.is(t.received.sha256, t.sent.sha256);
  const c = await counters(only.agent(1));
  assert.is(c.UdpSentPackets, c.UnderlayIpv6SentPackets, 'every datagram node 1 sent went over IPv6');
  assert.is(c.UdpReceivedPackets, c.UnderlayIpv6ReceivedPackets, 'every datagram node 1 received came over IPv6');
});

v6only.run();

const vxlan = suite('IPv6 underlay, vxlan mode: agent ⇄ kernel flannel-v6.1, then agent ⇄ agent');
let vx: Cluster;
let agent1: CapturedChild;

vxlan.before(async () => {
  requireTools('ping', 'ethtool', 'bridge');
  vx = await createCluster({ nodes: 2, dataplane: 'kernel-vxlan', ipFamilies: 'dual-stack', underlay: 'dual-stack' });
  // The kernel leaves inner checksums to "the NIC" and a veth never finishes them (docs/design.md: checksum offload).
  await vx.exec(vx.node(2).ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  agent1 = await replaceKernelVxlanWithAgent(vx, 1, [], 2);
});
vxlan.after(async () => {
  await vx?.destroy();
});

vxlan('the kernel node has flanneld\'s flannel-v6.1 over the IPv6 underlay (local PublicIPv6, fdb → the agent\'s PublicIPv6)', async () => {
  const n2 = vx.node(2).ns;
  const { stdout: link } = await vx.exec(n2, 'ip', ['-d', 'link', 'show', 'flannel-v6.1']);
  assert.match(link, /vxlan id 1 local 2001:db8::2 dev eth0/);
  assert.match(link, /mtu 1430/, 'no MTU given: the kernel\'s eth0 − 70, as flanneld leaves it');
  const { stdout: fdb } = await vx.exec(n2, 'bridge', ['fdb', 'show', 'dev', 'flannel-v6.1']);
  assert.match(fdb, /dst 2001:db8::1 self permanent/);
});

vxlan('ping -6 and TCP over IPv6 both ways between the agent and the kernel\'s flannel-v6.1; IPv4 on flannel.1', async () => {
  const [p1, p2] = [vx.pod(1), vx.pod(2)];
  assert.is((await ping(vx, p1.ns, p2.ip6!, { count: 3, intervalS: 0.2 })).received, 3, 'agent → kernel');
  assert.is((await ping(vx, p2.ns, p1.ip6!, { count: 3, intervalS: 0.2 })).received, 3, 'kernel → agent');
  const bytes = 16 * 1024 * 1024;
  for (const [from, to] of [[p1, p2], [p2, p1]]) {
    const r = await tcpTransfer(vx, over6(from), over6(to), bytes);
    assert.is(r.received.sha256, r.sent.sha256, `${from.ip6} → ${to.ip6}`);
  }
  // The kernel's vxlan sends bypass the UDP counters (udp_tunnel6_xmit_skb): the agent's count shows where they came.
  const mid = await counters(agent1);
  assert.ok(mid.UnderlayIpv6ReceivedPackets > 6 && mid.UnderlayIpv6SentPackets > 6, JSON.stringify(mid));
  assert.is((await ping(vx, p1.ns, p2.ip, { count: 3, intervalS: 0.2 })).received, 3, 'IPv4 pods still reach each other');
  const after = await counters(agent1);
  assert.is(after.UnderlayIpv6SentPackets, mid.UnderlayIpv6SentPackets, 'IPv4 pods stay off the IPv6 underlay');
});

vxlan('agent ⇄ agent over the IPv6 underlay (node 2 handed to an agent too): ping -6 and TCP (sha256)', async () => {
  const agent2 = await replaceKernelVxlanWithAgent(vx, 2, [], 1);
  const [p1, p2] = [vx.pod(1), vx.pod(2)];
  assert.is((await ping(vx, p1.ns, p2.ip6!, { count: 3, intervalS: 0.2 })).received, 3);
  const r = await tcpTransfer(vx, over6(p2), over6(p1), 16 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
  const c = await counters(agent2);
  assert.ok(c.UnderlayIpv6SentPackets > 1000, `node 2's agent sent ${c.UnderlayIpv6SentPackets} datagrams over IPv6`);
  assert.is(c.drops['unknown-peer'] ?? 0, 0);
});

vxlan.run();
