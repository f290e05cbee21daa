// The sense checks every lease passes before it reaches the lease table,
// whatever its source (leases file, etcd, Kubernetes annotations): the agent
// calls checkLeases on each snapshot a source hands over (agent.ts setLeases).
// A source checks syntax (lease.ts parseLeaseAttrs); this module checks that a
// well-formed lease makes sense for this node and this network. A bad lease is
// left out alone: the good ones keep forwarding.
//
// Why each check: a PublicIP of 0.0.0.0, loopback or this node's own address
// sends pod traffic back into this host; a multicast or broadcast one sprays
// it over the underlay; one inside the pod network loops it through the
// tunnel. A subnet outside the network is not ours to route; one covering the
// whole network, or overlapping another lease or this node's subnet, would
// let its holder receive (and, through the anti-spoof check, send as) pods
// that belong to other nodes.
//
// Dual-stack: the same checks for the lease's IPv6 subnet against the IPv6
// network and this node's IPv6 subnet, and for its PublicIPv6. A lease is one
// node: a bad half rejects the whole lease. An IPv6-only lease's IPv4 half is
// the zero 0.0.0.0/0 and is not checked (the lease table routes nothing by
// it); on an IPv6-only node every lease's IPv4 half is ignored likewise.
import { type Cidr, cidrContains, cidrCovers, cidrOverlaps, formatCidr, formatIPv4, parseIPv4 } from './ipv4-address.js';
import { type Cidr6, cidr6Contains, cidr6Covers, cidr6Overlaps, formatCidr6, formatIPv6, ipv6Equals, parseIPv6 } from './ipv6-address.js';
import type { Lease } from './lease.js';

/** Short, stable names: the metrics' reason label. */
export type LeaseRejectReason =
  | 'public-ip-unspecified'
  | 'public-ip-loopback'
  | 'public-ip-multicast'
  | 'public-ip-broadcast'
  | 'public-ip-reserved'
  | 'public-ip-own'
  | 'public-ip-in-network'
  | 'subnet-outside-network'
  | 'subnet-covers-network'
  | 'subnet-overlaps-own'
  | 'subnet-overlaps-lease'
  | 'no-common-family'
  | 'ipv6-subnet-outside-network'
  | 'ipv6-subnet-covers-network'
  | 'ipv6-subnet-overlaps-own'
  | 'ipv6-subnet-overlaps-lease'
  | 'public-ipv6-unusable'
  | 'public-ipv6-own';

export const LEASE_REJECT_REASONS: readonly LeaseRejectReason[] = [
  'public-ip-unspecified', 'public-ip-loopback', 'public-ip-multicast', 'public-ip-broadcast', 'public-ip-reserved',
  'public-ip-own', 'public-ip-in-network', 'subnet-outside-network', 'subnet-covers-network', 'subnet-overlaps-own',
  'subnet-overlaps-lease', 'no-common-family', 'ipv6-subnet-outside-network', 'ipv6-subnet-covers-network',
  'ipv6-subnet-overlaps-own', 'ipv6-subnet-overlaps-lease', 'public-ipv6-unusable', 'public-ipv6-own',
];

export interface LeaseRejection {
  key: string;
  reason: LeaseRejectReason;
  /** one sentence for the log */
  detail: string;
}

export interface LeaseSanityContext {
  /** the cluster network (FLANNEL_NETWORK) */
  network: Cidr;
  /** this node's subnet */
  ownSubnet: Cidr;
  /** this node's addresses: its public IP and every IPv4 address of its interfaces */
  ownAddresses: readonly number[];
  /** dual-stack: the IPv6 network (FLANNEL_IPV6_NETWORK) and this node's IPv6 subnet */
  ipv6Network?: Cidr6;
  ownIpv6Subnet?: Cidr6;
  /** this node's IPv6 addresses (--public-ipv6 and its interfaces') */
  ownIpv6Addresses?: readonly Uint8Array[];
  /** this node has no IPv4 pod subnet (IPv6-only): the leases' IPv4 halves are not used */
  ipv6Only?: boolean;
  /** this node sends over an IPv6 underlay (it has a public IPv6): an IPv6-only lease may then go without a PublicIP */
  ipv6Underlay?: boolean;
}

const in8 = (addr: number, first: number) => addr >>> 24 === first;

