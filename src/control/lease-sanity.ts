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
import { type Cidr, cidrContains, cidrCovers, cidrOverlaps, formatCidr, formatIPv4, parseIPv4 } from './ipv4-address.js';
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
  | 'subnet-overlaps-lease';

export const LEASE_REJECT_REASONS: readonly LeaseRejectReason[] = [
  'public-ip-unspecified', 'public-ip-loopback', 'public-ip-multicast', 'public-ip-broadcast', 'public-ip-reserved',
  'public-ip-own', 'public-ip-in-network', 'subnet-outside-network', 'subnet-covers-network', 'subnet-overlaps-own',
  'subnet-overlaps-lease',
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
  if (cidrContains(ctx.network, ip)) {
    return ['public-ip-in-network', `PublicIP ${text} is inside the pod network ${formatCidr(ctx.network)}: the tunnel would carry its own packets`];
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
  for (const lease of leases) {
    const reject = (reason: LeaseRejectReason, detail: string) => rejected.push({ key: lease.key, reason, detail });
    const ipProblem = publicIpProblem(lease.publicIp >>> 0, ctx);
    if (ipProblem) {
      reject(...ipProblem);
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
    const wider = widerOverlapping(remaining);
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
  return { accepted: remaining, rejected };
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

/** Every IPv4 address of this host's interfaces, from os.networkInterfaces(). */
export function localAddresses(interfaces: NodeJS.Dict<{ family: string | number; address: string }[]>): number[] {
  const out: number[] = [];
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' || a.family === 4) out.push(parseIPv4(a.address));
  }
  return out;
}
