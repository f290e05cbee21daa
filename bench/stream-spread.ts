// Do TCP streams scale with workers (issue 23)? TCP 1 and 4 streams pod 1 →
// pod 2 on the two-node testbed, and how the receiving node's workers shared
// the tunnelled datagrams during the 4-stream run, for:
//   udp            this build, UDP mode, 2 workers (--receive-spread inner-flow, the default)
//   udp-kernel     this build, --receive-spread kernel-hash: the kernel's outer 4-tuple hash
//   udp-base       the build before (BENCH_BASE_BUILD=<tree with dist/>), when given
//   vxlan          this build, VXLAN mode (its receive spread is the kernel's hash of varied source ports)
// alternated per repetition, so drifting load on a shared machine hits all alike.
//
//   npm run build && BENCH_BASE_BUILD=/tmp/base node dist/bench/stream-spread.js [--reps 3] [--seconds 8] [--only udp,udp-base] [--balanced]
//
// iperf3 picks its streams' source ports, so 4 streams hash onto 2 workers
// unevenly as often as not (all on one with probability 1/8). --balanced picks
// them instead (--cport: iperf3 numbers the streams' ports from it), so that
// the inner-flow hash gives two streams to each worker: the case where the
// spread can show, measured against the same ports on the other planes.
//
// Needs root (network namespaces) and iperf3.
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import { createCluster, type Cluster, type ClusterOptions } from '../src/testbed/cluster.js';
import { replaceKernelVxlanWithAgent } from '../src/testbed/vxlan-agents.js';
import { requestStatsLine } from '../src/testbed/agent-signal.js';
import { iperf3Tcp } from '../src/testbed/measure.js';
import { stopChild, waitForLine, type CapturedChild } from '../src/testbed/exec.js';
import { parseIPv4 } from '../src/control/ipv4-address.js';
import { innerFlowIndex } from '../src/dataplane/reuseport-cbpf.js';

const { values } = parseArgs({
  options: { reps: { type: 'string', default: '3' }, seconds: { type: 'string', default: '8' }, only: { type: 'string' }, balanced: { type: 'boolean' } },
});
const reps = Number(values.reps);
const seconds = Number(values.seconds);
const base = process.env.BENCH_BASE_BUILD;

interface Case {
  id: string;
  cluster: ClusterOptions;
  vxlan?: boolean;
}

const CASES: Case[] = [
  { id: 'udp', cluster: { nodes: 2, dataplane: 'agent', workers: 2 } },
  ...(base ? [{ id: 'udp-base', cluster: { nodes: 2, dataplane: 'agent', workers: 2, agentCli: `${base}/dist/src/cli.js` } } as Case] : []),
  { id: 'udp-kernel', cluster: { nodes: 2, dataplane: 'agent', workers: 2, agentArgs: ['--receive-spread', 'kernel-hash'] } },
  { id: 'vxlan', cluster: { nodes: 2, dataplane: 'kernel-vxlan' }, vxlan: true },
];
const only = values.only?.split(',');
const cases = only ? CASES.filter((c) => only.includes(c.id)) : CASES;
if (cases.length === 0) throw new Error(`--only: none of ${values.only} is one of ${CASES.map((c) => c.id).join(', ')}`);

const SERVER_PORT = 5201;

/** The first of 4 consecutive client ports whose flows to SERVER_PORT the inner-flow hash splits 2 and 2 over 2 workers. */
function balancedClientPort(client: string, server: string): number {
  const index = (sport: number) => {
    const p = new Uint8Array(24);
    const v = new DataView(p.buffer);
    p[0] = 0x45;
    p[9] = 6;
    v.setUint32(12, parseIPv4(client));
    v.setUint32(16, parseIPv4(server));
    v.setUint16(20, sport);
    v.setUint16(22, SERVER_PORT);
    return innerFlowIndex(p, 2);
  };
  for (let first = 41000; ; first++) {
    if ([0, 1, 2, 3].reduce((n, i) => n + index(first + i), 0) === 2) return first;
  }
}

