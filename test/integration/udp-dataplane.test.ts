// The UDP/TUN data plane end to end: real agents in network namespaces, real
// pods behind bridges, real traffic. Every cluster is destroyed in finally.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { tcpTransfer, udpIcmpProbe, eventually } from '../support/pod-traffic.js';

const dataplane = suite('udp data plane, two nodes');
let cluster: Cluster;

dataplane.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 2 });
});
dataplane.after(async () => {
  await cluster?.destroy();
});

dataplane('pods ping each other across nodes, both ways', async () => {
  const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
  const there = await ping(cluster, p1.ns, p2.ip, { count: 5, intervalS: 0.2 });
  const back = await ping(cluster, p2.ns, p1.ip, { count: 5, intervalS: 0.2 });
  assert.is(there.received, 5, `pod1 → pod2: ${JSON.stringify(there)}`);
  assert.is(back.received, 5, `pod2 → pod1: ${JSON.stringify(back)}`);
});

dataplane('each worker rehearsed before it started, and forwarded every made-up packet both ways', async () => {
  for (const i of [1, 2]) {
    const log = cluster.agent(i)!.log.text();
    for (const worker of [0, 1]) {
      const m = new RegExp(`worker ${worker}: rehearsal: (\\d+)/(\\d+) packets out, (\\d+)/(\\d+) in, \\d+ ms`).exec(log);
      assert.ok(m, `node ${i} worker ${worker} logged no rehearsal:\n${log}`);
      assert.is(m[1], m[2], `node ${i} worker ${worker}: out`);
      assert.is(m[3], m[4], `node ${i} worker ${worker}: in`);
      assert.ok(Number(m[2]) > 1000);
    }
  }
});

dataplane('the ip commands (forks) run before the workers start, so no fork write-protects their warmed memory', async () => {
  for (const i of [1, 2]) {
    const lines = cluster.agent(i)!.log.text().split('\n');
    const lastIp = lines.map((l) => / ip (addr|link|route) /.test(l)).lastIndexOf(true);
    const firstRehearsal = lines.findIndex((l) => /worker \d+: rehearsal: /.test(l));
    assert.ok(lastIp >= 0 && firstRehearsal >= 0, `node ${i}: expected ip commands and rehearsal lines in the log:\n${lines.join('\n')}`);
    assert.ok(lastIp < firstRehearsal, `node ${i}: an ip command ran after a worker had started:\n${lines.join('\n')}`);
  }
});

dataplane('a 128 MiB TCP transfer arrives intact (sha256 matches on both ends)', async () => {
  const bytes = 128 * 1024 * 1024;
  const r = await tcpTransfer(cluster, cluster.pod(1), cluster.pod(2), bytes);
  assert.is(r.sent.bytes, bytes);
  assert.is(r.received.bytes, bytes);
  assert.is(r.received.sha256, r.sent.sha256);
  console.log(`    128 MiB pod1 → pod2 in ${r.seconds.toFixed(1)} s (${((bytes * 8) / r.seconds / 1e9).toFixed(2)} Gbit/s)`);
});

dataplane('the reverse direction too', async () => {
  const bytes = 32 * 1024 * 1024;
  const r = await tcpTransfer(cluster, cluster.pod(2), cluster.pod(1), bytes);
  assert.is(r.received.bytes, bytes);
  assert.is(r.received.sha256, r.sent.sha256);
});

dataplane('a destination no lease covers gets ICMP net unreachable, and it reaches the sending pod', async () => {
  const r = await udpIcmpProbe(cluster, cluster.pod(1), '10.244.77.5', 9999);
  assert.ok(r.received, 'no ICMP error arrived in the pod');
  assert.is(r.type, 3);
  assert.is(r.code, 0, 'code 0 = net unreachable');
});

dataplane.run();

const live = suite('lease changes reach a running agent');
let three: Cluster;

live.before(async () => {
  three = await createCluster({ nodes: 3, dataplane: 'agent', workers: 1 });
});
live.after(async () => {
  await three?.destroy();
});

live('a removed lease makes its subnet unreachable, re-adding it restores it, without restarting the agent', async () => {
  const [p1, p3] = [three.pod(1), three.pod(3)];
  const original = readFileSync(three.leasesFile, 'utf8');
  const pid = three.agent(1)!.pid;
  assert.is((await ping(three, p1.ns, p3.ip, { count: 2, intervalS: 0.2 })).received, 2, 'node 3 reachable at first');

  const leases = JSON.parse(original) as Record<string, unknown>;
  delete leases['10.244.3.0-24'];
  writeFileSync(three.leasesFile + '.tmp', JSON.stringify(leases));
  // Replace the file the way editors and config managers do: write aside, rename over.
  const { renameSync } = await import('node:fs');
  renameSync(three.leasesFile + '.tmp', three.leasesFile);
  const gone = await eventually(async () => (await udpIcmpProbe(three, p1, p3.ip, 9999, 500)).received, 5000);
  assert.ok(gone, 'after removing the lease, node 3 should answer with ICMP net unreachable');

  writeFileSync(three.leasesFile + '.tmp', original);
  renameSync(three.leasesFile + '.tmp', three.leasesFile);
  const back = await eventually(async () => (await ping(three, p1.ns, p3.ip, { count: 1, intervalS: 0.2 })).received === 1, 5000);
  assert.ok(back, 'node 3 reachable again after re-adding the lease');
  assert.is(three.agent(1)!.pid, pid, 'the agent was not restarted');
  // Flows to the unchanged lease were never affected.
  assert.is((await ping(three, p1.ns, three.pod(2).ip, { count: 3, intervalS: 0.2 })).received, 3);
});

live.run();

const sighup = suite('SIGHUP re-reads the leases file');
let hupCluster: Cluster;

sighup.before(async () => {
  // Edits are not watched here, so only the signal can make the agent see the new lease.
  hupCluster = await createCluster({ nodes: 3, dataplane: 'agent', workers: 1, agentArgs: ['--no-leases-watch'] });
});
sighup.after(async () => {
  await hupCluster?.destroy();
});

sighup('a lease added to the file becomes reachable on SIGHUP, without a restart', async () => {
  const [p1, p3] = [hupCluster.pod(1), hupCluster.pod(3)];
  const original = readFileSync(hupCluster.leasesFile, 'utf8');
  const leases = JSON.parse(original) as Record<string, unknown>;
  delete leases['10.244.3.0-24'];
  writeFileSync(hupCluster.leasesFile, JSON.stringify(leases));
  const agent = hupCluster.agent(1)!;
  const pid = agent.pid;
  agent.kill('SIGHUP');
  assert.ok(await eventually(async () => (await udpIcmpProbe(hupCluster, p1, p3.ip, 9999, 500)).received, 5000), 'lease removed on SIGHUP');

  writeFileSync(hupCluster.leasesFile, original);
  // Without the signal nothing changes: the file is not watched in this mode.
  assert.ok((await udpIcmpProbe(hupCluster, p1, p3.ip, 9999, 500)).received, 'not re-read without SIGHUP');
  agent.kill('SIGHUP');
  const reachable = await eventually(async () => (await ping(hupCluster, p1.ns, p3.ip, { count: 1, intervalS: 0.2 })).received === 1, 5000);
  assert.ok(reachable, 'node 3 reachable after SIGHUP');
  assert.is(hupCluster.agent(1)!.pid, pid, 'same agent process');
});

sighup.run();
