// The experiment behind issue 11's cause (docs/design.md, "Latency: what the
// agent added"): is the extra round-trip time of a freshly started agent the
// cost of running its forwarding code before V8 has optimised it?
//
//   npm run build && node dist/bench/latency-cause.js [--reps 3]
//
// For each plane, a fresh two-node testbed; ping pod 1 → pod 2 (20 × 50 ms)
// right after the agents report ready ("fresh"), then 2 s of iperf3 TCP and
// 1000 pings at 2 ms through the same agents, then the same 20 pings again
// ("after traffic"). Planes: the agent with its rehearsal (the default), the
// agent with --rehearsal off, and the independent reference forwarder
// (bench/reference/udp_proxy.py) for scale. If the cause is unoptimised code,
// "--rehearsal off, fresh" is the outlier and the other three agent figures
// agree. Repetitions alternate the planes, so drifting load hits all of them.
// Needs root (network namespaces), iperf3, ping, python3.
import { parseArgs } from 'node:util';
import { createCluster, type Cluster, type Dataplane } from '../src/testbed/cluster.js';
import { ping, iperf3Tcp } from '../src/testbed/measure.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '3' } } });
const reps = Number(values.reps);
if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps: "${values.reps}" is not a positive integer`);

interface Plane {
  name: string;
  dataplane: Dataplane;
  agentArgs?: string[];
}
const PLANES: Plane[] = [
  { name: 'agent (rehearsal on, default)', dataplane: 'agent' },
  { name: 'agent --rehearsal off', dataplane: 'agent', agentArgs: ['--rehearsal', 'off'] },
  { name: 'reference forwarder (Python)', dataplane: 'reference' },
];

async function measure(plane: Plane): Promise<{ fresh: number; warm: number }> {
  let cluster: Cluster | undefined;
  try {
    cluster = await createCluster({ nodes: 2, dataplane: plane.dataplane, workers: 2, agentArgs: plane.agentArgs });
    const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
    const fresh = await ping(cluster, p1.ns, p2.ip, { count: 20, intervalS: 0.05 });
    await iperf3Tcp(cluster, p2.ns, p2.ip, p1.ns, { seconds: 2 });
    await ping(cluster, p1.ns, p2.ip, { count: 1000, intervalS: 0.002 });
    const warm = await ping(cluster, p1.ns, p2.ip, { count: 20, intervalS: 0.05 });
    if (fresh.received < 20 || warm.received < 20) throw new Error(`${plane.name}: pings lost (${fresh.received}/20 fresh, ${warm.received}/20 after traffic)`);
    return { fresh: fresh.rttAvgMs, warm: warm.rttAvgMs };
  } finally {
    await cluster?.destroy();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const results = new Map<string, { fresh: number[]; warm: number[] }>(PLANES.map((p) => [p.name, { fresh: [], warm: [] }]));
const started = Date.now();
for (let r = 0; r < reps; r++) {
  for (const plane of PLANES) {
    const m = await measure(plane);
    results.get(plane.name)!.fresh.push(m.fresh);
    results.get(plane.name)!.warm.push(m.warm);
    console.log(`rep ${r + 1}: ${plane.name}: fresh ${m.fresh.toFixed(3)} ms, after traffic ${m.warm.toFixed(3)} ms`);
  }
}
const fmt = (xs: number[]) => `${median(xs).toFixed(3)} (${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)})`;
console.log(`\nping avg RTT pod 1 → pod 2, ms, median (min–max) of ${reps}; load average ${(await import('node:os')).loadavg()[0].toFixed(2)} at the end, ${Math.round((Date.now() - started) / 1000)} s`);
console.log('| plane | fresh (right after start) | after traffic |');
console.log('| --- | ---: | ---: |');
for (const [name, m] of results) console.log(`| ${name} | ${fmt(m.fresh)} | ${fmt(m.warm)} |`);
