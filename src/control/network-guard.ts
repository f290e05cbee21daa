// Would routing the pod network into the TUN take this node off its own
// network? flannel's config checks are the floor: a Network of 0.0.0.0/0 or
// one holding the node's underlay address passes them, and the agent's
// `ip route replace <Network> dev flannel0` then takes the default route (or
// the underlay's) for the tunnel. The agent asks here first, with the node's
// addresses and routes as iproute2 reports them, and refuses to start on any
// conflict, before it has created anything.
//
// Host-side interfaces are the ones that matter: the one holding the public
// IP, loopback, and any with an address outside the Network. An interface
// whose addresses all lie inside the Network is pod-side (cni0, perhaps still
// with an older subnet's gateway after the node's lease changed): its
// addresses and routes are the pod network's own. One rule has no exception:
// a route with exactly the Network's prefix on another device, which `ip
// route replace` would take over.
import { type Cidr, cidrContains, cidrCovers, cidrEquals, formatCidr, formatIPv4 } from './ipv4-address.js';

export interface HostAddress {
  address: number;
  dev: string;
}

export interface HostRoute {
  dst: Cidr;
  dev?: string;
  gateway?: number;
  /** as `ip route` prints it, for the message */
  text: string;
}

export interface HostView {
  tunName: string;
  publicIp: number;
  addresses: readonly HostAddress[];
  routes: readonly HostRoute[];
}

function hostSideDevices(network: Cidr, host: HostView): Set<string> {
  const devices = new Set<string>();
  for (const a of host.addresses) {
    if (a.dev === host.tunName) continue;
    if (a.address === host.publicIp || a.address >>> 24 === 127 || !cidrContains(network, a.address)) devices.add(a.dev);
  }
  return devices;
}

/** One sentence per conflict; empty when the Network is safe to route into the TUN. */
export function networkConflicts(network: Cidr, ownSubnet: Cidr, host: HostView): string[] {
  const net = formatCidr(network);
  const hostSide = hostSideDevices(network, host);
  const problems: string[] = [];
  for (const a of host.addresses) {
    if (!hostSide.has(a.dev) || cidrContains(ownSubnet, a.address)) continue;
    if (cidrContains(network, a.address)) problems.push(`Network ${net} contains ${formatIPv4(a.address)}, an address of this node (${a.dev})`);
  }
  for (const r of host.routes) {
    if (r.dev === host.tunName) continue;
    if (cidrEquals(r.dst, network)) {
      problems.push(`Network ${net} would replace this node's route "${r.text}", which flannel-udp did not create`);
      continue;
    }
    // Routes without a device (blackhole, unreachable) count as the host's.
    if ((r.dev !== undefined && !hostSide.has(r.dev)) || cidrCovers(ownSubnet, r.dst)) continue;
    if (cidrCovers(network, r.dst)) problems.push(`Network ${net} covers this node's route "${r.text}", which the tunnel would take over`);
    else if (r.gateway !== undefined && cidrContains(network, r.gateway)) {
      problems.push(`Network ${net} contains ${formatIPv4(r.gateway)}, the gateway of this node's route "${r.text}"`);
    }
  }
  return problems;
}
