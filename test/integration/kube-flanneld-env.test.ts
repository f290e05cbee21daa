// flanneld's environment and --set-node-network-unavailable in kube mode,
// against the API-server stand-in: an agent configured only through
// FLANNELD_* variables (as flanneld reads them) comes up, and with
// FLANNELD_SET_NODE_NETWORK_UNAVAILABLE=false it leaves the node's
// NetworkUnavailable condition as kubelet set it; a second node without the
// variable gets NetworkUnavailable=False (FlannelIsUp), as before.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { eventually } from '../support/pod-traffic.js';
import { kubeletNode } from '../support/kube-standin-kit.js';
import { StandInProcess, startKubeAgent } from '../support/kube-nodes.js';

const envSuite = suite('kube mode from FLANNELD_* variables');
let cluster: Cluster;
let api: StandInProcess;

envSuite.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'none' });
  api = await StandInProcess.start(cluster);
  for (const i of [1, 2]) await api.admin.createNode(kubeletNode(`node-${i}`, cluster.node(i).underlayIp, `10.244.${i}.0/24`));
});
envSuite.after(async () => {
  await cluster?.destroy();
});

const condition = async (i: number) => (await api.admin.getNode(`node-${i}`)).status.conditions.find((c: { type: string }) => c.type === 'NetworkUnavailable');

envSuite('FLANNELD_SET_NODE_NETWORK_UNAVAILABLE=false leaves the condition alone; without it the agent sets it False (FlannelIsUp)', async () => {
  const netConf = join(cluster.tempDir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } }));
  const kubeconfig = api.kubeconfig('flannel-udp');
  for (const i of [1, 2]) rmSync(cluster.node(i).subnetFile, { force: true });
  // Node 1: --ip-masq and the interface from the environment only, as flanneld reads them.
  const quiet = await startKubeAgent(cluster, 1, {
    kubeconfig,
    netConf,
    publicIp: false,
    env: { NODE_NAME: 'node-1', FLANNELD_SET_NODE_NETWORK_UNAVAILABLE: 'false', FLANNELD_IP_MASQ: 'true', FLANNELD_IFACE: 'eth0' },
  });
  const loud = await startKubeAgent(cluster, 2, { kubeconfig, netConf, env: { NODE_NAME: 'node-2' } });
  assert.ok(
    await eventually(async () => (await condition(2)).status === 'False', 15_000),
    `node 2: ${JSON.stringify(await condition(2))}\n${loud.log.tail()}`,
  );
  assert.match(quiet.log.text(), /interface eth0 \(--iface eth0\), address 192\.0\.2\.1/);
  assert.ok(quiet.log.snapshot().some((l) => /ip-masq: FLANNEL-POSTRTG/.test(l)), 'FLANNELD_IP_MASQ=true turned --ip-masq on');
  // Node 2's agent got there and node 1's has been ready as long: node 1's condition is still kubelet's.
  const c1 = await condition(1);
  assert.equal([c1.status, c1.reason], ['True', 'NoRouteCreated'], JSON.stringify(c1));
  assert.not.match(quiet.log.text(), /condition NetworkUnavailable=False/);
});

envSuite.run();
