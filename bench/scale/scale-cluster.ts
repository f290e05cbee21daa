// A cluster of N node namespaces on one underlay bridge (src/testbed/cluster.ts),
// one pod per node, one agent per node started as the DaemonSet or flanneld's
// etcd mode starts it, against one control plane: a real etcd or the
// kube-apiserver stand-in, inside the underlay namespace. Node N+1 stays
// without an agent until join(): it is the node that joins and later leaves.
//
// Everything is measured at the data plane or at the kernel:
//   - full mesh: every pod sends ICMP echoes to every other pod (mesh_probe.py,
//     one process per pod) until all answered; the time is the last first reply;
//   - join/leave: every pod pings the joining node's pod every PROBE_MS; a
//     capture on the joining node's underlay port (tcpdump in the underlay
//     namespace) sees, per sending node, the first encapsulated datagram after
//     the lease appeared and the last one after it was deleted;
//   - per agent: /proc (proc-stats.ts);
//   - control plane: requests counted by etcd (/metrics) or by the stand-in
//     (its request log), bytes by two iptables counters on the control
//     plane's address in the underlay namespace.
// Shared by bench/scale.ts and test/integration/scale.test.ts.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentCliPath, createCluster, type Cluster, type PodInfo } from '../../src/testbed/cluster.js';
import { type CapturedChild, isRunning, run, stopChild, waitForLine } from '../../src/testbed/exec.js';
import { ETCD_UNDERLAY_IP, PREFIX, startUnderlayEtcd } from '../../test/support/etcd-nodes.js';
import type { EtcdServer } from '../../test/support/etcd-server.js';
import { StandInProcess, KUBE_PORT, KUBE_UNDERLAY_IP } from '../../test/support/kube-nodes.js';
import { kubeletNode } from '../../test/support/kube-standin-kit.js';
import { percentiles, sampleProcess, type ProcSample } from './proc-stats.js';
import { readAgentStats } from '../../test/support/agent-stats.js';

export type Source = 'etcd' | 'kube';

export interface ScaleOptions {
  /** nodes with an agent from the start; one more node joins later */
  nodes: number;
  source: Source;
  /** agent --workers; default 1 */
  workers?: number;
  /** extra agent arguments */
  agentArgs?: string[];
  /** the Node.js binary the agents run on; default this one (e.g. the image's Node 24) */
  agentNode?: string;
  log?: (line: string) => void;
  /** where agent logs go; default the cluster's temp dir (removed at the end) */
  logDir?: string;
}

const UDP_PORT = 8285;
const CONTROL_IP = ETCD_UNDERLAY_IP; // the same address for both sources
const PROBE_MS = 20;
const MESH_PROBE = join(dirname(fileURLToPath(import.meta.url)), '../../../bench/scale/mesh_probe.py');
const NET_CONFIG = { Network: '10.244.0.0/16', SubnetLen: 24, SubnetMin: '10.244.1.0', SubnetMax: '10.244.254.0', Backend: { Type: 'udp', Port: UDP_PORT } };

export interface MeshResult {
  /** pairs (from, to) that answered / all pairs */
  reached: number;
  pairs: number;
  /** from the agents' start to the last first reply, ms; undefined if not every pair answered */
  fullMeshMs: number | undefined;
  missing: string[];
  probesSent: number;
}

export interface PropagationResult {
  /** per node index: ms from the lease change to the first (join) or last (leave) datagram seen */
  perNode: Map<number, number>;
  /** nodes for which nothing was seen (join) or which kept forwarding until the end (leave) */
  missing: number[];
  stats: ReturnType<typeof percentiles>;
  /** how t0 was taken */
  reference: string;
}

export interface ControlCounters {
  at: number;
  requests: number;
  bytesToServer: number;
  bytesFromServer: number;
  /** etcd: per gRPC method; kube: per verb+resource */
  byKind: Record<string, number>;
}

