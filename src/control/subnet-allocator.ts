// Which subnet a node should ask etcd for. Pure: it sees the network config
// and the subnets already leased, and decides; the etcd transaction that
// claims the choice (and retries when another node won the race) lives in
// etcd-subnet-manager.ts.
//
// flannel's rule (pkg/subnet/etcd/local_manager.go): walk the subnets from
// SubnetMin to SubnetMax, collect the first 100 that overlap no lease, and
// take one of them at random. The randomness is what keeps nodes starting at
// the same moment from all racing for the very first free subnet.

import { type Cidr, cidrContains, formatIPv4, makeCidr } from './ipv4-address.js';
import { type NetworkConfig, subnetCount } from './network-config.js';

/** How many free subnets flannel gathers before picking one at random. */
export const CANDIDATES = 100;

export class SubnetExhaustedError extends Error {
  override name = 'SubnetExhaustedError';
}

/** A subnet this config could have handed out: the right length, inside SubnetMin..SubnetMax. */
export function isSubnetCompatible(config: NetworkConfig, subnet: Cidr): boolean {
  return (
    subnet.prefixLength === config.subnetLen &&
    cidrContains(config.network, subnet.network) &&
    subnet.network >= config.subnetMin &&
    subnet.network <= config.subnetMax
  );
}

/** True when `subnet` shares an address with any of `taken`. */
export function isSubnetTaken(subnet: Cidr, taken: readonly Cidr[]): boolean {
  const start = subnet.network;
  const end = start + 2 ** (32 - subnet.prefixLength) - 1;
  return taken.some((t) => {
    const tStart = t.network;
    const tEnd = tStart + 2 ** (32 - t.prefixLength) - 1;
    return tStart <= end && start <= tEnd;
  });
}

/**
 * Picks a free subnet of config.subnetLen between SubnetMin and SubnetMax.
 * `random` returns [0, 1) like Math.random (tests pass their own).
 * Throws SubnetExhaustedError when every subnet in range is leased.
 */
export function chooseSubnet(config: NetworkConfig, taken: readonly Cidr[], random: () => number = Math.random): Cidr {
  const size = 2 ** (32 - config.subnetLen);
  // Taken address ranges, sorted and merged, walked once alongside the candidates: O(leases + subnets).
  const ranges = taken
    .map((t) => [t.network, t.network + 2 ** (32 - t.prefixLength) - 1] as const)
    .sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [s, e] of ranges) {
    const last = merged[merged.length - 1];
    if (last && s <= last[1] + 1) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }

  const free: number[] = [];
  let r = 0;
  for (let sn = config.subnetMin; sn <= config.subnetMax && free.length < CANDIDATES; sn += size) {
    const end = sn + size - 1;
    while (r < merged.length && merged[r][1] < sn) r++;
    if (r < merged.length && merged[r][0] <= end) continue; // overlaps a lease
    free.push(sn);
  }
  if (free.length === 0) {
    const count = subnetCount(config);
    throw new SubnetExhaustedError(
      `no free subnet: all ${count} /${config.subnetLen} subnet(s) from SubnetMin ${formatIPv4(config.subnetMin)} ` +
        `to SubnetMax ${formatIPv4(config.subnetMax)} are leased (widen SubnetMin/SubnetMax or Network, or delete stale leases)`,
    );
  }
  const pick = free[Math.min(free.length - 1, Math.floor(random() * free.length))];
  return makeCidr(pick, config.subnetLen);
}
