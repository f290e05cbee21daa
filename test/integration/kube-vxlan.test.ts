// Kube mode with flannel's vxlan backend, next to a node that is flanneld's:
// node 1 keeps the kernel's vxlan device flannel.1 and is published and
// programmed exactly as flanneld does it (its annotations written in
// flanneld's format; its neighbour, fdb and route entries for node 2 taken
// from the annotations node 2's agent published). Node 2 runs flannel-udp in
// kube mode with Backend.Type vxlan. Pods on the two talk both ways.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { waitForLine } from '../../src/testbed/exec.js';
import { tcpTransfer } from '../support/pod-traffic.js';
import { kubeletNode } from '../support/kube-standin-kit.js';
import { StandInProcess, startKubeAgent } from '../support/kube-nodes.js';

const P = 'flannel.alpha.coreos.com';
const vxlan = suite('kube mode, vxlan backend, next to a flanneld vxlan node');
let cluster: Cluster;
let api: StandInProcess;
const pods = new Map<number, PodInfo>();

vxlan.before(async () => {
  // Both nodes start as flanneld vxlan nodes (the kernel's flannel.1, VNI 1, port 8472).
  cluster = await createCluster({ nodes: 2, dataplane: 'kernel-vxlan' });
  // The kernel leaves the inner checksum of what flannel.1 sends for "the NIC" to finish, and a
  // veth never does (a real NIC would): make node 1's underlay behave like one, as vxlan-interop does.
  await cluster.exec(cluster.node(1).ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
  api = await StandInProcess.start(cluster);
  for (const i of [1, 2]) await api.admin.createNode(kubeletNode(`node-${i}`, cluster.node(i).underlayIp, `10.244.${i}.0/24`));
});

vxlan.after(async () => {
  await cluster?.destroy();
});

vxlan("the agent reads flanneld's annotations and publishes its own in the same format; flanneld's side is programmed from them", async () => {
  const n1 = cluster.node(1);
  const n2 = cluster.node(2);
  // Node 1 is flanneld: its lease as flanneld writes it, with flannel.1's real MAC.
  const mac1 = (JSON.parse((await cluster.exec(n1.ns, 'ip', ['-j', 'link', 'show', 'flannel.1'])).stdout) as { address: string }[])[0].address;
  await api.admin.ok('PATCH', '/api/v1/nodes/node-1/status', {
    metadata: {
      annotations: {
        [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac1}"}`,
        [`${P}/backend-type`]: 'vxlan',
        [`${P}/kube-subnet-manager`]: 'true',
        [`${P}/public-ip`]: n1.underlayIp,
      },
    },
  }, 'application/strategic-merge-patch+json');

  // Node 2: flannel-udp in place of flanneld, its MAC its own (derived), not the testbed's.
  await cluster.exec(n2.ns, 'ip', ['link', 'del', 'flannel.1']);
  rmSync(n2.subnetFile, { force: true });
  const netConf = join(cluster.tempDir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
  const agent = await startKubeAgent(cluster, 2, { kubeconfig: api.kubeconfig('flannel-udp'), netConf, env: { NODE_NAME: 'node-2' } });
  await waitForLine(agent, new RegExp(`lease added: 10\\.244\\.1\\.0-24 -> ${n1.underlayIp.replace(/\./g, '\\.')}`), 10_000);
  assert.match(readFileSync(n2.subnetFile, 'utf8'), /FLANNEL_MTU=1450\n/);

  const published = (await api.admin.getNode('node-2')).metadata.annotations as Record<string, string>;
  assert.is(published[`${P}/backend-type`], 'vxlan');
  assert.is(published[`${P}/kube-subnet-manager`], 'true');
  assert.is(published[`${P}/public-ip`], n2.underlayIp);
  const data = published[`${P}/backend-data`];
  assert.match(data, /^\{"VNI":1,"VtepMAC":"([0-9a-f]{2}:){5}[0-9a-f]{2}"\}$/, "flanneld's exact format");
  const mac2 = (JSON.parse(data) as { VtepMAC: string }).VtepMAC;
  assert.is.not(mac2, '0e:66:75:00:00:02', "the agent's own MAC, not the testbed's");

  // What flanneld on node 1 does with node 2's annotations: neighbour, fdb, route.
  await cluster.exec(n1.ns, 'ip', ['neigh', 'replace', '10.244.2.0', 'lladdr', mac2, 'dev', 'flannel.1', 'nud', 'permanent']);
  await cluster.exec(n1.ns, 'bridge', ['fdb', 'del', '0e:66:75:00:00:02', 'dev', 'flannel.1', 'dst', n2.underlayIp, 'self']).catch(() => undefined);
  await cluster.exec(n1.ns, 'bridge', ['fdb', 'replace', mac2, 'dev', 'flannel.1', 'dst', n2.underlayIp, 'self', 'permanent']);
  await cluster.exec(n1.ns, 'ip', ['route', 'replace', '10.244.2.0/24', 'via', '10.244.2.0', 'dev', 'flannel.1', 'onlink']);
});

vxlan('a pod created through the CNI plugin on the agent\'s node and one on the flanneld node talk both ways', async () => {
  pods.set(1, cluster.pod(1));
  pods.set(2, await cluster.addPod(2));
  const [p1, p2] = [pods.get(1)!, pods.get(2)!];
  assert.is((await ping(cluster, p1.ns, p2.ip, { count: 3, intervalS: 0.2 })).received, 3, 'flanneld node → agent node');
  assert.is((await ping(cluster, p2.ns, p1.ip, { count: 3, intervalS: 0.2 })).received, 3, 'agent node → flanneld node');
  for (const [from, to] of [[p1, p2], [p2, p1]]) {
    const r = await tcpTransfer(cluster, from, to, 16 * 1024 * 1024);
    assert.is(r.received.sha256, r.sent.sha256);
  }
});

vxlan.run();
