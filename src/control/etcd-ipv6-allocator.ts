// Which IPv6 subnet a dual-stack (or IPv6-only) node asks etcd for: flannel's
// rule for the IPv4 half (subnet-allocator.ts) applied to IPv6Network, as
// flannel's allocateSubnet does beside it (pkg/subnet/etcd/local_manager.go):
// walk IPv6SubnetMin..IPv6SubnetMax, gather the first 100 subnets no lease's
// IPv6 half overlaps, pick one at random. Pure, like the IPv4 allocator; the
// addresses are 128-bit numbers here (bigint), a /48 of /64s alone being
// 65 536 subnets and a /32 four billion.

import { type Cidr6, cidr6Contains, formatCidr6, formatIPv6, makeCidr6 } from './ipv6-address.js';
import { type Ipv6NetworkConfig, ipv6SubnetAt, ipv6SubnetCount, ipv6ToBigInt } from './network-config.js';
import { CANDIDATES, SubnetExhaustedError } from './subnet-allocator.js';

/** An IPv6 subnet this config could have handed out: IPv6SubnetLen long, inside IPv6SubnetMin..IPv6SubnetMax (flannel's isIPv6SubnetConfigCompat). */
export function isIpv6SubnetCompatible(ipv6: Ipv6NetworkConfig, subnet: Cidr6): boolean {
  if (subnet.prefixLength !== ipv6.subnetLen || !cidr6Contains(ipv6.network, subnet.network)) return false;
  const n = ipv6ToBigInt(subnet.network);
  return n >= ipv6ToBigInt(ipv6.subnetMin) && n <= ipv6ToBigInt(ipv6.subnetMax);
}

function range(c: Cidr6): [bigint, bigint] {
  const start = ipv6ToBigInt(c.network);
  return [start, start + (1n << BigInt(128 - c.prefixLength)) - 1n];
}

/** True when `subnet` shares an address with any of `taken`. */
export function isIpv6SubnetTaken(subnet: Cidr6, taken: readonly Cidr6[]): boolean {
  const [start, end] = range(subnet);
  return taken.some((t) => {
    const [tStart, tEnd] = range(t);
    return tStart <= end && start <= tEnd;
  });
}

/**
 * Picks a free IPv6 subnet of IPv6SubnetLen between IPv6SubnetMin and
 * IPv6SubnetMax. `random` returns [0, 1) like Math.random. Throws
 * SubnetExhaustedError when every one in range is leased.
 */
export function chooseIpv6Subnet(ipv6: Ipv6NetworkConfig, taken: readonly Cidr6[], random: () => number = Math.random): Cidr6 {
  // Taken ranges sorted and merged, walked once beside the candidates: O(leases log leases + candidates + leases).
  const merged: [bigint, bigint][] = [];
  for (const [s, e] of taken.map(range).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const last = merged[merged.length - 1];
    if (last && s <= last[1] + 1n) last[1] = last[1] > e ? last[1] : e;
    else merged.push([s, e]);
  }
  const size = 1n << BigInt(128 - ipv6.subnetLen);
  const max = ipv6ToBigInt(ipv6.subnetMax);
  const free: bigint[] = [];
  let r = 0;
  let sn = ipv6ToBigInt(ipv6.subnetMin);
  while (sn <= max && free.length < CANDIDATES) {
    while (r < merged.length && merged[r][1] < sn) r++;
    if (r < merged.length && merged[r][0] <= sn + size - 1n) {
      // Inside a taken range: jump past its end (a wide stale lease would otherwise be walked subnet by subnet).
      const next = merged[r][1] + 1n;
      sn = next % size === 0n ? next : (next / size + 1n) * size;
      continue;
    }
    free.push(sn);
    sn += size;
  }
  if (free.length === 0) {
    throw new SubnetExhaustedError(
      `no free IPv6 subnet: all ${ipv6SubnetCount(ipv6)} /${ipv6.subnetLen} subnet(s) from IPv6SubnetMin ${formatIPv6(ipv6.subnetMin)} ` +
        `to IPv6SubnetMax ${formatIPv6(ipv6.subnetMax)} of ${formatCidr6(ipv6.network)} are leased (widen them or IPv6Network, or delete stale leases)`,
    );
  }
  const pick = free[Math.min(free.length - 1, Math.floor(random() * free.length))];
  return makeCidr6(ipv6SubnetAt(ipv6, new Uint8Array(16), pick / size), ipv6.subnetLen);
}
