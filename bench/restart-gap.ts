// What an agent restart costs the pods (issue 22): 500 pings 10 ms apart
// from a pod on node 1 to a pod on node 2 while node 1's agent is restarted
// (src/testbed/restart-gap.ts), counted as packets lost.
//
//   npm run build && node dist/bench/restart-gap.js [--reps 3] [--workers 2] [--agent-node PATH]
//
// --agent-node: the Node.js binary the agents (and the `node -e 0` column) run
// on, e.g. the image's Node 24 (see bench/idle-latency.ts for how to fetch it).
//
// Kinds, in one run, alternating per repetition so drifting load hits all:
//   sigterm   SIGTERM, then a new agent (a pod restart, systemctl restart)
//   sigkill   SIGKILL, then a new agent (an OOM kill, a failed liveness probe)
//   handover  a new agent starts while the old one runs; SIGTERM to the old
//             once the new one is ready (a DaemonSet rolling update, maxSurge 1)
//   --persist-tun off, sigterm: the device and routes go with the agent (before issue 22)
// and the same 500 pings over kernel vxlan (flanneld's vxlan backend, where
// the kernel forwards and a flanneld restart is not in the path at all).
// Needs root (network namespaces), ping.
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { createCluster, type Cluster, type Dataplane } from '../src/testbed/cluster.js';
import { measureRestartGap, type RestartKind } from '../src/testbed/restart-gap.js';
import { ping } from '../src/testbed/measure.js';

const { values } = parseArgs({
  options: { reps: { type: 'string', default: '3' }, workers: { type: 'string', default: '2' }, 'agent-node': { type: 'string' } },
});
const agentNode = values['agent-node'] ?? process.execPath;
const agentNodeVersion = execFileSync(agentNode, ['--version'], { encoding: 'utf8' }).trim();
const reps = Number(values.reps);
const workers = Number(values.workers);
if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps: "${values.reps}" is not a positive integer`);

interface Case {
  name: string;
  dataplane: Dataplane;
  kind?: RestartKind;
  agentArgs?: string[];
}
const CASES: Case[] = [
  { name: 'agent, SIGTERM then start', dataplane: 'agent', kind: 'sigterm' },
  { name: 'agent, SIGKILL then start', dataplane: 'agent', kind: 'sigkill' },
  { name: 'agent, hand-over (new one first)', dataplane: 'agent', kind: 'handover' },
  { name: 'agent --persist-tun off, SIGTERM then start', dataplane: 'agent', kind: 'sigterm', agentArgs: ['--persist-tun', 'off'] },
  { name: 'kernel vxlan (flanneld vxlan: no process in the path)', dataplane: 'kernel-vxlan' },
];

/**
 * What no agent can beat in "then start": how long a bare `node -e 0` takes to
 * start and exit on this machine right now (ms), measured after each restart.
 */
function nodeStartMs(): number {
  const t = process.hrtime.bigint();
  execFileSync(agentNode, ['-e', '0']);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

interface Row {
  nodeStartMs: number[];
  lost: number[];
  gapMs: number[];
  rttMaxMs: number[];
}

async function measure(c: Case): Promise<{ lost: number; gapMs: number; rttMaxMs: number }> {
  let cluster: Cluster | undefined;
  try {
    cluster = await createCluster({ nodes: 2, dataplane: c.dataplane, workers, agentArgs: c.agentArgs, agentNode });
    if (!c.kind) {
      const r = await ping(cluster, cluster.pod(1).ns, cluster.pod(2).ip, { count: 500, intervalS: 0.01 });
      return { lost: r.sent - r.received, gapMs: (r.sent - r.received) * 10, rttMaxMs: r.rttMaxMs };
    }
    const r = await measureRestartGap(cluster, c.kind);
    return { lost: r.lost, gapMs: r.longestGapMs, rttMaxMs: r.rttMaxMs };
  } finally {
    await cluster?.destroy();
  }
}

const rows = new Map<string, Row>(CASES.map((c) => [c.name, { nodeStartMs: [], lost: [], gapMs: [], rttMaxMs: [] }]));
const loadBefore = loadavg()[0];
for (let rep = 0; rep < reps; rep++) {
  for (const c of CASES) {
    const r = await measure(c);
    const row = rows.get(c.name)!;
    row.lost.push(r.lost);
    row.gapMs.push(r.gapMs);
    row.rttMaxMs.push(r.rttMaxMs);
    row.nodeStartMs.push(nodeStartMs());
    process.stderr.write(`rep ${rep + 1}: ${c.name}: ${r.lost} lost, longest gap ${r.gapMs} ms, max RTT ${r.rttMaxMs} ms\n`);
  }
}
const list = (xs: number[], digits = 0) => xs.map((x) => x.toFixed(digits)).join(' / ');
console.log(`restart gap: 500 pings 10 ms apart, pod on node 1 -> pod on node 2, node 1's agent restarted after 50 replies; ${workers} worker(s); ${reps} repetition(s); agents on Node.js ${agentNodeVersion} (${agentNode})`);
console.log(`load average (1 min) before: ${loadBefore.toFixed(2)}, after: ${loadavg()[0].toFixed(2)}`);
console.log('| case | pings lost of 500 (each run) | longest gap, ms | max RTT, ms | `node -e 0` right after, ms |');
console.log('|---|---|---|---|---|');
for (const c of CASES) {
  const r = rows.get(c.name)!;
  console.log(`| ${c.name} | ${list(r.lost)} | ${list(r.gapMs)} | ${list(r.rttMaxMs, 1)} | ${list(r.nodeStartMs)} |`);
}
