// Issue 26, item 6, with a real etcd in the underlay namespace: a restarted
// node keeps the subnet its subnet.env records even when an older lease with
// its public IP is still in etcd (that one is logged as stale), and a network
// config the node must refuse (Network 0.0.0.0/0) is refused before anything
// is written: no lease rewritten in etcd, subnet.env untouched.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { agentCliPath, createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { stopChild, waitForLine } from '../../src/testbed/exec.js';
import type { EtcdServer } from '../support/etcd-server.js';
import { PREFIX, etcdctl, startEtcdAgent, startUnderlayEtcd, storedLeases } from '../support/etcd-nodes.js';

const restart = suite('etcd mode restarts: subnet.env decides between leases with our IP; a bad config writes nothing');
let cluster: Cluster;
let etcd: EtcdServer;

restart.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'none' });
  etcd = await startUnderlayEtcd(cluster);
});
restart.after(async () => {
  await cluster?.destroy();
  await etcd?.destroy();
});

const lease = (ip: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'udp', BackendData: null });
const subnetEnv = (network: string, subnet: string) => `FLANNEL_NETWORK=${network}\nFLANNEL_SUBNET=${subnet}\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`;

/** The mod revision etcd holds for `key` (0 when absent). */
async function modRevision(key: string): Promise<number> {
  const out = JSON.parse(await etcdctl(cluster, etcd, ['get', key, '-w', 'json'])) as { kvs?: { mod_revision: number }[] };
  return out.kvs?.[0]?.mod_revision ?? 0;
}

restart('a stale lease with our public IP sorts first; the agent keeps the one subnet.env records and logs the other as stale', async () => {
  const node = cluster.node(1);
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/config`, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } })]);
  // The stale one (from before the node's lease moved) and the current one; etcd lists 10.244.5.0 first.
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/subnets/10.244.5.0-24`, lease(node.underlayIp)]);
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/subnets/10.244.9.0-24`, lease(node.underlayIp)]);
  writeFileSync(node.subnetFile, subnetEnv('10.244.0.0/16', '10.244.9.1/24'));
  const agent = await startEtcdAgent(cluster, 1, etcd);
  try {
    assert.match(readFileSync(node.subnetFile, 'utf8'), /^FLANNEL_SUBNET=10\.244\.9\.1\/24$/m, agent.log.tail());
    assert.match(agent.log.text(), /etcd: found the lease 10\.244\.9\.0\/24 of this node's public IP 192\.0\.2\.1 \(the subnet subnet\.env records\); reusing it/);
    assert.match(agent.log.text(), /etcd: lease 10\.244\.5\.0\/24 also carries this node's public IP 192\.0\.2\.1: stale, left alone/);
    assert.match(agent.log.text(), /node 10\.244\.9\.0\/24 public IP 192\.0\.2\.1/);
  } finally {
    const exit = await stopChild(agent, 'SIGTERM', 20_000);
    assert.is(exit.code, 0, agent.log.tail());
    await etcdctl(cluster, etcd, ['del', '--prefix', `${PREFIX}/subnets/`]);
  }
});

restart('Network 0.0.0.0/0 is refused before anything is written: the lease in etcd and subnet.env are untouched', async () => {
  const node = cluster.node(1);
  await cluster.exec(node.ns, 'ip', ['route', 'replace', 'default', 'via', '192.0.2.254', 'dev', 'eth0']);
  await etcdctl(cluster, etcd, ['put', `${PREFIX}/config`, JSON.stringify({ Network: '0.0.0.0/0', Backend: { Type: 'udp' } })]);
  const key = `${PREFIX}/subnets/10.244.9.0-24`;
  await etcdctl(cluster, etcd, ['put', key, lease(node.underlayIp)]);
  const revision = await modRevision(key);
  writeFileSync(node.subnetFile, subnetEnv('10.244.0.0/16', '10.244.9.1/24'));
  const before = { text: readFileSync(node.subnetFile, 'utf8'), mtimeMs: statSync(node.subnetFile).mtimeMs, ino: statSync(node.subnetFile).ino };
  const agent = cluster.spawn(node.ns, process.execPath, [
    agentCliPath, 'up', '--etcd-endpoints', etcd.url, '--subnet-file', node.subnetFile, '--public-ip', node.underlayIp, '--workers', '1',
  ]);
  try {
    const exit = await agent.exited;
    assert.is(exit.code, 2, agent.log.tail());
    assert.match(agent.log.text(), /refusing to route the pod network into flannel0.*would replace this node's route "default via 192\.0\.2\.254 dev eth0"/);
    assert.is(await modRevision(key), revision, `the lease was rewritten:\n${agent.log.tail()}`);
    assert.equal(Object.keys(await storedLeases(cluster, etcd)), ['10.244.9.0-24'], 'a lease was added');
    const after = statSync(node.subnetFile);
    assert.is(readFileSync(node.subnetFile, 'utf8'), before.text);
    assert.is(after.ino, before.ino, 'subnet.env was replaced');
    assert.is(after.mtimeMs, before.mtimeMs, 'subnet.env was rewritten');
    assert.not.match(agent.log.text(), /wrote .*subnet/);
  } finally {
    await stopChild(agent, 'SIGKILL');
    await cluster.exec(node.ns, 'ip', ['route', 'del', 'default']).catch(() => undefined);
    await etcdctl(cluster, etcd, ['del', '--prefix', `${PREFIX}/subnets/`]);
  }
});

restart.run();
