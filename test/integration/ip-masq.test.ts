// --ip-masq with the static leases file: a pod reaches a host outside the
// cluster network, which sees the node's address as the source; the rules are
// kept in place and removed when the agent exits. The "external" host is a
// namespace of this test on the underlay bridge (192.0.2.200) with no route
// back to the pod network, so only masquerading can make replies arrive.
// The agent never forks once its workers run: iptables runs in its command
// helper (src/control/command-runner.ts), traced here with perf trace.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readdirSync, readFileSync } from 'node:fs';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { ping } from '../../src/testbed/measure.js';
import { isRunning, run, runInNetns, spawnInNetns, stopChild, waitForLine, type CapturedChild } from '../../src/testbed/exec.js';
import { eventually } from '../support/pod-traffic.js';

const supportDir = join(dirname(fileURLToPath(import.meta.url)), '../support');
const EXTERNAL_IP = '192.0.2.200';

const masq = suite('--ip-masq: pods reach the outside behind the node address');
let cluster: Cluster;
let externalNs = '';
let echo: CapturedChild | undefined;

masq.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', agentArgs: ['--ip-masq', '--iptables-resync', '1'] });
  // Named after the cluster, so the testbed's sweep of stale namespaces recognises it too.
  externalNs = `${cluster.id}-x`;
  await run('ip', ['netns', 'add', externalNs]);
  await cluster.exec(cluster.underlayNs, 'ip', ['link', 'add', 'x0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', externalNs]);
  await cluster.exec(cluster.underlayNs, 'ip', ['link', 'set', 'x0', 'master', 'br0', 'up']);
  await run('ip', ['-n', externalNs, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', externalNs, 'link', 'set', 'eth0', 'up']);
  await run('ip', ['-n', externalNs, 'addr', 'add', `${EXTERNAL_IP}/24`, 'dev', 'eth0']);
  echo = spawnInNetns(externalNs, process.execPath, [join(supportDir, 'udp-echo.js'), 'serve', EXTERNAL_IP, '7777']);
  await waitForLine(echo, /^listening$/, 10_000);
});

masq.after(async () => {
  if (echo) await stopChild(echo, 'SIGKILL');
  if (externalNs) {
    const pids = await run('ip', ['netns', 'pids', externalNs]).catch(() => undefined);
    for (const pid of (pids?.stdout ?? '').split(/\s+/).filter((p) => /^\d+$/.test(p))) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await run('ip', ['netns', 'del', externalNs]).catch(() => undefined);
  }
  await cluster?.destroy();
});

async function natRules(ns: string): Promise<string[]> {
  const { stdout } = await runInNetns(ns, 'iptables', ['-w', '-t', 'nat', '-S']);
  return stdout.trim().split('\n');
}

masq('the node has flannel\'s FLANNEL-POSTRTG chain, jumped to from POSTROUTING', async () => {
  const rules = await natRules(cluster.node(1).ns);
  assert.ok(rules.includes('-N FLANNEL-POSTRTG'), rules.join('\n'));
  assert.ok(rules.includes('-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'), rules.join('\n'));
  assert.ok(rules.includes('-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN'), rules.join('\n'));
  assert.ok(
    rules.includes('-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully'),
    rules.join('\n'),
  );
});

masq('a pod reaches the external host, which sees the node address as the source', async () => {
  const pod = cluster.pod(1);
  const r = await ping(cluster, pod.ns, EXTERNAL_IP, { count: 3, intervalS: 0.2 });
  assert.is(r.received, 3, JSON.stringify(r));
  const { stdout } = await cluster.exec(pod.ns, process.execPath, [join(supportDir, 'udp-echo.js'), 'ask', EXTERNAL_IP, '7777', '3000']);
  assert.equal(JSON.parse(stdout.trim()).reply, true, 'the echo came back to the pod');
  const seen = await waitForLine(echo!, /"from"/, 5000);
  assert.is(JSON.parse(seen).from, cluster.node(1).underlayIp, `the external host saw ${seen}`);
  // Pod to pod is not masqueraded: the far pod sees the near pod's own address.
  assert.is((await ping(cluster, pod.ns, cluster.pod(2).ip, { count: 2, intervalS: 0.2 })).received, 2);
});