/** iperf3 -P 4 from the client ports given (measure.ts's iperf3Tcp lets iperf3 choose them). */
async function iperf3FromPorts(cluster: Cluster, clientPort: number): Promise<{ bitsPerSecond: number; retransmits: number }> {
  const [client, server] = [cluster.pod(1), cluster.pod(2)];
  const iperfServer = cluster.spawn(server.ns, 'iperf3', ['-s', '-1', '--forceflush', '-B', server.ip, '-p', String(SERVER_PORT)]);
  try {
    await waitForLine(iperfServer, /Server listening on/, 10_000);
    const { stdout } = await cluster.exec(client.ns, 'iperf3', ['-c', server.ip, '-p', String(SERVER_PORT), '-t', String(seconds), '-O', '1', '-P', '4', '--cport', String(clientPort), '-J'], {
      timeoutMs: (seconds + 30) * 1000,
    });
    const report = JSON.parse(stdout) as { start: { connected: { local_port: number }[] }; end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number } } };
    const ports = report.start.connected.map((c) => c.local_port).sort((a, b) => a - b);
    if (ports.join() !== [0, 1, 2, 3].map((i) => clientPort + i).join()) throw new Error(`iperf3 used client ports ${ports}, not ${clientPort}..${clientPort + 3}`);
    return { bitsPerSecond: report.end.sum_received.bits_per_second, retransmits: report.end.sum_sent.retransmits ?? 0 };
  } finally {
    await stopChild(iperfServer, 'SIGTERM', 2000);
  }
}

async function receivedPerWorker(agent: CapturedChild): Promise<number[]> {
  const stats = JSON.parse((await requestStatsLine(agent, 5000)).line) as { workers: { counters: Record<string, number> }[] };
  return stats.workers.map((w) => w.counters.UdpReceivedPackets);
}

interface Row {
  id: string;
  rep: number;
  load: string;
  tcp1: number;
  tcp4: number;
  retransmits4: number;
  /** Share of node 2's received datagrams per worker during the 4-stream run. */
  shares: number[];
}

const rows: Row[] = [];
for (let rep = 1; rep <= reps; rep++) {
  for (const c of cases) {
    let cluster: Cluster | undefined;
    const load = loadavg().map((l) => l.toFixed(2)).join(' ');
    try {
      cluster = await createCluster(c.cluster);
      const receiver = c.vxlan
        ? (await Promise.all(cluster.nodes().map((n) => replaceKernelVxlanWithAgent(cluster!, n.index, [], 2))))[1]
        : cluster.agent(2)!;
      const [client, server] = [cluster.pod(1), cluster.pod(2)];
      const tcp1 = await iperf3Tcp(cluster, server.ns, server.ip, client.ns, { seconds, streams: 1, omitSeconds: 1 });
      const before = await receivedPerWorker(receiver);
      const tcp4 = values.balanced
        ? await iperf3FromPorts(cluster, balancedClientPort(client.ip, server.ip))
        : await iperf3Tcp(cluster, server.ns, server.ip, client.ns, { seconds, streams: 4, omitSeconds: 1 });
      const after = await receivedPerWorker(receiver);
      const delta = after.map((n, i) => n - before[i]);
      const total = delta.reduce((s, n) => s + n, 0);
      const row: Row = { id: c.id, rep, load, tcp1: tcp1.bitsPerSecond / 1e9, tcp4: tcp4.bitsPerSecond / 1e9, retransmits4: tcp4.retransmits, shares: delta.map((n) => n / total) };
      rows.push(row);
      console.log(
        `rep ${rep} ${c.id.padEnd(10)} load ${load}  TCP 1 ${row.tcp1.toFixed(2)} Gbit/s  TCP 4 ${row.tcp4.toFixed(2)} Gbit/s (retr ${row.retransmits4})  ` +
          `node 2 workers' share of received datagrams (4 streams): ${row.shares.map((s) => (s * 100).toFixed(0) + ' %').join(' / ')}`,
      );
    } catch (err) {
      console.log(`rep ${rep} ${c.id}: failed: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      await cluster?.destroy();
    }
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
console.log(`\n| case | TCP 1 stream, Gbit/s (median of ${reps}) | TCP 4 streams | 4 ÷ 1 | TCP 4 streams: retransmits per run | busiest receiving worker's share (4 streams) |`);
console.log('|---|---|---|---|---|---|');
for (const c of cases) {
  const mine = rows.filter((r) => r.id === c.id);
  if (mine.length === 0) continue;
  const t1 = median(mine.map((r) => r.tcp1));
  const t4 = median(mine.map((r) => r.tcp4));
  console.log(`| ${c.id} | ${t1.toFixed(2)} | ${t4.toFixed(2)} | ${(t4 / t1).toFixed(2)} | ${mine.map((r) => r.retransmits4).join(', ')} | ${mine.map((r) => (Math.max(...r.shares) * 100).toFixed(0) + ' %').join(', ')} |`);
}
console.log(`\nload average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (2 cores, shared with other sessions)`);
