// A miniature Kubernetes pod network built from network namespaces, shared by
// the demo, the integration tests and the benchmarks:
//
//   <id>-ul      underlay: bridge br0, one port per node (192.0.2.0/24)
//   <id>-n<i>    node i: eth0 = 192.0.2.i, bridge cni0 = 10.244.i.1/24, forwarding on
//   <id>-p<i>    pod k=0 on node i (k>0: <id>-p<i>-<k>): eth0 = an address of 10.244.i.0/24, via cni0
//
// Dual-stack (ipFamilies 'dual-stack'): each node also has fd00:10:244:i::/64
// of fd00:10:244::/48 in subnet.env and its lease key, and each pod an IPv6
// address in it with a default IPv6 route via cni0's fd00:10:244:i::1, as
// flannel's CNI with dual-stack ranges gives them (added here when the CNI
// result has no IPv6 address). 'ipv6-only': no IPv4 pod network at all;
// subnet.env has only the IPv6 keys, the leases the zero IPv4 half
// (0.0.0.0-0&…), and pods are wired the way the bridge plugin wires them
// (cni0, a veth per pod, the IPv6 address and route), without the CNI chain.
//
// and one of several data planes between the nodes. Pods are wired the way
// kubelet's runtime wires them: each node has flannel's subnet.env and
// kube-flannel's conflist, and every pod is an ADD through that chain (our
// flannel plugin → the reference bridge + host-local, then portmap), run in
// the node's namespace; the bridge plugin creates cni0 and the veth, and
// host-local picks the address. destroy() answers each with a DEL.
// Everything it creates is recorded before it is used, so destroy() (or the
// process-wide safety net, on exit, signals and crashes) can remove it even
// after a half-built setup. Nothing is written outside the cluster's temp dir:
// the plugin's saved configurations and host-local's reservations go there too.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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
import {
  addNetworkList,
  delNetworkList,
  hostInterface,
  sandboxAddress,
  loadConfList,
  type Attachment,
  type CniResult,
  type ConfList,
  type PluginRunner,
  type PortMapping,
} from '../cni/chain.js';
import { CONFLIST_FILE, installCni, pluginMainPath } from '../cni/install.js';

export type Dataplane = 'agent' | 'host-gw' | 'kernel-vxlan' | 'reference' | 'none';
/** The planes that speak flannel's udp wire format, so nodes running different ones interoperate. */
export type UdpWireDataplane = 'agent' | 'reference';

export interface ClusterOptions {
  /** Number of nodes, 1..254; default 2. */
  nodes?: number;
  /** Pods per node; default 1. 0: none, for a test that adds its pods through another CNI configuration. */
  podsPerNode?: number;
  /**
   * Default 'agent' (this project's udp backend). 'reference' is the
   * independent forwarder bench/reference/udp_proxy.py (flannel's C proxy's
   * structure and wire format, none of our code).
   */
  dataplane?: Dataplane;
  /**
   * Per node, a different udp-wire plane than `dataplane` (which must then be
   * one too), e.g. { 1: 'reference' } for an interop pair.
   */
  nodeDataplanes?: Partial<Record<number, UdpWireDataplane>>;
  /** MTU of every node's eth0 and the underlay bridge; default 1500. */
  underlayMtu?: number;
  /** Pod (and cni0) MTU; default underlay minus the data plane's overhead (udp 28, vxlan 50, host-gw 0). */
  podMtu?: number;
  /** Agent --workers; default 1. */
  workers?: number;
  /** Extra arguments appended to every agent's command line. */
  agentArgs?: string[];
  /** The agent's cli.js; default this tree's dist/src/cli.js (the benchmark points it at another build to compare). */
  agentCli?: string;
  /** The Node.js binary the agents run on; default the one running this code (the benchmark compares Node versions). */
  agentNode?: string;
  /** Node.js/V8 options placed before the agent's cli.js (e.g. --no-maglev); default none. */
  agentNodeArgs?: string[];
  /** How long to wait for "flannel-udp agent ready"; default 15 s. */
  agentReadyTimeoutMs?: number;
  /** Where agent logs go; default the cluster's temp dir (removed by destroy; the in-memory tail survives). */
  logDir?: string;
  /**
   * FLANNEL_IPMASQ in every subnet.env; default true, as flanneld runs in
   * kube-flannel.yml (--ip-masq). The flannel plugin gives the bridge
   * ipMasq = !FLANNEL_IPMASQ, so with false the bridge plugin masquerades
   * everything a pod sends outside its own node's subnet, pod-to-pod
   * traffic across nodes included.
   */
  ipMasq?: boolean;
  /** Pod address families: 'ipv4' (default), 'dual-stack', or 'ipv6-only'; agents only (and 'dual-stack' with 'kernel-vxlan'). */
  ipFamilies?: IpFamilies;
  /**
   * The underlay's families: 'ipv4' (default: 192.0.2.i on eth0), 'dual-stack'
   * (and 2001:db8::i/64, each lease with PublicIPv6, agents with
   * --public-ipv6), or 'ipv6' (2001:db8::i only, leases with PublicIP
   * 0.0.0.0; an 'ipv6-only' cluster of agents). Kernel vxlan on an IPv6
   * underlay gets flanneld's second device, flannel-v6.1 (programVxlan6Device).
   */
  underlay?: UnderlayFamilies;
}

export type IpFamilies = 'ipv4' | 'dual-stack' | 'ipv6-only';
export type UnderlayFamilies = 'ipv4' | 'dual-stack' | 'ipv6';

