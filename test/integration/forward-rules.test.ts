// flanneld's --iptables-forward-rules (default on): with the FORWARD policy
// set to DROP in the nodes (as Docker sets it), pod traffic flows because of
// the FLANNEL-FWD chain, a deleted rule is put back within the resync
// period, --iptables-forward-rules=false leaves FORWARD alone (and the same
// traffic is dropped: the policy is really in force), and a clean exit
// (SIGINT) removes the chain.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createCluster, agentCliPath, type Cluster } from '../../src/testbed/cluster.js';
import { stopChild, waitForLine } from '../../src/testbed/exec.js';
import { ping } from '../../src/testbed/measure.js';
import { eventually } from '../support/pod-traffic.js';

const fwd = suite('forward rules with the FORWARD policy DROP');
let cluster: Cluster;

fwd.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 1, agentArgs: ['--iptables-resync', '1'] });
  for (const n of cluster.nodes()) await cluster.exec(n.ns, 'iptables', ['-w', '-P', 'FORWARD', 'DROP']);
});
fwd.after(async () => {
  await cluster?.destroy();
});

async function filterRules(i: number): Promise<string> {
  return (await cluster.exec(cluster.node(i).ns, 'iptables', ['-w', '-S'])).stdout;
}

async function answered(): Promise<number> {
  return (await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip, { count: 3, intervalS: 0.2 })).received;
}

fwd('FORWARD drops by policy, FLANNEL-FWD accepts the cluster network: pods reach each other across nodes', async () => {
  for (const i of [1, 2]) {
    const rules = await filterRules(i);
    assert.match(rules, /^-P FORWARD DROP$/m);
    assert.match(rules, /^-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD$/m);
    assert.match(rules, /^-A FLANNEL-FWD -s 10\.244\.0\.0\/16 -m comment --comment "flanneld forward" -j ACCEPT$/m);
    assert.match(rules, /^-A FLANNEL-FWD -d 10\.244\.0\.0\/16 -m comment --comment "flanneld forward" -j ACCEPT$/m);
  }
  assert.is(await answered(), 3);
});

fwd('a deleted rule is put back within the resync period, and traffic flows again', async () => {
  await cluster.exec(cluster.node(1).ns, 'iptables', ['-w', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
  await cluster.exec(cluster.node(1).ns, 'iptables', ['-w', '-D', 'FLANNEL-FWD', '-d', '10.244.0.0/16', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'ACCEPT']);
  await waitForLine(cluster.agent(1)!, /iptables-forward-rules: rule missing \(FORWARD .*\); rebuilding FLANNEL-FWD/, 15_000);
  assert.ok(
    await eventually(async () => /-A FLANNEL-FWD -d 10\.244\.0\.0\/16/.test(await filterRules(1)) && /-A FORWARD .*-j FLANNEL-FWD/.test(await filterRules(1)), 15_000),
    `not repaired:\n${await filterRules(1)}`,
  );
  const rules = (await filterRules(1)).split('\n');
  assert.is(rules.filter((l) => l.startsWith('-A FORWARD') && l.includes('FLANNEL-FWD')).length, 1, 'one jump, not two');
  assert.is(await answered(), 3);
});

fwd('--iptables-forward-rules=false leaves FORWARD alone: the DROP policy then drops the pods\' traffic; a clean exit removes the chain', async () => {
  const node = cluster.node(1);
  assert.is((await cluster.stopAgent(1, 'SIGINT')).code, 0);
  assert.not.match(await filterRules(1), /FLANNEL-FWD/, 'SIGINT removed the chain and its jump');
  const bare = cluster.spawn(node.ns, process.execPath, [
    agentCliPath, 'up', '--subnet-file', node.subnetFile, '--leases', cluster.leasesFile, '--public-ip', node.underlayIp, '--workers', '1', '--iptables-forward-rules=false',
  ]);
  try {
    await waitForLine(bare, /flannel-udp agent ready/, 15_000);
    assert.not.match(await filterRules(1), /FLANNEL-FWD/);
    assert.is(await answered(), 0, 'the policy drops what no rule accepts');
  } finally {
    await stopChild(bare, 'SIGINT');
  }
  await cluster.startAgent(1);
  assert.ok(await eventually(async () => (await answered()) === 3, 20_000), 'traffic flows again with the rules back');
});

fwd.run();
