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
//
// Dual-stack (EnableIPv6), flannel's layout: the key carries both subnets,
//   <prefix>/subnets/10.244.7.0-24&fd00:10:244:7::-64
//     {"PublicIP":"192.0.2.1","PublicIPv6":"fd00::1","BackendType":"udp","BackendData":null}
// and the IPv6 half is chosen beside the IPv4 one (etcd-ipv6-allocator.ts),
// kept on restart (the lease with our PublicIP, else FLANNEL_IPV6_SUBNET of
// subnet.env) and renewed with it (one key, one etcd lease). Where flannel
// deletes a lease whose IPv6 half no longer fits the config (IPv6 just
// enabled, or IPv6Network changed) and so renumbers the IPv4 pods too, we
// keep the IPv4 subnet and re-key it with a new IPv6 half in one
// transaction. IPv6-only (EnableIPv4 false): the IPv4 half is the zero
// "0.0.0.0-0", and the node's lease is found by its PublicIPv6 (flannel looks
// for PublicIP, the same 0.0.0.0 on every IPv6-only node).

import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
import { type Cidr, cidrEquals, formatCidr, formatIPv4, makeCidr } from './ipv4-address.js';
import { type Cidr6, cidr6Equals, formatCidr6, formatIPv6, ipv6Equals, makeCidr6, parseCidr6 } from './ipv6-address.js';
import { formatSubnetKey, type Lease, parseDualStackSubnetKey, parseLeaseAttrs } from './lease.js';
import { chooseIpv6Subnet, isIpv6SubnetCompatible, isIpv6SubnetTaken } from './etcd-ipv6-allocator.js';
import { type Compare, type EtcdAuth, EtcdClient, EtcdError, type EtcdTlsFiles, type KeyValue, type TxnOp } from './etcd-client.js';
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
  /** BackendV6Data on a dual-stack lease (undefined: the attribute is left out, as flannel's udp does) */
  backendV6Data(config: NetworkConfig, vtepMacV6: string | undefined): unknown;
  port(config: NetworkConfig): number | undefined;
}

export const BACKENDS: Record<string, BackendSpec> = {
  // outer IPv4 (20) + UDP (8); flannel's udp lease carries no BackendData.
  udp: { overhead: 28, backendData: () => null, backendV6Data: () => undefined, port: backendPort },
  // outer IPv4 + UDP + VXLAN + inner Ethernet; flannel's vxlan lease: {"VNI": 1, "VtepMAC": "…"}.
  vxlan: {
    overhead: 50,
    backendData: (config, vtepMac) => {
      if (vtepMac === undefined) throw new EtcdSetupError('vxlan backend: no VTEP MAC to publish');
      return { VNI: backendVni(config), VtepMAC: vtepMac };
    },
    // flannel's flannel-v6.1 publishes {"VNI": 1, "VtepMAC": "<its own MAC>"} as BackendV6Data.
    backendV6Data: (config, vtepMacV6) => {
      if (vtepMacV6 === undefined) throw new EtcdSetupError('vxlan backend: no IPv6 VTEP MAC to publish');
      return { VNI: backendVni(config), VtepMAC: vtepMacV6 };
    },
    port: backendPort,
  },
};

/** Problems the user must fix (no interface for the public IP, an unsupported backend): exit code 2. */
export class EtcdSetupError extends Error {
  override name = 'EtcdSetupError';
}

export interface OwnLease {
  /** the IPv4 subnet; the zero 0.0.0.0/0 on an IPv6-only node */
  subnet: Cidr;
  /** the IPv6 subnet of a dual-stack or IPv6-only node */
  ipv6Subnet?: Cidr6;
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
  /** PublicIP; 0 (written "0.0.0.0", as Go's zero IP4) on an IPv6-only node without an IPv4 address */
  publicIp: number;
  /** PublicIPv6: this node's IPv6 underlay address, when it has one (required when IPv6-only) */
  publicIpv6?: Uint8Array;
  backendType: string;
  backendData: unknown;
  /** BackendV6Data of a dual-stack lease; undefined leaves it out */
  backendV6Data?: unknown;
  /** FLANNEL_SUBNET of an existing subnet.env: preferred when free */
  previousSubnet?: Cidr;
  /** FLANNEL_IPV6_SUBNET of an existing subnet.env: preferred when free */
  previousIpv6Subnet?: Cidr6;
  ttlSeconds?: number;
  random?: () => number;
  log?: (line: string) => void;
}

