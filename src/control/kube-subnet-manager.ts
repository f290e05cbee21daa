// This node's side of flanneld --kube-subnet-mgr (pkg/subnet/kube): the
// subnet is the one kube-controller-manager gave the node (spec.podCIDR), the
// lease is published as node annotations (kube-annotations.ts), the peers are
// every other flannel-annotated node (kube-lease-source.ts over a list+watch,
// kube-node-watch.ts), and once forwarding is up the node's
// NetworkUnavailable condition is set to False (reason FlannelIsUp).
//
// Unlike flanneld, which exits when the node has no podCIDR (and kubelet
// restarts it into a crash loop), the agent says what to fix and waits for
// the node to change: the watch delivers the update, no restart needed.

import { readBoundedFile } from './bounded-file.js';
import { type Cidr, formatCidr, formatIPv4, makeCidr, parseIPv4 } from './ipv4-address.js';
import { type Cidr6, formatCidr6, formatIPv6, parseIPv6 } from './ipv6-address.js';
import { type NetworkConfig, NetworkConfigError, parseNetworkConfig } from './network-config.js';
import { type SubnetConfig, writeSubnetFileAtomic } from './subnet-file.js';
import { BACKENDS, EtcdSetupError, describeSubnetConfig, makeSubnetConfig, underlayMtuFor } from './etcd-subnet-manager.js';
import {
  type AnnotationNames,
  type KubeNode,
  type PublishedLease,
  annotatedNodePublicIp,
  annotatedNodePublicIpv6,
  annotationNames,
  annotationPatch,
  ownSubnets,
} from './kube-annotations.js';
import { KubeApiError, KubeClient, type KubeConnection } from './kube-client.js';
import { NodeWatch } from './kube-node-watch.js';
import { KubeLeaseSource } from './kube-lease-source.js';
import { defaultInterfaceAddress } from './default-interface.js';

/** Problems the user must fix before the agent can run (no node name, a bad net-conf.json): exit code 2. */
export class KubeSetupError extends Error {
  override name = 'KubeSetupError';
}

export interface KubeSubnetManagerOptions extends KubeConnection {
  annotationPrefix: string;
  netConfigPath: string;
  subnetFile: string;
  ipMasq: boolean;
  /** --public-ip / --iface, resolved by the agent; the node-public-ip annotation overrides it; with neither, the default route's interface (flanneld's) */
  publicIp: number | undefined;
  /** VXLAN: this node's VTEP MAC, given the public IP finally chosen */
  vtepMacFor: (publicIp: number) => string;
  /**
   * dual-stack: --public-ipv6 (or the IPv6 address of --iface), resolved by
   * the agent; the node-public-ipv6 annotation overrides it. Published as the
   * public-ipv6 annotation; without either, none is published and peers reach
   * this node's IPv6 pods over IPv4.
   */
  publicIpv6?: Uint8Array;
  /** dual-stack VXLAN: the MAC published in backend-v6-data (flannel-v6.1's); default: vtepMacFor's */
  vtepMacV6For?: (publicIp: number) => string;
  /** the environment: NODE_NAME, or POD_NAME + POD_NAMESPACE */
  env: NodeJS.ProcessEnv;
  log: (line: string) => void;
  /** how often the podCIDR problem is repeated in the log while waiting; default 30 s */
  problemRepeatMs?: number;
  underlayMtu?: number;
}

export interface KubeJoinedNetwork {
  config: NetworkConfig;
  nodeName: string;
  subnet: Cidr;
  /** dual-stack / IPv6-only: the node's IPv6 pod CIDR */
  ipv6Subnet?: Cidr6;
  publicIp: number;
  /** the public IPv6 address published (after node-public-ipv6), if any */
  publicIpv6?: Uint8Array;
  subnetConfig: SubnetConfig;
  port: number | undefined;
}

/** Patches retried on 409 Conflict, each after re-reading the node. */
const CONFLICT_RETRIES = 5;

