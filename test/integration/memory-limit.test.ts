// The DaemonSet's memory limit, enforced for real: an agent in kube mode (as
// the DaemonSet runs it) with two workers, inside a memory cgroup whose limit
// is the manifest's (cgroup v2 memory.max, or v1 memory.limit_in_bytes where
// the host has the v1 hierarchy), forwards a TCP transfer in both directions;
// the data must arrive intact, the agent must still run, and the kernel must
// report no OOM kill in the cgroup. Its peak usage is printed.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentCliPath, createCluster, type Cluster } from '../../src/testbed/cluster.js';
import { type CapturedChild, isRunning, waitForLine } from '../../src/testbed/exec.js';
import { tcpTransfer } from '../support/pod-traffic.js';
import { StandInProcess, startKubeAgent } from '../support/kube-nodes.js';
import { kubeletNode } from '../support/kube-standin-kit.js';
import { container, only, readManifest } from '../support/deploy-manifest.js';

const limitText: string = container(only(readManifest().objects, 'DaemonSet').spec.template.spec, 'kube-flannel-udp').resources.limits.memory;
const LIMIT_BYTES = Number(/^(\d+)Mi$/.exec(limitText)![1]) * 2 ** 20;

/** A memory cgroup of our own: v2 if the unified hierarchy has the memory controller, else v1's. */
class MemoryCgroup {
  readonly dir: string;
  readonly v2: boolean;
  constructor(name: string, limit: number) {
    this.v2 = existsSync('/sys/fs/cgroup/cgroup.controllers') && readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').includes('memory');
    const root = this.v2 ? '/sys/fs/cgroup' : '/sys/fs/cgroup/memory';
    if (!existsSync(root)) throw new Error('no memory cgroup hierarchy at /sys/fs/cgroup (cgroup v2 with the memory controller, or v1 memory) to enforce the limit in');
    this.dir = join(root, name);
    mkdirSync(this.dir);
    writeFileSync(join(this.dir, this.v2 ? 'memory.max' : 'memory.limit_in_bytes'), String(limit));
  }
  oomKills(): number {
    const text = readFileSync(join(this.dir, this.v2 ? 'memory.events' : 'memory.oom_control'), 'utf8');
    return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0);
  }
  peakBytes(): number | undefined {
    const file = join(this.dir, this.v2 ? 'memory.peak' : 'memory.max_usage_in_bytes');
    return existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) : undefined;
  }
  procs(): number[] {
    return readFileSync(join(this.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }
  async remove(): Promise<void> {
    for (let i = 0; i < 50 && this.procs().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    rmdirSync(this.dir);
  }
}

const limit = suite(`the DaemonSet's memory limit (${limitText}): an agent with two workers forwards a transfer under it`);
let cluster: Cluster;
let api: StandInProcess;
let cgroup: MemoryCgroup | undefined;
let limited: CapturedChild;

limit.before(async () => {
  cluster = await createCluster({ nodes: 2, dataplane: 'none' });
  api = await StandInProcess.start(cluster);
  for (const i of [1, 2]) await api.admin.createNode(kubeletNode(`node-${i}`, cluster.node(i).underlayIp, cluster.node(i).subnet));
});

limit.after(async () => {
  await cluster?.destroy();
  await cgroup?.remove().catch(() => undefined);
});

limit('kube mode, two workers, in a memory cgroup of the limit: a transfer each way arrives intact, no OOM kill', async () => {
  const netConf = join(cluster.tempDir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } }));
  const kubeconfig = api.kubeconfig('flannel-udp');
  cgroup = new MemoryCgroup(`fut-${process.pid.toString(36)}-agent`, LIMIT_BYTES);
  const node = cluster.node(1);
  // The DaemonSet's arguments. Moved into the cgroup from here, at once (`ip netns exec` remounts /sys,
  // so the cgroup file system is not visible inside); the pid stays the agent's through the execs.
  limited = cluster.spawn(node.ns, 'env', [
    'NODE_NAME=node-1', process.execPath, agentCliPath, 'up', '--kube-subnet-mgr', '--kubeconfig-file', kubeconfig,
    '--net-config-path', netConf, '--subnet-file', node.subnetFile, '--public-ip', node.underlayIp, '--ip-masq', '--healthz-port=8081', '--workers', '2',
  ], { logFile: join(cluster.tempDir, 'agent-limited.log') });
  writeFileSync(join(cgroup.dir, 'cgroup.procs'), String(limited.pid));
  await waitForLine(limited, /flannel-udp agent ready/, 60_000);
  assert.ok(cgroup.procs().includes(limited.pid!), 'the agent runs inside the cgroup');
  await startKubeAgent(cluster, 2, { kubeconfig, netConf, env: { NODE_NAME: 'node-2' } });

  const bytes = 128 * 2 ** 20;
  for (const [from, to] of [[1, 2], [2, 1]]) {
    const r = await tcpTransfer(cluster, cluster.pod(from), cluster.pod(to), bytes, 180_000);
    assert.is(r.received.bytes, bytes, `pod${from} -> pod${to}`);
    assert.is(r.received.sha256, r.sent.sha256, `pod${from} -> pod${to} intact`);
  }
  assert.ok(isRunning(limited), `the agent under the limit is still running:\n${limited.log.tail()}`);
  assert.is(cgroup.oomKills(), 0, 'no OOM kill in the agent cgroup');
  const peak = cgroup.peakBytes();
  console.log(`    cgroup peak ${peak === undefined ? '?' : (peak / 2 ** 20).toFixed(1)} MiB of ${limitText} (cgroup ${cgroup.v2 ? 'v2' : 'v1'})`);
});

limit.run();
