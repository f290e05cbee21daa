// flanneld's --kube-subnet-mgr mode end to end, in network namespaces: the
// kube-apiserver stand-in (TLS, tokens, the manifest's RBAC enforced) inside
// the underlay namespace, three agents that take their subnets from their
// nodes' podCIDRs, publish flannel's annotations and watch each other; pods
// created through the CNI plugin from the subnet.env the agents wrote; then a
// node that joins without a podCIDR and recovers when it is set, a node
// deleted, and the API server killed and restarted, all while traffic runs.
// Everything is removed in after(), also on failure.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { type CapturedChild, isRunning, waitForLine } from '../../src/testbed/exec.js';
import { eventually, tcpTransfer, udpIcmpProbe } from '../support/pod-traffic.js';
import { startStreamingTransfer } from '../support/live-probes.js';
import { readAgentStats, residentBytes } from '../support/agent-stats.js';
import { kubeletNode } from '../support/kube-standin-kit.js';
import { serviceAccount } from '../support/kube-apiserver-standin.js';
import { healthGet, StandInProcess, startKubeAgent } from '../support/kube-nodes.js';

const MiB = 1024 * 1024;
const P = 'flannel.alpha.coreos.com';
const HEALTHZ_PORT = 8081;
const kube = suite('kube mode: podCIDR subnets, annotations, live peers through the API server');
let cluster: Cluster;
let api: StandInProcess;
let netConf: string;
let kubeconfig: string;
const agents = new Map<number, CapturedChild>();
/** node index → the pod created through the CNI plugin after the agent wrote subnet.env */
const pods = new Map<number, PodInfo>();

const nodeName = (i: number) => `node-${i}`;

kube.before(async () => {
  cluster = await createCluster({ nodes: 4, dataplane: 'none' });
  api = await StandInProcess.start(cluster);
  netConf = join(cluster.tempDir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } }));
  kubeconfig = api.kubeconfig('flannel-udp');
  // kubelet registered three nodes; kube-controller-manager gave them podCIDRs.
  for (const i of [1, 2, 3]) await api.admin.createNode(kubeletNode(nodeName(i), cluster.node(i).underlayIp, `10.244.${i}.0/24`));
  // The DaemonSet's pod on node 3, for the agent there to find its node through POD_NAME.
  await api.admin.ok('POST', '/api/v1/namespaces/kube-flannel-udp/pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'kube-flannel-udp-ds-n3', namespace: 'kube-flannel-udp' },
    spec: { nodeName: nodeName(3), containers: [{ name: 'kube-flannel-udp', image: 'flannel-udp:0.1.0' }] },
  });
});

kube.after(async () => {
  await cluster?.destroy(); // stops every agent and the stand-in (SIGTERM first), removes namespaces and the temp dir
});