export class KubeSubnetManager {
  readonly client: KubeClient;
  readonly names: AnnotationNames;
  private watch: NodeWatch | undefined;
  private source: KubeLeaseSource | undefined;
  private joined: KubeJoinedNetwork | undefined;
  private stopped = false;
  private wakeWaiter: (() => void) | undefined;

  constructor(private readonly opts: KubeSubnetManagerOptions) {
    try {
      this.names = annotationNames(opts.annotationPrefix);
    } catch (err) {
      throw new KubeSetupError((err as Error).message);
    }
    try {
      this.client = new KubeClient(opts);
    } catch (err) {
      throw new KubeSetupError(`cannot configure the Kubernetes client: ${(err as Error).message}`);
    }
  }

  /**
   * Reads net-conf.json, finds the node, waits for a usable podCIDR,
   * publishes the annotations and writes subnet.env.
   */
  async start(): Promise<KubeJoinedNetwork> {
    const opts = this.opts;
    const log = opts.log;
    const config = await this.readNetConfig();
    for (const note of config.notes) log(`warning: ${note}`);
    const backend = BACKENDS[config.backendType];
    if (backend === undefined) {
      throw new KubeSetupError(`${opts.netConfigPath}: Backend.Type "${config.backendType}" is not supported by flannel-udp (supported: ${Object.keys(BACKENDS).join(', ')})`);
    }
    const port = backend.port(config);
    const nodeName = await this.retrying('finding this node', () => this.nodeName());
    const networks = [config.enableIPv4 ? `Network ${formatCidr(config.network)}` : 'IPv6-only', ...(config.ipv6 !== undefined ? [`IPv6Network ${formatCidr6(config.ipv6.network)}`] : [])];
    log(`kube: node "${nodeName}", API server ${this.client.describe()}, net-conf ${opts.netConfigPath}: ${networks.join(', ')}, backend ${config.backendType}`);

    this.watch = new NodeWatch(this.client, { log, onError: (err) => log(`kube: ${err.message}`) });
    await this.retrying('listing nodes', () => this.watch!.start());

    const { subnet, ipv6Subnet } = await this.waitForSubnet(nodeName, config);
    const node = this.watch.get(nodeName)!;
    let publicIp = opts.publicIp;
    const annotated = annotatedNodePublicIp(node, this.names);
    if (annotated !== undefined) {
      try {
        publicIp = parseIPv4(annotated);
      } catch (err) {
        throw new KubeSetupError(`node "${nodeName}" annotation ${this.names.nodePublicIp}: ${(err as Error).message}`);
      }
      log(`kube: public IP ${annotated} from the node's ${this.names.nodePublicIp} annotation`);
    }
    if (publicIp === undefined) {
      try {
        const found = defaultInterfaceAddress();
        publicIp = parseIPv4(found.address);
        log(`kube: public IP ${found.address} of ${found.iface}, the default route's interface (no --public-ip, --iface or ${this.names.nodePublicIp})`);
      } catch (err) {
        throw new KubeSetupError((err as Error).message);
      }
    }

    // Before publishing: an address no interface holds must not be announced to the peers.
    let mtu: number;
    try {
      mtu = (opts.underlayMtu ?? underlayMtuFor(publicIp)) - backend.overhead;
    } catch (err) {
      throw new KubeSetupError((err as EtcdSetupError).message);
    }
    const backendData = backend.backendData(config, config.backendType === 'vxlan' ? opts.vtepMacFor(publicIp) : undefined);
    const published: PublishedLease = { backendType: config.backendType, backendData, publicIp: annotated ?? formatIPv4(publicIp) };
    let publicIpv6 = opts.publicIpv6;
    if (ipv6Subnet !== undefined) {
      const annotated6 = annotatedNodePublicIpv6(node, this.names);
      if (annotated6 !== undefined) {
        try {
          publicIpv6 = parseIPv6(annotated6);
        } catch (err) {
          throw new KubeSetupError(`node "${nodeName}" annotation ${this.names.nodePublicIpv6}: ${(err as Error).message}`);
        }
        log(`kube: public IPv6 ${annotated6} from the node's ${this.names.nodePublicIpv6} annotation`);
      }
      if (publicIpv6 !== undefined) published.publicIpv6 = annotated6 ?? formatIPv6(publicIpv6);
      const pub = publicIp;
      const v6Data = backend.backendV6Data(config, config.backendType === 'vxlan' ? (opts.vtepMacV6For ?? opts.vtepMacFor)(pub) : undefined);
      if (v6Data !== undefined) published.backendV6Data = v6Data;
    } else {
      publicIpv6 = undefined;
    }
    await this.retrying('publishing the lease', () => this.publish(nodeName, published));

    const subnetConfig = makeSubnetConfig(config, makeCidr(subnet.network + 1, subnet.prefixLength), ipv6Subnet, mtu, opts.ipMasq);
    await writeSubnetFileAtomic(opts.subnetFile, subnetConfig);
    log(`wrote ${opts.subnetFile}: ${describeSubnetConfig(subnetConfig)}`);
    this.joined = {
      config,
      nodeName,
      subnet,
      ...(ipv6Subnet !== undefined ? { ipv6Subnet } : {}),
      publicIp,
      ...(publicIpv6 !== undefined ? { publicIpv6 } : {}),
      subnetConfig,
      port,
    };
    return this.joined;
  }

