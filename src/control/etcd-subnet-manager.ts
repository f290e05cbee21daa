// This node's side of flannel's etcd store, as flanneld's etcd subnet manager
// does it (pkg/subnet/etcd): read the network config, acquire a subnet lease,
// write subnet.env, renew the lease before it expires, and hand out the lease
// source that watches the other nodes' leases.
//
//   <prefix>/config                 the network config (network-config.ts)
//   <prefix>/subnets/10.244.7.0-24  {"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"udp","BackendData":null}
//                                   attached to an etcd lease of 24 h
//
// Acquiring, in flannel's order of preference:
//   1. a lease in the store with this node's PublicIP (the node restarted):
//      keep its subnet, rewrite it with a fresh 24 h lease;
//   2. the subnet recorded in an existing subnet.env, if still free;
//   3. a free subnet chosen by subnet-allocator.ts.
// Every write is a transaction that holds only if nobody touched the key since
// we looked: CREATE revision == 0 for a new key (it does not exist), MOD
// revision == what we read for our old one. Two nodes racing for one subnet:
// exactly one transaction succeeds; the loser reads again and picks another.

import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
import { type Cidr, cidrEquals, formatCidr, formatIPv4, makeCidr } from './ipv4-address.js';
import { formatSubnetKey, parseLeaseAttrs, parseSubnetKey } from './lease.js';
import { type EtcdAuth, EtcdClient, EtcdError, type EtcdTlsFiles, type KeyValue } from './etcd-client.js';
import { EtcdLeaseSource } from './etcd-lease-source.js';
import { backendPort, backendVni, type NetworkConfig, NetworkConfigError, parseNetworkConfig } from './network-config.js';
import { chooseSubnet, isSubnetCompatible, isSubnetTaken } from './subnet-allocator.js';
import { readSubnetFile, type SubnetConfig, writeSubnetFileAtomic } from './subnet-file.js';

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';
/** flannel's subnetTTL */
export const LEASE_TTL_SECONDS = 24 * 60 * 60;
/** flannel's raceRetries */
const RACE_RETRIES = 10;

/**
 * The flannel backends this agent can run in etcd mode, and what each needs
 * here: its per-packet overhead (FLANNEL_MTU = underlay MTU − overhead), the
 * BackendData it publishes in its lease, and its port if the config sets one.
 * A new backend is one more entry.
 */
export interface BackendSpec {
  overhead: number;
  /** What the lease publishes; vtepMac is this node's VTEP MAC (vxlan). */
  backendData(config: NetworkConfig, vtepMac: string | undefined): unknown;
  port(config: NetworkConfig): number | undefined;
}

export const BACKENDS: Record<string, BackendSpec> = {
  // outer IPv4 (20) + UDP (8); flannel's udp lease carries no BackendData.
  udp: { overhead: 28, backendData: () => null, port: backendPort },
  // outer IPv4 + UDP + VXLAN + inner Ethernet; flannel's vxlan lease: {"VNI": 1, "VtepMAC": "…"}.
  vxlan: {
    overhead: 50,
    backendData: (config, vtepMac) => {
      if (vtepMac === undefined) throw new EtcdSetupError('vxlan backend: no VTEP MAC to publish');
      return { VNI: backendVni(config), VtepMAC: vtepMac };
    },
    port: backendPort,
  },
};

/** Problems the user must fix (no interface for the public IP, an unsupported backend): exit code 2. */
export class EtcdSetupError extends Error {
  override name = 'EtcdSetupError';
}

export interface OwnLease {
  subnet: Cidr;
  /** the full etcd key */
  key: string;
  /** the etcd lease the key is attached to */
  leaseId: string;
  /** ms since the epoch */
  expiresAt: number;
  /** the JSON value written */
  value: string;
}

export interface AcquireOptions {
  publicIp: number;
  backendType: string;
  backendData: unknown;
  /** FLANNEL_SUBNET of an existing subnet.env: preferred when free */
  previousSubnet?: Cidr;
  ttlSeconds?: number;
  random?: () => number;
  log?: (line: string) => void;
}

