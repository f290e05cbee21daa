// A miniature Kubernetes pod network built from network namespaces, shared by
// the demo, the integration tests and the benchmarks:
//
//   <id>-ul      underlay: bridge br0, one port per node (192.0.2.0/24)
//   <id>-n<i>    node i: eth0 = 192.0.2.i, bridge cni0 = 10.244.i.1/24, forwarding on
//   <id>-p<i>    pod k=0 on node i (k>0: <id>-p<i>-<k>): eth0 = 10.244.i.(k+2), via cni0
//
// and one of several data planes between the nodes. Everything it creates is
// recorded before it is used, so destroy() (or the process-wide safety net,
// on exit, signals and crashes) can remove it even after a half-built setup.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  run,
  runInNetns,
  signalGroup,
  spawnInNetns,
  stopChild,
  waitForLine,
  isRunning,
  type CapturedChild,
  type RunOptions,
  type RunResult,
} from './exec.js';

export type Dataplane = 'agent' | 'host-gw' | 'kernel-vxlan' | 'none';

export interface ClusterOptions {
  /** Number of nodes, 1..254; default 2. */
  nodes?: number;
  /** Pods per node; default 1. */
  podsPerNode?: number;
  /** Default 'agent' (this project's udp backend). */
  dataplane?: Dataplane;
  /** MTU of every node's eth0 and the underlay bridge; default 1500. */
  underlayMtu?: number;
  /** Pod (and cni0) MTU; default underlay minus the data plane's overhead (udp 28, vxlan 50, host-gw 0). */
  podMtu?: number;
  /** Agent --workers; default 1. */
  workers?: number;
  /** Extra arguments appended to every agent's command line. */
  agentArgs?: string[];
  /** How long to wait for "flannel-udp agent ready"; default 15 s. */
  agentReadyTimeoutMs?: number;
  /** Where agent logs go; default the cluster's temp dir (removed by destroy; the in-memory tail survives). */
  logDir?: string;
}

export interface NodeInfo {
  index: number;
  ns: string;
  underlayIp: string;
  /** The node's pod subnet in CIDR form, e.g. 10.244.1.0/24. */
  subnet: string;
  /** cni0's address, the pods' default gateway. */
  gateway: string;
  subnetFile: string;
}

export interface PodInfo {
  node: number;
  index: number;
  ns: string;
  ip: string;
}

