// Dual-stack leases through the etcd and the kube sources (issue 24): a
// two-node dual-stack testbed whose leases-file agents are replaced by agents
// that lease from a real etcd, then by agents that read their nodes' podCIDRs
// from the kube-apiserver stand-in. Each agent publishes its IPv6 half the way
// flanneld writes it (the '&' subnet key in etcd, podCIDRs and the
// public-ipv6 annotation on the node) and learns the other's: pods ping -6
// each other both ways. The pods keep the testbed's subnets because each agent
// finds them again in the subnet.env the testbed left (etcd: the previous
// subnets; kube: the nodes get the same podCIDRs). Then the same with
// IPv6-only networks (EnableIPv4 false). The underlay is dual-stack
// (2001:db8::i on each eth0): the PublicIPv6 each agent publishes (given, or
// found on eth0 as flanneld does) is what the other sends its IPv6 pods to,
// which the agents' counters show. Clusters destroyed in after().
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { waitForLine } from '../../src/testbed/exec.js';
import type { EtcdServer } from '../support/etcd-server.js';
import { etcdctl, PREFIX, startEtcdAgent, startUnderlayEtcd } from '../support/etcd-nodes.js';
import { kubeletNode } from '../support/kube-standin-kit.js';
import { StandInProcess, startKubeAgent } from '../support/kube-nodes.js';
import { requireTools } from '../support/required-tool.js';
import { readAgentStats } from '../support/agent-stats.js';
import type { CapturedChild } from '../../src/testbed/exec.js';

const P = 'flannel.alpha.coreos.com';
/** The testbed's own IPv6 network and subnets (fd00:10:244:i::/64), which the pods already have. */
const IPV6_NETWORK = 'fd00:10:244::/48';

/** Each agent sent its IPv6 pods' packets over the IPv6 underlay, to the PublicIPv6 it learnt from the source. */
async function assertOverIpv6Underlay(agents: CapturedChild[]): Promise<void> {
  for (const [i, agent] of agents.entries()) {
    const s = await readAgentStats(agent);
    assert.ok((s.totals.UnderlayIpv6SentPackets ?? 0) >= 3, `agent ${i + 1} sent ${s.totals.UnderlayIpv6SentPackets} datagrams over IPv6`);
    assert.ok((s.totals.UnderlayIpv6ReceivedPackets ?? 0) >= 3, `agent ${i + 1} received ${s.totals.UnderlayIpv6ReceivedPackets} over IPv6`);
  }
}

async function pingBothWays(cluster: Cluster, ipv4 = true): Promise<void> {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  for (const [from, to, what] of [[p1, p2, 'pod1 → pod2'], [p2, p1, 'pod2 → pod1']] as const) {
    const r = await ping(cluster, from.ns, to.ip6!, { count: 3, intervalS: 0.2 });
    assert.ok(r.lossPct === 0 && r.received >= 3, `${what} over IPv6: ${JSON.stringify(r)}`);
  }
  if (!ipv4) return;
  const v4 = await ping(cluster, p1.ns, p2.ip, { count: 2, intervalS: 0.2 });
  assert.is(v4.received, 2, `pod1 → pod2 over IPv4: ${JSON.stringify(v4)}`);
}