export function subnetsPrefix(prefix: string): string {
  return `${prefix.replace(/\/+$/, '')}/subnets/`;
}

export function leaseValue(publicIp: number, backendType: string, backendData: unknown): string {
  // Field order as flannel's LeaseAttrs marshals it.
  return JSON.stringify({ PublicIP: formatIPv4(publicIp), PublicIPv6: null, BackendType: backendType, BackendData: backendData ?? null });
}

export async function readNetworkConfig(client: EtcdClient, prefix: string): Promise<NetworkConfig> {
  const key = `${prefix.replace(/\/+$/, '')}/config`;
  const kv = await client.get(key);
  if (kv === undefined) {
    throw new NetworkConfigError(
      `no flannel network config at ${key} in etcd ${client.describe()}: write one first, e.g. ` +
        `etcdctl put ${key} '{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}'`,
    );
  }
  return parseNetworkConfig(kv.value, `network config ${key}`);
}

/** Claims a subnet for this node; see the file header for the order of preference. */
export async function acquireLease(client: EtcdClient, prefix: string, config: NetworkConfig, opts: AcquireOptions): Promise<OwnLease> {
  const log = opts.log ?? (() => undefined);
  const ttl = opts.ttlSeconds ?? LEASE_TTL_SECONDS;
  const value = leaseValue(opts.publicIp, opts.backendType, opts.backendData);
  const dir = subnetsPrefix(prefix);

  for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
    const { kvs } = await client.range(dir, { prefix: true });
    const taken: { subnet: Cidr; kv: KeyValue; publicIp?: number }[] = [];
    for (const kv of kvs) {
      let subnet: Cidr;
      try {
        subnet = parseSubnetKey(kv.key.slice(dir.length));
      } catch {
        continue; // not a subnet key (flannel skips these too)
      }
      let publicIp: number | undefined;
      try {
        publicIp = parseLeaseAttrs(kv.key.slice(dir.length), JSON.parse(kv.value)).publicIp;
      } catch {
        // A broken value still occupies its subnet.
      }
      taken.push({ subnet, kv, publicIp });
    }

    // 1. Our own lease from before a restart. Several with our IP (an older
    // one not yet expired): the one subnet.env records, else the first as
    // flanneld does; the node's pod subnet must not change under its pods.
    const ours = taken.filter((t) => t.publicIp === opts.publicIp);
    const prevMatch = opts.previousSubnet === undefined ? undefined : ours.find((t) => cidrEquals(t.subnet, opts.previousSubnet!));
    const mine = prevMatch ?? ours[0];
    if (attempt === 0) {
      for (const other of ours) {
        if (other === mine) continue;
        log(
          `etcd: lease ${formatCidr(other.subnet)} also carries this node's public IP ${formatIPv4(opts.publicIp)}: stale, left alone ` +
            `(it expires with its etcd lease; delete ${other.kv.key} to free it now)`,
        );
      }
    }
    if (mine && isSubnetCompatible(config, mine.subnet)) {
      const lease = await client.leaseGrant(ttl);
      const txn = await client.txn([{ key: mine.kv.key, modRevision: mine.kv.modRevision }], [{ put: { key: mine.kv.key, value, lease: lease.id } }]);
      if (!txn.succeeded) {
        await client.leaseRevoke(lease.id).catch(() => undefined);
        continue; // changed under us: look again
      }
      const recorded = mine === prevMatch ? ' (the subnet subnet.env records)' : '';
      log(`etcd: found the lease ${formatCidr(mine.subnet)} of this node's public IP ${formatIPv4(opts.publicIp)}${recorded}; reusing it`);
      return { subnet: mine.subnet, key: mine.kv.key, leaseId: lease.id, expiresAt: Date.now() + lease.ttlSeconds * 1000, value };
    }
    if (mine) {
      log(`etcd: the lease ${formatCidr(mine.subnet)} of this node's public IP does not fit the network config; deleting it`);
      await client.txn([{ key: mine.kv.key, modRevision: mine.kv.modRevision }], [{ deleteKey: { key: mine.kv.key } }]);
      continue;
    }

    // 2. The subnet subnet.env remembers, 3. a free one.
    const takenSubnets = taken.map((t) => t.subnet);
    let subnet: Cidr | undefined;
    const prev = opts.previousSubnet;
    if (prev !== undefined) {
      if (!isSubnetCompatible(config, prev)) {
        if (attempt === 0) log(`etcd: previous subnet ${formatCidr(prev)} (from subnet.env) does not fit the network config; ignoring it`);
      } else if (!isSubnetTaken(prev, takenSubnets)) {
        subnet = prev;
      }
    }
    const fromPrevious = subnet !== undefined;
    subnet ??= chooseSubnet(config, takenSubnets, opts.random);

    const key = `${dir}${formatSubnetKey(subnet)}`;
    const lease = await client.leaseGrant(ttl);
    let txn;
    try {
      txn = await client.txn([{ key, createRevision: 0 }], [{ put: { key, value, lease: lease.id } }]);
    } catch (err) {
      await client.leaseRevoke(lease.id).catch(() => undefined);
      throw err;
    }
    if (!txn.succeeded) {
      // Another node created it between our read and our write.
      await client.leaseRevoke(lease.id).catch(() => undefined);
      log(`etcd: subnet ${formatCidr(subnet)} was taken by another node meanwhile; trying again`);
      continue;
    }
    log(`etcd: acquired ${formatCidr(subnet)}${fromPrevious ? ' (the previous subnet, from subnet.env)' : ''} for ${formatIPv4(opts.publicIp)}`);
    return { subnet, key, leaseId: lease.id, expiresAt: Date.now() + lease.ttlSeconds * 1000, value };
  }
  throw new EtcdError(`could not acquire a subnet after ${RACE_RETRIES} attempts: other nodes kept taking the chosen ones`, 'rejected');
}