export interface Cluster {
  readonly id: string;
  readonly dataplane: Dataplane;
  readonly nodeCount: number;
  readonly podsPerNode: number;
  readonly podMtu: number;
  readonly underlayMtu: number;
  readonly underlayNs: string;
  readonly tempDir: string;
  readonly leasesFile: string;
  /** Every namespace this cluster created, underlay first. */
  readonly namespaces: readonly string[];
  node(i: number): NodeInfo;
  nodes(): NodeInfo[];
  pod(i: number, k?: number): PodInfo;
  pods(): PodInfo[];
  /** Runs a command inside one of this cluster's namespaces (and only those). */
  exec(ns: string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running process in one of this cluster's namespaces; destroy() stops it. */
  spawn(ns: string, cmd: string, args: readonly string[], opts?: { logFile?: string }): CapturedChild;
  agent(i: number): CapturedChild | undefined;
  startAgent(i: number): Promise<void>;
  stopAgent(i: number, signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** A readable description of namespaces, addresses and processes. */
  describe(): string;
  /** Idempotent and best-effort: stops every process and removes every namespace and file. */
  destroy(): Promise<void>;
}

/** Every namespace name starts with this, followed by the owner's pid, so stale ones can be recognised. */
export const TESTBED_PREFIX = 'fut-';
const NAME_PATTERN = /^fut-([0-9a-z]+)-([0-9a-z]+)-/;

const CLUSTER_NETWORK = '10.244.0.0/16';
const UNDERLAY_PREFIX = '192.0.2';
const VXLAN_VNI = 1;
const VXLAN_PORT = 8472; // the Linux default, which flannel keeps unless configured
const AGENT_READY = /flannel-udp agent ready/;

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const agentCliPath = join(repoRoot, 'dist/src/cli.js');

let clusterCounter = 0;
const liveClusters = new Set<ClusterImpl>();

export async function createCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  await checkPrerequisites();
  installSafetyNet();
  if (!swept) {
    swept = true;
    await sweepStaleTestbeds();
  }
  const cluster = new ClusterImpl(opts);
  liveClusters.add(cluster);
  try {
    await cluster.build();
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}

/** Fails with a message that says what to do, rather than skipping silently. */
export async function checkPrerequisites(): Promise<void> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error('the namespace testbed needs root (it creates network namespaces): run as root, e.g. sudo');
  }
  try {
    await run('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  } catch (err) {
    throw new Error(`'ip netns' is unavailable (install iproute2; scripts/setup.sh does): ${(err as Error).message}`);
  }
}

function overheadFor(dataplane: Dataplane): number {
  // udp: outer IPv4 (20) + UDP (8). vxlan: those + VXLAN (8) + inner Ethernet (14).
  return dataplane === 'host-gw' ? 0 : dataplane === 'kernel-vxlan' ? 50 : 28;
}

/** Fixed per node so tests can recognise it: locally administered, unicast, "fu" in the middle. */
function vtepMac(i: number): string {
  return `0e:66:75:00:00:${i.toString(16).padStart(2, '0')}`;
}

class ClusterImpl implements Cluster {
  readonly id: string;
  readonly dataplane: Dataplane;
  readonly nodeCount: number;
  readonly podsPerNode: number;
  readonly podMtu: number;
  readonly underlayMtu: number;
  readonly underlayNs: string;
  readonly tempDir: string;
  readonly leasesFile: string;
  readonly namespaces: string[] = [];
  private readonly workers: number;
  private readonly agentArgs: string[];
  private readonly agentReadyTimeoutMs: number;
  private readonly logDir: string;
  private readonly agents = new Map<number, CapturedChild>();
  private readonly children = new Set<CapturedChild>();
  private destroying: Promise<void> | undefined;

  constructor(opts: ClusterOptions) {
    this.id = `${TESTBED_PREFIX}${process.pid.toString(36)}-${(clusterCounter++).toString(36)}`;
    this.dataplane = opts.dataplane ?? 'agent';
    this.nodeCount = opts.nodes ?? 2;
    this.podsPerNode = opts.podsPerNode ?? 1;
    this.underlayMtu = opts.underlayMtu ?? 1500;
    this.podMtu = opts.podMtu ?? this.underlayMtu - overheadFor(this.dataplane);
    this.workers = opts.workers ?? 1;
    this.agentArgs = opts.agentArgs ?? [];
    this.agentReadyTimeoutMs = opts.agentReadyTimeoutMs ?? 15_000;
    if (!Number.isInteger(this.nodeCount) || this.nodeCount < 1 || this.nodeCount > 254) {
      throw new Error(`nodes must be 1..254, got ${this.nodeCount}`);
    }
    if (!Number.isInteger(this.podsPerNode) || this.podsPerNode < 1 || this.podsPerNode > 253) {
      throw new Error(`podsPerNode must be 1..253, got ${this.podsPerNode}`);
    }
    this.underlayNs = `${this.id}-ul`;
    this.tempDir = mkdtempSync(join(tmpdir(), `${this.id}-`));
    this.logDir = opts.logDir ?? this.tempDir;
    this.leasesFile = join(this.tempDir, 'leases.json');
  }

  node(i: number): NodeInfo {
    if (!Number.isInteger(i) || i < 1 || i > this.nodeCount) throw new Error(`no node ${i} (nodes are 1..${this.nodeCount})`);
    return {
      index: i,
      ns: `${this.id}-n${i}`,
      underlayIp: `${UNDERLAY_PREFIX}.${i}`,
      subnet: `10.244.${i}.0/24`,
      gateway: `10.244.${i}.1`,
      subnetFile: join(this.tempDir, `subnet-n${i}.env`),
    };
  }