export class ScaleCluster {
  readonly agents = new Map<number, CapturedChild>();
  private etcd?: EtcdServer;
  private api?: StandInProcess;
  private kubeconfig = '';
  private netConf = '';
  private standinRequests = 0;
  private readonly standinByKind: Record<string, number> = {};
  readonly joiner: number;
  readonly workers: number;
  agentsStartedAt = 0;

  private constructor(
    readonly cluster: Cluster,
    readonly opts: ScaleOptions,
  ) {
    this.joiner = opts.nodes + 1;
    this.workers = opts.workers ?? 1;
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  /** The namespaces, the pods (through the CNI chain), the control plane; no agent yet. */
  static async create(opts: ScaleOptions): Promise<ScaleCluster> {
    const cluster = await createCluster({ nodes: opts.nodes + 1, dataplane: 'none', agentReadyTimeoutMs: 120_000 });
    const s = new ScaleCluster(cluster, opts);
    try {
      await s.startControlPlane();
    } catch (err) {
      await s.destroy();
      throw err;
    }
    return s;
  }

  get nodeIndexes(): number[] {
    return Array.from({ length: this.opts.nodes }, (_, k) => k + 1);
  }

  private async startControlPlane(): Promise<void> {
    const { cluster } = this;
    if (this.opts.source === 'etcd') {
      this.etcd = await startUnderlayEtcd(cluster, CONTROL_IP);
      await this.etcdPut(`${PREFIX}/config`, JSON.stringify(NET_CONFIG));
    } else {
      this.api = await StandInProcess.start(cluster);
      this.countStandinRequests();
      this.netConf = join(cluster.tempDir, 'net-conf.json');
      writeFileSync(this.netConf, JSON.stringify({ Network: NET_CONFIG.Network, Backend: NET_CONFIG.Backend }));
      this.kubeconfig = this.api.kubeconfig('flannel-udp');
      // kubelet registered every node; kube-controller-manager gave each its podCIDR (the one its pods use).
      for (let i = 1; i <= this.joiner; i++) {
        await this.api.admin.createNode(kubeletNode(nodeName(i), cluster.node(i).underlayIp, cluster.node(i).subnet));
      }
    }
    // Control-plane bytes, both directions, counted where the server is.
    const port = String(this.controlPort);
    await cluster.exec(cluster.underlayNs, 'iptables', ['-w', '-I', 'INPUT', '-d', CONTROL_IP, '-p', 'tcp', '--dport', port]);
    await cluster.exec(cluster.underlayNs, 'iptables', ['-w', '-I', 'OUTPUT', '-s', CONTROL_IP, '-p', 'tcp', '--sport', port]);
  }

  private get controlPort(): number {
    return this.opts.source === 'etcd' ? 2379 : KUBE_PORT;
  }

  private countStandinRequests(): void {
    const child = this.api!.child!;
    child.log.on('line', (line: string) => {
      if (!line.startsWith('request ')) return;
      this.standinRequests++;
      try {
        const r = JSON.parse(line.slice('request '.length)) as { verb: string; resource: string };
        const kind = `${r.verb} ${r.resource}`;
        this.standinByKind[kind] = (this.standinByKind[kind] ?? 0) + 1;
      } catch {
        /* counted, not classified */
      }
    });
  }

  /** One etcd request from inside the underlay namespace (etcd is only reachable there); returns Date.now() when sent. */
  private async etcdCall(path: string, body: unknown): Promise<{ sentAt: number; answer: unknown }> {
    const script =
      `const t=Date.now();fetch(${JSON.stringify(`${this.etcd!.url}${path}`)},{method:'POST',body:${JSON.stringify(JSON.stringify(body))}})` +
      `.then(r=>r.json()).then(a=>console.log(JSON.stringify({sentAt:t,answer:a})))`;
    const { stdout } = await this.cluster.exec(this.cluster.underlayNs, process.execPath, ['-e', script], { timeoutMs: 20_000 });
    return JSON.parse(stdout.trim());
  }

  private etcdPut(key: string, value: string): Promise<unknown> {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    return this.etcdCall('/v3/kv/put', { key: b64(key), value: b64(value) });
  }

  /** The agent's command line, as the DaemonSet (kube) or a flanneld unit (etcd) has it. */
  private agentCommand(i: number): string[] {
    const node = this.cluster.node(i);
    const common = ['--subnet-file', node.subnetFile, '--public-ip', node.underlayIp, '--ip-masq', '--workers', String(this.workers), ...(this.opts.agentArgs ?? [])];
    if (this.opts.source === 'etcd') return [this.opts.agentNode ?? process.execPath, agentCliPath, 'up', '--etcd-endpoints', this.etcd!.url, ...common];
    return ['env', `NODE_NAME=${nodeName(i)}`, this.opts.agentNode ?? process.execPath, agentCliPath, 'up', '--kube-subnet-mgr', '--kubeconfig-file', this.kubeconfig,
      '--net-config-path', this.netConf, ...common];
  }

  private spawnAgent(i: number): CapturedChild {
    const [cmd, ...args] = this.agentCommand(i);
    const child = this.cluster.spawn(this.cluster.node(i).ns, cmd, args, { logFile: join(this.opts.logDir ?? this.cluster.tempDir, `agent-n${i}.log`) });
    this.agents.set(i, child);
    return child;
  }

  /** Starts every node's agent at once (a cluster coming up); resolves when all are ready. */
  async startAgents(readyTimeoutMs = 180_000): Promise<void> {
    this.agentsStartedAt = Date.now();
    const started = this.nodeIndexes.map((i) => this.spawnAgent(i));
    await Promise.all(
      started.map(async (child, k) => {
        try {
          await waitForLine(child, /flannel-udp agent ready/, readyTimeoutMs);
        } catch (err) {
          throw new Error(`agent on node ${k + 1} did not become ready after ${Date.now() - this.agentsStartedAt} ms: ${(err as Error).message}`);
        }
      }),
    );
  }

  pods(): PodInfo[] {
    return this.nodeIndexes.map((i) => this.cluster.pod(i));
  }

  /**
   * Every pod probes every other pod (ICMP echo, every intervalMs, at most
   * timeoutS). Run right after startAgents() began, it measures the time to
   * full mesh from the start; run later, it checks reachability.
   */
  async fullMesh(timeoutS = 120, intervalMs = 500, concurrency = 64): Promise<MeshResult> {
    const pods = this.pods();
    const python = await pythonExecutable();
    const results: Array<{ from: PodInfo; firstReply: Record<string, number | null>; sent: number }> = [];
    let next = 0;
    const worker = async () => {
      while (next < pods.length) {
        const from = pods[next++];
        const targets = pods.filter((p) => p !== from).map((p) => p.ip);
        try {
          const { stdout } = await this.cluster.exec(from.ns, python, [MESH_PROBE, String(timeoutS), String(intervalMs), ...targets], {
            timeoutMs: (timeoutS + 60) * 1000,
          });
          const parsed = JSON.parse(stdout.trim().split('\n').pop()!) as { first_reply: Record<string, number | null>; sent: number };
          results.push({ from, firstReply: parsed.first_reply, sent: parsed.sent });
        } catch (err) {
          // Counted as every pair of this pod missing, with why.
          this.log(`mesh probe from ${from.ip} failed: ${(err as Error).message.split('\n')[0]}`);
          results.push({ from, firstReply: Object.fromEntries(targets.map((t) => [t, null])), sent: 0 });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, pods.length) }, worker));
    let reached = 0;
    let pairs = 0;
    let last = 0;
    let sent = 0;
    const missing: string[] = [];
    for (const r of results) {
      sent += r.sent;
      for (const [to, at] of Object.entries(r.firstReply)) {
        pairs++;
        if (at === null) missing.push(`${r.from.ip} -> ${to}`);
        else {
          reached++;
          last = Math.max(last, at);
        }
      }
    }
    return { reached, pairs, fullMeshMs: missing.length === 0 ? last - this.agentsStartedAt : undefined, missing, probesSent: sent };
  }