export interface EtcdSubnetManagerOptions extends EtcdTlsFiles {
  endpoints: string[];
  /** etcd v3 user and password, when etcd has auth enabled */
  auth?: EtcdAuth;
  prefix: string;
  publicIp: number;
  subnetFile: string;
  /** FLANNEL_IPMASQ: whether this agent masquerades pod traffic leaving the network */
  ipMasq: boolean;
  /** renew this long before the lease expires (flanneld --subnet-lease-renew-margin, in minutes there) */
  renewMarginMs: number;
  log: (line: string) => void;
  /** The node lost its lease for good (deleted, expired, taken): the agent should stop, as flanneld does. */
  onFatal: (err: Error) => void;
  ttlSeconds?: number;
  /** the underlay MTU; default: the MTU of the interface holding publicIp */
  underlayMtu?: number;
  /** this node's VTEP MAC, published in a vxlan lease's BackendData */
  vtepMac?: string;
  probeIntervalMs?: number;
  random?: () => number;
  /**
   * Refuses a network this node must not route (the agent's host check,
   * routes.ts checkNetworkFitsHost), with this node's previous subnet when
   * known. Called after the config is read and BEFORE anything is written:
   * no lease taken or renewed, subnet.env untouched.
   */
  checkNetwork?: (network: Cidr, previousSubnet: Cidr | undefined) => Promise<void>;
}

export interface JoinedNetwork {
  config: NetworkConfig;
  lease: OwnLease;
  /** what was written to subnet.env */
  subnetConfig: SubnetConfig;
  /** the backend's port from the config (Backend.Port), if set */
  port: number | undefined;
}

/** How long to wait for etcd at start before trying again, doubling. */
const START_BACKOFF_MS = [250, 500, 1000, 2000, 5000];

export class EtcdSubnetManager {
  readonly client: EtcdClient;
  private lease: OwnLease | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewFailures = 0;
  /**
   * How much earlier than the margin this term's renewal runs: up to a fifth
   * of the margin, drawn once per term, so nodes that joined together (a
   * cluster booting) do not all renew in the same second a day later.
   */
  private renewSpreadMs = 0;
  private stopped = false;
  private source: EtcdLeaseSource | undefined;