export function subnetsPrefix(prefix: string): string {
  return `${prefix.replace(/\/+$/, '')}/subnets/`;
}

export function leaseValue(
  publicIp: number,
  backendType: string,
  backendData: unknown,
  v6: { publicIpv6?: Uint8Array; backendV6Data?: unknown } = {},
): string {
  // Field order as flannel's LeaseAttrs marshals it; BackendV6Data is omitempty there.
  return JSON.stringify({
    PublicIP: formatIPv4(publicIp),
    PublicIPv6: v6.publicIpv6 !== undefined ? formatIPv6(v6.publicIpv6) : null,
    BackendType: backendType,
    BackendData: backendData ?? null,
    ...(v6.backendV6Data !== undefined && v6.backendV6Data !== null ? { BackendV6Data: v6.backendV6Data } : {}),
  });
}

/** "10.244.7.0/24", "10.244.7.0/24 + fd00:10:244:7::/64", or "fd00:10:244:7::/64" (IPv6-only): for log lines. */
export function describeSubnets(subnet: Cidr, ipv6Subnet: Cidr6 | undefined): string {
  if (ipv6Subnet === undefined) return formatCidr(subnet);
  if (subnet.prefixLength === 0 && subnet.network === 0) return formatCidr6(ipv6Subnet);
  return `${formatCidr(subnet)} + ${formatCidr6(ipv6Subnet)}`;
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

interface Taken {
  subnet: Cidr;
  ipv6Subnet?: Cidr6;
  ipv6Only: boolean;
  kv: KeyValue;
  publicIp?: number;
  publicIpv6?: Uint8Array;
}

function readTaken(dir: string, kvs: readonly KeyValue[]): Taken[] {
  const taken: Taken[] = [];
  for (const kv of kvs) {
    const subnetKey = kv.key.slice(dir.length);
    let parsedKey: ReturnType<typeof parseDualStackSubnetKey>;
    try {
      parsedKey = parseDualStackSubnetKey(subnetKey);
    } catch {
      continue; // not a subnet key (flannel skips these too)
    }
    let lease: Lease | undefined;
    try {
      lease = parseLeaseAttrs(subnetKey, JSON.parse(kv.value));
    } catch {
      // A broken value still occupies its subnets.
    }
    taken.push({ ...parsedKey, kv, publicIp: lease?.publicIp, publicIpv6: lease?.publicIpv6 });
  }
  return taken;
}

/** True when the two keys' subnets share an address in either family (an IPv6-only key's zero IPv4 half routes nothing). */
function collides(a: { subnet: Cidr; ipv6Subnet?: Cidr6; ipv6Only: boolean }, b: Taken): boolean {
  if (!a.ipv6Only && !b.ipv6Only && isSubnetTaken(a.subnet, [b.subnet])) return true;
  return a.ipv6Subnet !== undefined && b.ipv6Subnet !== undefined && isIpv6SubnetTaken(a.ipv6Subnet, [b.ipv6Subnet]);
}

/** Claims a subnet for this node; see the file header for the order of preference. */
export async function acquireLease(client: EtcdClient, prefix: string, config: NetworkConfig, opts: AcquireOptions): Promise<OwnLease> {
  const log = opts.log ?? (() => undefined);
  const ttl = opts.ttlSeconds ?? LEASE_TTL_SECONDS;
  const ipv6 = config.ipv6;
  const publicIpv6 = opts.publicIpv6;
  if (!config.enableIPv4 && publicIpv6 === undefined) {
    throw new EtcdSetupError('the network is IPv6-only (EnableIPv4 false): this node needs a public IPv6 address for its lease (--public-ipv6)');
  }
  const value = leaseValue(opts.publicIp, opts.backendType, opts.backendData, ipv6 !== undefined ? { publicIpv6, backendV6Data: opts.backendV6Data } : {});
  const dir = subnetsPrefix(prefix);
  // Whose lease is ours: flannel's PublicIP; on an IPv6-only network every node's PublicIP is 0.0.0.0, so PublicIPv6.
  const isOurs = (t: Taken): boolean =>
    config.enableIPv4 ? t.publicIp === opts.publicIp : t.publicIpv6 !== undefined && ipv6Equals(t.publicIpv6, publicIpv6!);
  const whose = config.enableIPv4 ? `public IP ${formatIPv4(opts.publicIp)}` : `public IPv6 ${formatIPv6(publicIpv6!)}`;

  for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
    const { kvs } = await client.range(dir, { prefix: true });
    const taken = readTaken(dir, kvs);

    // 1. Our own lease from before a restart. Several with our IP (an older
    // one not yet expired): the one subnet.env records, else the first as
    // flanneld does; the node's pod subnet must not change under its pods.
    const ours = taken.filter(isOurs);
    const prevMatch = ours.find((t) =>
      config.enableIPv4
        ? opts.previousSubnet !== undefined && cidrEquals(t.subnet, opts.previousSubnet)
        : opts.previousIpv6Subnet !== undefined && t.ipv6Subnet !== undefined && cidr6Equals(t.ipv6Subnet, opts.previousIpv6Subnet),
    );
    const mine = prevMatch ?? ours[0];
    if (attempt === 0) {
      for (const other of ours) {
        if (other === mine) continue;
        log(
          `etcd: lease ${describeSubnets(other.subnet, other.ipv6Subnet)} also carries this node's ${whose}: stale, left alone ` +
            `(it expires with its etcd lease; delete ${other.kv.key} to free it now)`,
        );
      }
    }
    const ipv4Fits = (t: Taken) => (config.enableIPv4 ? !t.ipv6Only && isSubnetCompatible(config, t.subnet) : t.ipv6Only);
    if (mine && ipv4Fits(mine)) {
      // The IPv4 half stays. The IPv6 half: kept when it fits; a new one when IPv6 was enabled (or
      // IPv6Network changed) since; dropped when IPv6 was disabled. Either change re-keys the lease.
      let ipv6Subnet: Cidr6 | undefined;
      let change = '';
      if (ipv6 === undefined) {
        if (mine.ipv6Subnet !== undefined) change = `EnableIPv6 is off: its IPv6 half ${formatCidr6(mine.ipv6Subnet)} dropped`;
      } else if (mine.ipv6Subnet !== undefined && isIpv6SubnetCompatible(ipv6, mine.ipv6Subnet)) {
        ipv6Subnet = mine.ipv6Subnet;
      } else {
        const others = taken.filter((t) => t !== mine).flatMap((t) => (t.ipv6Subnet !== undefined ? [t.ipv6Subnet] : []));
        ipv6Subnet = chooseIpv6Subnet(ipv6, others, opts.random);
        change =
          mine.ipv6Subnet === undefined
            ? `IPv6 subnet ${formatCidr6(ipv6Subnet)} added`
            : `its IPv6 half ${formatCidr6(mine.ipv6Subnet)} does not fit the network config: ${formatCidr6(ipv6Subnet)} instead`;
      }
      const key = `${dir}${formatSubnetKey(mine.subnet, ipv6Subnet)}`;
      const lease = await client.leaseGrant(ttl);
      const compare: Compare[] = [{ key: mine.kv.key, modRevision: mine.kv.modRevision }];
      const ops: TxnOp[] = [{ put: { key, value, lease: lease.id } }];
      if (key !== mine.kv.key) {
        // One transaction: the old key goes exactly when the new one comes.
        compare.push({ key, createRevision: 0 });
        ops.unshift({ deleteKey: { key: mine.kv.key } });
      }
      const txn = await client.txn(compare, ops);
      if (!txn.succeeded) {
        await client.leaseRevoke(lease.id).catch(() => undefined);
        continue; // changed under us: look again
      }
      const recorded = mine === prevMatch ? ' (the subnet subnet.env records)' : '';
      log(`etcd: found the lease ${describeSubnets(mine.subnet, mine.ipv6Subnet)} of this node's ${whose}${recorded}; reusing it${change !== '' ? ` (${change})` : ''}`);
      const own: OwnLease = { subnet: mine.subnet, ...(ipv6Subnet !== undefined ? { ipv6Subnet } : {}), key, leaseId: lease.id, expiresAt: Date.now() + lease.ttlSeconds * 1000, value };
      if (key === mine.kv.key || (await keptAfterRace(client, dir, own, txn.revision))) return own;
      continue;
    }
    if (mine) {
      log(`etcd: the lease ${describeSubnets(mine.subnet, mine.ipv6Subnet)} of this node's ${whose} does not fit the network config; deleting it`);
      await client.txn([{ key: mine.kv.key, modRevision: mine.kv.modRevision }], [{ deleteKey: { key: mine.kv.key } }]);
      continue;
    }

    // 2. The subnets subnet.env remembers, 3. free ones. An IPv6-only key's zero IPv4 half takes no IPv4 subnet.
    const takenSubnets = taken.filter((t) => !t.ipv6Only).map((t) => t.subnet);
    let subnet: Cidr | undefined;
    const prev = opts.previousSubnet;
    if (!config.enableIPv4) {
      subnet = makeCidr(0, 0);
    } else if (prev !== undefined) {
      if (!isSubnetCompatible(config, prev)) {
        if (attempt === 0) log(`etcd: previous subnet ${formatCidr(prev)} (from subnet.env) does not fit the network config; ignoring it`);
      } else if (!isSubnetTaken(prev, takenSubnets)) {
        subnet = prev;
      }
    }
    const fromPrevious = config.enableIPv4 && subnet !== undefined;
    subnet ??= chooseSubnet(config, takenSubnets, opts.random);

    let ipv6Subnet: Cidr6 | undefined;
    let fromPrevious6 = false;
    if (ipv6 !== undefined) {
      const taken6 = taken.flatMap((t) => (t.ipv6Subnet !== undefined ? [t.ipv6Subnet] : []));
      const prev6 = opts.previousIpv6Subnet;
      if (prev6 !== undefined) {
        if (!isIpv6SubnetCompatible(ipv6, prev6)) {
          if (attempt === 0) log(`etcd: previous IPv6 subnet ${formatCidr6(prev6)} (from subnet.env) does not fit the network config; ignoring it`);
        } else if (!isIpv6SubnetTaken(prev6, taken6)) {
          ipv6Subnet = prev6;
          fromPrevious6 = true;
        }
      }
      ipv6Subnet ??= chooseIpv6Subnet(ipv6, taken6, opts.random);
    }

    const key = `${dir}${formatSubnetKey(subnet, ipv6Subnet)}`;
    const described = describeSubnets(subnet, ipv6Subnet);
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
      log(`etcd: subnet ${described} was taken by another node meanwhile; trying again`);
      continue;
    }
    const own: OwnLease = { subnet, ...(ipv6Subnet !== undefined ? { ipv6Subnet } : {}), key, leaseId: lease.id, expiresAt: Date.now() + lease.ttlSeconds * 1000, value };
    // A dual-stack key is two subnets: a node racing us for one of them writes a different key, so the create can not tell.
    if (ipv6 !== undefined && !(await keptAfterRace(client, dir, own, txn.revision))) continue;
    const previousNote = fromPrevious || fromPrevious6 ? ' (the previous subnet, from subnet.env)' : '';
    log(`etcd: acquired ${described}${previousNote} for ${config.enableIPv4 ? formatIPv4(opts.publicIp) : whose}`);
    return own;
  }
  throw new EtcdError(`could not acquire a subnet after ${RACE_RETRIES} attempts: other nodes kept taking the chosen ones`, 'rejected');
}

