// The flannel plugin's own network configuration (what the runtime hands it
// from /etc/cni/net.d) and the delegate configuration it builds from that and
// the node's subnet.env. Pure: no file or process is touched here, so every
// rule is unit-tested. The rules are flannel's (flannel-io/cni-plugin,
// flannel_linux.go doCmdAdd / getDelegateIPAM):
//
//   delegate.name        = the network's name (must not be set by the user)
//   delegate.type        = "bridge" unless the user chose another plugin
//   delegate.ipMasq      = !FLANNEL_IPMASQ   (if flanneld masquerades, the bridge must not)
//   delegate.mtu         = FLANNEL_MTU
//   delegate.isGateway   = true for bridge   (cni0 gets the subnet's first address)
//   delegate.cniVersion  = the network's cniVersion
//   delegate.ipam        = the user's ipam block (type defaults to host-local) with
//                          ranges [[{subnet: FLANNEL_SUBNET}]] and the user's routes
//                          plus {dst: FLANNEL_NETWORK} (must not be set in delegate)
//
// Dual-stack (FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET in subnet.env), as
// flannel's plugin does it: a second range set for the IPv6 subnet, so
// host-local gives every pod one address of each family, and a route to the
// IPv6 network beside the IPv4 one:
//
//   ranges [[{subnet: 10.244.1.0/24}], [{subnet: fd00:10:244:1::/64}]]
//   routes [...user's, {dst: 10.244.0.0/16}, {dst: fd00:10:244::/56}]
//
// bridge then gives cni0 the first address of each range and, with
// isGateway, makes it each family's gateway.
//
// Everything else in the user's `delegate` block (hairpinMode,
// isDefaultGateway, ...) is passed through untouched.
import { formatCidr } from '../control/ipv4-address.js';
import { formatCidr6, parseCidr6 } from '../control/ipv6-address.js';
import type { SubnetConfig } from '../control/subnet-file.js';
import { DEFAULT_SUBNET_FILE } from '../control/subnet-file.js';
import { CniError, ErrorCode } from './spec.js';

export const DEFAULT_DATA_DIR = '/var/lib/cni/flannel';
/** The bridge device; also the bridge plugin's own default. */
export const DEFAULT_BRIDGE = 'cni0';

export interface FlannelNetConf {
  cniVersion: string;
  /** The network's name; host-local keeps its reservations in a directory of this name. */
  name: string;
  subnetFile: string;
  /** Where the delegate configuration of every container is saved for DEL. */
  dataDir: string;
  delegate: Record<string, unknown>;
  ipam: Record<string, unknown> | undefined;
  runtimeConfig: Record<string, unknown> | undefined;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function invalid(msg: string): never {
  throw new CniError(ErrorCode.InvalidConfig, msg);
}

/** `config` is the JSON the runtime sent; its cniVersion has been checked already. */
export function parseFlannelNetConf(config: Json, cniVersion: string): FlannelNetConf {
  const { name, subnetFile, dataDir, delegate, ipam, runtimeConfig } = config;
  if (typeof name !== 'string' || name === '') invalid('network configuration has no "name" (the runtime copies it from the conflist)');
  if (subnetFile !== undefined && (typeof subnetFile !== 'string' || subnetFile === '')) invalid('"subnetFile" must be a path');
  if (dataDir !== undefined && (typeof dataDir !== 'string' || dataDir === '')) invalid('"dataDir" must be a path');
  if (delegate !== undefined && !isObject(delegate)) invalid('"delegate" must be an object');
  if (ipam !== undefined && !isObject(ipam)) invalid('"ipam" must be an object');
  if (runtimeConfig !== undefined && !isObject(runtimeConfig)) invalid('"runtimeConfig" must be an object');
  const d = delegate ?? {};
  if ('type' in d && typeof d.type !== 'string') invalid("'delegate' dictionary, if present, must have (string) 'type' field");
  if ('name' in d) invalid("'delegate' dictionary must not have 'name' field, it'll be set by flannel");
  if ('ipam' in d) invalid("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel");
  return {
    cniVersion,
    name,
    subnetFile: subnetFile ?? DEFAULT_SUBNET_FILE,
    dataDir: dataDir ?? DEFAULT_DATA_DIR,
    delegate: structuredClone(d),
    ipam: ipam === undefined ? undefined : structuredClone(ipam),
    runtimeConfig: runtimeConfig === undefined ? undefined : structuredClone(runtimeConfig),
  };
}

/** The configuration the delegate (bridge) gets on stdin, in a readable key order. */
export function buildDelegateConf(conf: FlannelNetConf, subnet: SubnetConfig): Json {
  const user = conf.delegate;
  const type = typeof user.type === 'string' ? user.type : 'bridge';
  const out: Json = { cniVersion: conf.cniVersion, name: conf.name, type };
  if (type === 'bridge' && !('bridge' in user)) out.bridge = DEFAULT_BRIDGE;
  out.mtu = 'mtu' in user ? user.mtu : subnet.mtu;
  // flanneld masquerades traffic leaving the cluster when FLANNEL_IPMASQ=true;
  // otherwise the bridge plugin must, or pods cannot reach anything outside.
  out.ipMasq = 'ipMasq' in user ? user.ipMasq : !subnet.ipMasq;
  if (type === 'bridge') out.isGateway = 'isGateway' in user ? user.isGateway : true;
  for (const [key, value] of Object.entries(user)) if (!(key in out)) out[key] = value;
  out.ipam = delegateIpam(conf, subnet);
  if (conf.runtimeConfig !== undefined) out.runtimeConfig = conf.runtimeConfig;
  return out;
}

function delegateIpam(conf: FlannelNetConf, subnet: SubnetConfig): Json {
  const ipam: Json = { ...(conf.ipam ?? {}) };
  if (!('type' in ipam)) ipam.type = 'host-local';
  // FLANNEL_SUBNET in network form (10.244.1.1/24 → 10.244.1.0/24): host-local
  // then makes .1 the gateway and hands out .2 onwards.
  // An IPv6-only subnet.env (no FLANNEL_SUBNET) gives no IPv4 range, as flannel's plugin: its
  // parsed IPv4 fields are the zero 0.0.0.0/0, which must never reach host-local.
  const ipv4 = subnet.ipv6Only !== true;
  const ranges: Json[][] = ipv4 ? [[{ subnet: formatCidr(subnet.subnet) }]] : [];
  const userRoutes = ipam.routes ?? [];
  if (!Array.isArray(userRoutes) || !userRoutes.every((r) => isObject(r) && typeof r.dst === 'string')) {
    invalid('failed to parse ipam.routes: expected a list of {"dst": "CIDR", "gw": "IP"}');
  }
  const routes: Json[] = [...userRoutes, ...(ipv4 ? [{ dst: formatCidr(subnet.network) }] : [])];
  // The same FLANNEL_IPV6_SUBNET in network form (fd00:10:244:1::1/64 → fd00:10:244:1::/64), as Go's net.ParseCIDR gives it.
  const v6 = subnet.ipv6;
  if (v6.subnet !== undefined) ranges.push([{ subnet: ipv6Cidr(v6.subnet, 'FLANNEL_IPV6_SUBNET') }]);
  if (v6.network !== undefined) routes.push({ dst: ipv6Cidr(v6.network, 'FLANNEL_IPV6_NETWORK') });
  ipam.ranges = ranges;
  ipam.routes = routes;
  return ipam;
}

function ipv6Cidr(text: string, key: string): string {
  try {
    return formatCidr6(parseCidr6(text));
  } catch (err) {
    return invalid(`invalid flannel subnet file: ${key}=${text}: ${(err as Error).message}`);
  }
}