  constructor(private readonly opts: EtcdSubnetManagerOptions) {
    this.client = new EtcdClient({ endpoints: opts.endpoints, caFile: opts.caFile, certFile: opts.certFile, keyFile: opts.keyFile, auth: opts.auth });
  }

  /**
   * Reads the config, acquires the lease, writes subnet.env. While etcd does
   * not answer it waits and retries (nodes often boot before etcd does), with
   * one log line; a missing or bad config is an error at once.
   */
  async start(): Promise<JoinedNetwork> {
    const { opts, client } = this;
    const prefix = opts.prefix.replace(/\/+$/, '');
    const previousSubnet = await this.previousSubnet();
    let waitedSince: number | undefined;
    for (let attempt = 0; ; attempt++) {
      if (this.stopped) throw new EtcdError('stopped while waiting for etcd', 'unavailable');
      try {
        const config = await readNetworkConfig(client, prefix);
        for (const note of config.notes) opts.log(`warning: ${note}`);
        const backend = BACKENDS[config.backendType];
        if (backend === undefined) {
          throw new EtcdSetupError(
            `network config ${prefix}/config: Backend.Type "${config.backendType}" is not supported by flannel-udp ` +
              `(supported: ${Object.keys(BACKENDS).join(', ')})`,
          );
        }
        const port = backend.port(config);
        const mtu = (opts.underlayMtu ?? underlayMtuFor(opts.publicIp)) - backend.overhead;
        await opts.checkNetwork?.(config.network, previousSubnet);
        const lease = await acquireLease(client, prefix, config, {
          publicIp: opts.publicIp,
          backendType: config.backendType,
          backendData: backend.backendData(config, opts.vtepMac),
          previousSubnet,
          ttlSeconds: opts.ttlSeconds,
          random: opts.random,
          log: opts.log,
        });
        this.lease = lease;
        if (waitedSince !== undefined) opts.log(`etcd: reachable after ${((Date.now() - waitedSince) / 1000).toFixed(1)} s`);
        const subnetConfig: SubnetConfig = {
          network: config.network,
          // FLANNEL_SUBNET is the subnet's first address (cni0's), with the subnet's length.
          subnet: makeCidr(lease.subnet.network + 1, lease.subnet.prefixLength),
          mtu,
          ipMasq: opts.ipMasq,
          ipv6: { enabled: false },
          unsupported: [],
        };
        await writeSubnetFileAtomic(opts.subnetFile, subnetConfig);
        opts.log(
          `wrote ${opts.subnetFile}: FLANNEL_NETWORK=${formatCidr(config.network)} FLANNEL_SUBNET=${formatCidr(subnetConfig.subnet, true)} ` +
            `FLANNEL_MTU=${mtu} FLANNEL_IPMASQ=${opts.ipMasq}`,
        );
        this.renewSpreadMs = Math.random() * 0.2 * opts.renewMarginMs;
        this.scheduleRenewal();
        return { config, lease, subnetConfig, port };
      } catch (err) {
        if (!(err instanceof EtcdError && err.kind === 'unavailable')) throw err;
        if (waitedSince === undefined) {
          waitedSince = Date.now();
          opts.log(`etcd: ${err.message}; waiting for it, retrying with backoff`);
        }
        await new Promise((r) => setTimeout(r, START_BACKOFF_MS[Math.min(attempt, START_BACKOFF_MS.length - 1)]));
      }
    }
  }

  /** The other nodes' leases, watched. Call after start(). */
  leaseSource(): EtcdLeaseSource {
    const lease = this.lease;
    if (lease === undefined) throw new Error('EtcdSubnetManager.leaseSource() before start()');
    this.source ??= new EtcdLeaseSource(this.client, {
      prefix: this.opts.prefix,
      ownSubnet: lease.subnet,
      ownPublicIp: this.opts.publicIp,
      log: this.opts.log,
      probeIntervalMs: this.opts.probeIntervalMs,
      onOwnLeaseLost: (why) => this.fatal(`${why}; stopping, as flanneld does (a restart acquires a lease again)`),
    });
    return this.source;
  }