  /** The other nodes' leases, watched. Call after start(). */
  leaseSource(): KubeLeaseSource {
    const j = this.joined;
    if (j === undefined || this.watch === undefined) throw new Error('KubeSubnetManager.leaseSource() before start()');
    this.source ??= new KubeLeaseSource(this.watch, {
      names: this.names,
      ownNode: j.nodeName,
      ownSubnet: j.subnet,
      ownIpv6Subnet: j.ipv6Subnet,
      ipv6Network: j.config.ipv6?.network,
      describe: `Kubernetes API ${this.client.describe()} (nodes annotated ${this.names.kubeSubnetManager}=true)`,
    });
    return this.source;
  }

  /**
   * flanneld's CompleteLease: the node's NetworkUnavailable condition to False,
   * reason FlannelIsUp, once forwarding is up. Retried on conflict; a failure
   * is logged, not fatal (the pod network works without it).
   */
  async completeLease(): Promise<void> {
    const j = this.joined;
    if (j === undefined) return;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z'); // metav1.Time: RFC 3339, seconds
    const patch = {
      status: {
        conditions: [
          { type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node', lastTransitionTime: now, lastHeartbeatTime: now },
        ],
      },
    };
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.patchNodeStatus(j.nodeName, patch);
        this.opts.log(`kube: node "${j.nodeName}" condition NetworkUnavailable=False (FlannelIsUp)`);
        return;
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 409 && attempt < CONFLICT_RETRIES) continue;
        this.opts.log(`kube: warning: could not set NetworkUnavailable=False on node "${j.nodeName}": ${(err as Error).message}`);
        return;
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeWaiter?.();
    this.source?.stop();
    await this.watch?.stop();
  }

  private async readNetConfig(): Promise<NetworkConfig> {
    let text: string;
    try {
      // net-conf.json is a few lines; a FIFO, device or huge file is refused (bounded-file.ts).
      ({ text } = await readBoundedFile(this.opts.netConfigPath, 64 << 10, 'the network config'));
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { detail?: string };
      throw new KubeSetupError(`cannot read the network config --net-config-path ${this.opts.netConfigPath}: ${e.detail?.replace(/^cannot read the network config: /, '') ?? e.code ?? e.message} (kube-flannel.yml mounts net-conf.json from the kube-flannel-cfg ConfigMap there)`);
    }
    try {
      return parseNetworkConfig(text, this.opts.netConfigPath);
    } catch (err) {
      if (err instanceof NetworkConfigError) throw new KubeSetupError(err.message);
      throw err;
    }
  }

  private async nodeName(): Promise<string> {
    const env = this.opts.env;
    if (env.NODE_NAME) return env.NODE_NAME;
    const pod = env.POD_NAME;
    const ns = env.POD_NAMESPACE;
    if (!pod || !ns) {
      throw new KubeSetupError('kube mode needs the node name: set NODE_NAME, or POD_NAME and POD_NAMESPACE (the DaemonSet sets them from the downward API)');
    }
    const name = await this.client.getPodNodeName(ns, pod);
    if (!name) throw new KubeSetupError(`pod ${ns}/${pod} has no spec.nodeName (not scheduled yet?)`);
    return name;
  }

