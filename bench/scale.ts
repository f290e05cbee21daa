// Scale, measured: N node namespaces on one underlay bridge, one agent per
// node, one pod per node, one control plane (a real etcd, or the
// kube-apiserver stand-in). Prints, and writes to bench/results/scale-<source>-<N>.{md,json}:
// time to full-mesh reachability from the agents' start, join and leave
// propagation at the data plane (p50/p99/max over the nodes), per-agent
// memory, threads, descriptors, idle CPU and wake-ups, the same for two
// agents during a transfer, and the control plane's requests and bytes per
// second per node at steady state. See bench/scale/scale-cluster.ts for how
// each figure is taken.
//
//   npm run bench:scale -- --nodes 50 --source etcd
//   npm run bench:scale -- --help
import { mkdirSync, writeFileSync } from 'node:fs';
import { freemem, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { describeMachine } from './e2e/machine.js';
import { percentiles, rates, sampleProcess, type ProcSample } from './scale/proc-stats.js';
import { ScaleCluster, type ControlCounters, type PropagationResult, type Source } from './scale/scale-cluster.js';
import { tcpTransfer } from '../test/support/pod-traffic.js';

const HELP = `npm run bench:scale -- [options]
  --nodes N         nodes with an agent from the start (one more joins and leaves); default 10
  --source S        etcd | kube; default etcd
  --workers W       agent --workers; default 1 (the production default is the core count)
  --idle-seconds S  the steady-state window; default 30
  --transfer-mib M  the transfer between pods 1 and 2; default 128
  --out DIR         default bench/results
  --log-dir DIR     keep the agents' logs there (default: removed with the testbed)
  --agent-node PATH the Node.js binary the agents run on (default: this one; e.g. the image's Node 24)
`;

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '10' },
    source: { type: 'string', default: 'etcd' },
    workers: { type: 'string', default: '1' },
    'idle-seconds': { type: 'string', default: '30' },
    'transfer-mib': { type: 'string', default: '128' },
    out: { type: 'string' },
    'log-dir': { type: 'string' },
    'agent-node': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const nodes = Number(values.nodes);
const source = values.source as Source;
const workers = Number(values.workers);
const idleSeconds = Number(values['idle-seconds']);
const transferMiB = Number(values['transfer-mib']);
if (!Number.isInteger(nodes) || nodes < 2 || nodes > 200) throw new Error(`--nodes must be 2..200, got ${values.nodes}`);
if (source !== 'etcd' && source !== 'kube') throw new Error(`--source must be etcd or kube, got ${values.source}`);
const outDir = values.out ?? join(dirname(fileURLToPath(import.meta.url)), '../../bench/results');

const t = () => new Date().toISOString().slice(11, 19);
const say = (line: string) => console.log(`${t()} ${line}`);

const machine = describeMachine();
say(`scale: ${nodes} nodes + 1 joining, source ${source}, ${workers} worker(s) per agent; load ${loadavg()[0].toFixed(2)}, ${(freemem() / 2 ** 30).toFixed(1)} GiB free`);