function publicIpProblem(ip: number, ctx: LeaseSanityContext): [LeaseRejectReason, string] | undefined {
  const text = formatIPv4(ip);
  if (in8(ip, 0)) return ['public-ip-unspecified', `PublicIP ${text} is in 0.0.0.0/8, "this host": no node can be reached there`];
  if (in8(ip, 127)) return ['public-ip-loopback', `PublicIP ${text} is a loopback address: the packets would stay on this node`];
  if (ip >>> 28 === 0xe) return ['public-ip-multicast', `PublicIP ${text} is a multicast address: pod traffic would go to every listener on the underlay`];
  if (ip === 0xffffffff) return ['public-ip-broadcast', `PublicIP ${text} is the broadcast address`];
  if (ip >>> 28 === 0xf) return ['public-ip-reserved', `PublicIP ${text} is in the reserved 240.0.0.0/4`];
  if (ctx.ownAddresses.includes(ip)) return ['public-ip-own', `PublicIP ${text} is an address of this node: the packets would come back here`];
  if (ctx.ipv6Only !== true && cidrContains(ctx.network, ip)) {
    return ['public-ip-in-network', `PublicIP ${text} is inside the pod network ${formatCidr(ctx.network)}: the tunnel would carry its own packets`];
  }
  return undefined;
}

function publicIpv6Problem(ip: Uint8Array, ctx: LeaseSanityContext): [LeaseRejectReason, string] | undefined {
  const text = formatIPv6(ip);
  let zero = true;
  for (let i = 0; i < 15; i++) if (ip[i] !== 0) zero = false;
  if (zero && ip[15] === 0) return ['public-ipv6-unusable', `PublicIPv6 ${text} is the unspecified address`];
  if (zero && ip[15] === 1) return ['public-ipv6-unusable', `PublicIPv6 ${text} is the loopback address: the packets would stay on this node`];
  if (ip[0] === 0xff) return ['public-ipv6-unusable', `PublicIPv6 ${text} is a multicast address`];
  if ((ctx.ownIpv6Addresses ?? []).some((a) => ipv6Equals(a, ip))) {
    return ['public-ipv6-own', `PublicIPv6 ${text} is an address of this node: the packets would come back here`];
  }
  return undefined;
}

function ipv6SubnetProblem(subnet: Cidr6, ctx: LeaseSanityContext): [LeaseRejectReason, string] | undefined {
  const net = ctx.ipv6Network!;
  const text = formatCidr6(subnet);
  if (!cidr6Covers(net, subnet)) return ['ipv6-subnet-outside-network', `IPv6 subnet ${text} is not inside the IPv6 pod network ${formatCidr6(net)}`];
  if (subnet.prefixLength <= net.prefixLength) return ['ipv6-subnet-covers-network', `IPv6 subnet ${text} covers the whole IPv6 pod network ${formatCidr6(net)}`];
  if (ctx.ownIpv6Subnet !== undefined && cidr6Overlaps(subnet, ctx.ownIpv6Subnet)) {
    return ['ipv6-subnet-overlaps-own', `IPv6 subnet ${text} overlaps this node's IPv6 subnet ${formatCidr6(ctx.ownIpv6Subnet)}`];
  }
  return undefined;
}

/**
 * Splits a snapshot into the leases to forward to and the rejected ones.
 * Overlaps between leases: the wider lease is rejected (flannel hands out
 * subnets of one length, so the wider one is the odd one out), the narrower
 * ones stay.
 */