/** A dual-stack (or IPv6-only) testbed with its leases-file agents stopped (the pods, cni0 and subnet.env stay). */
async function dualStackWithoutAgents(ipFamilies: 'dual-stack' | 'ipv6-only' = 'dual-stack'): Promise<Cluster> {
  requireTools('ping');
  const cluster = await createCluster({ nodes: 2, dataplane: 'agent', ipFamilies, underlay: 'dual-stack' });
  try {
    for (const i of [1, 2]) await cluster.stopAgent(i);
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}

const etcdMode = suite('dual-stack through the etcd source');
let etcdCluster: Cluster;
let etcd: EtcdServer;

etcdMode.before(async () => {
  etcdCluster = await dualStackWithoutAgents();
  etcd = await startUnderlayEtcd(etcdCluster);
});
etcdMode.after(async () => {
  await etcdCluster?.destroy();
  await etcd?.destroy();
});

etcdMode('agents lease both families from etcd ("10.244.i.0-24&fd00:10:244:i::-64"), learn each other\'s, and pods ping -6 across', async () => {
  const config = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: IPV6_NETWORK, IPv6SubnetLen: 64, Backend: { Type: 'udp' } };
  await etcdctl(etcdCluster, etcd, ['put', `${PREFIX}/config`, JSON.stringify(config)]);
  const agents = [];
  for (const i of [1, 2]) agents.push(await startEtcdAgent(etcdCluster, i, etcd));

  const out = await etcdctl(etcdCluster, etcd, ['get', '--prefix', `${PREFIX}/subnets/`]);
  const lines = out.trim().split('\n');
  const stored = Object.fromEntries(Array.from({ length: lines.length / 2 }, (_, k) => [lines[2 * k].slice(`${PREFIX}/subnets/`.length), JSON.parse(lines[2 * k + 1])]));
  for (const i of [1, 2]) {
    const key = `10.244.${i}.0-24&fd00:10:244:${i}::-64`;
    assert.ok(key in stored, `flannel's dual-stack key ${key} in ${JSON.stringify(stored)}`);
    assert.is(stored[key].PublicIP, etcdCluster.node(i).underlayIp);
    assert.is(stored[key].PublicIPv6, `2001:db8::${i}`, 'no --public-ipv6: eth0\'s global IPv6 address, as flanneld takes it');
    assert.is(stored[key].BackendType, 'udp');
    assert.match(readFileSync(etcdCluster.node(i).subnetFile, 'utf8'), new RegExp(`FLANNEL_IPV6_NETWORK=fd00:10:244::/48\nFLANNEL_IPV6_SUBNET=fd00:10:244:${i}::1/64\n`));
  }
  // Each learned the other's IPv6 half from its watch.
  await waitForLine(agents[0], /lease added: 10\.244\.2\.0-24&fd00:10:244:2::-64/, 5000);
  await waitForLine(agents[1], /lease added: 10\.244\.1\.0-24&fd00:10:244:1::-64/, 5000);
  await pingBothWays(etcdCluster);
  await assertOverIpv6Underlay(agents);
});

const kubeMode = suite('dual-stack through the kube source (API-server stand-in)');
let kubeCluster: Cluster;

kubeMode.before(async () => {
  kubeCluster = await dualStackWithoutAgents();
});
kubeMode.after(async () => {
  await kubeCluster?.destroy(); // the agents and the stand-in too
});

kubeMode('agents take both podCIDRs, publish public-ipv6 beside public-ip, learn each other\'s, and pods ping -6 across', async () => {
  const api = await StandInProcess.start(kubeCluster);
  const netConf = join(kubeCluster.tempDir, 'net-conf-dual.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: IPV6_NETWORK, IPv6SubnetLen: 64, Backend: { Type: 'udp' } }));
  for (const i of [1, 2]) {
    const node = kubeletNode(`node-${i}`, kubeCluster.node(i).underlayIp);
    node.spec = { podCIDR: `10.244.${i}.0/24`, podCIDRs: [`10.244.${i}.0/24`, `fd00:10:244:${i}::/64`] };
    await api.admin.createNode(node);
  }
  const kubeconfig = api.kubeconfig('flannel-udp');
  const agents = [];
  for (const i of [1, 2]) {
    // --public-ipv6: the node's IPv6 underlay address to announce (eth0's 2001:db8::i).
    agents.push(await startKubeAgent(kubeCluster, i, { kubeconfig, netConf, env: { NODE_NAME: `node-${i}` }, extraArgs: ['--public-ipv6', `2001:db8::${i}`] }));
  }
  for (const i of [1, 2]) {
    const a = (await api.admin.getNode(`node-${i}`)).metadata.annotations as Record<string, string>;
    assert.is(a[`${P}/kube-subnet-manager`], 'true');
    assert.is(a[`${P}/backend-type`], 'udp');
    assert.is(a[`${P}/public-ip`], kubeCluster.node(i).underlayIp);
    assert.is(a[`${P}/public-ipv6`], `2001:db8::${i}`);
    assert.match(readFileSync(kubeCluster.node(i).subnetFile, 'utf8'), new RegExp(`FLANNEL_IPV6_SUBNET=fd00:10:244:${i}::1/64\n`));
  }
  await waitForLine(agents[0], /lease added: 10\.244\.2\.0-24&fd00:10:244:2::-64/, 5000);
  await waitForLine(agents[1], /lease added: 10\.244\.1\.0-24&fd00:10:244:1::-64/, 5000);
  await pingBothWays(kubeCluster);
  await assertOverIpv6Underlay(agents);
});

const etcdV6Only = suite('IPv6-only through the etcd source');
let v6Cluster: Cluster;
let v6Etcd: EtcdServer;

etcdV6Only.before(async () => {
  v6Cluster = await dualStackWithoutAgents('ipv6-only');
  v6Etcd = await startUnderlayEtcd(v6Cluster);
});
etcdV6Only.after(async () => {
  await v6Cluster?.destroy();
  await v6Etcd?.destroy();
});

etcdV6Only('EnableIPv4 false: keys "0.0.0.0-0&fd00:10:244:i::-64", subnet.env without the IPv4 keys, no IPv4 on flannel0, pods ping -6 across', async () => {
  const config = { EnableIPv4: false, EnableIPv6: true, IPv6Network: IPV6_NETWORK, IPv6SubnetLen: 64, Backend: { Type: 'udp' } };
  await etcdctl(v6Cluster, v6Etcd, ['put', `${PREFIX}/config`, JSON.stringify(config)]);
  const agents = [];
  // An IPv6-only node is found again by its PublicIPv6 (every node's IPv4 half is the zero one), so it is required.
  for (const i of [1, 2]) agents.push(await startEtcdAgent(v6Cluster, i, v6Etcd, ['--public-ipv6', `2001:db8::${i}`]));
  const out = await etcdctl(v6Cluster, v6Etcd, ['get', '--prefix', `${PREFIX}/subnets/`]);
  for (const i of [1, 2]) {
    const key = `0.0.0.0-0&fd00:10:244:${i}::-64`;
    assert.ok(out.includes(`${PREFIX}/subnets/${key}\n`), `flannel's IPv6-only key ${key} in ${out}`);
    assert.ok(out.includes(`"PublicIPv6":"2001:db8::${i}"`), out);
    assert.is(readFileSync(v6Cluster.node(i).subnetFile, 'utf8'), `FLANNEL_IPV6_NETWORK=${IPV6_NETWORK}\nFLANNEL_IPV6_SUBNET=fd00:10:244:${i}::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`);
    const { stdout: v4 } = await v6Cluster.exec(v6Cluster.node(i).ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'flannel0']);
    assert.is(v4.trim(), '', 'no IPv4 address on an IPv6-only node');
  }
  await waitForLine(agents[0], /lease added: 0\.0\.0\.0-0&fd00:10:244:2::-64/, 5000);
  await waitForLine(agents[1], /lease added: 0\.0\.0\.0-0&fd00:10:244:1::-64/, 5000);
  await pingBothWays(v6Cluster, false);
  await assertOverIpv6Underlay(agents);
});

