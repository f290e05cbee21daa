// The IPv6 side of --ip-masq and --iptables-forward-rules (issue 24), on a
// dual-stack two-node cluster whose nodes drop forwarded IPv6 by policy
// (ip6tables FORWARD DROP): the agent writes flannel's FLANNEL-POSTRTG and
// FLANNEL-FWD chains into ip6tables with the IPv6 network and subnet, pods
// ping -6 across because of FLANNEL-FWD, a pod reaches an IPv6 host outside
// the cluster (a namespace of this test on the underlay bridge with no route
// back to the pods) only because it is masqueraded, a deleted rule is put
// back, and a clean exit and `flannel-udp cleanup` remove the chains.
// Everything is removed in after(), also on failure.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { agentCliPath, createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { run, runInNetns, waitForLine } from '../../src/testbed/exec.js';
import { eventually } from '../support/pod-traffic.js';
import { requireTools } from '../support/required-tool.js';

/** The outside host's and the nodes' IPv6 underlay addresses (the underlay carries no IPv6 otherwise). */
const EXTERNAL_IP6 = '2001:db8:ff::200';
const nodeIp6 = (i: number) => `2001:db8:ff::${i}`;
const MASQ = '-m comment --comment "flanneld masq"';
const FWD = '-m comment --comment "flanneld forward"';

const v6 = suite('ip6tables: masquerade and forward rules for the IPv6 network');
let cluster: Cluster;
let externalNs = '';

