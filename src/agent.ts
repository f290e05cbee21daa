// One node's agent: reads this node's subnet, learns the peers' leases,
// creates and configures the TUN device, and runs the data plane until it is
// told to stop. Setup is all-or-nothing: if any step fails, everything made
// so far is undone before the error is reported.
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { ipv6PodNetwork, readSubnetFile, type SubnetConfig } from './control/subnet-file.js';
import { type Cidr6, formatCidr6, formatIPv6, parseIPv6 } from './control/ipv6-address.js';
import { formatCidr, formatIPv4, makeCidr, parseIPv4 } from './control/ipv4-address.js';
import type { Lease } from './control/lease.js';
import type { LeaseSource } from './control/lease-source.js';
import { LeasesFileSource } from './control/leases-file.js';
import { EtcdSubnetManager } from './control/etcd-subnet-manager.js';
// Type only: kube mode loads its client when chosen (it costs ~70 MB of RSS; docs/design.md).
import type { KubeSubnetManager } from './control/kube-subnet-manager.js';
import { IpMasq, masq6RuleSet } from './control/ip-masq.js';
import { CommandRunner } from './control/command-runner.js';
import { forward6RuleSet, forwardRulesKeeper } from './control/forward-rules.js';
import { buildLeaseTableSnapshot } from './control/lease-table.js';
import { checkLeases, localAddresses, localIpv6Addresses, type LeaseRejectReason } from './control/lease-sanity.js';
import { checkIpv6NetworkFitsHost, checkNetworkFitsHost, configureKeptTun, configureTun } from './control/routes.js';
import { DataPlane } from './dataplane/data-plane.js';
import { TunInUseError, inspectTun, isReusableTun, validateTunName } from './dataplane/tun-device.js';
import { formatSubnetKey } from './control/lease.js';
import { startControlServer, type ControlServer } from './observe/control-socket.js';
import { startHealthServer, type AgentStats, type HealthServer } from './observe/metrics.js';
import { renderTraceEvent } from './observe/trace-render.js';
import { VXLAN_OVERHEAD, VXLAN_DEFAULT_PORT, formatMac, parseMac } from './encap/vxlan.js';
import { backendVni } from './control/network-config.js';
import { vtepMacOf } from './control/lease-table.js';
import { createHash } from 'node:crypto';
import { chooseInterface, type InterfaceChoice } from './control/default-interface.js';

export const UDP_ENCAP_OVERHEAD = 28; // outer IPv4 (20) + UDP (8)
/** Over the IPv6 underlay the outer header is IPv6's 40 bytes, not IPv4's 20. */
export const IPV6_UNDERLAY_EXTRA = 20;
export type Backend = 'udp' | 'vxlan';
export const READY_LINE = 'flannel-udp agent ready';

export interface AgentOptions {
  backend: Backend;
  /** VXLAN only: VNI, VTEP MAC (undefined: derived), outer UDP checksum on/zero. */
  vni: number;
  vtepMac?: string;
  vxlanUdpChecksum: boolean;
  subnetFile: string;
  /** The static leases file; exactly one of leasesFile and etcd is set. */
  leasesFile?: string;
  /** flanneld's etcd mode: the lease is acquired from etcd, subnet.env written, the peers watched. */
  etcd?: {
    endpoints: string[];
    prefix: string;
    caFile?: string;
    certFile?: string;
    keyFile?: string;
    /** --etcd-username/--etcd-password: etcd v3 auth; never logged */
    auth?: import('./control/etcd-client.js').EtcdAuth;
    /** renew the subnet lease this long before it expires */
    renewMarginMs: number;
  };
  /** flanneld's --kube-subnet-mgr: the subnet is the node's podCIDR, the lease node annotations, the peers watched. */
  kube?: {
    kubeconfigFile?: string;
    apiUrl?: string;
    annotationPrefix: string;
    netConfigPath: string;
    /** --set-node-network-unavailable (default true): NetworkUnavailable=False once forwarding is up */
    setNodeNetworkUnavailable?: boolean;
  };
  /** --ip-masq: masquerade pod traffic leaving the cluster network (flannel's FLANNEL-POSTRTG chain). */
  ipMasq?: boolean;
  /** --iptables-forward-rules (flanneld's default: on): FLANNEL-FWD accepts the cluster network in FORWARD. */
  forwardRules?: boolean;
  /** how often the masquerade rules are re-checked; default 5 s */
  iptablesResyncMs?: number;
  /** Follow edits of the leases file (default); when false only SIGHUP re-reads it. */
  watchLeases: boolean;
  publicIp?: string;
  /** --public-ipv6: this node's IPv6 underlay address (flanneld's flag) */
  publicIpv6?: string;
  /** --iface (repeatable: names or addresses), --iface-regex, --iface-can-reach: flanneld's choice of interface */
  iface?: InterfaceChoice;
  port: number;
  workers: number;
  tunName: string;
  /**
   * --persist-tun (default on): the TUN device, its address and routes, and
   * the iptables rules outlive a restart (SIGTERM, a kill), so the next agent
   * attaches to them; SIGINT or `flannel-udp cleanup` removes them.
   */
  persistTun?: boolean;
  batchSize: number;
  socketBufferBytes: number;
  offload: boolean;
  busyPollUs: number;
  /** Warm each worker's forwarding path before it starts (dataplane/rehearsal.ts). */
  rehearsal: boolean;
  /** --receive-spread: UDP mode's choice of receiving worker (dataplane/data-plane.ts); default inner-flow. */
  receiveSpread?: 'inner-flow' | 'kernel-hash';
  observe?: import('./observe/options.js').ObserveOptions;
}

