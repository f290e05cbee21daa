#!/usr/bin/env node
// Regenerates captures/demo/: what crossed the user/kernel boundary on each
// node of the two-node demo (agent --capture), while pod 1 pinged pod 2
// twice, pinged an address no lease covers once, and sent a line over TCP.
// captures/README.md explains how to read the files; a unit test checks the
// committed files, an integration test regenerates them and checks the same.
//
//   node dist/src/testbed/capture-demo.js [output-dir]
import { mkdirSync, readdirSync, renameSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentCliPath, createCluster } from './cluster.js';
import { stopChild, waitForLine } from './exec.js';
import { ping } from './measure.js';

/** Runs the demo traffic through two agents with --capture and leaves output/node1 and output/node2. */
export async function captureDemo(output: string): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), 'flannel-udp-capture-demo-'));
  // Each agent needs its own directory, so the agents are started here rather than by the testbed.
  const cluster = await createCluster({ nodes: 2, dataplane: 'none' });
  try {
    const agents = [];
    for (const node of cluster.nodes()) {
      const agent = cluster.spawn(node.ns, process.execPath, [
        agentCliPath, 'up', '--subnet-file', node.subnetFile, '--leases', cluster.leasesFile,
        '--public-ip', node.underlayIp, '--workers', '1', '--capture', join(scratch, `node${node.index}`),
      ]);
      await waitForLine(agent, /flannel-udp agent ready/, 15_000);
      agents.push(agent);
    }
    const [pod1, pod2] = [cluster.pod(1), cluster.pod(2)];
    await ping(cluster, pod1.ns, pod2.ip, { count: 2, intervalS: 0.2 });
    await cluster.exec(pod1.ns, 'ping', ['-c', '1', '-W', '1', '10.244.9.9'], { allowFailure: true });
    const server = cluster.spawn(pod2.ns, process.execPath, [
      '-e', `require('net').createServer(s => s.pipe(s)).listen(7, '${pod2.ip}', () => console.log('listening'))`,
    ]);
    await waitForLine(server, /listening/, 10_000);
    // The client exits once the echo server has closed its side too: the whole exchange has crossed by then.
    await cluster.exec(pod1.ns, process.execPath, ['-e', `const s = require('net').connect(7, '${pod2.ip}', () => s.end('hello through flannel-udp\\n')); s.resume();`]);
    await stopChild(server, 'SIGTERM', 2000);
    for (const agent of agents) await stopChild(agent, 'SIGTERM', 5000); // closing flushes the captures
    rmSync(output, { recursive: true, force: true });
    mkdirSync(output, { recursive: true });
    for (const node of ['node1', 'node2']) {
      mkdirSync(join(output, node));
      for (const file of readdirSync(join(scratch, node))) renameSync(join(scratch, node, file), join(output, node, file));
    }
  } finally {
    await cluster.destroy();
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const output = resolve(process.argv[2] ?? 'captures/demo');
  await captureDemo(output);
  console.log(`wrote ${output}/node1 and ${output}/node2`);
}