  /**
   * For pairs the mesh missed: probe them again (bounded), and for those
   * still silent, what the sending node's agent says (SIGUSR1): whether it
   * holds the target's lease, the table version its workers run, its drops.
   */
  async diagnose(missing: string[], timeoutS = 15): Promise<Array<Record<string, unknown>>> {
    const out: Array<Record<string, unknown>> = [];
    const byFrom = new Map<string, string[]>();
    for (const pair of missing) {
      const [from, to] = pair.split(' -> ');
      byFrom.set(from, [...(byFrom.get(from) ?? []), to]);
    }
    for (const [fromIp, targets] of byFrom) {
      const pod = this.pods().find((p) => p.ip === fromIp)!;
      const { stdout } = await this.cluster.exec(pod.ns, await pythonExecutable(), [MESH_PROBE, String(timeoutS), '200', ...targets], { timeoutMs: (timeoutS + 30) * 1000 });
      const again = JSON.parse(stdout.trim().split('\n').pop()!).first_reply as Record<string, number | null>;
      const agent = this.agents.get(pod.node);
      const stats = agent && isRunning(agent) ? await readAgentStats(agent).catch((e: Error) => ({ error: e.message })) : undefined;
      out.push({
        from: fromIp,
        node: pod.node,
        reachableNow: Object.entries(again).filter(([, at]) => at !== null).map(([t]) => t),
        stillSilent: Object.entries(again).filter(([, at]) => at === null).map(([t]) => t),
        agentLeases: stats && 'leases' in stats ? stats.leases.length : undefined,
        workerTableVersions: stats && 'workers' in stats ? stats.workers.map((w) => w.counters.leaseTableVersion ?? w.counters.LeaseTableVersion) : undefined,
        drops: stats && 'drops' in stats ? stats.drops : stats,
      });
    }
    return out;
  }

