// flanneld's etcd mode end to end: a real etcd inside the underlay namespace,
// agents that lease their subnets from it, write subnet.env, and follow each
// other's leases live; a node joining, a lease deleted, etcd going away and a
// node cut off from etcd, all while traffic runs. Everything is removed in
// after(), also on failure.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync, writeFileSync } from 'node:fs';
import { agentCliPath, createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { type CapturedChild, isRunning, waitForLine } from '../../src/testbed/exec.js';
import { eventually, udpIcmpProbe } from '../support/pod-traffic.js';
import { startStreamingTransfer } from '../support/live-probes.js';
import type { EtcdServer } from '../support/etcd-server.js';
import {
  adoptSubnet,
  ETCD_UNDERLAY_IP,
  etcdctl,
  logTime,
  PREFIX,
  readSubnetEnv,
  startEtcdAgent,
  startUnderlayEtcd,
  storedLeases,
} from '../support/etcd-nodes.js';

const MiB = 1024 * 1024;
const etcdMode = suite('etcd mode: leases, subnet.env and live peers');
let cluster: Cluster;
let etcd: EtcdServer;
const agents = new Map<number, CapturedChild>();
const pods = new Map<number, PodInfo>();
/** node index → its subnet key in etcd ("10.244.13.0-24") */
const keys = new Map<number, string>();

const CONFIG = { Network: '10.244.0.0/16', SubnetLen: 24, SubnetMin: '10.244.10.0', SubnetMax: '10.244.40.0', Backend: { Type: 'udp', Port: 8300 } };
const keyOf = (subnetEnv: string) => {
  const [gw, len] = readSubnetEnv(subnetEnv).FLANNEL_SUBNET.split('/');
  return `${gw.replace(/\.1$/, '.0')}-${len}`;
};

etcdMode.before(async () => {
  cluster = await createCluster({ nodes: 4, dataplane: 'none' });
  etcd = await startUnderlayEtcd(cluster);
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/config`, JSON.stringify(CONFIG)]);
});
etcdMode.after(async () => {
  await cluster?.destroy(); // stops every agent (SIGTERM first) and removes namespaces and the temp dir
  await etcd?.destroy();
});

etcdMode('three agents acquire distinct leases from one etcd and write their subnet files', async () => {
  // No previous subnet.env: etcd's allocation decides (the testbed wrote 10.244.i.1/24 ones).
  for (const i of [1, 2, 3]) rmSync(cluster.node(i).subnetFile, { force: true });
  const started = await Promise.all([1, 2, 3].map((i) => startEtcdAgent(cluster, i, etcd, i === 1 ? ['--ip-masq'] : [])));
  started.forEach((a, k) => agents.set(k + 1, a));

  const stored = await storedLeases(cluster, etcd);
  assert.is(Object.keys(stored).length, 3, JSON.stringify(stored));
  for (const i of [1, 2, 3]) {
    const node = cluster.node(i);
    const env = readSubnetEnv(node.subnetFile);
    const key = keyOf(node.subnetFile);
    keys.set(i, key);
    assert.is(env.FLANNEL_NETWORK, '10.244.0.0/16');
    assert.match(env.FLANNEL_SUBNET, /^10\.244\.\d+\.1\/24$/);
    const third = Number(env.FLANNEL_SUBNET.split('.')[2]);
    assert.ok(third >= 10 && third <= 40, `${env.FLANNEL_SUBNET} is outside SubnetMin..SubnetMax`);
    assert.is(env.FLANNEL_MTU, '1472', 'eth0 MTU 1500 - 28');
    assert.is(env.FLANNEL_IPMASQ, i === 1 ? 'true' : 'false');
    assert.is(env.text, `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${env.FLANNEL_SUBNET}\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=${env.FLANNEL_IPMASQ}\n`);
    assert.equal(stored[key], { PublicIP: node.underlayIp, PublicIPv6: null, BackendType: 'udp', BackendData: null });
    assert.ok(agents.get(i)!.log.snapshot().some((l) => /udp port 8300/.test(l)), 'Backend.Port from the config is used');
  }
  assert.is(new Set(keys.values()).size, 3, 'three distinct subnets');
});

etcdMode('every pod pings every other pod', async () => {
  for (const i of [1, 2, 3]) pods.set(i, await adoptSubnet(cluster, i));
  for (const a of [1, 2, 3]) {
    for (const b of [1, 2, 3]) {
      if (a === b) continue;
      const r = await ping(cluster, pods.get(a)!.ns, pods.get(b)!.ip, { count: 2, intervalS: 0.2 });
      assert.is(r.received, 2, `pod${a} → pod${b} (${pods.get(b)!.ip}): ${JSON.stringify(r)}`);
    }
  }
});

etcdMode('a fourth node joins while traffic runs: reachable without restarting anyone, its lease applied by every agent', async () => {
  const pids = [1, 2, 3].map((i) => agents.get(i)!.pid);
  // Open-ended: it runs until told to finish, after the join, whatever the machine's speed.
  const transfer = await startStreamingTransfer(cluster, pods.get(1)!, pods.get(2)!, 16 * MiB);
  try {
    // Node 4 left a subnet.env from an earlier life: its agent asks for that subnet first.
    const taken = new Set([...keys.values()].map((k) => Number(k.split('.')[2])));
    let wanted = 40;
    while (taken.has(wanted)) wanted--;
    writeFileSync(cluster.node(4).subnetFile, `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${wanted}.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`);
    await transfer.progress(8); // under way
    const agent4 = await startEtcdAgent(cluster, 4, etcd);
    agents.set(4, agent4);
    const key4 = keyOf(cluster.node(4).subnetFile);
    keys.set(4, key4);
    assert.is(key4, `10.244.${wanted}.0-24`, 'the previous subnet from subnet.env');

    // Each running agent applies node 4's lease from its watch (how long it took is printed, not asserted).
    const acquiredAt = logTime(agent4, /etcd: acquired /)!;
    assert.ok(acquiredAt, agent4.log.tail());
    for (const i of [1, 2, 3]) {
      await waitForLine(agents.get(i)!, new RegExp(`lease added: ${key4.replace(/\./g, '\\.')} -> 192\\.0\\.2\\.4`), 5000);
      const addedAt = logTime(agents.get(i)!, new RegExp(`lease added: ${key4.replace(/\./g, '\\.')}`))!;
      // (node 4 logs "acquired" after its transaction returned, so a watcher can be a few ms earlier)
      console.log(`    node ${i} applied node 4's lease ${addedAt - acquiredAt} ms after node 4 logged acquiring it`);
    }

    pods.set(4, await adoptSubnet(cluster, 4));
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

etcdMode('deleting a lease key makes that subnet unreachable with ICMP net unreachable; flows to the others go on', async () => {
  await etcdctl(cluster, etcd, ['del', `${PREFIX}/subnets/${keys.get(3)}`]);
  const unreachable = await eventually(async () => {
    const probe = await udpIcmpProbe(cluster, pods.get(1)!, pods.get(3)!.ip, 9999, 500);
    return probe.received && probe.type === 3 && probe.code === 0;
  }, 5000);
  assert.ok(unreachable, 'pod1 → pod3 should get ICMP net unreachable');
  // Node 3 lost its lease: like flanneld, its agent says so and stops (a supervisor would restart it).
  const exit = await agents.get(3)!.exited;
  assert.is(exit.code, 1);
  assert.ok(agents.get(3)!.log.snapshot().some((l) => /was deleted or expired; stopping, as flanneld does/.test(l)), agents.get(3)!.log.tail());
  for (const i of [2, 4]) {
    assert.is((await ping(cluster, pods.get(1)!.ns, pods.get(i)!.ip, { count: 2, intervalS: 0.2 })).received, 2, `pod1 → pod${i}`);
  }
});

etcdMode('etcd stopped for a while: a running TCP transfer completes intact; agents report it once and resync when it is back', async () => {
  const live = [1, 2, 4];
  // Open-ended: it runs until told to finish, so it spans the outage whatever the machine's speed.
  const transfer = await startStreamingTransfer(cluster, pods.get(1)!, pods.get(4)!, 16 * MiB);
  try {
    await transfer.progress(8); // under way
    await etcd.stop();
    for (const i of live) await waitForLine(agents.get(i)!, /etcd is unreachable .*forwarding continues with the \d+ lease\(s\) last seen/, 15_000);
    // A ping across the cluster while etcd is down: the leases in force still route.
    assert.is((await ping(cluster, pods.get(2)!.ns, pods.get(4)!.ip, { count: 3, intervalS: 0.2 })).received, 3);
    // The outage lasts until the transfer has moved 16 MiB more with etcd down (a condition, not a time).
    await transfer.progress(transfer.sentMiB() + 16, 60_000);
    await etcd.start();
    const r = await transfer.finish();
    assert.is(r.received.bytes, r.sent.bytes);
    assert.is(r.received.sha256, r.sent.sha256);
  } finally {
    await transfer.stop();
  }
  for (const i of live) {
    await waitForLine(agents.get(i)!, /etcd: reachable again after .* resynced \d+ lease\(s\)/, 20_000);
    const downLines = agents.get(i)!.log.snapshot().filter((l) => /etcd is unreachable/.test(l));
    assert.is(downLines.length, 1, `node ${i} reported the outage once:\n${downLines.join('\n')}`);
    assert.ok(isRunning(agents.get(i)!), `node ${i} is still running`);
  }
  // The new watches work: a lease written now reaches every agent.
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/subnets/10.244.200.0-24`, '{"PublicIP":"192.0.2.99","BackendType":"udp"}']);
  for (const i of live) await waitForLine(agents.get(i)!, /lease added: 10\.244\.200\.0-24 -> 192\.0\.2\.99/, 5000);
  await etcdctl(cluster, etcd, ['del', `${PREFIX}/subnets/10.244.200.0-24`]);
  for (const i of live) await waitForLine(agents.get(i)!, /lease removed: 10\.244\.200\.0-24/, 5000);
});

etcdMode('a node cut off from etcd keeps forwarding, and catches up with what changed meanwhile', async () => {
  const ns = cluster.node(2).ns;
  // Both directions: dropping only what node 2 sends would still let etcd's watch events in.
  const rules = [
    ['OUTPUT', '-d', ETCD_UNDERLAY_IP, '-p', 'tcp', '--dport', '2379', '-j', 'DROP'],
    ['INPUT', '-s', ETCD_UNDERLAY_IP, '-p', 'tcp', '--sport', '2379', '-j', 'DROP'],
  ];
  for (const rule of rules) await cluster.exec(ns, 'iptables', ['-w', '-I', ...rule]);
  try {
    // A node leaves and another appears while node 2 cannot see etcd.
    await etcdctl(cluster, etcd, ['put', `${PREFIX}/subnets/10.244.201.0-24`, '{"PublicIP":"192.0.2.98","BackendType":"udp"}']);
    await waitForLine(agents.get(1)!, /lease added: 10\.244\.201\.0-24/, 5000);
    const before = agents.get(2)!.log.snapshot().filter((l) => /etcd is unreachable/.test(l)).length;
    const noticed = await eventually(async () => agents.get(2)!.log.snapshot().filter((l) => /etcd is unreachable/.test(l)).length > before, 20_000);
    assert.ok(noticed, `node 2 did not notice it is cut off:\n${agents.get(2)!.log.tail()}`);
    assert.not.ok(agents.get(2)!.log.snapshot().some((l) => /lease added: 10\.244\.201\.0-24/.test(l)), 'node 2 cannot have seen it');
    assert.is((await ping(cluster, pods.get(2)!.ns, pods.get(4)!.ip, { count: 2, intervalS: 0.2 })).received, 2, 'forwarding goes on');
  } finally {
    for (const rule of rules) await cluster.exec(ns, 'iptables', ['-w', '-D', ...rule]);
  }
  await waitForLine(agents.get(2)!, /lease added: 10\.244\.201\.0-24 -> 192\.0\.2\.98/, 20_000);
  await etcdctl(cluster, etcd, ['del', `${PREFIX}/subnets/10.244.201.0-24`]);
});

etcdMode('--leases and --etcd-endpoints together are refused; a missing config is a clear error', async () => {
  const node = cluster.node(3);
  const both = await cluster.exec(
    node.ns,
    process.execPath,
    [
      agentCliPath, 'up', '--leases', cluster.leasesFile, '--etcd-endpoints', etcd.url,
      '--subnet-file', node.subnetFile, '--public-ip', node.underlayIp,
    ],
    { allowFailure: true },
  );
  assert.is(both.code, 2);
  assert.match(both.stderr, /--leases and --etcd-endpoints are mutually exclusive/);
  const noConfig = await cluster.exec(
    node.ns,
    process.execPath,
    [
      agentCliPath, 'up', '--etcd-endpoints', etcd.url, '--etcd-prefix', '/nowhere/network',
      '--subnet-file', node.subnetFile, '--public-ip', node.underlayIp, '--workers', '1',
    ],
    { allowFailure: true, timeoutMs: 30_000 },
  );
  assert.is(noConfig.code, 2);
  assert.match(noConfig.stderr, /no flannel network config at \/nowhere\/network\/config .*etcdctl put/);
});

etcdMode.run();