  nodes(): NodeInfo[] {
    return Array.from({ length: this.nodeCount }, (_, n) => this.node(n + 1));
  }

  pod(i: number, k = 0): PodInfo {
    this.node(i);
    if (!Number.isInteger(k) || k < 0 || k >= this.podsPerNode) throw new Error(`no pod ${k} on node ${i} (pods are 0..${this.podsPerNode - 1})`);
    // .1 is cni0, so pod k gets .(k+2).
    return { node: i, index: k, ns: k === 0 ? `${this.id}-p${i}` : `${this.id}-p${i}-${k}`, ip: `10.244.${i}.${k + 2}` };
  }

  pods(): PodInfo[] {
    return this.nodes().flatMap((n) => Array.from({ length: this.podsPerNode }, (_, k) => this.pod(n.index, k)));
  }

  exec(ns: string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    this.assertOwn(ns);
    return runInNetns(ns, cmd, args, opts);
  }

  spawn(ns: string, cmd: string, args: readonly string[], opts: { logFile?: string } = {}): CapturedChild {
    this.assertOwn(ns);
    if (this.destroying) throw new Error(`cluster ${this.id} is being destroyed`);
    const child = spawnInNetns(ns, cmd, args, opts);
    this.children.add(child);
    void child.exited.then(() => this.children.delete(child));
    return child;
  }

  agent(i: number): CapturedChild | undefined {
    return this.agents.get(i);
  }

  async startAgent(i: number): Promise<void> {
    const node = this.node(i);
    const running = this.agents.get(i);
    if (running && isRunning(running)) throw new Error(`the agent on node ${i} is already running (pid ${running.pid})`);
    if (!existsSync(agentCliPath)) {
      throw new Error(`agent not built: ${agentCliPath} is missing (run npm run build)`);
    }
    const args = [
      agentCliPath, 'up',
      '--subnet-file', node.subnetFile,
      '--leases', this.leasesFile,
      '--public-ip', node.underlayIp,
      '--workers', String(this.workers),
      ...this.agentArgs,
    ];
    const child = this.spawn(node.ns, process.execPath, args, { logFile: join(this.logDir, `agent-n${i}.log`) });
    this.agents.set(i, child);
    try {
      await waitForLine(child, AGENT_READY, this.agentReadyTimeoutMs);
    } catch (err) {
      await stopChild(child, 'SIGKILL');
      throw new Error(`agent on node ${i} (${node.ns}) did not become ready: ${(err as Error).message}`);
    }
  }

  async stopAgent(i: number, signal: NodeJS.Signals = 'SIGTERM') {
    const child = this.agents.get(i);
    if (!child) throw new Error(`no agent was started on node ${i}`);
    return stopChild(child, signal, 5000);
  }

  describe(): string {
    const lines = [
      `testbed ${this.id}: ${this.nodeCount} node(s), ${this.podsPerNode} pod(s) per node, data plane '${this.dataplane}'`,
      `  cluster network ${CLUSTER_NETWORK}, pod MTU ${this.podMtu}, underlay MTU ${this.underlayMtu}`,
      `  ${'underlay'.padEnd(10)}${this.underlayNs.padEnd(20)}bridge br0 joining every node's eth0 (${UNDERLAY_PREFIX}.0/24)`,
    ];
    for (const node of this.nodes()) {
      const agent = this.agents.get(node.index);
      const plane =
        this.dataplane === 'agent'
          ? `agent pid ${agent?.pid ?? '-'}${agent && !isRunning(agent) ? ' (exited)' : ''}`
          : this.dataplane === 'kernel-vxlan'
            ? `flannel.1 vxlan vni ${VXLAN_VNI} mac ${vtepMac(node.index)}`
            : this.dataplane === 'host-gw'
              ? 'host-gw routes via eth0'
              : 'no data plane';
      lines.push(`  ${`node ${node.index}`.padEnd(10)}${node.ns.padEnd(20)}eth0 ${node.underlayIp}/24, cni0 ${node.gateway}/24, ${plane}`);
      for (let k = 0; k < this.podsPerNode; k++) {
        const pod = this.pod(node.index, k);
        lines.push(`    ${`pod ${node.index}.${k}`.padEnd(8)}${pod.ns.padEnd(20)}eth0 ${pod.ip}/24 via ${node.gateway}`);
      }
    }
    lines.push(`  ${'files'.padEnd(10)}${this.tempDir} (subnet-n<i>.env, leases.json)`);
    return lines.join('\n');
  }