export function checkLeases(leases: readonly Lease[], ctx: LeaseSanityContext): { accepted: Lease[]; rejected: LeaseRejection[] } {
  const rejected: LeaseRejection[] = [];
  const candidates: Lease[] = [];
  const dualStack = ctx.ipv6Network !== undefined;
  for (const lease of leases) {
    const reject = (reason: LeaseRejectReason, detail: string) => rejected.push({ key: lease.key, reason, detail });
    const v4 = lease.ipv6Only !== true && ctx.ipv6Only !== true;
    const v6 = dualStack && lease.ipv6Subnet !== undefined;
    if (!v4 && !v6) {
      reject('no-common-family', lease.ipv6Only === true
        ? `an IPv6-only lease, and this node has no IPv6 subnet (FLANNEL_IPV6_SUBNET)`
        : `a lease without an IPv6 subnet, and this node is IPv6-only`);
      continue;
    }
    // Every lease needs its PublicIP, except an IPv6-only one reached over the IPv6 underlay: flannel
    // publishes 0.0.0.0 there, and its packets go to PublicIPv6 (docs/design.md, "IPv6 underlay").
    const overIpv6Only = lease.ipv6Only === true && lease.publicIp === 0 && lease.publicIpv6 !== undefined && ctx.ipv6Underlay === true;
    const ipProblem = overIpv6Only ? undefined : publicIpProblem(lease.publicIp >>> 0, ctx);
    if (ipProblem) {
      if (lease.ipv6Only === true && lease.publicIp === 0) {
        ipProblem[1] += lease.publicIpv6 !== undefined
          ? ' (an IPv6-only lease without a PublicIP is reached over the IPv6 underlay, and this node has no public IPv6: --public-ipv6)'
          : ' (an IPv6-only lease needs a PublicIP or a PublicIPv6)';
      }
      reject(...ipProblem);
      continue;
    }
    const ipv6Problem = lease.publicIpv6 !== undefined ? publicIpv6Problem(lease.publicIpv6, ctx) : undefined;
    if (ipv6Problem) {
      reject(...ipv6Problem);
      continue;
    }
    const subnet6Problem = v6 ? ipv6SubnetProblem(lease.ipv6Subnet!, ctx) : undefined;
    if (subnet6Problem) {
      reject(...subnet6Problem);
      continue;
    }
    if (!v4) {
      candidates.push(lease);
      continue;
    }
    const net = formatCidr(ctx.network);
    if (!cidrCovers(ctx.network, lease.subnet)) {
      reject('subnet-outside-network', `subnet ${formatCidr(lease.subnet)} is not inside the pod network ${net}`);
      continue;
    }
    if (lease.subnet.prefixLength <= ctx.network.prefixLength) {
      reject('subnet-covers-network', `subnet ${formatCidr(lease.subnet)} covers the whole pod network ${net}`);
      continue;
    }
    if (cidrOverlaps(lease.subnet, ctx.ownSubnet)) {
      reject('subnet-overlaps-own', `subnet ${formatCidr(lease.subnet)} overlaps this node's subnet ${formatCidr(ctx.ownSubnet)}`);
      continue;
    }
    candidates.push(lease);
  }
  // Nested leases (A ⊃ B ⊃ C) reject A first, then B on the next round.
  let remaining = candidates;
  for (;;) {
    const wider = widerOverlapping(remaining.filter((l) => l.ipv6Only !== true && ctx.ipv6Only !== true));
    if (wider.size === 0) break;
    for (const [lease, other] of wider) {
      rejected.push({
        key: lease.key,
        reason: 'subnet-overlaps-lease',
        detail: `subnet ${formatCidr(lease.subnet)} overlaps lease ${other.key}; flannel never hands out overlapping subnets`,
      });
    }
    remaining = remaining.filter((l) => !wider.has(l));
  }
  if (dualStack) {
    for (;;) {
      const wider = widerOverlapping6(remaining.filter((l) => l.ipv6Subnet !== undefined));
      if (wider.size === 0) break;
      for (const [lease, other] of wider) {
        rejected.push({
          key: lease.key,
          reason: 'ipv6-subnet-overlaps-lease',
          detail: `IPv6 subnet ${formatCidr6(lease.ipv6Subnet!)} overlaps lease ${other.key}; flannel never hands out overlapping subnets`,
        });
      }
      remaining = remaining.filter((l) => !wider.has(l));
    }
  }
  return { accepted: remaining, rejected };
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

/** widerOverlapping for the IPv6 subnets: sorted, a block inside the last open one overlaps it. */
function widerOverlapping6(leases: readonly Lease[]): Map<Lease, Lease> {
  const sorted = [...leases].sort(
    (a, b) => compareBytes(a.ipv6Subnet!.network, b.ipv6Subnet!.network) || a.ipv6Subnet!.prefixLength - b.ipv6Subnet!.prefixLength,
  );
  const wider = new Map<Lease, Lease>();
  let open: Lease | undefined;
  for (const lease of sorted) {
    if (open !== undefined && cidr6Contains(open.ipv6Subnet!, lease.ipv6Subnet!.network)) {
      if (!wider.has(open)) wider.set(open, lease);
      continue;
    }
    open = lease;
  }
  return wider;
}

/**
 * CIDR blocks nest or are disjoint: sorted by network then length, a block
 * overlaps an earlier one exactly when it starts before the furthest end seen
 * so far, and that earlier one is the wider. O(n log n). Returns each wider
 * lease with one lease it overlaps.
 */
function widerOverlapping(leases: readonly Lease[]): Map<Lease, Lease> {
  const sorted = [...leases].sort((a, b) => a.subnet.network - b.subnet.network || a.subnet.prefixLength - b.subnet.prefixLength);
  const wider = new Map<Lease, Lease>();
  let open: Lease | undefined;
  let openEnd = -1;
  for (const lease of sorted) {
    if (open !== undefined && lease.subnet.network <= openEnd) {
      if (!wider.has(open)) wider.set(open, lease);
      continue;
    }
    open = lease;
    openEnd = (lease.subnet.network | ~lease.subnet.mask) >>> 0;
  }
  return wider;
}

/** Every IPv6 address of this host's interfaces, from os.networkInterfaces() (zones dropped). */
export function localIpv6Addresses(interfaces: NodeJS.Dict<{ family: string | number; address: string }[]>): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv6' && a.family !== 6) continue;
      try {
        out.push(parseIPv6(a.address.split('%')[0]));
      } catch {
        // not an address we can compare with: skipped
      }
    }
  }
  return out;
}

/** Every IPv4 address of this host's interfaces, from os.networkInterfaces(). */
export function localAddresses(interfaces: NodeJS.Dict<{ family: string | number; address: string }[]>): number[] {
  const out: number[] = [];
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' || a.family === 4) out.push(parseIPv4(a.address));
  }
  return out;
}