kube('three agents: subnets from podCIDR, flannel annotations and NetworkUnavailable=False published, subnet.env written', async () => {
  // The subnet.env files are the agents' to write (the testbed wrote some for its first pods).
  for (const i of [1, 2, 3]) rmSync(cluster.node(i).subnetFile, { force: true });
  const env = (i: number): Record<string, string> => (i === 3 ? { POD_NAME: 'kube-flannel-udp-ds-n3', POD_NAMESPACE: 'kube-flannel-udp' } : { NODE_NAME: nodeName(i) });
  // Three ways to reach the API server: node 1 a kubeconfig whose server --kube-api-url replaces,
  // node 2 in-cluster (the service account's files, as in the DaemonSet), node 3 a kubeconfig.
  const wrongServer = join(cluster.tempDir, 'wrong-server.kubeconfig');
  writeFileSync(wrongServer, readFileSync(kubeconfig, 'utf8').replace(api.url, 'https://192.0.2.250:1'));
  const how = (i: number) =>
    i === 1
      ? { kubeconfig: wrongServer, extra: ['--kube-api-url', api.url] }
      : i === 2
        ? { kubeconfig: { inCluster: api }, extra: [] }
        : { kubeconfig, extra: [] };
  const started = await Promise.all(
    [1, 2, 3].map((i) =>
      startKubeAgent(cluster, i, { kubeconfig: how(i).kubeconfig, netConf, env: env(i), extraArgs: ['--ip-masq', '--healthz-port', String(HEALTHZ_PORT), ...how(i).extra] }),
    ),
  );
  started.forEach((a, k) => agents.set(k + 1, a));
  for (const i of [1, 2, 3]) {
    const node = cluster.node(i);
    assert.is(
      readFileSync(node.subnetFile, 'utf8'),
      `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${i}.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n`,
    );
    const n = await api.admin.getNode(nodeName(i));
    assert.is(n.metadata.annotations[`${P}/kube-subnet-manager`], 'true');
    assert.is(n.metadata.annotations[`${P}/backend-type`], 'udp');
    assert.is(n.metadata.annotations[`${P}/backend-data`], 'null');
    assert.is(n.metadata.annotations[`${P}/public-ip`], node.underlayIp);
    // The condition follows the ready line; wait for it rather than for a fixed time.
    const up = await eventually(async () => {
      const c = (await api.admin.getNode(nodeName(i))).status.conditions.find((x: any) => x.type === 'NetworkUnavailable');
      return c.status === 'False' && c.reason === 'FlannelIsUp';
    }, 10_000);
    assert.ok(up, `node ${i}: NetworkUnavailable=False (FlannelIsUp)`);
    assert.equal(await healthGet(cluster, node.ns, HEALTHZ_PORT, '/readyz'), { status: 200, body: 'ready\n' });
  }
  assert.ok(agents.get(3)!.log.snapshot().some((l) => /kube: node "node-3"/.test(l)), 'node 3 found its node by reading its pod');
  assert.ok(agents.get(1)!.log.snapshot().some((l) => /API server https:\/\/192\.0\.2\.250:6443,/.test(l)), '--kube-api-url replaced the server');
  assert.ok(agents.get(2)!.log.snapshot().some((l) => /API server https:\/\/192\.0\.2\.250:6443,/.test(l)), 'in-cluster');
  for (const i of [1, 2, 3]) {
    const stats = await readAgentStats(agents.get(i)!);
    assert.equal(stats.leases.sort(), [1, 2, 3].filter((j) => j !== i).map((j) => `10.244.${j}.0-24 -> 192.0.2.${j}`));
  }
});

kube('pods created through the CNI plugin from the agents\' subnet.env ping each other; a transfer arrives intact', async () => {
  for (const i of [1, 2, 3]) {
    const pod = await cluster.addPod(i);
    assert.match(pod.ip, new RegExp(`^10\\.244\\.${i}\\.\\d+$`));
    pods.set(i, pod);
  }
  for (const a of [1, 2, 3]) {
    for (const b of [1, 2, 3]) {
      if (a === b) continue;
      const r = await ping(cluster, pods.get(a)!.ns, pods.get(b)!.ip, { count: 2, intervalS: 0.2 });
      assert.is(r.received, 2, `pod${a} → pod${b} (${pods.get(b)!.ip}): ${JSON.stringify(r)}`);
    }
  }
  const r = await tcpTransfer(cluster, pods.get(1)!, pods.get(3)!, 64 * 1024 * 1024);
  assert.is(r.received.bytes, 64 * 1024 * 1024);
  assert.is(r.received.sha256, r.sent.sha256);
});

