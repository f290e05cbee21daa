// The scale benchmark's cluster at a size the suite can afford: 8 nodes on one
// etcd, one agent and one pod per node, all agents started at once (a cluster
// booting); every pod must reach every other pod, and a ninth node joining and
// then leaving must be seen at the data plane of every other node: each one
// sends datagrams towards it after the join, and none after the leave (the
// pods then get ICMP net unreachable). bench/scale/scale-cluster.ts does the
// measuring; no timing is asserted, the times are printed.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ScaleCluster } from '../../bench/scale/scale-cluster.js';
import { udpIcmpProbe, eventually } from '../support/pod-traffic.js';

const NODES = 8;
const scale = suite(`scale: ${NODES} nodes on one etcd, a node joining and leaving`);
let s: ScaleCluster;

scale.before(async () => {
  s = await ScaleCluster.create({ nodes: NODES, source: 'etcd' });
});
scale.after(async () => {
  await s?.destroy(); // every agent, etcd, the probes, the namespaces and the temp dir
});

scale('all agents started at once: every pod reaches every other pod', async () => {
  const starting = s.startAgents();
  const meshing = s.fullMesh(120, 300);
  meshing.catch(() => undefined);
  await starting;
  const mesh = await meshing;
  if (mesh.missing.length > 0) {
    const diagnosis = await s.diagnose(mesh.missing);
    assert.unreachable(`pairs without an answer: ${mesh.missing.join(', ')}; probed again: ${JSON.stringify(diagnosis)}`);
  }
  assert.is(mesh.reached, NODES * (NODES - 1));
  console.log(`    full mesh ${mesh.fullMeshMs} ms after the agents started`);
});

scale('a node joins: every other node forwards to it, with nobody restarted', async () => {
  const pids = s.nodeIndexes.map((i) => s.agents.get(i)!.pid);
  const join = await s.join(60);
  assert.equal(join.missing, [], `nodes never seen sending to the joining node: ${join.missing.join(', ')}`);
  assert.equal([...join.perNode.keys()].sort((a, b) => a - b), s.nodeIndexes);
  assert.equal(s.nodeIndexes.map((i) => s.agents.get(i)!.pid), pids, 'nobody restarted');
  console.log(`    join seen at the data plane: p50 ${join.stats!.p50} ms, max ${join.stats!.max} ms after etcd's event`);
});

scale('the node leaves: every other node stops forwarding to it; its pod is then net unreachable', async () => {
  const leave = await s.leave(60);
  assert.equal(leave.missing, [], `nodes still sending to the departed node: ${leave.missing.join(', ')}`);
  const gone = s.cluster.pod(s.joiner);
  for (const i of s.nodeIndexes) {
    const unreachable = await eventually(async () => {
      const probe = await udpIcmpProbe(s.cluster, s.cluster.pod(i), gone.ip, 9999, 1000);
      return probe.received && probe.type === 3 && probe.code === 0;
    }, 10_000);
    assert.ok(unreachable, `pod ${i} -> the departed node's pod ${gone.ip}: ICMP net unreachable expected`);
  }
  console.log(`    leave seen at the data plane: p50 ${leave.stats?.p50} ms, max ${leave.stats?.max} ms after etcd's event`);
  // The rest of the cluster is unaffected.
  const mesh = await s.fullMesh(30, 300);
  assert.equal(mesh.missing, []);
});

scale.run();