export type Log = (line: string) => void;

/** A problem the user must fix (bad flag, bad file): printed without a stack trace, exit code 2. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** VXLAN send sockets per worker: distinct source ports for the underlay to spread flows over. */
const VXLAN_SOURCE_PORTS = 4;

export class Agent {
  private dataPlane?: DataPlane;
  private leaseSource?: LeaseSource;
  private etcd?: EtcdSubnetManager;
  private kube?: KubeSubnetManager;
  private ipMasq?: IpMasq;
  private forwardRules?: IpMasq;
  /** the same two rule sets in ip6tables, for the IPv6 network */
  private ipMasq6?: IpMasq;
  private forwardRules6?: IpMasq;
  private commands?: CommandRunner;
  /** The UDP port in use: --port, or Backend.Port from the etcd network config. */
  port = 0;
  /** Called when the agent cannot go on (its etcd lease was revoked); the CLI stops it. */
  onFatal: (err: Error) => void = (err) => this.log(`fatal: ${err.message}`);
  private controlServer?: ControlServer;
  private healthServer?: HealthServer;
  private ready = false;
  /** A running agent forwards on the same persistent device: this one takes over from it (a hand-over). */
  private handover = false;
  /** A restart: attached to a kept device nobody else is on (packets wait for this agent). */
  private restartAttach = false;
  private leaseVersion = 0;
  private leases: Lease[] = [];
  /** leases left out by the sense checks now: key → the reason logged */
  private rejectedLeases = new Map<string, string>();
  /** how many times a lease was rejected, by reason (a lease counts again only after it changed or came back) */
  private leaseRejections: Partial<Record<LeaseRejectReason, number>> = {};
  /** unknown lease attributes already reported: each name is logged once */
  private reportedUnknownFields = new Set<string>();
  subnet!: SubnetConfig;
  /** Dual-stack: this node's IPv6 subnet and the IPv6 network (from the subnet config). */
  ipv6: { subnet: Cidr6; network: Cidr6 } | undefined;
  publicIp = 0;
  /** --public-ipv6, when given (16 bytes). */
  publicIpv6: Uint8Array | undefined;
  /** VXLAN: this node's VTEP MAC. */
  vtepMac: Uint8Array = new Uint8Array(6);

  constructor(
    private readonly opts: AgentOptions,
    private readonly log: Log,
  ) {}