  /** Stops renewing and closes the connection. The lease stays in etcd, so a restart gets the same subnet back. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
    await this.source?.stop();
    this.client.close();
  }

  private fatal(message: string): void {
    if (this.stopped) return;
    clearTimeout(this.renewTimer);
    this.opts.onFatal(new EtcdSetupError(message));
  }

  /** FLANNEL_SUBNET of the subnet.env a previous run left, as flanneld's --subnet-file "previous subnet". */
  private async previousSubnet(): Promise<Cidr | undefined> {
    let previous: SubnetConfig;
    try {
      previous = await readSubnetFile(this.opts.subnetFile);
    } catch (err) {
      if (!/no such file/.test((err as Error).message)) this.opts.log(`warning: ignoring the previous subnet file: ${(err as Error).message}`);
      return undefined;
    }
    return makeCidr(previous.subnet.network, previous.subnet.prefixLength);
  }

  private renewAt(lease: OwnLease): number {
    return lease.expiresAt - this.opts.renewMarginMs - this.renewSpreadMs;
  }

  private scheduleRenewal(delayMs?: number): void {
    const lease = this.lease;
    if (this.stopped || lease === undefined) return;
    const due = delayMs ?? Math.max(0, this.renewAt(lease) - Date.now());
    clearTimeout(this.renewTimer);
    // setTimeout holds at most 2^31-1 ms (24.8 days); a longer wait just wakes up and reschedules.
    this.renewTimer = setTimeout(() => void this.renew(), Math.min(due, 0x7fffffff));
    this.renewTimer.unref?.();
  }

  /** One keep-alive of the etcd lease; on failure, again after 1 s, 2 s, … 60 s. */
  private async renew(): Promise<void> {
    const lease = this.lease;
    if (this.stopped || lease === undefined) return;
    if (this.renewAt(lease) - Date.now() > 1000 && this.renewFailures === 0) return this.scheduleRenewal();
    try {
      const ttl = await this.client.leaseKeepAlive(lease.leaseId);
      if (this.stopped) return;
      if (ttl <= 0) {
        // etcd deleted the key together with the expired lease; the watch reports it too.
        return this.fatal(`this node's etcd lease for ${formatCidr(lease.subnet)} has expired`);
      }
      lease.expiresAt = Date.now() + ttl * 1000;
      this.renewSpreadMs = Math.random() * 0.2 * this.opts.renewMarginMs;
      this.opts.log(
        `etcd: lease ${formatCidr(lease.subnet)} renewed${this.renewFailures > 0 ? ` after ${this.renewFailures} failed attempt(s)` : ''}; ` +
          `expires ${new Date(lease.expiresAt).toISOString()}`,
      );
      this.renewFailures = 0;
      this.scheduleRenewal();
    } catch (err) {
      if (this.stopped) return;
      this.renewFailures++;
      const retryMs = Math.min(60_000, 1000 * 2 ** (this.renewFailures - 1));
      this.opts.log(`etcd: renewing lease ${formatCidr(lease.subnet)} failed (${(err as Error).message}); retrying in ${retryMs / 1000} s`);
      this.scheduleRenewal(retryMs);
    }
  }
}

/** The MTU of the interface that holds `publicIp` (flanneld takes it from --iface / the public interface). */
export function underlayMtuFor(publicIp: number): number {
  const address = formatIPv4(publicIp);
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (!addrs?.some((a) => a.family === 'IPv4' && a.address === address)) continue;
    try {
      return Number(readFileSync(`/sys/class/net/${name}/mtu`, 'utf8').trim());
    } catch (err) {
      throw new EtcdSetupError(`cannot read the MTU of ${name} (the interface holding ${address}): ${(err as Error).message}`);
    }
  }
  throw new EtcdSetupError(`no interface holds the public IP ${address}, so FLANNEL_MTU cannot be derived from its MTU`);
}
