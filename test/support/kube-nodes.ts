// Running a testbed cluster the way kube-flannel.yml runs flanneld: the
// kube-apiserver stand-in as a process inside the underlay namespace (on an
// address of the underlay bridge, so every node reaches it over its eth0, as
// nodes reach a control-plane endpoint), agents started with
// --kube-subnet-mgr and a kubeconfig holding the DaemonSet's service-account
// token. The test itself talks to the stand-in as the cluster admin over its
// unix socket (a path in the file system, reachable from any namespace).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentCliPath, type Cluster } from '../../src/testbed/cluster.js';
import { type CapturedChild, isRunning, stopChild, waitForLine } from '../../src/testbed/exec.js';
import type { RequestRecord } from './kube-apiserver-standin.js';
import {
  KubeAdminClient,
  type KubePki,
  type KubeTokens,
  MANIFEST,
  SERVING_LINE,
  STANDIN_MAIN,
  type StandInProcessConfig,
  makeKubePki,
  makeTokens,
  writeKubeconfig,
} from './kube-standin-kit.js';

export const KUBE_UNDERLAY_IP = '192.0.2.250';
export const KUBE_PORT = 6443;

export class StandInProcess {
  child: CapturedChild | undefined;
  readonly admin: KubeAdminClient;
  readonly url = `https://${KUBE_UNDERLAY_IP}:${KUBE_PORT}`;
  readonly pki: KubePki;
  readonly tokens: KubeTokens;
  /** requests of earlier lives of the process (its log goes with it) */
  private readonly past: RequestRecord[] = [];
  private readonly configFile: string;
  private lives = 0;

  private constructor(private readonly cluster: Cluster) {
    this.pki = makeKubePki(cluster.tempDir, [KUBE_UNDERLAY_IP]);
    this.tokens = makeTokens();
    const socket = join(cluster.tempDir, 'kube-apiserver.sock');
    const config: StandInProcessConfig = {
      host: KUBE_UNDERLAY_IP,
      port: KUBE_PORT,
      certFile: this.pki.certFile,
      keyFile: this.pki.keyFile,
      tokens: this.tokens.identities,
      manifestFile: MANIFEST,
      unixSocket: socket,
      stateFile: join(cluster.tempDir, 'kube-apiserver-state.json'),
    };
    this.configFile = join(cluster.tempDir, 'kube-apiserver.json');
    writeFileSync(this.configFile, JSON.stringify(config));
    this.admin = new KubeAdminClient({ socketPath: socket }, this.tokens.admin);
  }

  /** Adds the stand-in's address to the underlay bridge and starts it. */
  static async start(cluster: Cluster): Promise<StandInProcess> {
    await cluster.exec(cluster.underlayNs, 'ip', ['addr', 'add', `${KUBE_UNDERLAY_IP}/24`, 'dev', 'br0']);
    const s = new StandInProcess(cluster);
    await s.start();
    return s;
  }

  async start(): Promise<void> {
    if (this.child && isRunning(this.child)) throw new Error('the stand-in is running');
    this.lives++;
    this.child = this.cluster.spawn(this.cluster.underlayNs, process.execPath, [STANDIN_MAIN, this.configFile], {
      logFile: join(this.cluster.tempDir, `kube-apiserver-${this.lives}.log`),
    });
    await waitForLine(this.child, new RegExp(SERVING_LINE), 15_000);
  }

  /** SIGKILL: as a crash, with no goodbye to the watch streams. */
  async kill(): Promise<void> {
    if (!this.child) return;
    await stopChild(this.child, 'SIGKILL');
    this.past.push(...this.liveRequests());
  }

  private liveRequests(): RequestRecord[] {
    return (this.child?.log.snapshot() ?? []).filter((l) => l.startsWith('request ')).map((l) => JSON.parse(l.slice('request '.length)));
  }

  /** Every request decided, over all lives of the process. */
  requests(): RequestRecord[] {
    return [...this.past, ...this.liveRequests()];
  }

