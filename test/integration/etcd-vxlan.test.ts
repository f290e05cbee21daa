// etcd mode with flannel's vxlan backend: the network config chooses vxlan,
// each agent publishes its VTEP MAC in its lease (BackendData), learns the
// others' from theirs, and the pods talk across nodes.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { tcpTransfer } from '../support/pod-traffic.js';
import type { EtcdServer } from '../support/etcd-server.js';
import { adoptSubnet, etcdctl, PREFIX, readSubnetEnv, startEtcdAgent, startUnderlayEtcd, storedLeases } from '../support/etcd-nodes.js';

const vxlan = suite('etcd mode with Backend.Type vxlan');
let cluster: Cluster;
let etcd: EtcdServer;
const pods = new Map<number, PodInfo>();

vxlan.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'none' });
  etcd = await startUnderlayEtcd(cluster);
  const config = { Network: '10.244.0.0/16', SubnetLen: 24, SubnetMin: '10.244.50.0', SubnetMax: '10.244.60.0', Backend: { Type: 'vxlan', VNI: 7 } };
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/config`, JSON.stringify(config)]);
});
vxlan.after(async () => {
  await cluster?.destroy();
  await etcd?.destroy();
});

vxlan('each agent leases a subnet and publishes {"VNI","VtepMAC"} as flannel does; subnet.env has MTU − 50', async () => {
  for (const i of [1, 2]) rmSync(cluster.node(i).subnetFile, { force: true });
  const agents = await Promise.all([1, 2].map((i) => startEtcdAgent(cluster, i, etcd)));
  const stored = (await storedLeases(cluster, etcd)) as Record<string, { PublicIP: string; BackendType: string; BackendData: { VNI: number; VtepMAC: string } }>;
  const leases = Object.values(stored);
  assert.is(leases.length, 2, JSON.stringify(stored));
  for (const lease of leases) {
    assert.is(lease.BackendType, 'vxlan');
    assert.is(lease.BackendData.VNI, 7);
    assert.match(lease.BackendData.VtepMAC, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  }
  assert.is.not(leases[0].BackendData.VtepMAC, leases[1].BackendData.VtepMAC, 'one MAC per node');
  for (const i of [1, 2]) {
    assert.is(readSubnetEnv(cluster.node(i).subnetFile).FLANNEL_MTU, '1450');
    const own = leases.find((l) => l.PublicIP === cluster.node(i).underlayIp)!;
    assert.ok(agents[i - 1].log.snapshot().some((l) => l.includes(`VNI 7, VTEP MAC ${own.BackendData.VtepMAC}`)), 'the agent runs with the MAC it published');
    assert.ok(agents[i - 1].log.snapshot().some((l) => / vxlan port 8472/.test(l)), 'vxlan on the Linux default port');
  }
});

vxlan('pods on the two nodes ping each other and move data intact', async () => {
  for (const i of [1, 2]) pods.set(i, await adoptSubnet(cluster, i));
  const [p1, p2] = [pods.get(1)!, pods.get(2)!];
  assert.is((await ping(cluster, p1.ns, p2.ip, { count: 3, intervalS: 0.2 })).received, 3);
  assert.is((await ping(cluster, p2.ns, p1.ip, { count: 3, intervalS: 0.2 })).received, 3);
  const r = await tcpTransfer(cluster, p1, p2, 16 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
});

vxlan.run();
