// Faults inside the agent: a worker that dies mid-transfer is restarted while
// the transfer goes on; a packet too big for the underlay is answered with
// ICMP fragmentation needed (DF) or sent in outer fragments (no DF).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { waitForLine } from '../../src/testbed/exec.js';
import { requestStatsLine } from '../../src/testbed/agent-signal.js';
import { tcpTransfer } from '../support/pod-traffic.js';
import { startStreamingTransfer } from '../support/live-probes.js';

/** The agent's counters: it prints them as one JSON line on stderr for SIGUSR1. */
async function agentStats(cluster: Cluster, i: number): Promise<{ workers: Array<{ counters: Record<string, number>; drops: Record<string, number> }> }> {
  return JSON.parse((await requestStatsLine(cluster.agent(i)!, 5000)).line);
}

function total(stats: Awaited<ReturnType<typeof agentStats>>, name: string): number {
  return stats.workers.reduce((sum, w) => sum + (w.counters[name] ?? w.drops[name] ?? 0), 0);
}

const crash = suite('a worker that dies is restarted while forwarding goes on');
let cluster: Cluster;

crash.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 1 });
});
crash.after(async () => {
  await cluster?.destroy();
});

crash('killing the only worker during a TCP transfer: it is restarted, and the transfer goes on and completes intact', async () => {
  // Open-ended: it runs until told to finish, so the worker dies mid-transfer whatever the machine's speed.
  const transfer = await startStreamingTransfer(cluster, cluster.pod(1), cluster.pod(2), 32 * 1024 * 1024);
  try {
    await transfer.progress(8); // under way
    const agent = cluster.agent(1)!;
    agent.kill('SIGUSR2');
    await waitForLine(agent, /worker 0 exited .*restarting/, 5000);
    await transfer.progress(transfer.sentMiB() + 16, 60_000); // the restarted worker forwards it on
    const r = await transfer.finish();
    assert.is(r.received.bytes, r.sent.bytes);
    assert.is(r.received.sha256, r.sent.sha256);
    assert.is(total(await agentStats(cluster, 1), 'Restarts'), 1, 'one restart recorded');
    assert.is(agent.exitCode, null, 'the agent process is still running');
  } finally {
    await transfer.stop();
  }
});

crash.run();

const pmtu = suite('packets too big for the underlay');
let small: Cluster;

pmtu.before(async () => {
  // A pod MTU that does not fit the underlay (1400 − 28 = 1372): the agent must handle the excess.
  small = await createCluster({ nodes: 2, dataplane: 'agent', workers: 1, underlayMtu: 1400, podMtu: 1472 });
});
pmtu.after(async () => {
  await small?.destroy();
});

pmtu('with DF set the sender gets ICMP fragmentation needed with the MTU that fits', async () => {
  const r = await small.exec(small.pod(1).ns, 'ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', '1400', small.pod(2).ip], { allowFailure: true });
  assert.match(r.stdout + r.stderr, /[Ff]rag needed and DF set \(mtu = 1372\)|message too long, mtu=1372/);
  const stats = await agentStats(small, 1);
  assert.ok(total(stats, 'fragmentation-needed') >= 1, JSON.stringify(stats.workers.map((w) => w.drops)));
});

pmtu('without DF the packet goes through, its outer datagram fragmented by the kernel', async () => {
  // From pod 2: pod 1 learned the path MTU in the test before and would fragment the ping itself.
  const r = await small.exec(small.pod(2).ns, 'ping', ['-c', '2', '-i', '0.2', '-M', 'dont', '-s', '1400', small.pod(1).ip], { allowFailure: true });
  assert.match(r.stdout, /2 received/);
  assert.ok(total(await agentStats(small, 2), 'OuterFragmented') >= 2);
});

pmtu('TCP discovers the path MTU from our ICMP and a transfer completes', async () => {
  const bytes = 8 * 1024 * 1024;
  const r = await tcpTransfer(small, small.pod(1), small.pod(2), bytes, 60_000);
  assert.is(r.received.sha256, r.sent.sha256);
});

pmtu.run();