  /** What kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount for the DaemonSet's pods. */
  serviceAccountDir(): string {
    const dir = join(this.cluster.tempDir, 'serviceaccount');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'token'), this.tokens.agent);
    writeFileSync(join(dir, 'ca.crt'), this.pki.ca);
    writeFileSync(join(dir, 'namespace'), 'kube-flannel-udp');
    return dir;
  }

  /** A kubeconfig for an agent: the underlay address, the CA, the service account's token. */
  kubeconfig(name: string, token = this.tokens.agent): string {
    const path = join(this.cluster.tempDir, `${name}.kubeconfig`);
    writeKubeconfig(path, this.url, this.pki.caFile, token);
    return path;
  }
}

export interface KubeAgentOptions {
  /**
   * A kubeconfig file, or in-cluster: the agent runs as in a pod, with no
   * kubeconfig, KUBERNETES_SERVICE_HOST/PORT set and the service account's
   * files at /var/run/secrets/kubernetes.io/serviceaccount (a tmpfs on /run
   * in the agent's own mount namespace, which `ip netns exec` makes private).
   */
  kubeconfig: string | { inCluster: StandInProcess };
  netConf: string;
  /** NODE_NAME, or POD_NAME + POD_NAMESPACE */
  env: Record<string, string>;
  extraArgs?: string[];
  /** pass --public-ip (default true); without it the agent takes the default route's interface, as flanneld */
  publicIp?: boolean;
  /** wait for the ready line (default true) */
  waitReady?: boolean;
}

/** Starts `flannel-udp up --kube-subnet-mgr …` on node i. */
export async function startKubeAgent(cluster: Cluster, i: number, o: KubeAgentOptions): Promise<CapturedChild> {
  const node = cluster.node(i);
  const inCluster = typeof o.kubeconfig === 'object' ? o.kubeconfig.inCluster : undefined;
  const env = { ...o.env, ...(inCluster ? { KUBERNETES_SERVICE_HOST: KUBE_UNDERLAY_IP, KUBERNETES_SERVICE_PORT: String(KUBE_PORT) } : {}) };
  const agent = [
    process.execPath, agentCliPath, 'up',
    '--kube-subnet-mgr',
    ...(typeof o.kubeconfig === 'string' ? ['--kubeconfig-file', o.kubeconfig] : []),
    '--net-config-path', o.netConf,
    '--subnet-file', node.subnetFile,
    ...(o.publicIp === false ? [] : ['--public-ip', node.underlayIp]),
    '--workers', '1',
    ...(o.extraArgs ?? []),
  ];
  const logFile = join(cluster.tempDir, `agent-kube-n${i}.log`);
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  let child: CapturedChild;
  if (inCluster) {
    const sa = inCluster.serviceAccountDir();
    const target = '/run/secrets/kubernetes.io/serviceaccount'; // /var/run is /run
    const script = `mount -t tmpfs flannel-udp-test /run && mkdir -p ${target} && cp "$0"/token "$0"/ca.crt "$0"/namespace ${target}/ && exec env "$@"`;
    child = cluster.spawn(node.ns, 'sh', ['-c', script, sa, ...envArgs, ...agent], { logFile });
  } else {
    child = cluster.spawn(node.ns, 'env', [...envArgs, ...agent], { logFile });
  }
  if (o.waitReady === false) return child;
  try {
    await waitForLine(child, /flannel-udp agent ready/, 30_000);
  } catch (err) {
    await stopChild(child, 'SIGKILL');
    throw new Error(`kube agent on node ${i} did not become ready: ${(err as Error).message}`);
  }
  return child;
}

/** GET on the agent's health server inside node namespace ns. */
export async function healthGet(cluster: Cluster, ns: string, port: number, path: string): Promise<{ status: number; body: string }> {
  const script = `fetch('http://127.0.0.1:${port}${path}').then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))`;
  const { stdout } = await cluster.exec(ns, process.execPath, ['-e', script], { timeoutMs: 20_000 });
  return JSON.parse(stdout.trim());
}
