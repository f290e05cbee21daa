// UDP mode's receive spread end to end: two nodes, two workers each, and pod
// flows from node 1 to node 2 whose source ports were picked so the inner-flow
// hash (reuseport-cbpf.ts) sends half of them to each of node 2's sockets.
// Every datagram between the nodes has the same outer 4-tuple, so without the
// program (--receive-spread kernel-hash, the control) one worker receives all.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { requestStatsLine } from '../../src/testbed/agent-signal.js';
import { innerFlowIndex } from '../../src/dataplane/reuseport-cbpf.js';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { eventually } from '../support/pod-traffic.js';

const PORT = 7777;
const DATAGRAMS_PER_FLOW = 20;
const FLOWS_PER_WORKER = 3;

interface NodeStats {
  receiveSpread?: string;
  received: number[];
}

async function receiveCounters(cluster: Cluster, node: number): Promise<NodeStats> {
  const stats = JSON.parse((await requestStatsLine(cluster.agent(node)!, 5000)).line) as {
    receiveSpread?: string;
    workers: { counters: Record<string, number> }[];
  };
  return { receiveSpread: stats.receiveSpread, received: stats.workers.map((w) => w.counters.UdpReceivedPackets) };
}

/** The inner packet's first bytes as UDP mode carries them: enough for the hash. */
function innerUdp(src: string, dst: string, sport: number, dport: number): Uint8Array {
  const p = new Uint8Array(28);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  p[9] = 17;
  v.setUint32(12, parseIPv4(src));
  v.setUint32(16, parseIPv4(dst));
  v.setUint16(20, sport);
  v.setUint16(22, dport);
  return p;
}

/** Source ports whose flows the hash gives FLOWS_PER_WORKER to each of two workers, and which worker each goes to. */
function pickFlows(src: string, dst: string): { sport: number; worker: number }[] {
  const picked: { sport: number; worker: number }[] = [];
  const perWorker = [0, 0];
  for (let sport = 40000; picked.length < 2 * FLOWS_PER_WORKER; sport++) {
    const worker = innerFlowIndex(innerUdp(src, dst, sport, PORT), 2);
    if (perWorker[worker] < FLOWS_PER_WORKER) {
      perWorker[worker]++;
      picked.push({ sport, worker });
    }
  }
  return picked;
}

/** Sends DATAGRAMS_PER_FLOW datagrams per flow from pod 1 to pod 2 and returns what each of node 2's workers received meanwhile. */
async function sendFlows(cluster: Cluster, flows: { sport: number }[]): Promise<NodeStats> {
  const [from, to] = [cluster.pod(1), cluster.pod(2)];
  const before = await receiveCounters(cluster, 2);
  const script = `
    import { createSocket } from 'node:dgram';
    for (const sport of ${JSON.stringify(flows.map((f) => f.sport))}) {
      const s = createSocket('udp4');
      await new Promise((r) => s.bind(sport, ${JSON.stringify(from.ip)}, r));
      for (let i = 0; i < ${DATAGRAMS_PER_FLOW}; i++) await new Promise((r) => s.send(Buffer.alloc(100, i), ${PORT}, ${JSON.stringify(to.ip)}, r));
      s.close();
    }`;
  await cluster.exec(from.ns, process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 20_000 });
  const total = flows.length * DATAGRAMS_PER_FLOW;
  let after = before;
  const arrived = await eventually(async () => {
    after = await receiveCounters(cluster, 2);
    return after.received.reduce((s, n, i) => s + n - before.received[i], 0) >= total;
  }, 10_000);
  assert.ok(arrived, `node 2 received ${JSON.stringify(after.received)} (before ${JSON.stringify(before.received)}), expected ${total} more`);
  return { receiveSpread: after.receiveSpread, received: after.received.map((n, i) => n - before.received[i]) };
}

test('inner-flow spread: each of node 2 workers receives the flows the hash gives it', async () => {
  let cluster: Cluster | undefined;
  try {
    cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 2 });
    const flows = pickFlows(cluster.pod(1).ip, cluster.pod(2).ip);
    const got = await sendFlows(cluster, flows);
    assert.is(got.receiveSpread, 'inner-flow');
    assert.match(cluster.agent(2)!.log.text(), /each inner flow to one of 2 workers/);
    for (const worker of [0, 1]) {
      const expected = flows.filter((f) => f.worker === worker).length * DATAGRAMS_PER_FLOW;
      assert.ok(got.received[worker] >= expected, `worker ${worker} received ${got.received[worker]}, expected at least ${expected}: ${JSON.stringify(got.received)}`);
    }
  } finally {
    await cluster?.destroy();
  }
});

test('the control, --receive-spread kernel-hash: the same flows all reach one worker', async () => {
  let cluster: Cluster | undefined;
  try {
    cluster = await createCluster({ nodes: 2, dataplane: 'agent', workers: 2, agentArgs: ['--receive-spread', 'kernel-hash'] });
    const flows = pickFlows(cluster.pod(1).ip, cluster.pod(2).ip);
    const got = await sendFlows(cluster, flows);
    assert.match(got.receiveSpread ?? '', /^kernel-hash/);
    assert.ok(got.received.includes(0), `one worker should have received nothing: ${JSON.stringify(got.received)}`);
    assert.ok(Math.max(...got.received) >= flows.length * DATAGRAMS_PER_FLOW);
  } finally {
    await cluster?.destroy();
  }
});

test.run();
