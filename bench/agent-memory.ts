// What one agent costs in memory, and what each part of it costs: a 2-node
// namespace testbed (leases-file mode), each agent measured from /proc idle
// (after start, rehearsal included) and after a TCP transfer through it, for
// several configurations side by side in one run:
//   - the worker count (1, 2): what one worker thread (isolate + pools) adds;
//   - the same with NODE_OPTIONS variants (V8 flags, the libuv thread pool);
//   - a bare `node` process for the floor (the binary's own pages), and the
//     same with two empty worker threads (the floor of any 2-worker agent).
// Each variant prints RSS, anonymous, file-backed, threads and the transfer's
// duration, so a memory knob and its throughput cost are seen together.
//
//   npm run build && node dist/bench/agent-memory.js [--transfer-mib 128] [--only name,name] [--agent-node PATH]
//
// --agent-node: the Node.js binary the agents and the floors run on (e.g. the
// image's Node 24: see bench/idle-latency.ts for how to fetch it).
import { execFileSync, spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createCluster } from '../src/testbed/cluster.js';
import { tcpTransfer } from '../test/support/pod-traffic.js';
import { sampleProcess, type ProcSample } from './scale/proc-stats.js';
import { describeMachine } from './e2e/machine.js';

interface Variant {
  name: string;
  workers: number;
  env?: Record<string, string>;
  agentArgs?: string[];
}

const VARIANTS: Variant[] = [
  { name: '1 worker', workers: 1 },
  { name: '2 workers', workers: 2 },
  { name: '2 workers, NODE_OPTIONS=--max-semi-space-size=1', workers: 2, env: { NODE_OPTIONS: '--max-semi-space-size=1' } },
  { name: '2 workers, --v8-pool-size=1', workers: 2, env: { NODE_OPTIONS: '--v8-pool-size=1' } },
  { name: '2 workers, --batch 16', workers: 2, agentArgs: ['--batch', '16'] },
];

const { values } = parseArgs({
  options: { 'transfer-mib': { type: 'string', default: '128' }, only: { type: 'string' }, 'agent-node': { type: 'string' } },
});
const agentNode = values['agent-node'] ?? process.execPath;
const transferBytes = Number(values['transfer-mib']) * 2 ** 20;
const only = values.only?.split(',');

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

function describe(s: ProcSample): string {
  return `RSS ${mib(s.rssKiB)} MiB (anon ${mib(s.anonKiB)}, file ${mib(s.fileKiB)}), ${s.threads} threads`;
}

const EMPTY_WORKERS = `const { Worker } = require('node:worker_threads');
for (let i = 0; i < 2; i++) new Worker('setInterval(() => {}, 1e6)', { eval: true });
setTimeout(() => process.exit(0), 5000);`;

async function bareNode(workers: boolean): Promise<ProcSample> {
  const child = spawn(agentNode, ['-e', workers ? EMPTY_WORKERS : 'setTimeout(() => {}, 5000)'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 1500));
  const s = sampleProcess(child.pid!);
  child.kill();
  return s;
}

const machine = describeMachine();
const agentNodeVersion = execFileSync(agentNode, ['--version'], { encoding: 'utf8' }).trim();
console.log(`agent memory: ${machine.cpuCount} × ${machine.cpuModel}, agents on Node ${agentNodeVersion} (${agentNode}), source ${machine.gitDescribe}, load ${loadavg()[0].toFixed(2)}`);
console.log(`bare node process: ${describe(await bareNode(false))}`);
console.log(`bare node process with 2 empty worker threads: ${describe(await bareNode(true))}`);
const rows: Array<Record<string, string | number>> = [];
for (const v of VARIANTS) {
  if (only && !only.some((o) => v.name.includes(o))) continue;
  const saved = { ...process.env };
  Object.assign(process.env, v.env ?? {});
  const cluster = await createCluster({ nodes: 2, workers: v.workers, agentArgs: v.agentArgs, agentNode });
  process.env = saved;
  try {
    await new Promise((r) => setTimeout(r, 2000));
    const idle = [1, 2].map((i) => sampleProcess(cluster.agent(i)!.pid!));
    const r = await tcpTransfer(cluster, cluster.pod(1), cluster.pod(2), transferBytes, 300_000);
    if (r.received.sha256 !== r.sent.sha256) throw new Error(`${v.name}: transfer corrupted`);
    await new Promise((r) => setTimeout(r, 2000));
    const after = [1, 2].map((i) => sampleProcess(cluster.agent(i)!.pid!));
    const mbps = ((transferBytes * 8) / r.seconds / 1e6).toFixed(0);
    console.log(`${v.name}: idle ${describe(idle[0])}; after ${values['transfer-mib']} MiB (${mbps} Mbit/s): sender ${describe(after[0])}, receiver ${describe(after[1])}`);
    rows.push({
      variant: v.name,
      'idle RSS': mib(idle[0].rssKiB),
      'idle anon': mib(idle[0].anonKiB),
      'after RSS (max of 2)': mib(Math.max(after[0].rssKiB, after[1].rssKiB)),
      'after anon (max of 2)': mib(Math.max(after[0].anonKiB, after[1].anonKiB)),
      threads: after[0].threads,
      'transfer Mbit/s': mbps,
    });
  } finally {
    await cluster.destroy();
  }
}
console.table(rows);
console.log(`load average at the end ${loadavg()[0].toFixed(2)}`);