v6.before(async () => {
  requireTools('ip6tables', 'ip6tables-restore', 'ping');
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', ipFamilies: 'dual-stack', agentArgs: ['--ip-masq', '--iptables-resync', '1'] });
  for (const n of cluster.nodes()) {
    await cluster.exec(n.ns, 'ip6tables', ['-w', '-P', 'FORWARD', 'DROP']);
    await cluster.exec(n.ns, 'ip', ['-6', 'addr', 'add', `${nodeIp6(n.index)}/64`, 'dev', 'eth0', 'nodad']);
  }
  // Named after the cluster, so the testbed's sweep of stale namespaces recognises it too.
  externalNs = `${cluster.id}-x6`;
  await run('ip', ['netns', 'add', externalNs]);
  await cluster.exec(cluster.underlayNs, 'ip', ['link', 'add', 'x6', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', externalNs]);
  await cluster.exec(cluster.underlayNs, 'ip', ['link', 'set', 'x6', 'master', 'br0', 'up']);
  await run('ip', ['-n', externalNs, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', externalNs, 'link', 'set', 'eth0', 'up']);
  await run('ip', ['-n', externalNs, '-6', 'addr', 'add', `${EXTERNAL_IP6}/64`, 'dev', 'eth0', 'nodad']);
});

v6.after(async () => {
  if (externalNs) await run('ip', ['netns', 'del', externalNs]).catch(() => undefined);
  await cluster?.destroy();
});

async function rules6(i: number, table: 'nat' | 'filter'): Promise<string[]> {
  const { stdout } = await runInNetns(cluster.node(i).ns, 'ip6tables', ['-w', '-t', table, '-S']);
  return stdout.trim().split('\n');
}

const pingsAcross = async () => (await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip6!, { count: 3, intervalS: 0.2 })).received;

v6('flannel\'s IPv6 chains: FLANNEL-POSTRTG mirrors the IPv4 rules (ff00::/8 for multicast), FLANNEL-FWD accepts the IPv6 network', async () => {
  for (const i of [1, 2]) {
    const nat = await rules6(i, 'nat');
    const pods = `fd00:10:244:${i}::/64`;
    for (const rule of [
      `-A POSTROUTING ${MASQ} -j FLANNEL-POSTRTG`,
      `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${pods} -d fd00:10:244::/48 ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG -s fd00:10:244::/48 -d ${pods} ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG ! -s fd00:10:244::/48 -d ${pods} ${MASQ} -j RETURN`,
      `-A FLANNEL-POSTRTG -s fd00:10:244::/48 ! -d ff00::/8 ${MASQ} -j MASQUERADE --random-fully`,
      `-A FLANNEL-POSTRTG ! -s fd00:10:244::/48 -d fd00:10:244::/48 ${MASQ} -j MASQUERADE --random-fully`,
    ]) {
      assert.ok(nat.includes(rule), `node ${i} lacks ${rule}:\n${nat.join('\n')}`);
    }
    const filter = await rules6(i, 'filter');
    assert.ok(filter.includes('-P FORWARD DROP'), filter.join('\n'));
    assert.ok(filter.includes(`-A FORWARD ${FWD} -j FLANNEL-FWD`), filter.join('\n'));
    assert.ok(filter.includes(`-A FLANNEL-FWD -s fd00:10:244::/48 ${FWD} -j ACCEPT`), filter.join('\n'));
    assert.ok(filter.includes(`-A FLANNEL-FWD -d fd00:10:244::/48 ${FWD} -j ACCEPT`), filter.join('\n'));
  }
  assert.is(await pingsAcross(), 3, 'pod1 → pod2 over IPv6 with FORWARD DROP');
});

v6('a pod reaches an IPv6 host outside the cluster network, masqueraded behind its node (the host has no route to the pods)', async () => {
  const r = await ping(cluster, cluster.pod(1).ns, EXTERNAL_IP6, { count: 3, intervalS: 0.2 });
  assert.ok(r.received >= 3, `pod1 → ${EXTERNAL_IP6}: ${JSON.stringify(r)}`);
  const { stdout: routes } = await run('ip', ['-n', externalNs, '-6', 'route', 'show']);
  assert.not.match(routes, /fd00:10:244/, 'the outside host cannot route to the pods: only masquerading brings replies back');
});

v6('deleted IPv6 rules are put back within the resync period, one jump each, and traffic flows again', async () => {
  const ns = cluster.node(1).ns;
  await cluster.exec(ns, 'ip6tables', ['-w', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
  await cluster.exec(ns, 'ip6tables', ['-w', '-t', 'nat', '-D', 'FLANNEL-POSTRTG', '-s', 'fd00:10:244::/48', '!', '-d', 'ff00::/8', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'MASQUERADE', '--random-fully']);
  await waitForLine(cluster.agent(1)!, /iptables-forward-rules: rule missing \(FORWARD .*\); rebuilding FLANNEL-FWD/, 15_000);
  await waitForLine(cluster.agent(1)!, /ip-masq: rule missing \(FLANNEL-POSTRTG -s fd00:10:244::\/48 .*\); rebuilding FLANNEL-POSTRTG/, 15_000);
  assert.ok(
    await eventually(async () => (await rules6(1, 'filter')).includes(`-A FORWARD ${FWD} -j FLANNEL-FWD`) && (await rules6(1, 'nat')).some((r) => r.includes('! -d ff00::/8')), 15_000),
    'not repaired',
  );
  assert.is((await rules6(1, 'filter')).filter((r) => r.startsWith('-A FORWARD') && r.includes('FLANNEL-FWD')).length, 1, 'one jump, not two');
  assert.is(await pingsAcross(), 3);
});

v6('a clean exit removes the IPv6 chains (and the IPv4 ones); flannel-udp cleanup removes ones left behind', async () => {
  assert.is((await cluster.stopAgent(1, 'SIGINT')).code, 0);
  for (const table of ['nat', 'filter'] as const) {
    assert.not.ok((await rules6(1, table)).some((r) => /FLANNEL-(POSTRTG|FWD)/.test(r)), `${table}: ${(await rules6(1, table)).join('\n')}`);
  }
  // What a restart exit (or a crash) leaves: the chains with their jumps.
  const ns = cluster.node(1).ns;
  await cluster.exec(ns, 'ip6tables', ['-w', '-t', 'nat', '-N', 'FLANNEL-POSTRTG']);
  await cluster.exec(ns, 'ip6tables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG']);
  await cluster.exec(ns, 'ip6tables', ['-w', '-N', 'FLANNEL-FWD']);
  await cluster.exec(ns, 'ip6tables', ['-w', '-A', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
  const { stderr } = await cluster.exec(ns, process.execPath, [agentCliPath, 'cleanup']);
  assert.match(stderr, /from ip6tables/);
  for (const table of ['nat', 'filter'] as const) {
    assert.not.ok((await rules6(1, table)).some((r) => /FLANNEL-(POSTRTG|FWD)/.test(r)), `${table}: ${(await rules6(1, table)).join('\n')}`);
  }
});

v6.run();