  async build(): Promise<void> {
    await this.addNamespace(this.underlayNs);
    await this.ip(this.underlayNs, 'link', 'set', 'lo', 'up');
    await this.ip(this.underlayNs, 'link', 'add', 'br0', 'mtu', String(this.underlayMtu), 'type', 'bridge');
    await this.ip(this.underlayNs, 'link', 'set', 'br0', 'up');
    for (const node of this.nodes()) await this.buildNode(node);
    this.writeFlannelFiles();
    if (this.dataplane === 'host-gw') for (const node of this.nodes()) await this.programHostGw(node);
    if (this.dataplane === 'kernel-vxlan') for (const node of this.nodes()) await this.programVxlan(node);
    if (this.dataplane === 'agent') await Promise.all(this.nodes().map((n) => this.startAgent(n.index)));
  }

  private async buildNode(node: NodeInfo): Promise<void> {
    const { ns, index: i } = node;
    const ul = this.underlayNs;
    await this.addNamespace(ns);
    await this.ip(ns, 'link', 'set', 'lo', 'up');
    await this.exec(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    // The underlay end is named after the node; the node end is plain eth0, as on a real host.
    await this.ip(ul, 'link', 'add', `n${i}`, 'mtu', String(this.underlayMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await this.ip(ul, 'link', 'set', `n${i}`, 'master', 'br0', 'up');
    await this.ip(ns, 'link', 'set', 'eth0', 'mtu', String(this.underlayMtu), 'up');
    await this.ip(ns, 'addr', 'add', `${node.underlayIp}/24`, 'dev', 'eth0');
    await this.ip(ns, 'link', 'add', 'cni0', 'mtu', String(this.podMtu), 'type', 'bridge');
    await this.ip(ns, 'addr', 'add', `${node.gateway}/24`, 'dev', 'cni0');
    await this.ip(ns, 'link', 'set', 'cni0', 'up');
    for (let k = 0; k < this.podsPerNode; k++) await this.buildPod(node, this.pod(i, k));
  }

  private async buildPod(node: NodeInfo, pod: PodInfo): Promise<void> {
    const hostSide = `veth${pod.index}`;
    await this.addNamespace(pod.ns);
    await this.ip(pod.ns, 'link', 'set', 'lo', 'up');
    await this.ip(node.ns, 'link', 'add', hostSide, 'mtu', String(this.podMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.ns);
    await this.ip(node.ns, 'link', 'set', hostSide, 'master', 'cni0', 'up');
    await this.ip(pod.ns, 'link', 'set', 'eth0', 'mtu', String(this.podMtu), 'up');
    await this.ip(pod.ns, 'addr', 'add', `${pod.ip}/24`, 'dev', 'eth0');
    await this.ip(pod.ns, 'route', 'add', 'default', 'via', node.gateway);
  }

  /** What flanneld would leave for the CNI plugin and keep in its store. */
  private writeFlannelFiles(): void {
    const backendType = this.dataplane === 'host-gw' ? 'host-gw' : this.dataplane === 'kernel-vxlan' ? 'vxlan' : 'udp';
    const leases: Record<string, object> = {};
    for (const node of this.nodes()) {
      writeFileSync(
        node.subnetFile,
        `FLANNEL_NETWORK=${CLUSTER_NETWORK}\nFLANNEL_SUBNET=${node.gateway}/24\nFLANNEL_MTU=${this.podMtu}\nFLANNEL_IPMASQ=false\n`,
      );
      leases[node.subnet.replace('/', '-')] = {
        PublicIP: node.underlayIp,
        BackendType: backendType,
        ...(backendType === 'vxlan' ? { BackendData: { VNI: VXLAN_VNI, VtepMAC: vtepMac(node.index) } } : {}),
      };
    }
    writeFileSync(this.leasesFile, JSON.stringify(leases, null, 2) + '\n');
  }

  /** flannel's host-gw backend: a plain route per remote subnet via the remote node's public IP. */
  private async programHostGw(node: NodeInfo): Promise<void> {
    for (const peer of this.nodes()) {
      if (peer.index === node.index) continue;
      await this.ip(node.ns, 'route', 'replace', peer.subnet, 'via', peer.underlayIp, 'dev', 'eth0');
    }
  }

  /**
   * flannel's vxlan backend (pkg/backend/vxlan): device flannel.<vni> bound to
   * the public interface, no learning, MTU = eth0 - 50, the subnet's .0 as a
   * /32 (so no broadcast routes appear), then per remote lease a permanent ARP
   * entry, an FDB entry and last the onlink route (the route goes last so the
   * kernel never has to ARP for the gateway). flannel uses replace semantics
   * (netlink NeighSet / RouteReplace) for all three.
   */
  private async programVxlan(node: NodeInfo): Promise<void> {
    const { ns, index: i } = node;
    const dev = `flannel.${VXLAN_VNI}`;
    await this.ip(ns, 'link', 'add', dev, 'address', vtepMac(i), 'mtu', String(this.underlayMtu - 50),
      'type', 'vxlan', 'id', String(VXLAN_VNI), 'dev', 'eth0', 'local', node.underlayIp, 'dstport', String(VXLAN_PORT), 'nolearning');
    // flannel sets this too and ignores failure (IPv6 may be disabled).
    await this.exec(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev.replace('.', '/')}.accept_ra=0`]).catch(() => undefined);
    await this.ip(ns, 'addr', 'add', `10.244.${i}.0/32`, 'dev', dev);
    await this.ip(ns, 'link', 'set', dev, 'up');
    for (const peer of this.nodes()) {
      if (peer.index === i) continue;
      const vtepIp = `10.244.${peer.index}.0`;
      await this.ip(ns, 'neigh', 'replace', vtepIp, 'lladdr', vtepMac(peer.index), 'dev', dev, 'nud', 'permanent');
      await this.exec(ns, 'bridge', ['fdb', 'replace', vtepMac(peer.index), 'dev', dev, 'dst', peer.underlayIp, 'self', 'permanent']);
      await this.ip(ns, 'route', 'replace', peer.subnet, 'via', vtepIp, 'dev', dev, 'onlink');
    }
  }

  private async addNamespace(ns: string): Promise<void> {
    // Recorded first: if `ip netns add` half-succeeds, cleanup still tries.
    this.namespaces.push(ns);
    await run('ip', ['netns', 'add', ns]);
  }

  private ip(ns: string, ...args: string[]): Promise<RunResult> {
    this.assertOwn(ns);
    return run('ip', ['-n', ns, ...args]);
  }

  private assertOwn(ns: string): void {
    if (!this.namespaces.includes(ns)) throw new Error(`${ns} is not a namespace of testbed ${this.id}`);
  }

  destroy(): Promise<void> {
    this.destroying ??= this.destroyAsync();
    return this.destroying;
  }

  private async destroyAsync(): Promise<void> {
    // Give processes (the agent above all) a chance to shut down cleanly, then insist.
    await Promise.all([...this.children].map((c) => stopChild(c, 'SIGTERM', 3000).catch(() => undefined)));
    for (const ns of [...this.namespaces].reverse()) {
      await killPidsInNetns(ns);
      await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 }).catch(() => undefined);
    }
    rmSync(this.tempDir, { recursive: true, force: true });
    liveClusters.delete(this);
  }

  /** For the exit/signal path, where only synchronous work runs to completion. */
  destroySync(): void {
    for (const child of this.children) signalGroup(child, 'SIGKILL');
    for (const ns of [...this.namespaces].reverse()) {
      killPidsInNetnsSync(ns);
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
      } catch {
        /* already gone */
      }
    }
    rmSync(this.tempDir, { recursive: true, force: true });
    liveClusters.delete(this);
  }
}

// Processes left inside one of our namespaces would keep it alive after
// `ip netns del` (which only unmounts its name); nothing but this code starts
// processes there, so any pid found inside is ours to end.
async function killPidsInNetns(ns: string): Promise<void> {
  const out = await run('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 }).catch(() => undefined);
  for (const pid of parsePids(out?.stdout ?? '')) killPid(pid);
}

function killPidsInNetnsSync(ns: string): void {
  let out = '';
  try {
    out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
  } catch {
    return;
  }
  for (const pid of parsePids(out)) killPid(pid);
}

function parsePids(text: string): number[] {
  return text.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number).filter((pid) => pid !== process.pid);
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone already */
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let swept = false;

/**
 * Removes namespaces (and the processes in them) that an earlier run of this
 * code left behind when it was killed too hard to clean up. Only names with
 * our marker whose owning pid is no longer alive are touched, so parallel
 * runs keep theirs. Returns the names removed.
 */
export async function sweepStaleTestbeds(prefix = TESTBED_PREFIX): Promise<string[]> {
  if (!prefix.startsWith(TESTBED_PREFIX)) throw new Error(`refusing to sweep namespaces outside the ${TESTBED_PREFIX} marker`);
  const out = await run('ip', ['netns', 'list']);
  const removed: string[] = [];
  for (const line of out.stdout.split('\n')) {
    const ns = line.split(/\s+/)[0];
    const match = ns ? NAME_PATTERN.exec(ns) : null;
    if (!ns || !match || !ns.startsWith(prefix)) continue;
    const owner = parseInt(match[1]!, 36);
    if (owner === process.pid || isAlive(owner)) continue;
    await killPidsInNetns(ns);
    await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    removed.push(ns);
  }
  // Temp dirs are named after the cluster id too.
  if (removed.length) {
    const ids = new Set(removed.map((ns) => ns.replace(/-(ul|n\d+|p\d+(-\d+)?)$/, '')));
    for (const name of readdirSync(tmpdir())) {
      const id = [...ids].find((c) => name.startsWith(`${c}-`));
      if (id) rmSync(join(tmpdir(), name), { recursive: true, force: true });
    }
  }
  return removed;
}

let safetyNetInstalled = false;
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Once per process: whatever ends it, live clusters are torn down first. On
 * a signal the normal asynchronous destroy runs (so stopped processes are
 * reaped rather than left as zombies), bounded in time; 'exit' and crashes
 * only allow synchronous work, so they SIGKILL and delete namespaces directly.
 */
function installSafetyNet(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  const destroyAllSync = () => {
    for (const cluster of [...liveClusters]) cluster.destroySync();
  };
  process.on('exit', destroyAllSync);
  // The monitor observes without changing how the crash is reported.
  process.on('uncaughtExceptionMonitor', destroyAllSync);

  let cleaning = false;
  const reraise = (signal: NodeJS.Signals) => {
    for (const s of SIGNALS) process.off(s, onSignal);
    // Nobody else listening: die of the signal, as the process would have without us.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (cleaning) {
      // A second signal while cleaning up: stop waiting.
      destroyAllSync();
      reraise(signal);
      return;
    }
    cleaning = true;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      destroyAllSync();
      reraise(signal);
    };
    const timer = setTimeout(finish, 8000);
    void Promise.allSettled([...liveClusters].map((c) => c.destroy())).then(finish);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
}