masq('a deleted rule is put back within the resync period', async () => {
  const ns = cluster.node(1).ns;
  await runInNetns(ns, 'iptables', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG']);
  const restored = await eventually(
    async () => (await natRules(ns)).includes('-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'),
    5000,
    200,
  );
  assert.ok(restored, 'the POSTROUTING jump came back');
  assert.ok(cluster.agent(1)!.log.snapshot().some((l) => /ip-masq: rule missing/.test(l)));
});

const isForkCall = (l: string) => /\b(clone3?|v?fork)\(/.test(l) && !/continued/.test(l);
const isThread = (l: string) => /THREAD/.test(l) && /\bVM\b|CLONE_VM/.test(l);

/** Traces the process-creating clone/fork calls of `pid` (perf trace; a new thread is not one: it shares the memory). */
function traceForks(pid: number) {
  const perf = spawnInNetns(cluster.underlayNs, 'perf', ['trace', '-e', 'clone,clone3,fork,vfork', '-p', String(pid)]);
  const calls = () => perf.log.snapshot().filter(isForkCall);
  return {
    perf,
    forks: () => calls().filter((l) => !isThread(l)),
    stop: async () => {
      await stopChild(perf, 'SIGINT', 10_000);
      return { forks: calls().filter((l) => !isThread(l)), threads: calls().filter(isThread).length };
    },
  };
}

masq('no fork from the agent after its workers started: every resync\'s iptables runs in the command helper, which forks instead', async () => {
  const agent = cluster.agent(1)!.pid!;
  const children = readdirSync(`/proc/${agent}/task`).flatMap((t) => readFileSync(`/proc/${agent}/task/${t}/children`, 'utf8').trim().split(/\s+/)).filter(Boolean).map(Number);
  const helpers = children.filter((c) => readFileSync(`/proc/${c}/cmdline`, 'utf8').includes('command-helper.js'));
  assert.is(helpers.length, 1, `expected one command helper among the agent's children ${children.join(',')}`);
  // Both traced at once until the helper has run two resyncs (its 7 iptables -C twice: the control, which
  // shows the tracer sees forks): the agent's calls meanwhile must be none.
  const ownTrace = traceForks(agent);
  const helperTrace = traceForks(helpers[0]);
  const started = Date.now();
  let own: { forks: string[]; threads: number };
  let helper: { forks: string[]; threads: number };
  try {
    while (helperTrace.forks().length < 2 * 7 && Date.now() - started < 30_000 && isRunning(helperTrace.perf)) await new Promise((r) => setTimeout(r, 100));
  } finally {
    [own, helper] = await Promise.all([ownTrace.stop(), helperTrace.stop()]);
  }
  console.log(`    over ${((Date.now() - started) / 1000).toFixed(1)} s: agent ${own.forks.length} forks (${own.threads} new threads), its command helper ${helper.forks.length} forks`);
  assert.ok(helper.forks.length >= 2 * 7, `the helper forked ${helper.forks.length} times in 30 s: expected the resync's 7 iptables -C at least twice:\n${helperTrace.perf.log.tail()}`);
  assert.equal(own.forks, [], 'the agent forked after its workers started');
});

masq('when the agent exits cleanly (SIGINT) its nat rules are gone, and the outside is no longer reachable from the pod', async () => {
  const before = await natRules(cluster.node(1).ns);
  const { code } = await cluster.stopAgent(1, 'SIGINT');
  assert.is(code, 0);
  const after = await natRules(cluster.node(1).ns);
  // Exactly the agent's lines went; whatever else is in the table (CNI plugins' chains) is untouched.
  const ours = (l: string) => /FLANNEL-POSTRTG|flanneld masq/.test(l);
  assert.equal(after.filter(ours), [], `left behind:\n${after.join('\n')}`);
  assert.equal(after, before.filter((l) => !ours(l)));
  // Without masquerading the external host answers 10.244.1.2, which it has no route to.
  const { stdout } = await cluster.exec(cluster.pod(1).ns, process.execPath, [join(supportDir, 'udp-echo.js'), 'ask', EXTERNAL_IP, '7777', '1500']);
  assert.equal(JSON.parse(stdout.trim()).reply, false);
});

masq.run();
