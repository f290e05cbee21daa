#!/usr/bin/env node
// The project's job end to end on its default setup: two nodes whose pods talk
// through the flannel-udp agent, measured with ping and iperf3.
//
//   node dist/src/testbed/demo.js [--backend udp|vxlan|host-gw|kernel-vxlan] [--workers N] [--seconds S]
//
// vxlan runs the agent in VXLAN mode (the testbed starts from flannel's kernel
// vxlan setup and puts the agent in place of the kernel on every node, keeping
// each VTEP MAC). host-gw and kernel-vxlan run the same measurements over the
// kernel's own data planes, as a reference for what the agent achieves.
//
// --dual-stack (udp or vxlan): the pods have IPv4 and IPv6 addresses, and ping,
// ping -6 and iperf3 run over both families through the same agents.
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { agentCliPath, checkPrerequisites, createCluster, type Dataplane } from './cluster.js';
import { run, type CapturedChild } from './exec.js';
import { replaceKernelVxlanWithAgent } from './vxlan-agents.js';
import { iperf3Tcp, ping, type PingResult } from './measure.js';

const BACKENDS: Record<string, Dataplane> = { udp: 'agent', vxlan: 'kernel-vxlan', 'host-gw': 'host-gw', 'kernel-vxlan': 'kernel-vxlan' };
const USAGE = 'usage: node dist/src/testbed/demo.js [--backend udp|vxlan|host-gw|kernel-vxlan] [--workers N] [--seconds S] [--dual-stack] [--trace] [--keep]\n  --dual-stack  IPv4 and IPv6 pods (udp or vxlan backend): ping, ping -6 and iperf3 over both families\n  --trace  also follow one ping through both agents (flannel-udp trace on each node)\n  --keep   leave the cluster up until Ctrl-C, to explore it (flannel-udp stats/trace in a node namespace)';

function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'udp' },
      workers: { type: 'string', default: '1' },
      seconds: { type: 'string', default: '5' },
      trace: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      'dual-stack': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const dataplane = BACKENDS[values.backend!];
  const workers = Number(values.workers);
  const seconds = Number(values.seconds);
  if (!dataplane) throw new UsageError(`unknown backend '${values.backend}'`);
  if (!Number.isInteger(workers) || workers < 1) throw new UsageError(`--workers must be a positive integer`);
  if (!Number.isFinite(seconds) || seconds < 1) throw new UsageError(`--seconds must be at least 1`);
  const dualStack = values['dual-stack']!;
  if (dualStack && values.backend !== 'udp' && values.backend !== 'vxlan') throw new UsageError(`--dual-stack runs with the agent only (--backend udp or vxlan)`);
  return { backend: values.backend!, dataplane, workers, seconds, trace: values.trace!, keep: values.keep!, dualStack };
}

class UsageError extends Error {}

/** Everything missing at once, each with what to do about it. */
async function missingPrerequisites(dataplane: Dataplane): Promise<string[]> {
  const missing: string[] = [];
  try {
    await checkPrerequisites();
  } catch (err) {
    missing.push((err as Error).message);
  }
  for (const [tool, args] of [['iperf3', ['--version']], ['ping', ['-V']]] as const) {
    try {
      await run(tool, args, { timeoutMs: 10_000 });
    } catch {
      missing.push(`${tool} is not installed (scripts/setup.sh installs it)`);
    }
  }
  if ((dataplane === 'agent' || dataplane === 'kernel-vxlan') && !existsSync(agentCliPath)) {
    missing.push(`the agent is not built: ${agentCliPath} is missing (npm run build)`);
  }
  return missing;
}