  async start(): Promise<void> {
    const { opts, log } = this;
    // Before anything else (etcd, sockets, files): a second agent on this TUN name must not touch the first one's state.
    try {
      validateTunName(opts.tunName);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
    // A device of this name is refused unless it is a persistent one an earlier agent left (tun-device.ts).
    const found = inspectTun(opts.tunName);
    if (found.kind !== 'absent') {
      const reusable = opts.persistTun === true && isReusableTun(found, opts.offload);
      if (!reusable && !(opts.persistTun === true && found.kind === 'tun' && !found.carrier)) throw new TunInUseError(opts.tunName);
      this.handover = reusable && found.kind === 'tun' && found.carrier;
      log(
        this.handover
          ? `${opts.tunName}: another agent forwards on it; taking over once this one is ready (hand-over)`
          : `${opts.tunName}: left by a previous agent; attaching to it`,
      );
    }
    this.port = opts.port;
    // /healthz from the start, as flanneld: a liveness probe must not kill an agent that waits for its podCIDR or etcd.
    if (opts.observe?.healthz) {
      this.healthServer = await startHealthServer({ ...opts.observe.healthz, snapshot: () => this.statsSnapshot(), ready: () => this.ready, log });
      log(`serving /healthz, /readyz and /metrics on ${opts.observe.healthz.ip}:${this.healthServer.port}`);
    }
    if (opts.kube) {
      // kube mode writes subnet.env from the node's podCIDR. The address: the node-public-ip annotation, else
      // --public-ip/--iface, else (as flanneld) the default route's interface; the manager decides.
      const given = opts.publicIp !== undefined || opts.iface !== undefined ? await resolvePublicIp(opts, log) : undefined;
      const { KubeSubnetManager } = await import('./control/kube-subnet-manager.js');
      this.kube = new KubeSubnetManager({
        ...opts.kube,
        subnetFile: opts.subnetFile,
        ipMasq: opts.ipMasq ?? false,
        publicIp: given,
        publicIpv6: publicIpv6Flag(opts) ?? (given !== undefined ? detectPublicIpv6(given, log) : undefined),
        vtepMacFor: (ip) => {
          this.publicIp = ip;
          return formatMac(this.resolveVtepMac());
        },
        env: process.env,
        log,
      });
      const joined = await this.kube.start();
      opts.backend = joined.config.backendType as Backend;
      if (opts.backend === 'vxlan') opts.vni = backendVni(joined.config);
      this.subnet = joined.subnetConfig;
      this.publicIp = joined.publicIp;
      this.publicIpv6 = joined.publicIpv6;
      this.port = joined.port ?? (opts.backend === 'vxlan' ? VXLAN_DEFAULT_PORT : opts.port);
    } else if (opts.etcd) {
      // etcd mode writes subnet.env (from the lease it acquires) instead of reading it.
      this.publicIp = await resolvePublicIp(opts, log);
      // Known before the subnet is claimed, so a vxlan lease can publish it (flannel's BackendData).
      this.vtepMac = this.resolveVtepMac();
      this.etcd = new EtcdSubnetManager({
        ...opts.etcd,
        publicIp: this.publicIp,
        publicIpv6: (this.publicIpv6 = publicIpv6Flag(opts) ?? detectPublicIpv6(this.publicIp, log)),
        vtepMac: formatMac(this.vtepMac),
        subnetFile: opts.subnetFile,
        ipMasq: opts.ipMasq ?? false,
        log,
        onFatal: (err) => this.onFatal(err),
        // Before the lease is taken and subnet.env written; checked again below with the subnet acquired.
        checkNetwork: (network, previous) =>
          checkNetworkFitsHost({ tunName: opts.tunName, subnet: previous ?? makeCidr(network.network, 32), network, publicIp: this.publicIp }),
      });
      const joined = await this.etcd.start();
      // As with flanneld, the network config chooses the backend (the CLI refuses --backend with etcd).
      opts.backend = joined.config.backendType as Backend;
      if (opts.backend === 'vxlan') opts.vni = backendVni(joined.config);
      this.subnet = joined.subnetConfig;
      this.port = joined.port ?? (opts.backend === 'vxlan' ? VXLAN_DEFAULT_PORT : opts.port);
    } else {
      this.subnet = await readSubnetFile(opts.subnetFile);
      this.publicIp = await resolvePublicIp(opts, log);
      if (this.subnet.ipv6Only || this.subnet.ipv6Network !== undefined) this.publicIpv6 = publicIpv6Flag(opts) ?? detectPublicIpv6(this.publicIp, log);
      if (opts.ipMasq !== undefined && this.subnet.ipMasq !== opts.ipMasq) {
        log(`warning: ${opts.subnetFile} says FLANNEL_IPMASQ=${this.subnet.ipMasq} but --ip-masq is ${opts.ipMasq ? 'on' : 'off'}; pods may be masqueraded twice or not at all`);
      }
    }
    for (const note of this.subnet.unsupported) log(`warning: ${note}`);
    this.resolveIpv6(opts, log);
    if (!this.subnet.ipv6Only && this.publicIp === 0) {
      throw new ConfigError('--public-ip (or --iface) is required: only an IPv6-only node may go without a public IPv4 address');
    }
    if (opts.backend === 'vxlan') this.vtepMac = this.resolveVtepMac();
    this.warnOnMtu();

    // A restart: the device an earlier agent left is there, with no agent on it. Attached first thing, so
    // packets wait in its queues (and the sockets' buffers) while this agent starts instead of being dropped.
    if (found.kind === 'tun' && !this.handover && opts.persistTun === true && isReusableTun(found, opts.offload)) {
      this.restartAttach = true;
      if (opts.rehearsal) log('rehearsal skipped: after a restart the waiting packets are the first to run the code');
      this.dataPlane = this.makeDataPlane();
      this.dataPlane.open();
    }

    // Before anything is created: a Network that covers this node's own addresses or routes is refused.
    if (!this.subnet.ipv6Only) await checkNetworkFitsHost({ tunName: opts.tunName, subnet: this.subnet.subnet, network: this.subnet.network, publicIp: this.publicIp });
    if (this.ipv6) await checkIpv6NetworkFitsHost({ tunName: opts.tunName, ipv6: this.ipv6 });

    // Leases before the device: a broken leases file must not leave a TUN behind.
    this.leaseSource = this.kube
      ? this.kube.leaseSource()
      : this.etcd
      ? this.etcd.leaseSource()
      : new LeasesFileSource(opts.leasesFile ?? '', {
          ownSubnet: this.subnet.ipv6Only ? undefined : this.subnet.subnet,
          ownIpv6Subnet: this.ipv6?.subnet,
          ipv6Network: this.ipv6?.network,
          watch: opts.watchLeases,
        });
    await this.leaseSource.start({
      onLeases: (leases) => this.setLeases(leases),
      onError: (err) => log(`leases: ${err.message}; keeping the last good leases`),
    });

    // The control socket before the device: a second agent on this TUN is refused here, having made nothing.
    if (opts.observe?.controlSocket) {
      this.controlServer = await startControlServer(
        opts.observe.controlSocket,
        {
          stats: () => this.statsSnapshot(),
          startTrace: (filter, limit, onEvent) => {
            if (!this.dataPlane) throw new Error('the data plane is not up yet');
            return this.dataPlane.startTrace({ filter, limit, perSecond: 0 }, onEvent);
          },
        },
        { log, takeOver: this.handover },
      );
    }

    const { subnet, network, mtu } = this.subnet;
    this.dataPlane ??= this.makeDataPlane();
    try {
      // The ip and iptables commands fork this process, and a fork write-protects
      // every page the process has: after the workers have warmed their memory,
      // the first packet would take a page fault per page it touches (about 50,
      // ~1 ms; docs/design.md). So the device is configured, and the masquerade
      // rules set, before the workers start.
      const dataPlane = this.dataPlane;
      await dataPlane.start(async () => {
        const addressing = { tunName: opts.tunName, subnet, network, mtu, ipv6: this.ipv6, ipv6Only: this.subnet.ipv6Only === true };
        if (dataPlane.tunOrigin === 'created') await configureTun(addressing, log);
        else await configureKeptTun(addressing, log);
        // One command helper runs every later iptables and ip6tables for all rule sets, so the agent never forks again.
        // iptables rules for the IPv4 network (none on an IPv6-only node), ip6tables ones for the IPv6 network.
        const v4rules = !this.subnet.ipv6Only;
        const v6 = this.ipv6;
        if ((v4rules || v6) && (opts.ipMasq || opts.forwardRules)) this.commands = new CommandRunner(log);
        const runner = this.commands;
        if (v4rules && opts.ipMasq) {
          this.ipMasq = new IpMasq({ network, subnet, resyncMs: opts.iptablesResyncMs, log, runner });
          await this.ipMasq.start();
        }
        if (v4rules && opts.forwardRules) {
          this.forwardRules = forwardRulesKeeper({ network, subnet, resyncMs: opts.iptablesResyncMs, log, runner });
          await this.forwardRules.start();
        }
        if (v6 && opts.ipMasq) {
          this.ipMasq6 = new IpMasq({ network, subnet, ruleSet: masq6RuleSet(v6.network, v6.subnet), resyncMs: opts.iptablesResyncMs, log, runner });
          await this.ipMasq6.start();
        }
        if (v6 && opts.forwardRules) {
          this.forwardRules6 = new IpMasq({ network, subnet, ruleSet: forward6RuleSet(v6.network), resyncMs: opts.iptablesResyncMs, log, runner });
          await this.forwardRules6.start();
        }
      });
      log(`TUN ${opts.tunName}: ${opts.workers} queue(s), one worker thread each`);
    } catch (err) {
      // What this start made goes; a device (and rules) kept from an earlier agent stay for the next (stop()).
      await this.stop();
      throw err;
    }
    // Leases that changed while the device came up.
    this.dataPlane.updateLeases(this.snapshot());
    if (opts.backend === 'vxlan') {
      log(
        `vxlan: VNI ${opts.vni}, VTEP MAC ${formatMac(this.vtepMac)}, outer UDP checksum ${opts.vxlanUdpChecksum ? 'on' : 'zero'}; ` +
          `this node's lease is {"PublicIP":"${formatIPv4(this.publicIp)}","BackendType":"vxlan","BackendData":${JSON.stringify(this.backendData())}` +
          `${this.ipv6 ? `,"BackendV6Data":${JSON.stringify(this.backendData())}` : ''}}`,
      );
    }
    const v6 = this.ipv6;
    const v4node = this.subnet.ipv6Only ? 'IPv6-only node' : `node ${formatCidr(subnet)}`;
    const v4cluster = this.subnet.ipv6Only ? '' : `cluster ${formatCidr(network)} `;
    log(
      `${v4node}${v6 ? ` IPv6 ${formatCidr6(v6.subnet)}` : ''} public IP ${formatIPv4(this.publicIp)} ${opts.backend} port ${this.port}; ` +
        `${v4cluster}${v6 ? `IPv6 cluster ${formatCidr6(v6.network)} ` : ''}mtu ${mtu}; ${this.leases.length} peer lease(s) from ${this.leaseSource.describe()}`,
    );
    const trace = opts.observe?.trace;
    if (trace) {
      const color = process.stderr.isTTY === true;
      this.dataPlane.startTrace(trace, (event) => process.stderr.write(renderTraceEvent(event, { color }) + '\n'));
      log(`tracing ${trace.filter || 'every packet'} (at most ${trace.limit || 'unlimited'} packets, ${trace.perSecond || 'any number'} per second)`);
    }
    if (opts.observe?.capture) log(`capturing to ${opts.observe.capture.dir} (tun-in, udp-out, udp-in, tun-out per worker)`);
    this.ready = true;
    log(READY_LINE);
    // flanneld's CompleteLease: tell Kubernetes the node's network is up.
    if (this.kube && opts.kube?.setNodeNetworkUnavailable !== false) void this.kube.completeLease();
  }

  /** The data plane for this node's settings; leases that arrive later come with updateLeases(). */
  private makeDataPlane(): DataPlane {
    const { opts, log } = this;
    const { subnet, mtu } = this.subnet;
    return new DataPlane(
      {
        tunName: opts.tunName,
        persistTun: opts.persistTun,
        backend: opts.backend,
        vxlan:
          opts.backend === 'vxlan'
            ? { vni: opts.vni, vtepMac: this.vtepMac, udpChecksum: opts.vxlanUdpChecksum, sourcePorts: VXLAN_SOURCE_PORTS }
            : undefined,
        workers: opts.workers,
        bindAddress: this.publicIp,
        port: this.port,
        mtu,
        pathMtu: this.pathMtu(mtu),
        ...(this.ipv6Underlay() ? { bindAddress6: this.publicIpv6, pathMtu6: this.pathMtu6(mtu) } : {}),
        batchSize: opts.batchSize,
        socketBufferBytes: opts.socketBufferBytes,
        offload: opts.offload,
        busyPollUs: opts.busyPollUs,
        // A restart: packets already wait in the kept device's queues, and a rehearsal would make them wait
        // seconds longer (long enough to overflow the queues on a loaded machine); they warm the code instead.
        rehearsal: opts.rehearsal && !this.restartAttach,
        ownNetwork: subnet.network,
        ownMask: subnet.mask,
        ownNetwork6: this.ipv6?.subnet.network,
        ownPrefix6: this.ipv6?.subnet.prefixLength,
        node: formatSubnetKey(subnet, this.ipv6?.subnet),
        capture: opts.observe?.capture,
        receiveSpread: opts.receiveSpread,
        log,
      },
      this.snapshot(),
    );
  }

  /** SIGHUP: re-read the leases now (the file is also watched). */
  async reload(): Promise<void> {
    await this.leaseSource?.reload?.();
  }

  /**
   * flannel's BackendData for this node's lease: what peers need to reach us.
   * A dual-stack node publishes the same as BackendV6Data: one VTEP MAC for
   * both families (docs/design.md), as the etcd and kube managers do.
   */
  backendData(): unknown {
    return this.opts.backend === 'vxlan' ? { VNI: this.opts.vni, VtepMAC: formatMac(this.vtepMac) } : null;
  }

  /**
   * --vtep-mac, else derived from this node's public IP: stable across
   * restarts with no state file, different per node, known before a subnet
   * is claimed, and published in the lease (etcd keeps it there, as flannel
   * does).
   */
  private resolveVtepMac(): Uint8Array {
    if (this.opts.vtepMac !== undefined) {
      try {
        return parseMac(this.opts.vtepMac);
      } catch (err) {
        throw new ConfigError(`--vtep-mac: ${(err as Error).message}`);
      }
    }
    const digest = createHash('sha256').update(`flannel-udp vtep ${this.publicIp}`).digest();
    const mac = Uint8Array.from(digest.subarray(0, 6));
    mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
    return mac;
  }

  /**
   * Every lease source hands its snapshots here, so the sense checks
   * (lease-sanity.ts) apply to leases from files, etcd and Kubernetes alike.
   */
  private setLeases(all: Lease[]): void {
    for (const lease of all) {
      for (const name of lease.unknownFields ?? []) {
        if (this.reportedUnknownFields.has(name)) continue;
        this.reportedUnknownFields.add(name);
        this.log(`lease ${lease.key}: unknown attribute ${JSON.stringify(name)} ignored (from a newer flannel?); not reported again`);
      }
    }
    const interfaces = networkInterfaces();
    const { accepted, rejected } = checkLeases(all, {
      network: this.subnet.network,
      ownSubnet: this.subnet.subnet,
      ownAddresses: [this.publicIp, ...localAddresses(interfaces)],
      ipv6Network: this.ipv6?.network,
      ownIpv6Subnet: this.ipv6?.subnet,
      ownIpv6Addresses: [...(this.publicIpv6 ? [this.publicIpv6] : []), ...localIpv6Addresses(interfaces)],
      ipv6Only: this.subnet.ipv6Only === true,
      ipv6Underlay: this.ipv6Underlay(),
    });
    const rejectedNow = new Map<string, string>();
    for (const r of rejected) {
      const line = `${r.reason}: ${r.detail}`;
      rejectedNow.set(r.key, line);
      if (this.rejectedLeases.get(r.key) === line) continue;
      this.leaseRejections[r.reason] = (this.leaseRejections[r.reason] ?? 0) + 1;
      this.log(`lease ${r.key} rejected (${line}); the other leases keep forwarding`);
    }
    this.rejectedLeases = rejectedNow;
    const usable: Lease[] = [];
    const want = this.opts.backend;
    for (const lease of accepted) {
      // A udp node and a vxlan node cannot talk: each drops the other's datagrams. flannel does the same.
      if (lease.backendType !== want) {
        this.log(`lease ${lease.key}: backend "${lease.backendType}" is not ${want}; skipped`);
        continue;
      }
      if (want === 'vxlan' && !this.subnet.ipv6Only && !vtepMacOf(lease.backendData)) {
        this.log(`lease ${lease.key}: BackendData has no valid VtepMAC; skipped`);
        continue;
      }
      // An IPv6 half with no MAC to send its frames to: skipped whole, as flanneld skips a lease whose BackendV6Data it cannot decode.
      if (want === 'vxlan' && this.ipv6 && lease.ipv6Subnet && !vtepMacOf(lease.backendV6Data)) {
        this.log(`lease ${lease.key}: BackendV6Data has no valid VtepMAC; skipped`);
        continue;
      }
      usable.push(lease);
    }
    const before = new Set(this.leases.map(describeLease));
    const after = new Set(usable.map(describeLease));
    for (const l of after) if (!before.has(l)) this.log(`lease added: ${l}`);
    for (const l of before) if (!after.has(l)) this.log(`lease removed: ${l}`);
    this.leases = usable;
    this.dataPlane?.updateLeases(this.snapshot());
  }

  private snapshot() {
    // An IPv6-only node routes no IPv4: the leases' IPv4 halves stay out of the table.
    const leases = this.subnet?.ipv6Only ? this.leases.map((l) => ({ ...l, ipv6Only: true as const })) : this.leases;
    return buildLeaseTableSnapshot(leases, ++this.leaseVersion);
  }

  /**
   * The node's IPv6 side: its IPv6 subnet from the subnet config (dual-stack
   * or IPv6-only) and its public IPv6 (--public-ipv6, else the underlay
   * interface's global IPv6 address, as flanneld's ExtV6Addr). With both, IPv6
   * pods travel over the IPv6 underlay to peers whose lease has a PublicIPv6.
   */
  private resolveIpv6(opts: AgentOptions, log: Log): void {
    try {
      this.ipv6 = ipv6PodNetwork(this.subnet);
    } catch (err) {
      throw new ConfigError(`${opts.subnetFile}: ${(err as Error).message}`);
    }
    if (this.subnet.ipv6Only && this.ipv6 === undefined) throw new ConfigError('an IPv6-only node needs FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET');
    // Kube mode: the node-public-ipv6 annotation (as flanneld) may have chosen it already.
    this.publicIpv6 ??= publicIpv6Flag(opts);
    if (this.publicIpv6 !== undefined && this.ipv6 !== undefined) {
      log(`public IPv6 ${formatIPv6(this.publicIpv6)}: IPv6 pods travel over the IPv6 underlay to peers whose lease has a PublicIPv6, over the IPv4 underlay to the others`);
    } else if (this.publicIpv6 !== undefined && opts.publicIpv6 !== undefined) {
      log(`public IPv6 ${formatIPv6(this.publicIpv6)} unused: this node has no IPv6 pod subnet`);
    }
    if (this.subnet.ipv6Only && this.publicIp === 0 && this.publicIpv6 === undefined) {
      throw new ConfigError('an IPv6-only node without a public IPv4 address needs --public-ipv6: the address peers send its packets to');
    }
    if (this.ipv6 && this.subnet.mtu < 1280) {
      throw new ConfigError(`FLANNEL_MTU ${this.subnet.mtu} is below IPv6's minimum of 1280: the kernel turns IPv6 off on such a device`);
    }
  }

  /** Fault injection (SIGUSR2): worker 0 throws and is restarted, while the others keep forwarding. */
  injectWorkerFault(worker = 0): void {
    this.log(`SIGUSR2: injecting a fault into worker ${worker}`);
    this.dataPlane?.crashWorker(worker);
  }

  /** The largest inner packet one datagram carries: the underlay MTU minus the encapsulation. */
  private pathMtu(tunMtu: number): number {
    const overhead = this.opts.backend === 'vxlan' ? VXLAN_OVERHEAD : UDP_ENCAP_OVERHEAD;
    const underlay = this.underlayInterface();
    if (!underlay) return tunMtu;
    try {
      return Math.min(tunMtu, underlayMtu(underlay) - overhead);
    } catch {
      return tunMtu;
    }
  }

  /** This node sends and receives over an IPv6 underlay: it has IPv6 pods and a public IPv6. */
  private ipv6Underlay(): boolean {
    return this.ipv6 !== undefined && this.publicIpv6 !== undefined;
  }

  /**
   * The largest IPv6 packet one datagram over the IPv6 underlay carries: the
   * underlay MTU minus 48 (UDP mode) or 70 (VXLAN). The TUN MTU stays
   * FLANNEL_MTU (flannel's rule, from the IPv4 overhead): a larger IPv6
   * packet gets ICMPv6 packet too big, as flannel-v6.1's smaller MTU gives it.
   */
  private pathMtu6(tunMtu: number): number {
    const overhead = (this.opts.backend === 'vxlan' ? VXLAN_OVERHEAD : UDP_ENCAP_OVERHEAD) + IPV6_UNDERLAY_EXTRA;
    const target = formatIPv6(this.publicIpv6!);
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      if (!addrs?.some((a) => a.family === 'IPv6' && formatIPv6(parseIPv6(a.address)) === target)) continue;
      try {
        return Math.min(tunMtu, underlayMtu(name) - overhead);
      } catch {
        break;
      }
    }
    // Not on a local interface (a NAT'd address): the IPv4 underlay's figure, less the larger outer header.
    return this.pathMtu(tunMtu) - IPV6_UNDERLAY_EXTRA;
  }