/**
 * After writing a dual-stack key: another key sharing either of its subnets
 * (two nodes that chose the same IPv6 subnet beside different IPv4 ones both
 * succeed at creating their own key) is settled by creation order. The older
 * key keeps the subnets; ours, if younger, is deleted and its etcd lease
 * revoked, and false tells the caller to choose again.
 */
async function keptAfterRace(client: EtcdClient, dir: string, own: OwnLease, ourRevision: number): Promise<boolean> {
  const { kvs } = await client.range(dir, { prefix: true });
  const mineNow = kvs.find((kv) => kv.key === own.key);
  const createdAt = mineNow?.createRevision ?? ourRevision;
  const self = { subnet: own.subnet, ipv6Subnet: own.ipv6Subnet, ipv6Only: own.subnet.prefixLength === 0 && own.ipv6Subnet !== undefined };
  const older = readTaken(dir, kvs).find((t) => t.kv.key !== own.key && t.kv.createRevision < createdAt && collides(self, t));
  if (older === undefined) return true;
  await client.txn([{ key: own.key, createRevision: createdAt }], [{ deleteKey: { key: own.key } }]).catch(() => undefined);
  await client.leaseRevoke(own.leaseId).catch(() => undefined);
  return false;
}

export interface EtcdSubnetManagerOptions extends EtcdTlsFiles {
  endpoints: string[];
  /** etcd v3 user and password, when etcd has auth enabled */
  auth?: EtcdAuth;
  prefix: string;
  publicIp: number;
  /**
   * PublicIPv6: this node's IPv6 underlay address (flanneld --public-ipv6, or
   * the IPv6 address of --iface), published in a dual-stack lease; without
   * it the lease says "PublicIPv6": null and peers reach the node's IPv6
   * pods over IPv4. Required when the network is IPv6-only.
   */
  publicIpv6?: Uint8Array;
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
  /** the MAC published in a dual-stack vxlan lease's BackendV6Data (flannel-v6.1's); default: vtepMac */
  vtepMacV6?: string;
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
  private joinedConfig: NetworkConfig | undefined;

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
    const { previousSubnet, previousIpv6Subnet } = await this.previousSubnets();
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
        // IPv6-only: config.network is the zero 0.0.0.0/0, which routes nothing and has nothing to check.
        if (config.enableIPv4) await opts.checkNetwork?.(config.network, previousSubnet);
        const lease = await acquireLease(client, prefix, config, {
          publicIp: opts.publicIp,
          publicIpv6: opts.publicIpv6,
          backendType: config.backendType,
          backendData: backend.backendData(config, opts.vtepMac),
          backendV6Data: config.ipv6 !== undefined ? backend.backendV6Data(config, opts.vtepMacV6 ?? opts.vtepMac) : undefined,
          previousSubnet,
          previousIpv6Subnet,
          ttlSeconds: opts.ttlSeconds,
          random: opts.random,
          log: opts.log,
        });
        this.lease = lease;
        this.joinedConfig = config;
        if (waitedSince !== undefined) opts.log(`etcd: reachable after ${((Date.now() - waitedSince) / 1000).toFixed(1)} s`);
        // FLANNEL_SUBNET is the subnet's first address (cni0's), with the subnet's length.
        const subnetConfig = makeSubnetConfig(config, makeCidr(lease.subnet.network + 1, lease.subnet.prefixLength), lease.ipv6Subnet, mtu, opts.ipMasq);
        await writeSubnetFileAtomic(opts.subnetFile, subnetConfig);
        opts.log(`wrote ${opts.subnetFile}: ${describeSubnetConfig(subnetConfig)}`);
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
      ownIpv6Subnet: lease.ipv6Subnet,
      ownPublicIp: this.opts.publicIp,
      ownPublicIpv6: this.opts.publicIpv6,
      ipv6Network: this.joinedConfig?.ipv6?.network,
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