export interface NodeInfo {
  index: number;
  ns: string;
  /** eth0's IPv4 address, the lease's PublicIP ('' over an IPv6-only underlay). */
  underlayIp: string;
  /** eth0's IPv6 address, the lease's PublicIPv6 (2001:db8::i; '' over an IPv4-only underlay). */
  underlayIp6: string;
  /** The node's pod subnet in CIDR form, e.g. 10.244.1.0/24. */
  subnet: string;
  /** cni0's address, the pods' default gateway. */
  gateway: string;
  /** Dual-stack or IPv6-only: the node's IPv6 pod subnet (fd00:10:244:i::/64) and cni0's IPv6 address, the pods' IPv6 gateway. */
  subnet6: string;
  gateway6: string;
  subnetFile: string;
  /** This node's conflist: kube-flannel's, with subnetFile and both data dirs pointed into the temp dir. */
  confListFile: string;
  /** The flannel plugin's dataDir: one saved delegate configuration per pod. */
  cniDataDir: string;
  /** host-local's dataDir: one file per reserved address, under the network name (cbr0). */
  ipamDataDir: string;
}

export interface PodInfo {
  node: number;
  index: number;
  ns: string;
  /** The address host-local gave the pod's eth0 (read from the ADD result); '' on an IPv6-only cluster. */
  ip: string;
  /** Dual-stack or IPv6-only: the pod's IPv6 address; undefined on an IPv4 cluster. */
  ip6?: string;
  /** CNI_CONTAINERID the pod was added with (the namespace's name). */
  containerId: string;
  /** The host end of the pod's veth, named and attached to cni0 by the bridge plugin. */
  hostVeth: string;
  /** What the chain answered to ADD: the result a runtime caches for CHECK and DEL. */
  result: CniResult;
}

/** A namespace named like a pod of node `node`, with no network yet: for driving CNI plugins by hand. */
export interface PodNamespace {
  node: number;
  index: number;
  ns: string;
  /** CNI_NETNS for it. */
  netnsPath: string;
}

export interface AddPodOptions {
  /** hostPort mappings, handed to portmap as runtimeConfig.portMappings (kubelet does this for a pod's hostPorts). */
  portMappings?: PortMapping[];
  /** Run the chain with this cniVersion instead of the conflist's 0.3.1. */
  cniVersion?: string;
}

