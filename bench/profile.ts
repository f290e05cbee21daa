// Where an agent's CPU goes during one TCP stream, per node: kernel (inside
// its syscalls), our JavaScript (dist/src), and the rest (Node, V8, koffi,
// libc: the glue). Reruns the table of issue 23 (docs/profiling.md):
//
//   npm run build && node dist/bench/profile.js [--backend udp|vxlan] [--workers 2] [--seconds 6] [--mss N] [--top 12] [--agent-cli DIR/dist/src/cli.js]
//
// Needs root, perf (Debian: linux-perf) and iperf3. The agents run with
// NODE_OPTIONS=--perf-basic-prof so perf can name JIT-compiled JS frames;
// perf samples cpu-clock (a software event: works inside this VM) on each
// agent process for --seconds while one iperf3 stream runs from pod 1 to pod 2.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { createCluster } from '../src/testbed/cluster.js';
import type { CapturedChild } from '../src/testbed/exec.js';
import { iperf3Tcp } from '../src/testbed/measure.js';
import { replaceKernelVxlanWithAgent } from '../src/testbed/vxlan-agents.js';
import { classifyReport, formatShares } from './e2e/profile-shares.js';

const run = promisify(execFile);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'udp' },
      workers: { type: 'string', default: '2' },
      seconds: { type: 'string', default: '6' },
      mss: { type: 'string' },
      streams: { type: 'string', default: '1' },
      top: { type: 'string', default: '12' },
      'agent-cli': { type: 'string' },
    },
  });
  const seconds = Number(values.seconds);
  const workers = Number(values.workers);
  const vxlan = values.backend === 'vxlan';
  // Inherited by the agents the testbed spawns: JIT frames get names in /tmp/perf-<pid>.map.
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --perf-basic-prof`.trim();
  const dir = mkdtempSync(join(tmpdir(), 'flannel-udp-profile-'));
  const cluster = await createCluster({ nodes: 2, dataplane: vxlan ? 'kernel-vxlan' : 'agent', workers, agentCli: values['agent-cli'] });
  try {
    const agents: CapturedChild[] = [];
    for (const n of cluster.nodes()) {
      agents.push(vxlan ? await replaceKernelVxlanWithAgent(cluster, n.index, [], workers) : cluster.agent(n.index)!);
    }
    const client = cluster.pod(1);
    const server = cluster.pod(2);
    const stream = iperf3Tcp(cluster, server.ns, server.ip, client.ns, {
      seconds: seconds + 4, streams: Number(values.streams), mss: values.mss === undefined ? undefined : Number(values.mss),
    });
    stream.catch(() => {}); // awaited below; a failure must not end the process before the cleanup
    await new Promise((r) => setTimeout(r, 2000));
    const files = agents.map((_, i) => join(dir, `node${i + 1}.data`));
    await Promise.all(agents.map((a, i) => run('perf', ['record', '-q', '-e', 'cpu-clock', '-g', '-p', String(a.pid), '-o', files[i]!, '--', 'sleep', String(seconds)])));
    const result = await stream;
    process.stdout.write(`TCP ${values.streams} stream(s) ${(result.bitsPerSecond / 1e9).toFixed(2)} Gbit/s over ${seconds + 4} s (${values.backend}, ${workers} workers)\n`);
    for (const [i, file] of files.entries()) {
      const { stdout } = await run('perf', ['report', '-i', file, '--no-children', '--sort', 'sym', '--stdio', '-g', 'none', '--percent-limit', '0'], { maxBuffer: 64 << 20 });
      process.stdout.write(`\nnode ${i + 1} (${i === 0 ? 'sending' : 'receiving'}), agent pid ${agents[i]!.pid}\n`);
      process.stdout.write(formatShares(classifyReport(stdout), Number(values.top)) + '\n');
    }
  } finally {
    await cluster.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`profile: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