  /** Retries API failures (the API server may be starting too) with backoff; setup errors go through. */
  private async retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let backoff = 250;
    let reported = false;
    for (;;) {
      if (this.stopped) throw new KubeApiError(`stopped while ${what}`, 0);
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof KubeApiError)) throw err;
        // 401/403 will not heal by waiting, but a token may be mounted late: say so loudly, keep trying.
        if (!reported) this.opts.log(`kube: ${what}: ${err.message}; retrying with backoff`);
        reported = true;
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  }

  /** Waits (watching, no polling) until the node exists with a pod CIDR inside Network. */
  private waitForSubnet(nodeName: string, config: NetworkConfig): Promise<{ subnet: Cidr; ipv6Subnet?: Cidr6 }> {
    const watch = this.watch!;
    const repeatMs = this.opts.problemRepeatMs ?? 30_000;
    return new Promise((resolve, reject) => {
      let lastProblem = '';
      let lastLogged = 0;
      let waitingSince: number | undefined;
      const check = () => {
        if (this.stopped) return finish(new KubeApiError('stopped while waiting for the node', 0));
        const node = watch.get(nodeName);
        const result: ReturnType<typeof ownSubnets> = node
          ? ownSubnets(node, config, this.opts.netConfigPath)
          : { problem: `node "${nodeName}" does not exist in the API server (is NODE_NAME right?)` };
        if ('subnet' in result) {
          const both = result.ipv6Subnet !== undefined ? `${formatCidr(result.subnet)} and ${formatCidr6(result.ipv6Subnet)}` : formatCidr(result.subnet);
          if (waitingSince !== undefined) this.opts.log(`kube: node "${nodeName}" now has pod CIDR ${both}; going on`);
          if (result.warning !== undefined) this.opts.log(`warning: ${result.warning}`);
          return finish({ subnet: result.subnet, ...(result.ipv6Subnet !== undefined ? { ipv6Subnet: result.ipv6Subnet } : {}) });
        }
        waitingSince ??= Date.now();
        if (result.problem !== lastProblem || Date.now() - lastLogged >= repeatMs) {
          this.opts.log(`error: ${result.problem}. Waiting for the node to change (not exiting)`);
          lastProblem = result.problem;
          lastLogged = Date.now();
        }
      };
      const unsubscribe = watch.subscribe(check);
      const repeat = setInterval(check, repeatMs);
      this.wakeWaiter = check;
      const finish = (r: { subnet: Cidr; ipv6Subnet?: Cidr6 } | Error) => {
        unsubscribe();
        clearInterval(repeat);
        this.wakeWaiter = undefined;
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      check();
    });
  }

  /** Writes the lease annotations when they differ, re-reading the node after a conflict. */
  private async publish(nodeName: string, lease: PublishedLease): Promise<void> {
    let node: KubeNode = this.watch!.get(nodeName)!;
    for (let attempt = 1; ; attempt++) {
      const annotations = annotationPatch(node, this.names, lease);
      if (annotations === undefined) {
        this.opts.log(`kube: node "${nodeName}" already carries this lease's annotations`);
        return;
      }
      // resourceVersion makes the patch conditional: it applies to the node we decided on, or 409.
      const patch = { metadata: { resourceVersion: node.metadata?.resourceVersion, annotations } };
      try {
        await this.client.patchNodeStatus(nodeName, patch);
        this.opts.log(`kube: annotated node "${nodeName}": ${JSON.stringify(annotations)}`);
        return;
      } catch (err) {
        if (!(err instanceof KubeApiError) || err.status !== 409 || attempt >= CONFLICT_RETRIES) throw err;
        this.opts.log(`kube: node "${nodeName}" changed meanwhile (409 Conflict); reading it again`);
        node = await this.client.getNode(nodeName);
      }
    }
  }
}

