// etcd mode, vxlan backend, dual-stack network config (issue 24c): each agent
// publishes its VTEP MAC as BackendData and BackendV6Data (one MAC for both
// families, docs/design.md "IPv6 in VXLAN mode"), learns the other's from its
// lease, and IPv6 pods talk across the nodes in 0x86dd frames, IPv4 beside.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { eventually, tcpTransfer } from '../support/pod-traffic.js';
import type { EtcdServer } from '../support/etcd-server.js';
import { adoptSubnet, etcdctl, PREFIX, readSubnetEnv, startEtcdAgent, startUnderlayEtcd, storedLeases } from '../support/etcd-nodes.js';
import { requireTools } from '../support/required-tool.js';

interface StoredLease {
  PublicIP: string;
  BackendType: string;
  BackendData: { VNI: number; VtepMAC: string };
  BackendV6Data?: { VNI: number; VtepMAC: string };
}

const dual = suite('etcd mode, Backend.Type vxlan, EnableIPv6');
let cluster: Cluster;
let etcd: EtcdServer;

dual.before(async () => {
  requireTools('ping');
  cluster = await createCluster({ nodes: 2, dataplane: 'none' });
  etcd = await startUnderlayEtcd(cluster);
  const config = {
    Network: '10.244.0.0/16', SubnetLen: 24, SubnetMin: '10.244.50.0', SubnetMax: '10.244.60.0',
    EnableIPv6: true, IPv6Network: 'fd00:10:244::/48', IPv6SubnetLen: 64,
    Backend: { Type: 'vxlan', VNI: 7 },
  };
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/config`, JSON.stringify(config)]);
});
dual.after(async () => {
  await cluster?.destroy();
  await etcd?.destroy();
});

/** Node i's cni0 and first pod moved to the IPv6 subnet the agent wrote to subnet.env (what the CNI plugin would give). */
async function adoptSubnet6(i: number, pod: PodInfo): Promise<PodInfo> {
  const node = cluster.node(i);
  const subnet6 = (readSubnetEnv(node.subnetFile) as unknown as Record<string, string | undefined>).FLANNEL_IPV6_SUBNET; // e.g. fd00:10:244:3a::1/64
  assert.ok(subnet6, `${node.subnetFile} has no FLANNEL_IPV6_SUBNET`);
  const [gateway6] = subnet6!.split('/');
  const pod6 = gateway6.replace(/::1$/, '::2');
  await cluster.exec(node.ns, 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
  await cluster.exec(node.ns, 'ip', ['-6', 'addr', 'add', `${gateway6}/64`, 'dev', 'cni0', 'nodad']);
  await cluster.exec(pod.ns, 'ip', ['-6', 'addr', 'add', `${pod6}/64`, 'dev', 'eth0', 'nodad']);
  await cluster.exec(pod.ns, 'ip', ['-6', 'route', 'replace', 'default', 'via', gateway6, 'dev', 'eth0']);
  // Neighbour discovery on cni0 may hold the first packets for a moment: up once the gateway answers.
  const up = await eventually(async () => (await cluster.exec(pod.ns, 'ping', ['-n', '-q', '-c', '1', '-W', '1', gateway6], { allowFailure: true })).code === 0, 20_000);
  assert.ok(up, `pod ${pod.ns} cannot reach its IPv6 gateway ${gateway6}`);
  return { ...pod, ip6: pod6 };
}

dual('both leases carry the same VTEP MAC as BackendData and BackendV6Data; IPv6 pods ping and move data across, IPv4 beside', async () => {
  for (const i of [1, 2]) rmSync(cluster.node(i).subnetFile, { force: true });
  const agents = await Promise.all([1, 2].map((i) => startEtcdAgent(cluster, i, etcd)));
  const stored = (await storedLeases(cluster, etcd)) as unknown as Record<string, StoredLease>;
  const keys = Object.keys(stored);
  assert.is(keys.length, 2, JSON.stringify(stored));
  for (const key of keys) {
    const lease = stored[key];
    assert.match(key, /^10\.244\.\d+\.0-24&fd00:10:244:[0-9a-f]+::-64$/);
    assert.is(lease.BackendType, 'vxlan');
    assert.equal(lease.BackendV6Data, lease.BackendData, `${key}: one VTEP MAC for both families`);
  }
  for (const [k, agent] of agents.entries()) {
    assert.ok(agent.log.snapshot().some((l) => l.includes('"BackendV6Data":{"VNI":7')), `agent ${k + 1} logs its BackendV6Data`);
  }
  const pods: PodInfo[] = [];
  for (const i of [1, 2]) pods.push(await adoptSubnet6(i, await adoptSubnet(cluster, i)));
  const [p1, p2] = pods;
  const there = await ping(cluster, p1.ns, p2.ip6!, { count: 3, intervalS: 0.2 });
  const back = await ping(cluster, p2.ns, p1.ip6!, { count: 3, intervalS: 0.2 });
  assert.ok(there.lossPct === 0 && there.received >= 3, `pod1 → pod2 over IPv6: ${JSON.stringify(there)}`);
  assert.ok(back.lossPct === 0 && back.received >= 3, `pod2 → pod1 over IPv6: ${JSON.stringify(back)}`);
  const r = await tcpTransfer(cluster, { ...p1, ip: p1.ip6! }, { ...p2, ip: p2.ip6! }, 16 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
  assert.is((await ping(cluster, p1.ns, p2.ip, { count: 3, intervalS: 0.2 })).received, 3, 'IPv4 beside it');
});

dual.run();
