// VXLAN mode against the real thing: a node whose kernel vxlan device is
// programmed exactly as flannel's vxlan backend programs it, talking to a
// node running this agent with --backend vxlan; then two agents together.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { replaceKernelVxlanWithAgent } from '../../src/testbed/vxlan-agents.js';
import { ping } from '../../src/testbed/measure.js';
import { tcpTransfer, udpIcmpProbe } from '../support/pod-traffic.js';

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