  /** Every pod pings `target` every PROBE_MS for at most seconds; stop() ends them. */
  private startPings(target: string, seconds: number): { stop: () => Promise<void> } {
    const pingers = this.pods().map((p) =>
      // -c, not -w: with a deadline, iputils ping exits at the first ICMP error (net unreachable before the route exists).
      this.cluster.spawn(p.ns, 'ping', ['-q', '-n', '-i', String(PROBE_MS / 1000), '-c', String(Math.ceil((seconds * 1000) / PROBE_MS)), target]),
    );
    return { stop: async () => void (await Promise.all(pingers.map((c) => stopChild(c, 'SIGINT', 2000)))) };
  }

  /** tcpdump on the joining node's underlay port: datagrams to its agent's port, with the sender and the kernel's time. */
  private async startCapture(): Promise<{ seen: Array<{ node: number; at: number }>; stop: () => Promise<void> }> {
    const j = this.cluster.node(this.joiner);
    const child = this.cluster.spawn(this.cluster.underlayNs, 'tcpdump', [
      '-i', `n${this.joiner}`, '-n', '-tt', '-l', '-Q', 'out', `udp and dst host ${j.underlayIp} and dst port ${UDP_PORT}`,
    ]);
    const seen: Array<{ node: number; at: number }> = [];
    child.log.on('line', (line: string) => {
      const m = /^(\d+\.\d+) IP 192\.0\.2\.(\d+)\.\d+ > /.exec(line);
      if (m) seen.push({ node: Number(m[2]), at: Math.round(Number(m[1]) * 1000) });
    });
    await waitForLine(child, /listening on/, 15_000);
    return { seen, stop: () => stopChild(child, 'SIGINT', 2000).then(() => undefined) };
  }