const buildStart = Date.now();
const logDir = values['log-dir'];
if (logDir) mkdirSync(logDir, { recursive: true });
const agentNode = values['agent-node'];
const agentNodeVersion = agentNode ? execFileSync(agentNode, ['--version'], { encoding: 'utf8' }).trim().replace(/^v/, '') : undefined;
if (agentNode) say(`agents on ${agentNode} (Node ${agentNodeVersion})`);
const s = await ScaleCluster.create({ nodes, source, workers, log: say, logDir, agentNode });
const result: Record<string, unknown> = { machine, agentNodeVersion, options: { nodes, source, workers, idleSeconds, transferMiB, agentNode } };
try {
  result.testbedSeconds = (Date.now() - buildStart) / 1000;
  say(`testbed: ${nodes + 1} nodes and pods in ${result.testbedSeconds} s`);

  // 1. Everybody starts at once; every pod probes every other pod meanwhile.
  const loadBefore = loadavg()[0];
  const starting = s.startAgents();
  const meshing = s.fullMesh(300, 500);
  meshing.catch(() => undefined); // if the start fails, that is the error to report
  await starting;
  const readyMs = Date.now() - s.agentsStartedAt;
  const mesh = await meshing;
  result.start = { allReadyMs: readyMs, mesh, loadBefore };
  if (mesh.missing.length > 0) {
    const diagnosis = await s.diagnose(mesh.missing);
    result.start = { ...(result.start as object), diagnosis };
    say(`pairs the mesh missed, probed again: ${JSON.stringify(diagnosis)}`);
  }
  say(`start: all ${nodes} agents ready after ${readyMs} ms; full mesh ${mesh.reached}/${mesh.pairs} pairs, ` +
    `${mesh.fullMeshMs === undefined ? `NOT reached (${mesh.missing.slice(0, 5).join(', ')}…)` : `after ${mesh.fullMeshMs} ms`}`);

  // 2. Steady state.
  await sleep(5000);
  const cpPid = await s.findControlPlanePid();
  const a0 = s.sampleAgents();
  const c0 = await s.controlCounters();
  const cp0 = cpPid ? sampleProcess(cpPid) : undefined;
  await sleep(idleSeconds * 1000);
  const a1 = s.sampleAgents();
  const c1 = await s.controlCounters();
  const cp1 = cpPid ? sampleProcess(cpPid) : undefined;
  const idle = summariseAgents(a0, a1);
  const control = summariseControl(c0, c1, nodes);
  result.idle = idle;
  result.control = { ...control, server: cp0 && cp1 ? { rssKiB: cp1.rssKiB, ...rates(cp0, cp1) } : undefined };
  say(`idle, per agent (median / max): RSS ${mib(idle.rssKiB.p50)} / ${mib(idle.rssKiB.max)} MiB, anon ${mib(idle.anonKiB.p50)} / ${mib(idle.anonKiB.max)}, ` +
    `file ${mib(idle.fileKiB.p50)}, threads ${idle.threads.p50}, fds ${idle.fds.p50}, CPU ${(idle.cpuPerSecond.p50 * 1000).toFixed(1)} ms/s, ` +
    `wake-ups ${idle.wakeupsPerSecond.p50.toFixed(1)}/s`);
  say(`control plane at steady state: ${control.requestsPerSecond.toFixed(2)} requests/s (${control.requestsPerSecondPerNode.toFixed(3)} per node), ` +
    `${control.bytesPerSecondPerNode.toFixed(0)} B/s per node; by kind ${JSON.stringify(control.byKind)}`);

  // 3. A transfer between pods 1 and 2: their agents' figures while it runs.
  const [p1, p2] = [s.cluster.pod(1), s.cluster.pod(2)];
  const before = s.sampleAgents();
  const transferring = tcpTransfer(s.cluster, p1, p2, transferMiB * 2 ** 20, 300_000);
  let peak: Map<number, ProcSample> = before;
  let peakRss = 0;
  const sampler = setInterval(() => {
    try {
      const now = s.sampleAgents();
      const sum = (now.get(1)?.rssKiB ?? 0) + (now.get(2)?.rssKiB ?? 0);
      if (sum > peakRss) [peakRss, peak] = [sum, now];
    } catch {
      /* an agent went away; the transfer will say so */
    }
  }, 250);
  const transfer = await transferring.finally(() => clearInterval(sampler));
  const after = s.sampleAgents();
  const during = [1, 2].map((i) => ({
    node: i,
    peak: peak.get(i),
    after: after.get(i),
    ...rates(before.get(i)!, after.get(i)!),
  }));
  result.transfer = { mib: transferMiB, seconds: transfer.seconds, intact: transfer.sent.sha256 === transfer.received.sha256, agents: during };
  say(`transfer ${transferMiB} MiB pod1 -> pod2 in ${transfer.seconds.toFixed(1)} s (${transfer.sent.sha256 === transfer.received.sha256 ? 'intact' : 'CORRUPTED'}); ` +
    during.map((d) => `agent ${d.node}: peak RSS ${mib(d.peak?.rssKiB ?? 0)} MiB (anon ${mib(d.peak?.anonKiB ?? 0)}), after ${mib(d.after?.rssKiB ?? 0)} MiB, CPU ${d.cpuPerSecond.toFixed(2)} s/s`).join('; '));

  // 4. A node joins, 5. and leaves.
  const join = await s.join();
  result.join = propagationJson(join);
  say(`join: ${describePropagation(join)} (from ${join.reference})`);
  const leave = await s.leave();
  result.leave = propagationJson(leave);
  say(`leave: ${describePropagation(leave)} (from ${leave.reference})`);
  result.loadAfter = loadavg()[0];
} finally {
  await s.destroy();
}