function formatPing(label: string, r: PingResult): string {
  const rtt = Number.isNaN(r.rttAvgMs) ? 'no replies' : `rtt min/avg/max ${r.rttMinMs}/${r.rttAvgMs}/${r.rttMaxMs} ms`;
  return `  ping ${label}: ${r.received}/${r.sent} replies, ${r.lossPct.toFixed(0)}% loss, ${rtt}`;
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseCommandLine();
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const missing = await missingPrerequisites(args.dataplane);
  if (missing.length) {
    console.error(`cannot run the demo:\n${missing.map((m) => `  - ${m}`).join('\n')}`);
    return 2;
  }

  console.log(`building a 2-node ${args.dualStack ? 'dual-stack ' : ''}cluster with backend '${args.backend}'...`);
  const cluster = await createCluster({ nodes: 2, dataplane: args.dataplane, workers: args.workers, ...(args.dualStack ? { ipFamilies: 'dual-stack' as const } : {}) });
  const agents = new Map<number, CapturedChild>();
  try {
    if (args.backend === 'vxlan') {
      for (const node of cluster.nodes()) {
        agents.set(node.index, await replaceKernelVxlanWithAgent(cluster, node.index, [], args.workers));
        console.log(`node ${node.index}: flannel.1 removed, agent --backend vxlan started with its VTEP MAC`);
      }
    }
    console.log(cluster.describe());
    const [pod1, pod2] = [cluster.pod(1), cluster.pod(2)];
    console.log('\nmeasuring:');
    const there = await ping(cluster, pod1.ns, pod2.ip, { count: 5, intervalS: 0.2 });
    console.log(formatPing(`pod1 ${pod1.ip} -> pod2 ${pod2.ip}`, there));
    const back = await ping(cluster, pod2.ns, pod1.ip, { count: 5, intervalS: 0.2 });
    console.log(formatPing(`pod2 ${pod2.ip} -> pod1 ${pod1.ip}`, back));

    let bitsPerSecond = 0;
    try {
      const tcp = await iperf3Tcp(cluster, pod2.ns, pod2.ip, pod1.ns, { seconds: args.seconds, streams: 1 });
      bitsPerSecond = tcp.bitsPerSecond;
      console.log(`  iperf3 TCP pod1 -> pod2, ${args.seconds} s: ${(tcp.bitsPerSecond / 1e9).toFixed(3)} Gbit/s, ${tcp.retransmits} retransmits`);
    } catch (err) {
      console.log(`  iperf3 TCP pod1 -> pod2 failed: ${(err as Error).message}`);
    }

    let ok6 = true;
    if (args.dualStack) {
      const there6 = await ping(cluster, pod1.ns, pod2.ip6!, { count: 5, intervalS: 0.2 });
      console.log(formatPing(`-6 pod1 ${pod1.ip6} -> pod2 ${pod2.ip6}`, there6));
      const back6 = await ping(cluster, pod2.ns, pod1.ip6!, { count: 5, intervalS: 0.2 });
      console.log(formatPing(`-6 pod2 ${pod2.ip6} -> pod1 ${pod1.ip6}`, back6));
      let bps6 = 0;
      try {
        const tcp6 = await iperf3Tcp(cluster, pod2.ns, pod2.ip6!, pod1.ns, { seconds: args.seconds, streams: 1 });
        bps6 = tcp6.bitsPerSecond;
        console.log(`  iperf3 TCP over IPv6 pod1 -> pod2, ${args.seconds} s: ${(tcp6.bitsPerSecond / 1e9).toFixed(3)} Gbit/s, ${tcp6.retransmits} retransmits`);
      } catch (err) {
        console.log(`  iperf3 TCP over IPv6 pod1 -> pod2 failed: ${(err as Error).message}`);
      }
      ok6 = there6.lossPct === 0 && back6.lossPct === 0 && bps6 > 0;
    }

    const ok = there.lossPct === 0 && back.lossPct === 0 && bitsPerSecond > 0 && ok6;
    if (!ok && (args.dataplane === 'agent' || agents.size > 0)) {
      for (const node of cluster.nodes()) {
        const agent = cluster.agent(node.index) ?? agents.get(node.index);
        console.log(`\nagent output on node ${node.index} (last lines):\n${agent?.log.tail(20) ?? '(none)'}`);
      }
    }
    if (args.trace && usesAgent(args)) await traceOnePing(cluster);
    const families = args.dualStack ? ' over IPv4 and IPv6' : '';
    console.log(ok ? `\nresult: OK (no ping loss, TCP moved data${families})` : `\nresult: FAILED (ping loss or no TCP data${families})`);
    if (args.keep) await keepUntilInterrupted(cluster);
    return ok ? 0 : 1;
  } finally {
    await cluster.destroy();
    console.log(`testbed ${cluster.id} removed`);
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);

function usesAgent(args: { dataplane: Dataplane; backend: string }): boolean {
  return args.dataplane === 'agent' || args.backend === 'vxlan';
}

/** The life of one ping, as each node's agent saw it (docs/guide.md explains every stage). */
async function traceOnePing(cluster: Awaited<ReturnType<typeof createCluster>>): Promise<void> {
  const [pod1, pod2] = [cluster.pod(1), cluster.pod(2)];
  let ended = 0;
  const traces = cluster.nodes().map((n) =>
    cluster
      .exec(n.ns, process.execPath, [agentCliPath, 'trace', '--filter', `icmp and host ${pod2.ip}`, '--limit', '2'], { timeoutMs: 20_000 })
      .finally(() => ended++),
  );
  for (const t of traces) t.catch(() => undefined); // rejections are awaited below, after the pings
  // One ping at a time until every trace client has seen its two packets: no guess at how long they take to attach.
  while (ended < traces.length) await cluster.exec(pod1.ns, 'ping', ['-c', '1', '-W', '1', pod2.ip], { allowFailure: true });
  const outputs = await Promise.all(traces);
  outputs.forEach((t, i) => console.log(`\ntrace on node ${i + 1} (flannel-udp trace --filter 'icmp and host ${pod2.ip}'):\n${t.stdout.trimEnd()}`));
}

/** --keep: the cluster stays until Ctrl-C (or SIGTERM); the finally block then removes it. */
function keepUntilInterrupted(cluster: Awaited<ReturnType<typeof createCluster>>): Promise<void> {
  const n1 = cluster.node(1).ns;
  console.log(`\ncluster kept. Try, in another terminal:
  ip netns exec ${n1} node ${agentCliPath} stats --watch 1
  ip netns exec ${n1} node ${agentCliPath} trace --filter icmp --limit 4
  ip netns exec ${cluster.pod(1).ns} ping -c 2 ${cluster.pod(2).ip}
press Ctrl-C to remove it.`);
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}