  /** The interface that holds the public IP, if it is on this host. */
  private underlayInterface(): string | undefined {
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      if (addrs?.some((a) => a.family === 'IPv4' && a.address === formatIPv4(this.publicIp))) return name;
    }
    return undefined;
  }

  /** flannel's rule: the TUN MTU is the underlay MTU minus the encapsulation (udp 28, vxlan 50). */
  private warnOnMtu(): void {
    const overhead = this.opts.backend === 'vxlan' ? VXLAN_OVERHEAD : UDP_ENCAP_OVERHEAD;
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      if (!addrs?.some((a) => a.family === 'IPv4' && a.address === formatIPv4(this.publicIp))) continue;
      try {
        const underlay = underlayMtu(name);
        if (underlay && this.subnet.mtu > underlay - overhead) {
          this.log(
            `warning: FLANNEL_MTU ${this.subnet.mtu} is larger than ${name}'s MTU ${underlay} minus ${overhead}: ` +
              `full-size packets will not fit in one datagram`,
          );
        }
      } catch {
        /* no sysfs entry: nothing to compare */
      }
    }
  }

  statsSnapshot(): AgentStats {
    return {
      node: this.subnet ? formatSubnetKey(this.subnet.subnet, this.ipv6?.subnet) : '',
      backend: this.opts.backend,
      ready: this.ready,
      workers: this.dataPlane?.statsSnapshot() ?? [],
      receiveSpread: this.dataPlane?.receiveSpread,
      leases: this.leases.map(describeLease),
      rejectedLeases: [...this.rejectedLeases].map(([key, why]) => `${key}: ${why}`),
      leaseRejections: { ...this.leaseRejections },
    };
  }

  /**
   * 'clean' (SIGINT, a failed first start) undoes everything start() made:
   * workers, sockets, the TUN device (its routes go with it) and the iptables
   * rules. 'restart' (SIGTERM) with --persist-tun keeps the device, its
   * routes and the rules for the next agent, which attaches to them; only the
   * process's own things (workers, sockets, servers) go.
   */
  async stop(exit: 'clean' | 'restart' = 'clean'): Promise<void> {
    // A start that failed on a device kept from an earlier agent leaves it (and the rules) for the next one.
    const keptFromBefore = !this.ready && this.dataPlane !== undefined && this.dataPlane.tunOrigin !== 'created';
    const keep = this.opts.persistTun === true && (exit === 'restart' || keptFromBefore);
    this.ready = false;
    await this.healthServer?.close();
    this.healthServer = undefined;
    await this.controlServer?.close();
    this.controlServer = undefined;
    await this.leaseSource?.stop();
    this.leaseSource = undefined;
    // A hand-over: the agent that replaces this one takes every flow before this one stops forwarding.
    if (keep) await this.dataPlane?.withdraw();
    await (keep ? this.ipMasq?.detach() : this.ipMasq?.stop());
    this.ipMasq = undefined;
    await (keep ? this.forwardRules?.detach() : this.forwardRules?.stop());
    this.forwardRules = undefined;
    await (keep ? this.ipMasq6?.detach() : this.ipMasq6?.stop());
    this.ipMasq6 = undefined;
    await (keep ? this.forwardRules6?.detach() : this.forwardRules6?.stop());
    this.forwardRules6 = undefined;
    await this.commands?.close();
    this.commands = undefined;
    await this.dataPlane?.stop({ removeDevice: !keep });
    this.dataPlane = undefined;
    // The etcd lease is left in place: a restarted agent finds it and keeps its subnet.
    await this.etcd?.stop();
    this.etcd = undefined;
    await this.kube?.stop();
    this.kube = undefined;
  }
}