mkdirSync(outDir, { recursive: true });
const base = join(outDir, `scale-${source}-${nodes}`);
writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
writeFileSync(`${base}.md`, renderMarkdown(result));
say(`wrote ${base}.md and .json`);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

function summariseAgents(a: Map<number, ProcSample>, b: Map<number, ProcSample>) {
  const ids = [...b.keys()].filter((i) => a.has(i));
  const col = (f: (x: ProcSample) => number) => percentiles(ids.map((i) => f(b.get(i)!)))!;
  return {
    agents: ids.length,
    rssKiB: col((x) => x.rssKiB),
    anonKiB: col((x) => x.anonKiB),
    fileKiB: col((x) => x.fileKiB),
    threads: col((x) => x.threads),
    fds: col((x) => x.fds),
    cpuPerSecond: percentiles(ids.map((i) => rates(a.get(i)!, b.get(i)!).cpuPerSecond))!,
    wakeupsPerSecond: percentiles(ids.map((i) => rates(a.get(i)!, b.get(i)!).wakeupsPerSecond))!,
  };
}

function summariseControl(a: ControlCounters, b: ControlCounters, n: number) {
  const seconds = (b.at - a.at) / 1000;
  const byKind: Record<string, number> = {};
  for (const [k, v] of Object.entries(b.byKind)) {
    const d = v - (a.byKind[k] ?? 0);
    if (d > 0) byKind[k] = Number((d / seconds).toFixed(3));
  }
  const requestsPerSecond = (b.requests - a.requests) / seconds;
  const bytes = b.bytesToServer - a.bytesToServer + (b.bytesFromServer - a.bytesFromServer);
  return {
    seconds,
    requestsPerSecond,
    requestsPerSecondPerNode: requestsPerSecond / n,
    bytesPerSecond: bytes / seconds,
    bytesPerSecondPerNode: bytes / seconds / n,
    byKind,
  };
}

function propagationJson(p: PropagationResult) {
  return { stats: p.stats, missing: p.missing, reference: p.reference, perNode: Object.fromEntries(p.perNode) };
}

function describePropagation(p: PropagationResult): string {
  const st = p.stats;
  return st ? `p50 ${st.p50} ms, p99 ${st.p99} ms, max ${st.max} ms over ${st.n} nodes${p.missing.length ? `; NOT seen: nodes ${p.missing.join(', ')}` : ''}` : 'nothing seen';
}