kube('a fourth node without podCIDR: the clear error, alive but not ready; once the CIDR is set it joins, reachable with nobody restarted', async () => {
  rmSync(cluster.node(4).subnetFile, { force: true });
  await api.admin.createNode(kubeletNode(nodeName(4), cluster.node(4).underlayIp));
  const pids = [1, 2, 3].map((i) => agents.get(i)!.pid);
  // Started as the DaemonSet starts it: no --public-ip or --iface, so the default route's interface.
  await cluster.exec(cluster.node(4).ns, 'ip', ['route', 'add', 'default', 'via', '192.0.2.254', 'dev', 'eth0']);
  const agent4 = await startKubeAgent(cluster, 4, {
    kubeconfig,
    netConf,
    env: { NODE_NAME: nodeName(4) },
    extraArgs: ['--ip-masq', '--healthz-port', String(HEALTHZ_PORT)],
    publicIp: false,
    waitReady: false,
  });
  agents.set(4, agent4);
  const error = await waitForLine(agent4, /no spec\.podCIDR/, 30_000);
  assert.match(error, /error: node "node-4" has no spec\.podCIDR: .*kube-controller-manager .*--allocate-node-cidrs=true --cluster-cidr=10\.244\.0\.0\/16/);
  assert.match(error, /not exiting/);
  // Alive for the liveness probe, not ready for the readiness probe, no subnet.env for the CNI plugin.
  assert.equal(await healthGet(cluster, cluster.node(4).ns, HEALTHZ_PORT, '/healthz'), { status: 200, body: 'flannel-udp is running\n' });
  assert.is((await healthGet(cluster, cluster.node(4).ns, HEALTHZ_PORT, '/readyz')).status, 503);
  assert.ok(isRunning(agent4));
  assert.not.ok(readFileSyncOrUndefined(cluster.node(4).subnetFile), 'no subnet.env yet');

  // kube-controller-manager allocates the CIDR, while a transfer runs between pods 1 and 2
  // (open-ended: it runs until told to finish, after the join, whatever the machine's speed).
  const transfer = await startStreamingTransfer(cluster, pods.get(1)!, pods.get(2)!, 16 * MiB);
  try {
    await transfer.progress(8); // under way
    await api.admin.patchNode(nodeName(4), { spec: { podCIDR: '10.244.4.0/24', podCIDRs: ['10.244.4.0/24'] } });
    await waitForLine(agent4, /flannel-udp agent ready/, 30_000);
    assert.ok(agent4.log.snapshot().some((l) => /now has pod CIDR 10\.244\.4\.0\/24; going on/.test(l)));
    assert.ok(agent4.log.snapshot().some((l) => /public IP 192\.0\.2\.4 of eth0, the default route's interface/.test(l)), agent4.log.tail());
    for (const i of [1, 2, 3]) await waitForLine(agents.get(i)!, /lease added: 10\.244\.4\.0-24 -> 192\.0\.2\.4/, 10_000);
    assert.equal(await healthGet(cluster, cluster.node(4).ns, HEALTHZ_PORT, '/readyz'), { status: 200, body: 'ready\n' });

    pods.set(4, await cluster.addPod(4));
    for (const i of [1, 2, 3]) {
      assert.is((await ping(cluster, pods.get(i)!.ns, pods.get(4)!.ip, { count: 2, intervalS: 0.2 })).received, 2, `pod${i} → pod4`);
      assert.is((await ping(cluster, pods.get(4)!.ns, pods.get(i)!.ip, { count: 2, intervalS: 0.2 })).received, 2, `pod4 → pod${i}`);
    }
    const r = await transfer.finish();
    assert.ok(r.sent.bytes >= 16 * MiB, `${r.sent.bytes} bytes sent`);
    assert.is(r.received.bytes, r.sent.bytes);
    assert.is(r.received.sha256, r.sent.sha256, 'the flow between pod1 and pod2 was not disturbed');
    assert.equal([1, 2, 3].map((i) => agents.get(i)!.pid), pids, 'nobody restarted');
  } finally {
    await transfer.stop();
  }
});

kube('a node deleted from the API server disappears from every lease table; its subnet answers net unreachable', async () => {
  await api.admin.deleteNode(nodeName(3));
  for (const i of [1, 2, 4]) {
    await waitForLine(agents.get(i)!, /lease removed: 10\.244\.3\.0-24/, 10_000);
    const stats = await readAgentStats(agents.get(i)!);
    assert.not.ok(stats.leases.some((l) => l.startsWith('10.244.3.0-24')), `node ${i}: ${stats.leases.join(', ')}`);
  }
  const unreachable = await eventually(async () => {
    const probe = await udpIcmpProbe(cluster, pods.get(1)!, pods.get(3)!.ip, 9999, 500);
    return probe.received && probe.type === 3 && probe.code === 0;
  }, 5000);
  assert.ok(unreachable, 'pod1 → pod3 gets ICMP net unreachable');
  for (const i of [2, 4]) assert.is((await ping(cluster, pods.get(1)!.ns, pods.get(i)!.ip, { count: 2, intervalS: 0.2 })).received, 2, `pod1 → pod${i}`);
});

kube('the API server killed mid-transfer: forwarding continues; restarted, the watches resume and see new nodes', async () => {
  const live = [1, 2, 4];
  // Open-ended: it runs until told to finish, so it spans the outage whatever the machine's speed.
  const transfer = await startStreamingTransfer(cluster, pods.get(1)!, pods.get(4)!, 16 * MiB);
  try {
    await transfer.progress(8); // under way
    await api.kill();
    for (const i of live) await waitForLine(agents.get(i)!, /the Kubernetes API server is unreachable .*forwarding continues/, 20_000);
    assert.is((await ping(cluster, pods.get(2)!.ns, pods.get(4)!.ip, { count: 3, intervalS: 0.2 })).received, 3, 'the leases in force still route');
    // Forwarding continues: 16 MiB more of the transfer with the API server down.
    await transfer.progress(transfer.sentMiB() + 16, 60_000);
    await api.start();
    for (const i of live) await waitForLine(agents.get(i)!, /kube: API server reachable again after/, 30_000);
    const r = await transfer.finish();
    assert.is(r.received.bytes, r.sent.bytes);
    assert.is(r.received.sha256, r.sent.sha256);
  } finally {
    await transfer.stop();
  }
  // The resumed watches deliver what happens now: a flannel node joins and leaves.
  await api.admin.createNode({
    ...kubeletNode('node-99', '192.0.2.99', '10.244.200.0/24'),
    metadata: {
      name: 'node-99',
      annotations: { [`${P}/kube-subnet-manager`]: 'true', [`${P}/backend-type`]: 'udp', [`${P}/backend-data`]: 'null', [`${P}/public-ip`]: '192.0.2.99' },
    },
  });
  for (const i of live) await waitForLine(agents.get(i)!, /lease added: 10\.244\.200\.0-24 -> 192\.0\.2\.99/, 10_000);
  await api.admin.deleteNode('node-99');
  for (const i of live) await waitForLine(agents.get(i)!, /lease removed: 10\.244\.200\.0-24/, 10_000);
  for (const i of live) {
    const down = agents.get(i)!.log.snapshot().filter((l) => /API server is unreachable/.test(l));
    assert.is(down.length, 1, `node ${i} reported the outage once:\n${down.join('\n')}`);
    assert.ok(isRunning(agents.get(i)!));
  }
});

kube("RBAC: the stand-in enforced the manifest's ClusterRole and the agents never needed more", () => {
  const agentUser = serviceAccount('kube-flannel-udp', 'flannel-udp').user;
  const made = api.requests().filter((r) => r.user === agentUser);
  assert.ok(made.length > 0);
  assert.equal(made.filter((r) => r.status === 403), [], 'no request of the agents was forbidden');
  const used = [...new Set(made.map((r) => `${r.verb} ${r.resource}`))].sort();
  assert.equal(used, ['get pods', 'list nodes', 'patch nodes/status', 'watch nodes']);
  const rss = [1, 2, 4].map((i) => (residentBytes(agents.get(i)!.pid!) / 1048576).toFixed(1));
  console.log(`    kube-mode agents' RSS (MiB, 1 worker each; a figure, not asserted): ${rss.join(' / ')}`);
  console.log(`    agents' API calls over the run: ${Object.entries(countBy(made.map((r) => `${r.verb} ${r.resource}`))).map(([k, v]) => `${k} ×${v}`).join(', ')}`);
});

function countBy(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

function readFileSyncOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

kube.run();