  /** FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET of the subnet.env a previous run left, as flanneld's --subnet-file "previous subnet". */
  private async previousSubnets(): Promise<{ previousSubnet?: Cidr; previousIpv6Subnet?: Cidr6 }> {
    let previous: SubnetConfig;
    try {
      previous = await readSubnetFile(this.opts.subnetFile);
    } catch (err) {
      if (!/no such file/.test((err as Error).message)) this.opts.log(`warning: ignoring the previous subnet file: ${(err as Error).message}`);
      return {};
    }
    const previousSubnet = makeCidr(previous.subnet.network, previous.subnet.prefixLength);
    if (previous.ipv6.subnet === undefined) return { previousSubnet };
    try {
      const c = parseCidr6(previous.ipv6.subnet);
      return { previousSubnet, previousIpv6Subnet: makeCidr6(c.network, c.prefixLength) };
    } catch (err) {
      this.opts.log(`warning: ignoring FLANNEL_IPV6_SUBNET of the previous subnet file: ${(err as Error).message}`);
      return { previousSubnet };
    }
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
        return this.fatal(`this node's etcd lease for ${describeSubnets(lease.subnet, lease.ipv6Subnet)} has expired`);
      }
      lease.expiresAt = Date.now() + ttl * 1000;
      this.renewSpreadMs = Math.random() * 0.2 * this.opts.renewMarginMs;
      this.opts.log(
        `etcd: lease ${describeSubnets(lease.subnet, lease.ipv6Subnet)} renewed${this.renewFailures > 0 ? ` after ${this.renewFailures} failed attempt(s)` : ''}; ` +
          `expires ${new Date(lease.expiresAt).toISOString()}`,
      );
      this.renewFailures = 0;
      this.scheduleRenewal();
    } catch (err) {
      if (this.stopped) return;
      this.renewFailures++;
      const retryMs = Math.min(60_000, 1000 * 2 ** (this.renewFailures - 1));
      this.opts.log(`etcd: renewing lease ${describeSubnets(lease.subnet, lease.ipv6Subnet)} failed (${(err as Error).message}); retrying in ${retryMs / 1000} s`);
      this.scheduleRenewal(retryMs);
    }
  }
}

