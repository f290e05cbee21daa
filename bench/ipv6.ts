// IPv6 beside IPv4 (issue 24): on one dual-stack two-node testbed per data
// plane and repetition, one TCP stream pod 1 -> pod 2 and a ping, over IPv4
// and over IPv6 in the same testbed, so each row's two families share the
// same moment of the machine. Planes, alternated per repetition:
//   kernel vxlan  flannel.1 with flanneld's IPv4 and IPv6 programming (the
//                 IPv6 one on flannel.1: see test/integration/vxlan-interop.test.ts
//                 for why there is no flannel-v6.1 on an IPv4 underlay)
//   agent udp     this agent, UDP mode, 2 workers
//   agent vxlan   this agent, VXLAN mode, 2 workers, in place of flannel.1
// and the same three over a dual-stack underlay (2001:db8::i beside
// 192.0.2.i), where IPv6 pods travel over the IPv6 underlay: flanneld's
// flannel-v6.1 for the kernel, --public-ipv6 for the agent. IPv4 pods stay on
// the IPv4 underlay there, so its IPv4 columns are the same path as above.
//
//   npm run build && node dist/bench/ipv6.js [--reps 2] [--seconds 5] [--only ID,ID] [--out bench/results]
//
// With BENCH_BASE_BUILD=<tree with an earlier build> (as npm run bench), that
// build's agent runs too, in both modes, alternated with this one's: a
// before/after in one run. Pings are reported as the mean (ping's avg) and
// the median of the 30 replies: on this shared machine a few replies of
// several ms move a mean of 30 by more than the differences measured here.
//
// Writes ipv6.md and ipv6.json. Needs root, iperf3, ping.
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { createCluster, type Cluster, type Dataplane } from '../src/testbed/cluster.js';
import { iperf3Tcp } from '../src/testbed/measure.js';
import { replaceKernelVxlanWithAgent } from '../src/testbed/vxlan-agents.js';
import { describeMachine } from './e2e/machine.js';