export interface Cluster {
  readonly id: string;
  readonly dataplane: Dataplane;
  readonly nodeCount: number;
  readonly podsPerNode: number;
  readonly podMtu: number;
  readonly underlayMtu: number;
  readonly ipFamilies: IpFamilies;
  readonly underlay: UnderlayFamilies;
  readonly underlayNs: string;
  readonly tempDir: string;
  readonly leasesFile: string;
  /** The agent's cli.js this cluster starts (ClusterOptions.agentCli). */
  readonly agentCli: string;
  readonly agentNode: string;
  readonly agentNodeArgs: string[];
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
  /** The data plane node i runs: `dataplane`, unless nodeDataplanes says otherwise. */
  planeOf(i: number): Dataplane;
  /** The reference forwarder of node i, if it runs one. */
  reference(i: number): CapturedChild | undefined;
  /** CNI_PATH of every node: the dir with our `flannel` (installed by install-cni), then the reference plugins. */
  readonly cniPath: readonly string[];
  /** Runs CNI plugins in node i's namespace, as the runtime on that node does. */
  cniRunner(i: number): PluginRunner;
  /** Node i's conflist, parsed. */
  confList(i: number): ConfList;
  /** One more pod on node i, through the CNI chain; destroy() deletes it. */
  addPod(i: number, opts?: AddPodOptions): Promise<PodInfo>;
  /** CNI DEL through the chain, then the pod's namespace is removed. */
  removePod(pod: PodInfo): Promise<void>;
  /** A pod namespace on node i without any network; destroy() removes it. */
  addPodNamespace(i: number): Promise<PodNamespace>;
  startAgent(i: number): Promise<void>;
  /**
   * A hand-over, as a DaemonSet rolling update with maxSurge does it: a new
   * agent starts while the old one runs, and once it is ready the old one
   * gets SIGTERM. Resolves when the old one has exited.
   */
  handOverAgent(i: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
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
const CLUSTER_NETWORK6 = 'fd00:10:244::/48';
const UNDERLAY_PREFIX = '192.0.2';
const UNDERLAY6_PREFIX = '2001:db8::'; // the documentation prefix, as 192.0.2.0/24 is IPv4's
const VXLAN_VNI = 1;
const VXLAN_PORT = 8472; // the Linux default, which flannel keeps unless configured
const AGENT_READY = /flannel-udp agent ready/;
const REFERENCE_READY = /reference udp proxy ready/;
const UDP_PORT = 8285;
/** Debian's containernetworking-plugins puts the reference plugins here. */
export const REFERENCE_PLUGIN_DIR = '/usr/lib/cni';
const REFERENCE_PLUGINS = ['bridge', 'host-local', 'portmap'];
const POD_IFNAME = 'eth0';
const BRIDGE = 'cni0';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const agentCliPath = join(repoRoot, 'dist/src/cli.js');
/** Run from the source tree: it is Python, nothing compiles it. */
export const referenceProxyPath = join(repoRoot, 'bench/reference/udp_proxy.py');

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
  const missing = REFERENCE_PLUGINS.map((p) => join(REFERENCE_PLUGIN_DIR, p)).filter((p) => !existsSync(p));
  if (missing.length > 0) {
    throw new Error(`the CNI reference plugins are missing (${missing.join(', ')}): install Debian's containernetworking-plugins (scripts/setup.sh does)`);
  }
  try {
    await run('iptables', ['--version'], { timeoutMs: 10_000 });
  } catch {
    throw new Error('iptables is missing (the bridge and portmap CNI plugins need it): install iptables (scripts/setup.sh does)');
  }
  if (!existsSync(pluginMainPath)) throw new Error(`the flannel CNI plugin is not built: ${pluginMainPath} is missing (run npm run build)`);
}

async function checkReferencePrerequisites(): Promise<void> {
  if (!existsSync(referenceProxyPath)) throw new Error(`the reference forwarder is missing: ${referenceProxyPath}`);
  try {
    await run('python3', ['--version'], { timeoutMs: 10_000 });
  } catch {
    throw new Error('python3 is missing (the reference forwarder is a Python program): install python3 (scripts/setup.sh does)');
  }
}

function overheadFor(dataplane: Dataplane): number {
  // udp: outer IPv4 (20) + UDP (8). vxlan: those + VXLAN (8) + inner Ethernet (14).
  return dataplane === 'host-gw' ? 0 : dataplane === 'kernel-vxlan' ? 50 : 28;
}

/** The agent's --public-ip / --public-ipv6 for the node's underlay addresses. */
export function underlayArgs(node: NodeInfo): string[] {
  return [...(node.underlayIp ? ['--public-ip', node.underlayIp] : []), ...(node.underlayIp6 ? ['--public-ipv6', node.underlayIp6] : [])];
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
  readonly ipFamilies: IpFamilies;
  readonly underlay: UnderlayFamilies;
  readonly underlayNs: string;
  readonly tempDir: string;
  readonly leasesFile: string;
  readonly namespaces: string[] = [];
  readonly cniPath: readonly string[];
  private readonly ipMasq: boolean;
  private readonly cniBinDir: string;
  private readonly workers: number;
  private readonly agentArgs: string[];
  readonly agentCli: string;
  readonly agentNode: string;
  readonly agentNodeArgs: string[];
  private readonly agentReadyTimeoutMs: number;
  private readonly logDir: string;
  private readonly agents = new Map<number, CapturedChild>();
  private readonly references = new Map<number, CapturedChild>();
  private readonly nodeDataplanes: Partial<Record<number, UdpWireDataplane>>;
  private readonly children = new Set<CapturedChild>();
  private destroying: Promise<void> | undefined;
  /** Created pods by "node/index", in creation order. */
  private readonly podTable = new Map<string, PodInfo>();
  /** Every CNI attachment made (or attempted: recorded before ADD), for destroy()'s DEL. */
  private readonly attachments = new Map<string, { node: number; list: ConfList; att: Attachment; result?: CniResult }>();
  private readonly nextPodIndex = new Map<number, number>();
  private readonly confLists = new Map<number, ConfList>();

  constructor(opts: ClusterOptions) {
    this.id = `${TESTBED_PREFIX}${process.pid.toString(36)}-${(clusterCounter++).toString(36)}`;
    this.dataplane = opts.dataplane ?? 'agent';
    this.nodeCount = opts.nodes ?? 2;
    this.podsPerNode = opts.podsPerNode ?? 1;
    this.underlayMtu = opts.underlayMtu ?? 1500;
    this.podMtu = opts.podMtu ?? this.underlayMtu - overheadFor(this.dataplane);
    this.ipFamilies = opts.ipFamilies ?? 'ipv4';
    this.underlay = opts.underlay ?? 'ipv4';
    if (this.underlay !== 'ipv4' && this.ipFamilies === 'ipv4') throw new Error(`underlay '${this.underlay}' needs IPv6 pods (ipFamilies 'dual-stack' or 'ipv6-only')`);
    if (this.underlay === 'ipv6' && (this.ipFamilies !== 'ipv6-only' || this.dataplane !== 'agent')) {
      throw new Error("an IPv6-only underlay carries an 'ipv6-only' cluster of agents only");
    }
    // Kernel vxlan carries dual-stack too (programVxlan), and its nodes can be handed to agents (vxlan-agents.ts).
    const dualStackPlane = this.dataplane === 'agent' || (this.dataplane === 'kernel-vxlan' && this.ipFamilies === 'dual-stack');
    if (this.ipFamilies !== 'ipv4' && (!dualStackPlane || Object.keys(opts.nodeDataplanes ?? {}).length > 0)) {
      throw new Error(`ipFamilies '${this.ipFamilies}' needs the agent on every node (dataplane 'agent'), or 'dual-stack' with 'kernel-vxlan'`);
    }
    this.workers = opts.workers ?? 1;
    this.agentArgs = opts.agentArgs ?? [];
    this.agentCli = opts.agentCli ?? agentCliPath;
    this.agentNode = opts.agentNode ?? process.execPath;
    this.agentNodeArgs = opts.agentNodeArgs ?? [];
    this.agentReadyTimeoutMs = opts.agentReadyTimeoutMs ?? 15_000;
    this.nodeDataplanes = opts.nodeDataplanes ?? {};
    const mixed = Object.entries(this.nodeDataplanes);
    if (mixed.length > 0 && this.dataplane !== 'agent' && this.dataplane !== 'reference') {
      throw new Error(`nodeDataplanes mixes udp-wire planes only; dataplane '${this.dataplane}' is not one`);
    }
    for (const [node, plane] of mixed) {
      if (plane !== 'agent' && plane !== 'reference') throw new Error(`nodeDataplanes[${node}]: '${plane}' is not a udp-wire plane (agent, reference)`);
    }
    if (!Number.isInteger(this.nodeCount) || this.nodeCount < 1 || this.nodeCount > 254) {
      throw new Error(`nodes must be 1..254, got ${this.nodeCount}`);
    }
    if (!Number.isInteger(this.podsPerNode) || this.podsPerNode < 0 || this.podsPerNode > 253) {
      throw new Error(`podsPerNode must be 0..253, got ${this.podsPerNode}`);
    }
    this.underlayNs = `${this.id}-ul`;
    this.tempDir = mkdtempSync(join(tmpdir(), `${this.id}-`));
    this.logDir = opts.logDir ?? this.tempDir;
    this.leasesFile = join(this.tempDir, 'leases.json');
    this.ipMasq = opts.ipMasq ?? true;
    this.cniBinDir = join(this.tempDir, 'cni', 'bin');
    this.cniPath = [this.cniBinDir, REFERENCE_PLUGIN_DIR];
  }

  node(i: number): NodeInfo {
    if (!Number.isInteger(i) || i < 1 || i > this.nodeCount) throw new Error(`no node ${i} (nodes are 1..${this.nodeCount})`);
    return {
      index: i,
      ns: `${this.id}-n${i}`,
      underlayIp: this.underlay === 'ipv6' ? '' : `${UNDERLAY_PREFIX}.${i}`,
      underlayIp6: this.underlay === 'ipv4' ? '' : `${UNDERLAY6_PREFIX}${i.toString(16)}`,
      subnet: `10.244.${i}.0/24`,
      gateway: `10.244.${i}.1`,
      subnet6: `fd00:10:244:${i.toString(16)}::/64`,
      gateway6: `fd00:10:244:${i.toString(16)}::1`,
      subnetFile: join(this.tempDir, `subnet-n${i}.env`),
      confListFile: join(this.tempDir, 'cni', `n${i}`, 'net.d', CONFLIST_FILE),
      cniDataDir: join(this.tempDir, 'cni', `n${i}`, 'flannel'),
      ipamDataDir: join(this.tempDir, 'cni', `n${i}`, 'networks'),
    };
  }

  nodes(): NodeInfo[] {
    return Array.from({ length: this.nodeCount }, (_, n) => this.node(n + 1));
  }

  pod(i: number, k = 0): PodInfo {
    this.node(i);
    const pod = this.podTable.get(`${i}/${k}`);
    if (!pod) {
      const have = [...this.podTable.values()].filter((p) => p.node === i).map((p) => p.index);
      throw new Error(`no pod ${k} on node ${i} (pods there: ${have.length ? have.join(', ') : 'none'})`);
    }
    return pod;
  }

  pods(): PodInfo[] {
    return [...this.podTable.values()].sort((a, b) => a.node - b.node || a.index - b.index);
  }

  private podNamespaceName(i: number, k: number): string {
    return k === 0 ? `${this.id}-p${i}` : `${this.id}-p${i}-${k}`;
  }

  cniRunner(i: number): PluginRunner {
    const { ns } = this.node(i);
    this.assertOwn(ns);
    return {
      cniPath: this.cniPath,
      // `ip netns exec` keeps the environment (CNI_* included) and execs the plugin after setns.
      exec: (path, env, stdin) => run('ip', ['netns', 'exec', ns, path], { env, input: stdin, allowFailure: true, timeoutMs: 60_000 }),
    };
  }

  confList(i: number): ConfList {
    const list = this.confLists.get(i);
    if (!list) throw new Error(`node ${i} has no CNI configuration yet`);
    return list;
  }

  async addPodNamespace(i: number): Promise<PodNamespace> {
    this.node(i);
    const k = this.nextPodIndex.get(i) ?? 0;
    this.nextPodIndex.set(i, k + 1);
    const ns = this.podNamespaceName(i, k);
    await this.addNamespace(ns);
    // The runtime's loopback plugin would do this; kube-flannel's chain does not.
    await this.ip(ns, 'link', 'set', 'lo', 'up');
    return { node: i, index: k, ns, netnsPath: `/var/run/netns/${ns}` };
  }

  async addPod(i: number, opts: AddPodOptions = {}): Promise<PodInfo> {
    if (this.destroying) throw new Error(`cluster ${this.id} is being destroyed`);
    if (this.ipFamilies === 'ipv6-only') return this.addIpv6OnlyPod(i);
    const { ns, index: k, netnsPath } = await this.addPodNamespace(i);
    const list = opts.cniVersion ? { ...this.confList(i), cniVersion: opts.cniVersion } : this.confList(i);
    const att: Attachment = {
      containerId: ns,
      netns: netnsPath,
      ifName: POD_IFNAME,
      ...(opts.portMappings ? { capabilityArgs: { portMappings: opts.portMappings } } : {}),
    };
    // Recorded before ADD: a half-done ADD is answered with a DEL too, as a runtime does.
    const record: { node: number; list: ConfList; att: Attachment; result?: CniResult } = { node: i, list, att };
    this.attachments.set(ns, record);
    let result: CniResult;
    try {
      result = await addNetworkList(this.cniRunner(i), list, att);
    } catch (err) {
      throw new Error(`CNI ADD of pod ${i}.${k} (${ns}) on node ${i} failed: ${(err as Error).message}`);
    }
    record.result = result;
    const address = sandboxAddress(result, POD_IFNAME);
    const node = this.node(i);
    if (address.gateway !== undefined && address.gateway !== node.gateway) {
      throw new Error(`pod ${ns} got gateway ${address.gateway}, expected cni0's ${node.gateway}`);
    }
    const pod: PodInfo = { node: i, index: k, ns, ip: address.ip, containerId: ns, hostVeth: hostInterface(result, BRIDGE) ?? '', result };
    if (this.ipFamilies === 'dual-stack') pod.ip6 = await this.wireIpv6(node, ns, k, result);
    this.podTable.set(`${i}/${k}`, pod);
    return pod;
  }

  /** The pod's IPv6 address: the CNI result's, or (a CNI without dual-stack ranges) one added as the bridge plugin would. */
  private async wireIpv6(node: NodeInfo, ns: string, k: number, result: CniResult): Promise<string> {
    const fromCni = result.ips?.find((a) => a.address.includes(':'));
    if (fromCni) {
      await this.waitForGateway6(ns, fromCni.gateway ?? node.gateway6);
      return fromCni.address.split('/')[0]!;
    }
    const address = this.podAddress6(node, k);
    await this.ensureBridge6(node);
    await this.ip(ns, '-6', 'addr', 'add', `${address}/64`, 'dev', POD_IFNAME, 'nodad');
    await this.ip(ns, '-6', 'route', 'replace', 'default', 'via', node.gateway6, 'dev', POD_IFNAME);
    await this.waitForGateway6(ns, node.gateway6);
    return address;
  }

  /**
   * Until the pod reaches its IPv6 gateway: neighbour discovery through cni0
   * (its link-local address in DAD, MLD snooping learning the groups) can hold
   * the first packets for about a second after the pod is wired. A pod counts
   * as up once it answers, as kubelet's readiness would have it.
   */
  private async waitForGateway6(ns: string, gateway6: string): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const r = await this.exec(ns, 'ping', ['-n', '-q', '-c', '1', '-W', '1', gateway6], { allowFailure: true, timeoutMs: 10_000 });
      if (r.code === 0) return;
    }
    throw new Error(`pod ${ns} cannot reach its IPv6 gateway ${gateway6}`);
  }

  /** Pod k of node i: fd00:10:244:i::k+2 (::1 is cni0's, as host-local leaves the gateway). */
  private podAddress6(node: NodeInfo, k: number): string {
    return `${node.gateway6.slice(0, -1)}${(k + 2).toString(16)}`;
  }

  /** cni0's IPv6 gateway address, once (nodad: the node's own by its lease). */
  private async ensureBridge6(node: NodeInfo): Promise<void> {
    const shown = await this.ip(node.ns, '-6', 'addr', 'show', 'dev', BRIDGE);
    if (!shown.stdout.includes(`${node.gateway6}/64`)) await this.ip(node.ns, '-6', 'addr', 'add', `${node.gateway6}/64`, 'dev', BRIDGE, 'nodad');
  }

  /**
   * An IPv6-only pod, wired as the bridge plugin wires one (there is no IPv4
   * subnet for the CNI chain to hand out): cni0 (made at the first pod), a
   * veth with its host end on cni0, the pod's address and default route.
   */
  private async addIpv6OnlyPod(i: number): Promise<PodInfo> {
    const node = this.node(i);
    const { ns, index: k } = await this.addPodNamespace(i);
    const hostVeth = `veth${i}p${k}`;
    const exists = await this.ip(node.ns, 'link', 'show', BRIDGE).then(() => true, () => false);
    if (!exists) {
      await this.ip(node.ns, 'link', 'add', BRIDGE, 'mtu', String(this.podMtu), 'type', 'bridge');
      await this.ip(node.ns, 'link', 'set', BRIDGE, 'up');
      await this.ensureBridge6(node);
    }
    await this.ip(node.ns, 'link', 'add', hostVeth, 'mtu', String(this.podMtu), 'type', 'veth', 'peer', 'name', POD_IFNAME, 'netns', ns);
    await this.ip(node.ns, 'link', 'set', hostVeth, 'master', BRIDGE, 'up');
    await this.ip(ns, 'link', 'set', POD_IFNAME, 'up');
    const address = this.podAddress6(node, k);
    await this.ip(ns, '-6', 'addr', 'add', `${address}/64`, 'dev', POD_IFNAME, 'nodad');
    await this.ip(ns, '-6', 'route', 'replace', 'default', 'via', node.gateway6, 'dev', POD_IFNAME);
    await this.waitForGateway6(ns, node.gateway6);
    const pod: PodInfo = { node: i, index: k, ns, ip: '', ip6: address, containerId: ns, hostVeth, result: { cniVersion: '' } };
    this.podTable.set(`${i}/${k}`, pod);
    return pod;
  }

  async removePod(pod: PodInfo): Promise<void> {
    const record = this.attachments.get(pod.ns);
    if (!record || this.podTable.get(`${pod.node}/${pod.index}`) !== pod) throw new Error(`${pod.ns} is not a pod of testbed ${this.id}`);
    await delNetworkList(this.cniRunner(record.node), record.list, record.att, record.result);
    this.attachments.delete(pod.ns);
    this.podTable.delete(`${pod.node}/${pod.index}`);
    await killPidsInNetns(pod.ns);
    await run('ip', ['netns', 'del', pod.ns], { timeoutMs: 10_000 });
    const at = this.namespaces.indexOf(pod.ns);
    if (at >= 0) this.namespaces.splice(at, 1);
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

  planeOf(i: number): Dataplane {
    this.node(i);
    return this.nodeDataplanes[i] ?? this.dataplane;
  }

  reference(i: number): CapturedChild | undefined {
    return this.references.get(i);
  }

  /**
   * The reference forwarder on node i, configured as flanneld configures its
   * C proxy: bound to the node's public IP, one route per remote lease.
   */
  private async startReference(i: number): Promise<void> {
    const node = this.node(i);
    const routes = this.nodes()
      .filter((peer) => peer.index !== i)
      .flatMap((peer) => ['--route', `${peer.subnet}=${peer.underlayIp}`]);
    const args = [
      referenceProxyPath,
      '--tun', 'flannel0',
      '--port', String(UDP_PORT),
      '--public-ip', node.underlayIp,
      '--subnet', node.subnet,
      '--network', CLUSTER_NETWORK,
      '--mtu', String(this.podMtu),
      ...routes,
    ];
    // -u: unbuffered, so the ready line arrives when it is printed.
    const child = this.spawn(node.ns, 'python3', ['-u', ...args], { logFile: join(this.logDir, `reference-n${i}.log`) });
    this.references.set(i, child);
    try {
      await waitForLine(child, REFERENCE_READY, this.agentReadyTimeoutMs);
    } catch (err) {
      await stopChild(child, 'SIGKILL');
      throw new Error(`reference forwarder on node ${i} (${node.ns}) did not become ready: ${(err as Error).message}`);
    }
  }

  async handOverAgent(i: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const old = this.agents.get(i);
    if (!old || !isRunning(old)) throw new Error(`no agent runs on node ${i} to hand over from`);
    await this.startAgent(i, true);
    return stopChild(old, 'SIGTERM', 5000);
  }

  async startAgent(i: number, alongside = false): Promise<void> {
    const node = this.node(i);
    const running = this.agents.get(i);
    if (!alongside && running && isRunning(running)) throw new Error(`the agent on node ${i} is already running (pid ${running.pid})`);
    if (!existsSync(this.agentCli)) {
      throw new Error(`agent not built: ${this.agentCli} is missing (run npm run build)`);
    }
    const args = [
      ...this.agentNodeArgs,
      this.agentCli, 'up',
      '--subnet-file', node.subnetFile,
      '--leases', this.leasesFile,
      ...underlayArgs(node),
      '--workers', String(this.workers),
      ...this.agentArgs,
    ];
    const child = this.spawn(node.ns, this.agentNode, args, { logFile: join(this.logDir, `agent-n${i}.log`) });
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
      `testbed ${this.id}: ${this.nodeCount} node(s), ${this.podsPerNode} pod(s) per node, ${this.ipFamilies}, data plane '${this.dataplane}'${
        Object.keys(this.nodeDataplanes).length ? ` (per node: ${this.nodes().map((n) => `${n.index}=${this.planeOf(n.index)}`).join(', ')})` : ''
      }`,
      `  cluster network ${this.ipFamilies === 'ipv6-only' ? CLUSTER_NETWORK6 : this.ipFamilies === 'dual-stack' ? `${CLUSTER_NETWORK} and ${CLUSTER_NETWORK6}` : CLUSTER_NETWORK}, pod MTU ${this.podMtu}, underlay MTU ${this.underlayMtu}`,
      `  ${'underlay'.padEnd(10)}${this.underlayNs.padEnd(20)}bridge br0 joining every node's eth0 (${[
        this.underlay !== 'ipv6' ? `${UNDERLAY_PREFIX}.0/24` : '',
        this.underlay !== 'ipv4' ? `${UNDERLAY6_PREFIX}/64` : '',
      ].filter(Boolean).join(', ')})`,
    ];
    for (const node of this.nodes()) {
      const agent = this.agents.get(node.index);
      const reference = this.references.get(node.index);
      const nodePlane = this.planeOf(node.index);
      const plane =
        nodePlane === 'agent'
          ? `agent pid ${agent?.pid ?? '-'}${agent && !isRunning(agent) ? ' (exited)' : ''}`
          : nodePlane === 'reference'
            ? `reference forwarder pid ${reference?.pid ?? '-'}${reference && !isRunning(reference) ? ' (exited)' : ''}`
            : this.dataplane === 'kernel-vxlan'
            ? `flannel.1 vxlan vni ${VXLAN_VNI} mac ${vtepMac(node.index)}`
            : this.dataplane === 'host-gw'
              ? 'host-gw routes via eth0'
              : 'no data plane';
      const cni0 = this.ipFamilies === 'ipv6-only' ? `${node.gateway6}/64` : this.ipFamilies === 'dual-stack' ? `${node.gateway}/24 ${node.gateway6}/64` : `${node.gateway}/24`;
      const eth0 = [node.underlayIp ? `${node.underlayIp}/24` : '', node.underlayIp6 ? `${node.underlayIp6}/64` : ''].filter(Boolean).join(' ');
      const plane6 = this.dataplane === 'kernel-vxlan' && node.underlayIp6 && nodePlane !== 'agent' ? `, flannel-v6.1 vxlan over ${node.underlayIp6}` : '';
      lines.push(`  ${`node ${node.index}`.padEnd(10)}${node.ns.padEnd(20)}eth0 ${eth0}, cni0 ${cni0}, ${plane}${plane6}`);
      for (const pod of this.pods().filter((p) => p.node === node.index)) {
        if (this.ipFamilies === 'ipv6-only') {
          lines.push(`    ${`pod ${node.index}.${pod.index}`.padEnd(8)}${pod.ns.padEnd(20)}eth0 ${pod.ip6}/64 via ${node.gateway6}, host side ${pod.hostVeth} on cni0`);
          continue;
        }
        const { prefixLength, gateway } = sandboxAddress(pod.result, POD_IFNAME);
        lines.push(
          `    ${`pod ${node.index}.${pod.index}`.padEnd(8)}${pod.ns.padEnd(20)}eth0 ${pod.ip}/${prefixLength} via ${gateway ?? '-'}${pod.ip6 ? ` and ${pod.ip6}/64 via ${node.gateway6}` : ''}, host side ${pod.hostVeth || '?'} on cni0`,
        );
      }
    }
    const list = this.confLists.get(1);
    if (list) {
      lines.push(
        `  ${'cni'.padEnd(10)}conflist ${list.name} (cniVersion ${list.cniVersion}): ${list.plugins.map((p) => p.type).join(' → ')}; ` +
          `flannel delegates to bridge + host-local; CNI_PATH ${this.cniPath.join(':')}`,
      );
    }
    lines.push(`  ${'files'.padEnd(10)}${this.tempDir} (subnet-n<i>.env, leases.json, cni/)`);
    return lines.join('\n');
  }

  async build(): Promise<void> {
    if (this.nodes().some((n) => this.planeOf(n.index) === 'reference')) await checkReferencePrerequisites();
    await this.addNamespace(this.underlayNs);
    await this.ip(this.underlayNs, 'link', 'set', 'lo', 'up');
    await this.ip(this.underlayNs, 'link', 'add', 'br0', 'mtu', String(this.underlayMtu), 'type', 'bridge');
    await this.ip(this.underlayNs, 'link', 'set', 'br0', 'up');
    for (const node of this.nodes()) await this.buildNode(node);
    this.writeFlannelFiles();
    this.installCniFiles();
    // Nodes in parallel, pods of one node in turn (as one kubelet adds them).
    await Promise.all(
      this.nodes().map(async (node) => {
        for (let k = 0; k < this.podsPerNode; k++) await this.addPod(node.index);
      }),
    );
    if (this.dataplane === 'host-gw') for (const node of this.nodes()) await this.programHostGw(node);
    if (this.dataplane === 'kernel-vxlan') for (const node of this.nodes()) await this.programVxlan(node);
    await Promise.all(
      this.nodes().map((n) => {
        const plane = this.planeOf(n.index);
        return plane === 'agent' ? this.startAgent(n.index) : plane === 'reference' ? this.startReference(n.index) : undefined;
      }),
    );
  }

  private async buildNode(node: NodeInfo): Promise<void> {
    const { ns, index: i } = node;
    const ul = this.underlayNs;
    await this.addNamespace(ns);
    await this.ip(ns, 'link', 'set', 'lo', 'up');
    await this.exec(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    if (this.ipFamilies !== 'ipv4') await this.exec(ns, 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
    // The underlay end is named after the node; the node end is plain eth0, as on a real host.
    await this.ip(ul, 'link', 'add', `n${i}`, 'mtu', String(this.underlayMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await this.ip(ul, 'link', 'set', `n${i}`, 'master', 'br0', 'up');
    await this.ip(ns, 'link', 'set', 'eth0', 'mtu', String(this.underlayMtu), 'up');
    if (node.underlayIp) await this.ip(ns, 'addr', 'add', `${node.underlayIp}/24`, 'dev', 'eth0');
    // nodad: usable at once (duplicate address detection would hold it "tentative" for a second or more).
    if (node.underlayIp6) await this.ip(ns, '-6', 'addr', 'add', `${node.underlayIp6}/64`, 'dev', 'eth0', 'nodad');
    // No cni0 here: the bridge plugin creates it (MTU = FLANNEL_MTU, the
    // gateway address from host-local) at the node's first pod ADD.
  }

  /**
   * What `flannel-udp install-cni` does on a real node, into the temp dir: our
   * plugin as cni/bin/flannel and kube-flannel's conflist. Each node then gets
   * that conflist with its own subnet.env and data dirs (stock flannel reads
   * /run/flannel/subnet.env and writes under /var/lib/cni, which the nodes of
   * one machine would share).
   */
  private installCniFiles(): void {
    const sharedConfDir = join(this.tempDir, 'cni', 'net.d');
    installCni({ binDir: this.cniBinDir, confDir: sharedConfDir, force: false });
    const stock = loadConfList(join(sharedConfDir, CONFLIST_FILE));
    for (const node of this.nodes()) {
      const list: ConfList = {
        ...stock,
        plugins: stock.plugins.map((p) =>
          p.type === 'flannel'
            ? { ...p, subnetFile: node.subnetFile, dataDir: node.cniDataDir, ipam: { dataDir: node.ipamDataDir } }
            : p,
        ),
      };
      mkdirSync(dirname(node.confListFile), { recursive: true });
      writeFileSync(node.confListFile, JSON.stringify(list, null, 2) + '\n');
      this.confLists.set(node.index, list);
    }
  }

  /** What flanneld would leave for the CNI plugin and keep in its store. */
  private writeFlannelFiles(): void {
    const backendType = this.dataplane === 'host-gw' ? 'host-gw' : this.dataplane === 'kernel-vxlan' ? 'vxlan' : 'udp';
    const leases: Record<string, object> = {};
    for (const node of this.nodes()) {
      // flannel's WriteSubnetFile order: the IPv4 pair unless IPv6-only, the IPv6 pair when on.
      const v4 = this.ipFamilies === 'ipv6-only' ? '' : `FLANNEL_NETWORK=${CLUSTER_NETWORK}\nFLANNEL_SUBNET=${node.gateway}/24\n`;
      const v6 = this.ipFamilies === 'ipv4' ? '' : `FLANNEL_IPV6_NETWORK=${CLUSTER_NETWORK6}\nFLANNEL_IPV6_SUBNET=${node.gateway6}/64\n`;
      writeFileSync(node.subnetFile, `${v4}${v6}FLANNEL_MTU=${this.podMtu}\nFLANNEL_IPMASQ=${this.ipMasq}\n`);
      // MakeSubnetKey: the IPv4 key (the zero 0.0.0.0-0 on an IPv6-only node), '&', the IPv6 subnet.
      const v4key = this.ipFamilies === 'ipv6-only' ? '0.0.0.0-0' : node.subnet.replace('/', '-');
      const key = this.ipFamilies === 'ipv4' ? v4key : `${v4key}&${node.subnet6.replace('/', '-')}`;
      leases[key] = {
        // flannel's zero ip.IP4 when the node has no public IPv4 (an IPv6-only underlay).
        PublicIP: node.underlayIp || '0.0.0.0',
        ...(node.underlayIp6 ? { PublicIPv6: node.underlayIp6 } : {}),
        BackendType: backendType,
        ...(backendType === 'vxlan' ? { BackendData: { VNI: VXLAN_VNI, VtepMAC: vtepMac(node.index) } } : {}),
        // The IPv6 half's VTEP: flannel.1 itself here (programVxlan), so the same MAC.
        ...(backendType === 'vxlan' && this.ipFamilies === 'dual-stack' ? { BackendV6Data: { VNI: VXLAN_VNI, VtepMAC: vtepMac(node.index) } } : {}),
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
    if (this.ipFamilies === 'dual-stack' && node.underlayIp6) await this.programVxlan6Device(node);
    else if (this.ipFamilies === 'dual-stack') await this.programVxlan6(node, dev);
  }

  /**
   * flanneld's flannel-v6.1 over the IPv6 underlay (pkg/backend/vxlan,
   * EnableIPv6): a second vxlan device, same VNI and port, on eth0 with the
   * node's PublicIPv6 as local address, no learning, and no MTU given (so the
   * kernel's: eth0 − 70); accept_ra off; the IPv6 subnet's address as a /128;
   * then per remote lease a permanent neighbour entry for its IPv6 gateway
   * (the subnet's :: address) to the VTEP MAC of BackendV6Data, the fdb entry
   * MAC → PublicIPv6, and last the onlink route. flanneld gives the device a
   * MAC of its own; here it is flannel.1's, so a node handed to an agent (one
   * VTEP MAC for both families, vxlan-agents.ts) keeps the peers' entries valid.
   */
  private async programVxlan6Device(node: NodeInfo): Promise<void> {
    const { ns, index: i } = node;
    const dev = `flannel-v6.${VXLAN_VNI}`;
    await this.ip(ns, 'link', 'add', dev, 'address', vtepMac(i), 'type', 'vxlan', 'id', String(VXLAN_VNI), 'dev', 'eth0',
      'local', node.underlayIp6, 'dstport', String(VXLAN_PORT), 'nolearning');
    await this.exec(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev.replace('.', '/')}.accept_ra=0`]).catch(() => undefined);
    await this.exec(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev.replace('.', '/')}.disable_ipv6=0`]);
    await this.ip(ns, '-6', 'addr', 'add', `${node.subnet6.split('/')[0]}/128`, 'dev', dev, 'nodad');
    await this.ip(ns, 'link', 'set', dev, 'up');
    for (const peer of this.nodes()) {
      if (peer.index === i) continue;
      const gateway = peer.subnet6.split('/')[0]!;
      await this.ip(ns, '-6', 'neigh', 'replace', gateway, 'lladdr', vtepMac(peer.index), 'dev', dev, 'nud', 'permanent');
      await this.exec(ns, 'bridge', ['fdb', 'replace', vtepMac(peer.index), 'dev', dev, 'dst', peer.underlayIp6, 'self', 'permanent']);
      await this.ip(ns, '-6', 'route', 'replace', peer.subnet6, 'via', gateway, 'dev', dev, 'onlink');
    }
  }

  /**
   * The IPv6 half of flannel's vxlan backend, on flannel.1 itself. flanneld
   * makes a second device, flannel-v6.1, with the same VNI and port and an
   * IPv6 underlay (its fdb entries point at PublicIPv6). Over this testbed's
   * IPv4 underlay the kernel refuses that second device ("A VXLAN device with
   * the specified VNI already exists": two IPv4 vxlan devices cannot share a
   * VNI and port), so the one device carries both families. What flanneld
   * programs for flannel-v6.1 is otherwise done as it does: the subnet's
   * address as a /128, per remote lease a permanent neighbour entry for the
   * IPv6 gateway (the subnet's :: address) to the VTEP MAC of BackendV6Data,
   * then the onlink route; the fdb entry (MAC → PublicIP) is flannel.1's.
   */
  private async programVxlan6(node: NodeInfo, dev: string): Promise<void> {
    const { ns, index: i } = node;
    await this.exec(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev.replace('.', '/')}.disable_ipv6=0`]);
    await this.ip(ns, '-6', 'addr', 'add', `${node.subnet6.split('/')[0]}/128`, 'dev', dev, 'nodad');
    for (const peer of this.nodes()) {
      if (peer.index === i) continue;
      const gateway = peer.subnet6.split('/')[0]!;
      await this.ip(ns, '-6', 'neigh', 'replace', gateway, 'lladdr', vtepMac(peer.index), 'dev', dev, 'nud', 'permanent');
      await this.ip(ns, '-6', 'route', 'replace', peer.subnet6, 'via', gateway, 'dev', dev, 'onlink');
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
    await this.deleteAttachments();
    for (const ns of [...this.namespaces].reverse()) {
      await killPidsInNetns(ns);
      await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 }).catch(() => undefined);
    }
    rmSync(this.tempDir, { recursive: true, force: true });
    liveClusters.delete(this);
  }

  /**
   * CNI DEL for every pod, as the runtime does when a pod goes away: each
   * node's in turn, newest first, nodes in parallel. Best effort: the node
   * namespaces (cni0, the veths' host ends, any iptables rules of bridge and
   * portmap) and the temp dir (saved configurations, host-local's
   * reservations) are removed next whatever DEL managed.
   */
  private async deleteAttachments(): Promise<void> {
    const byNode = new Map<number, Array<{ list: ConfList; att: Attachment; result?: CniResult }>>();
    for (const record of this.attachments.values()) byNode.set(record.node, [...(byNode.get(record.node) ?? []), record]);
    await Promise.all(
      [...byNode].map(async ([node, records]) => {
        for (const r of records.reverse()) {
          await delNetworkList(this.cniRunner(node), r.list, r.att, r.result).catch(() => undefined);
        }
      }),
    );
    this.attachments.clear();
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