const kubeV6Only = suite('IPv6-only through the kube source');
let kubeV6Cluster: Cluster;

kubeV6Only.before(async () => {
  kubeV6Cluster = await dualStackWithoutAgents('ipv6-only');
});
kubeV6Only.after(async () => {
  await kubeV6Cluster?.destroy();
});

kubeV6Only('EnableIPv4 false: nodes with only an IPv6 podCIDR, subnet.env without the IPv4 keys, pods ping -6 across', async () => {
  const api = await StandInProcess.start(kubeV6Cluster);
  const netConf = join(kubeV6Cluster.tempDir, 'net-conf-v6.json');
  writeFileSync(netConf, JSON.stringify({ EnableIPv4: false, EnableIPv6: true, IPv6Network: IPV6_NETWORK, IPv6SubnetLen: 64, Backend: { Type: 'udp' } }));
  for (const i of [1, 2]) {
    const node = kubeletNode(`node-${i}`, kubeV6Cluster.node(i).underlayIp);
    node.spec = { podCIDR: `fd00:10:244:${i}::/64`, podCIDRs: [`fd00:10:244:${i}::/64`] };
    await api.admin.createNode(node);
  }
  const kubeconfig = api.kubeconfig('flannel-udp');
  const agents = [];
  for (const i of [1, 2]) {
    agents.push(await startKubeAgent(kubeV6Cluster, i, { kubeconfig, netConf, env: { NODE_NAME: `node-${i}` }, extraArgs: ['--public-ipv6', `2001:db8::${i}`] }));
  }
  for (const i of [1, 2]) {
    assert.is(readFileSync(kubeV6Cluster.node(i).subnetFile, 'utf8'), `FLANNEL_IPV6_NETWORK=${IPV6_NETWORK}\nFLANNEL_IPV6_SUBNET=fd00:10:244:${i}::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`);
    const a = (await api.admin.getNode(`node-${i}`)).metadata.annotations as Record<string, string>;
    assert.is(a[`${P}/public-ipv6`], `2001:db8::${i}`);
  }
  await waitForLine(agents[0], /lease added: 0\.0\.0\.0-0&fd00:10:244:2::-64/, 5000);
  await waitForLine(agents[1], /lease added: 0\.0\.0\.0-0&fd00:10:244:1::-64/, 5000);
  await pingBothWays(kubeV6Cluster, false);
  await assertOverIpv6Underlay(agents);
});

etcdMode.run();
etcdV6Only.run();
kubeMode.run();
kubeV6Only.run();