/**
 * subnet.env as flannel's WriteSubnetFile writes it: on an IPv6-only network
 * (EnableIPv4 false) without FLANNEL_NETWORK/FLANNEL_SUBNET (ipv6Only, the
 * IPv4 pair the zero 0.0.0.0/0). `subnet` is FLANNEL_SUBNET (the first address).
 */
export function makeSubnetConfig(config: NetworkConfig, subnet: Cidr, ipv6Subnet: Cidr6 | undefined, mtu: number, ipMasq: boolean): SubnetConfig {
  const ipv6 = subnetFileIpv6(config, ipv6Subnet);
  if (config.enableIPv4) return { network: config.network, subnet, mtu, ipMasq, ipv6, unsupported: [] };
  if (!ipv6.enabled) throw new EtcdSetupError('the network is IPv6-only (EnableIPv4 false) but this node has no IPv6 subnet to write to FLANNEL_IPV6_SUBNET');
  const zero = makeCidr(0, 0);
  return { network: zero, subnet: zero, mtu, ipMasq, ipv6, ipv6Only: true, unsupported: [] };
}

/** subnet.env's keys on one line, for the log. */
export function describeSubnetConfig(c: SubnetConfig): string {
  const v4Keys = c.ipv6Only ? '' : `FLANNEL_NETWORK=${formatCidr(c.network)} FLANNEL_SUBNET=${formatCidr(c.subnet, true)} `;
  const v6Keys = c.ipv6.enabled ? `FLANNEL_IPV6_NETWORK=${c.ipv6.network} FLANNEL_IPV6_SUBNET=${c.ipv6.subnet} ` : '';
  return `${v4Keys}${v6Keys}FLANNEL_MTU=${c.mtu} FLANNEL_IPMASQ=${c.ipMasq}`;
}

/**
 * subnet.env's IPv6 keys, as flannel's WriteSubnetFile writes them:
 * FLANNEL_IPV6_NETWORK the IPv6Network, FLANNEL_IPV6_SUBNET the subnet's
 * first address (cni0's) with the subnet's length, "fd00:10:244:7::1/64".
 */
export function subnetFileIpv6(config: NetworkConfig, ipv6Subnet: Cidr6 | undefined): SubnetConfig['ipv6'] {
  if (config.ipv6 === undefined || ipv6Subnet === undefined) return { enabled: false };
  const first = Uint8Array.from(ipv6Subnet.network);
  first[15] += 1; // the network address of a /126 or shorter ends in two zero bits at least
  return { enabled: true, network: formatCidr6(config.ipv6.network), subnet: `${formatIPv6(first)}/${ipv6Subnet.prefixLength}` };
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