const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '2' },
    seconds: { type: 'string', default: '5' },
    out: { type: 'string', default: 'bench/results' },
    only: { type: 'string' },
  },
});
const reps = Number(values.reps);
const seconds = Number(values.seconds);
if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps: "${values.reps}" is not a positive integer`);
if (!Number.isInteger(seconds) || seconds < 1) throw new Error(`--seconds: "${values.seconds}" is not a positive whole number`);

interface Plane {
  id: string;
  label: string;
  dataplane: Dataplane;
  workers?: number;
  agentVxlan?: boolean;
  /** 'dual-stack': IPv6 pods over the IPv6 underlay (testbed ClusterOptions.underlay). */
  underlay?: 'dual-stack';
  /** Another build's cli.js (BENCH_BASE_BUILD). */
  agentCli?: string;
}
const PLANES: Plane[] = [
  { id: 'kernel-vxlan', label: "kernel vxlan (flanneld's programming, IPv6 on flannel.1)", dataplane: 'kernel-vxlan' },
  { id: 'agent-udp', label: 'this agent, UDP mode, 2 workers', dataplane: 'agent', workers: 2 },
  { id: 'agent-vxlan', label: 'this agent, VXLAN mode, 2 workers', dataplane: 'kernel-vxlan', agentVxlan: true },
  { id: 'kernel-vxlan-ul6', label: 'IPv6 underlay: kernel vxlan (flannel.1 and flanneld\'s flannel-v6.1)', dataplane: 'kernel-vxlan', underlay: 'dual-stack' },
  { id: 'agent-udp-ul6', label: 'IPv6 underlay: this agent, UDP mode, 2 workers', dataplane: 'agent', workers: 2, underlay: 'dual-stack' },
  { id: 'agent-vxlan-ul6', label: 'IPv6 underlay: this agent, VXLAN mode, 2 workers', dataplane: 'kernel-vxlan', agentVxlan: true, underlay: 'dual-stack' },
];
const BASE_BUILD = process.env.BENCH_BASE_BUILD;
if (BASE_BUILD !== undefined) {
  const agentCli = `${BASE_BUILD}/dist/src/cli.js`;
  PLANES.push(
    { id: 'agent-udp-base', label: `the build before (${BASE_BUILD}), UDP mode, 2 workers`, dataplane: 'agent', workers: 2, agentCli },
    { id: 'agent-vxlan-base', label: `the build before (${BASE_BUILD}), VXLAN mode, 2 workers`, dataplane: 'kernel-vxlan', agentVxlan: true, agentCli },
    { id: 'agent-udp-ul6-base', label: `IPv6 underlay: the build before (${BASE_BUILD}), UDP mode, 2 workers`, dataplane: 'agent', workers: 2, underlay: 'dual-stack', agentCli },
    { id: 'agent-vxlan-ul6-base', label: `IPv6 underlay: the build before (${BASE_BUILD}), VXLAN mode, 2 workers`, dataplane: 'kernel-vxlan', agentVxlan: true, underlay: 'dual-stack', agentCli },
  );
}
// --only id,id: a subset of the planes above, in their order.
if (values.only !== undefined) {
  const only = values.only.split(',');
  const unknown = only.filter((id) => !PLANES.some((p) => p.id === id));
  if (unknown.length > 0) throw new Error(`--only: no plane ${unknown.join(', ')} (planes: ${PLANES.map((p) => p.id).join(', ')})`);
  PLANES.splice(0, PLANES.length, ...PLANES.filter((p) => only.includes(p.id)));
}

interface Figures {
  tcp4Gbps: number;
  tcp6Gbps: number;
  ping4Ms: number;
  ping6Ms: number;
  ping4MedianMs: number;
  ping6MedianMs: number;
}

interface Pings {
  sent: number;
  rtts: number[];
}

/** ping without -q: every reply's time, for a median beside the mean. */
async function pings(cluster: Cluster, ns: string, ip: string, count: number, intervalS: number): Promise<Pings> {
  const deadlineS = Math.ceil(count * intervalS) + 3;
  const { stdout } = await cluster.exec(ns, 'ping', ['-n', '-c', String(count), '-i', String(intervalS), '-w', String(deadlineS), ip], {
    allowFailure: true,
    timeoutMs: (deadlineS + 10) * 1000,
  });
  return { sent: count, rtts: [...stdout.matchAll(/ time=([\d.]+) ms/g)].map((m) => Number(m[1])) };
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function measure(plane: Plane): Promise<Figures> {
  let cluster: Cluster | undefined;
  try {
    cluster = await createCluster({ nodes: 2, dataplane: plane.dataplane, workers: plane.workers, ipFamilies: 'dual-stack', underlay: plane.underlay, ...(plane.agentCli ? { agentCli: plane.agentCli } : {}) });
    if (plane.agentVxlan) for (const i of [1, 2]) await replaceKernelVxlanWithAgent(cluster, i, [], 2);
    const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
    if (p2.ip6 === undefined) throw new Error('the dual-stack testbed gave pod 2 no IPv6 address');
    // One unmeasured ping each way first: neighbour discovery and ARP are not the data plane's cost.
    await pings(cluster, p1.ns, p2.ip, 2, 0.05);
    await pings(cluster, p1.ns, p2.ip6, 2, 0.05);
    const ping4 = await pings(cluster, p1.ns, p2.ip, 30, 0.05);
    const ping6 = await pings(cluster, p1.ns, p2.ip6, 30, 0.05);
    const tcp4 = await iperf3Tcp(cluster, p2.ns, p2.ip, p1.ns, { seconds, omitSeconds: 1 });
    const tcp6 = await iperf3Tcp(cluster, p2.ns, p2.ip6, p1.ns, { seconds, omitSeconds: 1 });
    for (const [name, r] of [['IPv4', ping4], ['IPv6', ping6]] as const) {
      if (r.rtts.length < r.sent) throw new Error(`${plane.id}: ping over ${name} lost ${r.sent - r.rtts.length} of ${r.sent}`);
    }
    return {
      tcp4Gbps: tcp4.bitsPerSecond / 1e9,
      tcp6Gbps: tcp6.bitsPerSecond / 1e9,
      ping4Ms: mean(ping4.rtts),
      ping6Ms: mean(ping6.rtts),
      ping4MedianMs: median(ping4.rtts),
      ping6MedianMs: median(ping6.rtts),
    };
  } finally {
    await cluster?.destroy();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const machine = describeMachine();
const loadStart = loadavg();
const t0 = Date.now();
const runs = new Map<string, Figures[]>(PLANES.map((p) => [p.id, []]));
for (let rep = 1; rep <= reps; rep++) {
  for (const plane of PLANES) {
    const f = await measure(plane);
    runs.get(plane.id)!.push(f);
    console.log(
      `rep ${rep} ${plane.id}: TCP ${f.tcp4Gbps.toFixed(2)} / ${f.tcp6Gbps.toFixed(2)} Gbit/s, ping mean ${f.ping4Ms.toFixed(3)} / ${f.ping6Ms.toFixed(3)} ms, ` +
        `median ${f.ping4MedianMs.toFixed(3)} / ${f.ping6MedianMs.toFixed(3)} ms (IPv4 / IPv6)`,
    );
  }
}
const loadEnd = loadavg();

const rows: string[] = [];
const json: Record<string, unknown> = { machine, reps, seconds, loadStart, loadEnd, planes: {} as Record<string, unknown> };
for (const plane of PLANES) {
  const fs = runs.get(plane.id)!;
  const m = (k: keyof Figures) => median(fs.map((f) => f[k]));
  (json.planes as Record<string, unknown>)[plane.id] = { label: plane.label, runs: fs };
  rows.push(
    `| ${plane.label} | ${m('tcp4Gbps').toFixed(2)} | ${m('tcp6Gbps').toFixed(2)} | ${(m('tcp6Gbps') / m('tcp4Gbps')).toFixed(2)} × | ` +
      `${m('ping4Ms').toFixed(3)} | ${m('ping6Ms').toFixed(3)} | ${m('ping4MedianMs').toFixed(3)} | ${m('ping6MedianMs').toFixed(3)} | ` +
      `${(m('ping6MedianMs') - m('ping4MedianMs')).toFixed(3)} |`,
  );
}
const md = [
  '# IPv6 beside IPv4, per data plane (issue 24)',
  '',
  `Source ${machine.gitDescribe}, ${machine.date}; ${machine.cpuCount} × ${machine.cpuModel}, kernel ${machine.kernel}, Node ${machine.node}. ` +
    `Load average ${loadStart[0].toFixed(2)} at the start, ${loadEnd[0].toFixed(2)} at the end; ${((Date.now() - t0) / 1000).toFixed(0)} s.`,
  '',
  `\`node dist/bench/ipv6.js --reps ${reps} --seconds ${seconds}\`: a fresh dual-stack two-node testbed per plane and repetition, ` +
    `planes alternated; per testbed one iperf3 TCP stream pod 1 -> pod 2 for ${seconds} s (1 s omitted) and 30 pings 0.05 s apart, over each family ` +
    `(pings first, on the freshly started agents). Ping: the mean of the 30 replies (ping's avg) and their median. Medians of ${reps} repetition(s).` +
    (BASE_BUILD !== undefined ? ` "The build before" is the agent built in ${BASE_BUILD} (BENCH_BASE_BUILD), run alternated with this one.` : ''),
  '',
  '| plane | TCP 1 stream IPv4, Gbit/s ↑ | IPv6 ↑ | IPv6 ÷ IPv4 | ping mean IPv4, ms ↓ | IPv6 ↓ | ping median IPv4, ms ↓ | IPv6 ↓ | median IPv6 − IPv4, ms |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...rows,
  '',
  'Every run:',
  '',
  '```',
  ...PLANES.flatMap((p) => runs.get(p.id)!.map((f, i) => `${p.id} rep ${i + 1}: ${JSON.stringify(f)}`)),
  '```',
  '',
].join('\n');
mkdirSync(values.out!, { recursive: true });
writeFileSync(join(values.out!, 'ipv6.md'), md);
writeFileSync(join(values.out!, 'ipv6.json'), JSON.stringify(json, null, 2) + '\n');
console.log(md);