function renderMarkdown(r: Record<string, any>): string {
  const m = r.machine;
  const lines = [
    `# Scale: ${r.options.nodes} nodes, ${r.options.source}`,
    '',
    `\`npm run bench:scale -- --nodes ${r.options.nodes} --source ${r.options.source} --workers ${r.options.workers}${r.options.agentNode ? ` --agent-node ${r.options.agentNode}` : ''}\``,
    '',
    `Source ${m.gitDescribe}, ${m.date}; ${m.cpuCount} × ${m.cpuModel}, ${m.memoryGiB} GiB, kernel ${m.kernel}, Node ${m.node}${r.agentNodeVersion ? ` (the agents: Node ${r.agentNodeVersion})` : ''}. ` +
      `Load average ${m.loadAverageAtStart.toFixed(2)} at the start and ${Number(r.loadAfter ?? NaN).toFixed(2)} at the end ` +
      '(the machine is shared with other work: every time below includes waiting for a CPU).',
    '',
    `All ${r.options.nodes} agents (${r.options.workers} worker(s) each) started at once on a testbed built in ${r.testbedSeconds} s.`,
    '',
    '| figure | value |',
    '| --- | --- |',
    `| all agents ready | ${r.start?.allReadyMs} ms after the start |`,
    `| full mesh (every pod answered every other pod's ICMP echo) | ${r.start?.mesh.fullMeshMs ?? 'NOT reached'} ms after the start (${r.start?.mesh.reached}/${r.start?.mesh.pairs} pairs) |`,
  ];
  for (const [name, p] of [['join', r.join], ['leave', r.leave]] as const) {
    if (!p) continue;
    lines.push(`| ${name} propagation (data plane, ${p.reference}) | p50 ${p.stats?.p50} ms, p99 ${p.stats?.p99} ms, max ${p.stats?.max} ms over ${p.stats?.n} nodes${p.missing.length ? `; not seen: ${p.missing.join(', ')}` : ''} |`);
  }
  const i = r.idle;
  if (i) {
    lines.push(
      `| idle agent RSS (median / max) | ${mib(i.rssKiB.p50)} / ${mib(i.rssKiB.max)} MiB |`,
      `| idle agent anonymous / file-backed RSS (median) | ${mib(i.anonKiB.p50)} / ${mib(i.fileKiB.p50)} MiB |`,
      `| threads, descriptors (median) | ${i.threads.p50}, ${i.fds.p50} |`,
      `| idle CPU per agent (median / max) | ${(i.cpuPerSecond.p50 * 1000).toFixed(1)} / ${(i.cpuPerSecond.max * 1000).toFixed(1)} ms per second |`,
      `| idle wake-ups per agent (median / max) | ${i.wakeupsPerSecond.p50.toFixed(1)} / ${i.wakeupsPerSecond.max.toFixed(1)} per second |`,
    );
  }
  const c = r.control;
  if (c) {
    lines.push(
      `| control plane requests at steady state | ${c.requestsPerSecond.toFixed(2)}/s in all, ${c.requestsPerSecondPerNode.toFixed(3)}/s per node (${Object.entries(c.byKind).map(([k, v]) => `${k} ${v}/s`).join(', ') || 'none'}) |`,
      `| control plane bytes at steady state | ${c.bytesPerSecondPerNode.toFixed(0)} B/s per node (both directions) |`,
    );
    if (c.server) lines.push(`| control plane process | RSS ${mib(c.server.rssKiB)} MiB, CPU ${(c.server.cpuPerSecond * 1000).toFixed(1)} ms/s |`);
  }
  const tr = r.transfer;
  if (tr) {
    for (const a of tr.agents) {
      lines.push(`| agent ${a.node} during a ${tr.mib} MiB transfer (${tr.seconds.toFixed(1)} s, ${tr.intact ? 'intact' : 'CORRUPTED'}) | peak RSS ${mib(a.peak?.rssKiB ?? 0)} MiB (anon ${mib(a.peak?.anonKiB ?? 0)}), after ${mib(a.after?.rssKiB ?? 0)} MiB (anon ${mib(a.after?.anonKiB ?? 0)}), CPU ${a.cpuPerSecond.toFixed(2)} s/s |`);
    }
  }
  lines.push(
    '',
    'How each figure is taken: `bench/scale/scale-cluster.ts`. Propagation is the time from the lease change to the first (join) or last (leave)',
    `encapsulated datagram each node sent towards the joining node, seen by tcpdump on that node's underlay port while every pod pings its pod every 20 ms (resolution ±20 ms).`,
    '',
  );
  return lines.join('\n');
}