function describeLease(l: Lease): string {
  return `${l.key} -> ${formatIPv4(l.publicIp)}${l.publicIpv6 ? ` (PublicIPv6 ${formatIPv6(l.publicIpv6)})` : ''}`;
}

function underlayMtu(name: string): number {
  // Synchronous on purpose: called once at start.
  return Number(readFileSync(`/sys/class/net/${name}/mtu`, 'utf8').trim());
}

async function resolvePublicIp(opts: AgentOptions, log: Log): Promise<number> {
  // As flanneld: the interface is chosen even with --public-ip (which then only gives the address).
  let chosen: Awaited<ReturnType<typeof chooseInterface>> | undefined;
  if (opts.iface !== undefined) {
    try {
      chosen = await chooseInterface(opts.iface);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
    log(`interface ${chosen.iface} (${chosen.by}), address ${chosen.address}`);
  }
  if (opts.publicIp !== undefined) {
    try {
      return parseIPv4(opts.publicIp);
    } catch (err) {
      throw new ConfigError(`--public-ip: ${(err as Error).message}`);
    }
  }
  if (chosen) return parseIPv4(chosen.address);
  // An IPv6-only node over an IPv6-only underlay: no public IPv4 (checked once the subnet is known).
  if (opts.publicIpv6 !== undefined) return 0;
  throw new ConfigError("either --public-ip or --iface is required: the address peers send this node's packets to");
}

/**
 * flanneld's ExtV6Addr without --public-ipv6: a global IPv6 address of the
 * interface that holds the public IPv4 address (link-local and loopback
 * addresses never qualify). Only a node with IPv6 pods uses it.
 */
export function detectPublicIpv6(publicIp: number, log: Log, interfaces = networkInterfaces()): Uint8Array | undefined {
  if (publicIp === 0) return undefined;
  const v4 = formatIPv4(publicIp);
  for (const [name, addrs] of Object.entries(interfaces)) {
    if (!addrs?.some((a) => a.family === 'IPv4' && a.address === v4)) continue;
    const global = addrs.find((a) => a.family === 'IPv6' && !a.internal && !/^fe[89ab]/i.test(a.address));
    if (global === undefined) return undefined;
    log(`public IPv6 ${global.address}: ${name}'s global IPv6 address (as flanneld without --public-ipv6)`);
    return parseIPv6(global.address);
  }
  return undefined;
}

/** --public-ipv6, parsed: the node's IPv6 address its leases publish as PublicIPv6. */
function publicIpv6Flag(opts: AgentOptions): Uint8Array | undefined {
  if (opts.publicIpv6 === undefined) return undefined;
  try {
    return parseIPv6(opts.publicIpv6);
  } catch (err) {
    throw new ConfigError(`--public-ipv6: ${(err as Error).message}`);
  }
}
