// The IPv6 half of a lease, checked the way lease-sanity.ts checks the IPv4
// half, before the lease leaves its source: a dual-stack lease whose IPv6
// subnet lies outside IPv6Network, covers it, overlaps this node's IPv6
// subnet or another lease's, or whose PublicIPv6 cannot be a peer's underlay
// address, is left out (alone: the good leases keep forwarding), with a
// reason named like lease-sanity's so the counts read alike.
//
// Why the whole lease and not only its IPv6 half: a node that publishes a
// wrong IPv6 half is misconfigured or lying, and an IPv4-only copy of its
// lease would be a lease nobody published. Leases of one family are fine:
// an IPv4-only lease in a dual-stack network carries IPv4 only (flannel
// mixes them too), and its IPv6 pods are unreachable until the node says more.

import { type Cidr6, cidr6Contains, cidr6Covers, cidr6Overlaps, formatCidr6, formatIPv6, parseIPv6 } from './ipv6-address.js';
import type { Lease } from './lease.js';

export type Ipv6LeaseRejectReason =
  | 'ipv6-not-enabled'
  | 'ipv6-subnet-outside-network'
  | 'ipv6-subnet-covers-network'
  | 'ipv6-subnet-overlaps-own'
  | 'ipv6-subnet-overlaps-lease'
  | 'public-ipv6-unspecified'
  | 'public-ipv6-loopback'
  | 'public-ipv6-multicast'
  | 'public-ipv6-link-local'
  | 'public-ipv6-in-network';

export interface Ipv6LeaseRejection {
  key: string;
  lease: Lease;
  reason: Ipv6LeaseRejectReason;
  /** one sentence for the log */
  detail: string;
}

export interface Ipv6LeaseContext {
  /** IPv6Network of this node's config; undefined when IPv6 is not enabled */
  ipv6Network?: Cidr6;
  /** this node's IPv6 subnet */
  ownIpv6Subnet?: Cidr6;
}

const LINK_LOCAL = { ip: parseIPv6('fe80::'), prefixLength: 10, network: parseIPv6('fe80::') };

function publicIpv6Problem(ip: Uint8Array, ctx: Ipv6LeaseContext): [Ipv6LeaseRejectReason, string] | undefined {
  const text = formatIPv6(ip);
  const zeroTo14 = ip.subarray(0, 15).every((b) => b === 0);
  if (zeroTo14 && ip[15] === 0) return ['public-ipv6-unspecified', `PublicIPv6 ${text} is the unspecified address: no node can be reached there`];
  if (zeroTo14 && ip[15] === 1) return ['public-ipv6-loopback', `PublicIPv6 ${text} is the loopback address: the packets would stay on this node`];
  if (ip[0] === 0xff) return ['public-ipv6-multicast', `PublicIPv6 ${text} is a multicast address: pod traffic would go to every listener on the underlay`];
  if (cidr6Contains(LINK_LOCAL, ip)) return ['public-ipv6-link-local', `PublicIPv6 ${text} is link-local: it names no node without an interface`];
  if (ctx.ipv6Network !== undefined && cidr6Contains(ctx.ipv6Network, ip)) {
    return ['public-ipv6-in-network', `PublicIPv6 ${text} is inside the IPv6 pod network ${formatCidr6(ctx.ipv6Network)}: the tunnel would carry its own packets`];
  }
  return undefined;
}

/** Splits leases into the ones whose IPv6 half makes sense here and the rejected ones (overlaps: the wider lease goes). */
export function checkIpv6Leases(leases: readonly Lease[], ctx: Ipv6LeaseContext): { accepted: Lease[]; rejected: Ipv6LeaseRejection[] } {
  const rejected: Ipv6LeaseRejection[] = [];
  const candidates: Lease[] = [];
  const withSubnet: Lease[] = [];
  for (const lease of leases) {
    const reject = (reason: Ipv6LeaseRejectReason, detail: string) => rejected.push({ key: lease.key, lease, reason, detail });
    const sn = lease.ipv6Subnet;
    if (sn === undefined) {
      candidates.push(lease);
      continue;
    }
    const net = ctx.ipv6Network;
    if (net === undefined) {
      if (lease.ipv6Only) {
        reject('ipv6-not-enabled', `an IPv6-only lease (${formatCidr6(sn)}), but this node's network config does not set EnableIPv6`);
        continue;
      }
      candidates.push(lease); // its IPv4 half is all this node uses
      continue;
    }
    if (lease.publicIpv6 !== undefined) {
      const problem = publicIpv6Problem(lease.publicIpv6, ctx);
      if (problem) {
        reject(...problem);
        continue;
      }
    }
    if (!cidr6Covers(net, sn)) {
      reject('ipv6-subnet-outside-network', `IPv6 subnet ${formatCidr6(sn)} is not inside the IPv6 pod network ${formatCidr6(net)}`);
      continue;
    }
    if (sn.prefixLength <= net.prefixLength) {
      reject('ipv6-subnet-covers-network', `IPv6 subnet ${formatCidr6(sn)} covers the whole IPv6 pod network ${formatCidr6(net)}`);
      continue;
    }
    if (ctx.ownIpv6Subnet !== undefined && cidr6Overlaps(sn, ctx.ownIpv6Subnet)) {
      reject('ipv6-subnet-overlaps-own', `IPv6 subnet ${formatCidr6(sn)} overlaps this node's IPv6 subnet ${formatCidr6(ctx.ownIpv6Subnet)}`);
      continue;
    }
    candidates.push(lease);
    withSubnet.push(lease);
  }
  // Overlaps between leases: the wider one is the odd one out (flannel hands out one length); two leases
  // with the same IPv6 subnet both go (neither can be told right). Nested A ⊃ B ⊃ C: A goes, then B next round.
  const wider = new Map<Lease, Lease>();
  let remaining = withSubnet;
  for (;;) {
    const found = overlapping(remaining);
    if (found.size === 0) break;
    for (const [l, other] of found) wider.set(l, other);
    remaining = remaining.filter((l) => !found.has(l));
  }
  for (const [l, other] of wider) {
    rejected.push({
      key: l.key,
      lease: l,
      reason: 'ipv6-subnet-overlaps-lease',
      detail: `IPv6 subnet ${formatCidr6(l.ipv6Subnet!)} overlaps lease ${other.key}; flannel never hands out overlapping subnets`,
    });
  }
  return { accepted: candidates.filter((l) => !wider.has(l)), rejected };
}

const big = (b: Uint8Array): bigint => {
  let n = 0n;
  for (let i = 0; i < 16; i++) n = (n << 8n) | BigInt(b[i]);
  return n;
};

/**
 * Blocks nest or are disjoint: sorted by start then length, a block overlaps
 * an earlier one exactly when it starts before the furthest end seen, and that
 * one is the wider (or the same). O(n log n).
 */
function overlapping(leases: readonly Lease[]): Map<Lease, Lease> {
  const spans = leases.map((l) => {
    const start = big(l.ipv6Subnet!.network);
    return { l, start, end: start + (1n << BigInt(128 - l.ipv6Subnet!.prefixLength)) - 1n, len: l.ipv6Subnet!.prefixLength };
  });
  spans.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.len - b.len));
  const out = new Map<Lease, Lease>();
  let open: (typeof spans)[number] | undefined;
  for (const s of spans) {
    if (open !== undefined && s.start <= open.end) {
      if (!out.has(open.l)) out.set(open.l, s.l);
      if (s.start === open.start && s.len === open.len && !out.has(s.l)) out.set(s.l, open.l);
      continue;
    }
    open = s;
  }
  return out;
}