  /**
   * A watch of the lease store from next to the control plane, for the
   * moment a lease change was committed: etcd's watch stream (a small script
   * in the underlay namespace, where etcd is reachable), or the API server's
   * node watch (over the stand-in's unix socket). Each event: when it
   * arrived (this machine's clock, as tcpdump's), its type and key or node name.
   */
  private async startControlWatch(): Promise<{ events: Array<{ at: number; type: string; name: string }>; stop: () => Promise<void>; tail: () => string }> {
    const events: Array<{ at: number; type: string; name: string }> = [];
    if (this.opts.source === 'etcd') {
      const b64 = (x: string) => Buffer.from(x).toString('base64');
      const prefix = `${PREFIX}/subnets/`;
      const rangeEnd = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
      // process.stdout.write, not console.log: under a test runner FORCE_COLOR would colour the numbers.
      const script = `
const r = await fetch(${JSON.stringify(`${this.etcd!.url}/v3/watch`)}, { method: 'POST', body: JSON.stringify({ create_request: { key: '${b64(prefix)}', range_end: '${b64(rangeEnd)}' } }) });
const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = '';
for (;;) {
  const { value, done } = await reader.read(); if (done) break;
  const t = Date.now(); buf += dec.decode(value, { stream: true });
  let i; while ((i = buf.indexOf(String.fromCharCode(10))) >= 0) {
    const line = buf.slice(0, i); buf = buf.slice(i + 1);
    let j; try { j = JSON.parse(line); } catch { continue; }
    if (j.result?.created) process.stdout.write('watching' + String.fromCharCode(10));
    for (const e of j.result?.events ?? []) process.stdout.write(t + ' ' + (e.type ?? 'PUT') + ' ' + Buffer.from(e.kv.key, 'base64').toString() + String.fromCharCode(10));
  }
}`;
      const child = this.cluster.spawn(this.cluster.underlayNs, process.execPath, ['--input-type=module', '-e', script]);
      child.log.on('line', (line: string) => {
        const m = /^(\d+) (\w+) (\S+)$/.exec(line);
        if (m) events.push({ at: Number(m[1]), type: m[2], name: m[3].slice(prefix.length) });
      });
      await waitForLine(child, /^watching$/, 15_000);
      return { events, stop: () => stopChild(child, 'SIGTERM', 2000).then(() => undefined), tail: () => child.log.tail(10) };
    }
    const api = this.api!;
    const { request } = await import('node:http');
    let buf = '';
    let resolveConnected!: () => void;
    const connected = new Promise<void>((r) => (resolveConnected = r));
    const req = request(
      { socketPath: join(this.cluster.tempDir, 'kube-apiserver.sock'), path: '/api/v1/nodes?watch=true', headers: { Authorization: `Bearer ${api.tokens.admin}` } },
      (res) => {
        resolveConnected();
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          const at = Date.now();
          buf += chunk;
          let i;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            try {
              const e = JSON.parse(line) as { type: string; object: { metadata?: { name?: string; annotations?: Record<string, string> } } };
              const leased = e.object.metadata?.annotations?.['flannel.alpha.coreos.com/kube-subnet-manager'] === 'true';
              events.push({ at, type: e.type === 'DELETED' ? 'DELETE' : leased ? 'PUT' : e.type, name: e.object.metadata?.name ?? '' });
            } catch {
              /* not an event */
            }
          }
        });
      },
    );
    req.on('error', () => undefined);
    req.end();
    await connected;
    return { events, stop: async () => void req.destroy(), tail: () => buf.slice(-2000) };
  }

  /**
   * Node N+1 joins: its agent starts (and acquires or publishes its lease)
   * while every pod pings its pod. Per node, the time from the lease's
   * appearance (the joining agent's own log line, written right after the
   * write returned) to that node's first datagram towards it.
   */
  async join(timeoutS = 60): Promise<PropagationResult> {
    const pod = this.cluster.pod(this.joiner);
    const capture = await this.startCapture();
    const watch = await this.startControlWatch();
    const pings = this.startPings(pod.ip, timeoutS + 10);
    try {
      const child = this.spawnAgent(this.joiner);
      await waitForLine(child, /flannel-udp agent ready/, timeoutS * 1000);
      const name = this.leaseName(this.joiner);
      const put = watch.events.find((e) => e.type === 'PUT' && e.name === name);
      if (!put) throw new Error(`the control-plane watch saw no lease for ${name}: ${JSON.stringify(watch.events.slice(-5))}; it said:\n${watch.tail()}\njoining agent:\n${child.log.tail(15)}`);
      const t0 = put.at;
      const deadline = Date.now() + timeoutS * 1000;
      const firstSeen = new Map<number, number>();
      while (Date.now() < deadline) {
        for (const s of capture.seen) if (s.node !== this.joiner && !firstSeen.has(s.node)) firstSeen.set(s.node, s.at);
        if (this.nodeIndexes.every((i) => firstSeen.has(i))) break;
        await sleep(100);
      }
      const perNode = new Map([...firstSeen].map(([n, at]) => [n, at - t0]));
      const missing = this.nodeIndexes.filter((i) => !firstSeen.has(i));
      return {
        perNode,
        missing,
        stats: percentiles([...perNode.values()]),
        reference: this.opts.source === 'etcd' ? "etcd's watch event for the new key, seen next to etcd" : "the API server's watch event for the annotated node, seen next to it",
      };
    } finally {
      await pings.stop();
      await capture.stop();
      await watch.stop();
    }
  }

  /**
   * Node N+1 leaves: its agent is stopped, then its lease removed (the key
   * deleted from etcd; the Node object deleted from the API server), while
   * every pod pings its pod. Per node, the time from the delete to that
   * node's last datagram towards it; done once no node sent anything for
   * quietMs.
   */
  async leave(timeoutS = 60, quietMs = 3000): Promise<PropagationResult> {
    const pod = this.cluster.pod(this.joiner);
    const agent = this.agents.get(this.joiner);
    if (agent) await stopChild(agent, 'SIGTERM', 5000);
    const capture = await this.startCapture();
    const watch = await this.startControlWatch();
    const pings = this.startPings(pod.ip, timeoutS + 10);
    try {
      // The routes are still in force: wait until every node is seen sending (bounded).
      const before = Date.now() + 15_000;
      while (Date.now() < before && !this.nodeIndexes.every((i) => capture.seen.some((s) => s.node === i))) await sleep(50);
      if (this.opts.source === 'etcd') {
        const key = Buffer.from(`${PREFIX}/subnets/${this.leaseName(this.joiner)}`).toString('base64');
        await this.etcdCall('/v3/kv/deleterange', { key });
      } else {
        await this.api!.admin.deleteNode(nodeName(this.joiner));
      }
      const name = this.leaseName(this.joiner);
      const watchDeadline = Date.now() + 15_000;
      while (!watch.events.some((e) => e.type === 'DELETE' && e.name === name) && Date.now() < watchDeadline) await sleep(20);
      const del = watch.events.find((e) => e.type === 'DELETE' && e.name === name);
      if (!del) throw new Error(`the control-plane watch saw no delete of ${name}`);
      const t0 = del.at;
      const deadline = t0 + timeoutS * 1000;
      for (;;) {
        await sleep(200);
        const lastAny = capture.seen.reduce((m, s) => Math.max(m, s.at), 0);
        if (Date.now() - Math.max(lastAny, t0) > quietMs || Date.now() > deadline) break;
      }
      const lastSeen = new Map<number, number>();
      for (const s of capture.seen) if (s.node !== this.joiner) lastSeen.set(s.node, Math.max(lastSeen.get(s.node) ?? 0, s.at));
      const stillSending = Date.now() > deadline;
      const perNode = new Map<number, number>();
      for (const i of this.nodeIndexes) {
        const at = lastSeen.get(i);
        // Negative: its last datagram went before the reference watcher saw the delete (within the probe interval).
        if (at !== undefined) perNode.set(i, at - t0);
      }
      return {
        perNode,
        missing: stillSending ? this.nodeIndexes.filter((i) => (lastSeen.get(i) ?? 0) > deadline - quietMs) : [],
        stats: percentiles([...perNode.values()]),
        reference: this.opts.source === 'etcd' ? "etcd's watch event for the deleted key, seen next to etcd" : "the API server's DELETED event, seen next to it",
      };
    } finally {
      await pings.stop();
      await capture.stop();
      await watch.stop();
    }
  }

  /** /proc figures of every running agent (the joining node's too, if it runs). */
  sampleAgents(): Map<number, ProcSample> {
    const out = new Map<number, ProcSample>();
    for (const [i, child] of this.agents) if (isRunning(child) && child.pid) out.set(i, sampleProcess(child.pid));
    return out;
  }

  async controlCounters(): Promise<ControlCounters> {
    const at = Date.now();
    const bytes = async (chain: string) => {
      const { stdout } = await this.cluster.exec(this.cluster.underlayNs, 'iptables', ['-w', '-L', chain, '-v', '-x', '-n']);
      const line = stdout.split('\n').find((l) => l.includes(CONTROL_IP) && l.includes(`${chain === 'INPUT' ? 'dpt' : 'spt'}:${this.controlPort}`));
      return line ? Number(line.trim().split(/\s+/)[1]) : 0;
    };
    const [bytesToServer, bytesFromServer] = [await bytes('INPUT'), await bytes('OUTPUT')];
    if (this.opts.source === 'kube') {
      return { at, requests: this.standinRequests, bytesToServer, bytesFromServer, byKind: { ...this.standinByKind } };
    }
    const script = `fetch(${JSON.stringify(`${this.etcd!.url}/metrics`)}).then((r) => r.text()).then((t) => process.stdout.write(t))`;
    const { stdout } = await this.cluster.exec(this.cluster.underlayNs, process.execPath, ['-e', script], { timeoutMs: 20_000 });
    const byKind: Record<string, number> = {};
    let requests = 0;
    for (const line of stdout.split('\n')) {
      // Unary calls handled, and messages received on streams (a watch's create/cancel).
      const m = /^grpc_server_(handled_total|msg_received_total)\{(.*)\} (\S+)$/.exec(line);
      if (!m) continue;
      const labels = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      const value = Number(m[3]);
      if (m[1] === 'handled_total' && labels.grpc_type === 'unary') {
        requests += value;
        byKind[labels.grpc_method] = (byKind[labels.grpc_method] ?? 0) + value;
      } else if (m[1] === 'msg_received_total' && labels.grpc_type !== 'unary') {
        requests += value;
        byKind[`${labels.grpc_method} (stream msg)`] = (byKind[`${labels.grpc_method} (stream msg)`] ?? 0) + value;
      }
    }
    return { at, requests, bytesToServer, bytesFromServer, byKind };
  }

  controlPlanePid(): number | undefined {
    if (this.opts.source === 'kube') return this.api?.child?.pid;
    return this.etcdPid;
  }

  /** etcd runs under `ip netns exec` (which execs it): the pid of the process listening on 2379 in the underlay. */
  private etcdPid: number | undefined;
  async findControlPlanePid(): Promise<number | undefined> {
    if (this.opts.source === 'kube') return this.api?.child?.pid;
    const { stdout } = await run('ip', ['netns', 'pids', this.cluster.underlayNs]);
    for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
      try {
        const comm = (await import('node:fs')).readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        if (comm === 'etcd') return (this.etcdPid = pid);
      } catch {
        /* gone */
      }
    }
    return undefined;
  }

  /** The joining node's lease as the control-plane watch names it: its etcd key under subnets/, or its Node name. */
  private leaseName(i: number): string {
    return this.opts.source === 'etcd' ? this.cluster.node(i).subnet.replace('/', '-') : nodeName(i);
  }

  async destroy(): Promise<void> {
    await this.cluster.destroy();
    await this.etcd?.destroy();
  }
}

export function nodeName(i: number): string {
  return `node-${i}`;
}

let python: string | undefined;
/** The interpreter itself, not a wrapper script (pyenv's shims are bash scripts: 50 of them at once took minutes). */
async function pythonExecutable(): Promise<string> {
  python ??= (await run('python3', ['-c', 'import sys; print(sys.executable)'])).stdout.trim();
  return python;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
