// flannel's network configuration, the JSON every node reads from
// <prefix>/config (by default /coreos.com/network/config):
//
//   {"Network": "10.244.0.0/16", "SubnetLen": 24,
//    "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.254.0",
//    "Backend": {"Type": "udp", "Port": 8285}}
//
// Only Network is required. The defaults and checks are flannel's
// (pkg/subnet/config.go), so a config flanneld accepts is accepted here and
// means the same thing: SubnetLen 24 when the network is /22 or larger, else
// two bits more than the network; SubnetMin skips the network's first subnet
// (its .0 address would clash with the network address), SubnetMax is the
// last subnet. Field names match case-insensitively, as Go's JSON decoder does.
// Fields for other flannel features (EnableNFTables, …) are ignored.
//
// Dual-stack, as flannel's config.go: "EnableIPv6": true with "IPv6Network"
// (required), "IPv6SubnetLen" (64 when the network is /62 or larger, else two
// bits more; at most /126; at least four subnets), "IPv6SubnetMin/Max" (the
// first subnet skipped, the last one included, on an IPv6SubnetLen boundary).
// "EnableIPv4": false (default true) makes the network IPv6-only: Network and
// the IPv4 fields are then not read, as flannel does not read them.

import { type Cidr, cidrContains, formatCidr, formatIPv4, makeCidr, parseCidr, parseIPv4, prefixMask } from './ipv4-address.js';
import { type Cidr6, cidr6Contains, formatCidr6, formatIPv6, ipv6Equals, makeCidr6, maskIPv6, parseCidr6, parseIPv6 } from './ipv6-address.js';

/** The IPv6 half of a dual-stack (or IPv6-only) network config. */
export interface Ipv6NetworkConfig {
  /** IPv6Network, host bits cleared (FLANNEL_IPV6_NETWORK) */
  network: Cidr6;
  /** IPv6SubnetLen: the prefix length of every node's IPv6 subnet */
  subnetLen: number;
  /** IPv6SubnetMin / IPv6SubnetMax: first and last IPv6 subnet that may be handed out (16 bytes each) */
  subnetMin: Uint8Array;
  subnetMax: Uint8Array;
}

export interface NetworkConfig {
  /**
   * the whole pod network (FLANNEL_NETWORK). An IPv6-only config
   * (enableIPv4 false) has flannel's empty IPv4 network here, 0.0.0.0/0 with
   * subnetLen 0, which must not be routed: check enableIPv4 first.
   */
  network: Cidr;
  /** EnableIPv4 (default true); false: IPv6-only, the IPv4 fields are unset */
  enableIPv4: boolean;
  /** EnableIPv6: the IPv6 network, when set */
  ipv6?: Ipv6NetworkConfig;
  /** prefix length of every node's subnet */
  subnetLen: number;
  /** first and last subnet network address that may be handed out (uint32) */
  subnetMin: number;
  subnetMax: number;
  /** Backend.Type, "udp" when Backend is absent (flannel's default) */
  backendType: string;
  /** the Backend object as written, for the backend to read its own settings from */
  backend: Record<string, unknown>;
  /** one sentence per field read but not acted on, for the agent to log */
  notes: string[];
}

export class NetworkConfigError extends Error {
  override name = 'NetworkConfigError';
}

/** Go's encoding/json matches field names case-insensitively; so do we. */
export function field(obj: Record<string, unknown>, name: string): unknown {
  if (name in obj) return obj[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(obj)) if (k.toLowerCase() === lower) return obj[k];
  return undefined;
}

export function parseNetworkConfig(text: string, where = 'network config'): NetworkConfig {
  const fail = (detail: string): never => {
    throw new NetworkConfigError(`${where}: ${detail}`);
  };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return fail(`not valid JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    return fail('expected a JSON object like {"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}');
  }
  const cfg = doc as Record<string, unknown>;
  const notes: string[] = [];

  const flag = (name: 'EnableIPv4' | 'EnableIPv6', fallback: boolean): boolean => {
    const v = field(cfg, name);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') return fail(`${name} must be true or false, found ${JSON.stringify(v)}`);
    return v;
  };
  const enableIPv4 = flag('EnableIPv4', true);
  const enableIPv6 = flag('EnableIPv6', false);
  if (!enableIPv4 && !enableIPv6) fail('EnableIPv4 is false and EnableIPv6 is not true: no address family left to carry');
  for (const name of ['Networks', 'IPv6Networks']) {
    const list = field(cfg, name);
    if (Array.isArray(list) && list.length > 0) {
      fail(`${name} (several cluster networks, MultiClusterCIDR) is not supported by flannel-udp; use ${name === 'Networks' ? 'Network' : 'IPv6Network'}`);
    }
  }

  let v4: Pick<NetworkConfig, 'network' | 'subnetLen' | 'subnetMin' | 'subnetMax'>;
  if (enableIPv4) {
    v4 = parseIpv4Network(cfg, fail);
  } else {
    // flannel's empty IP4Net: nothing is read from the IPv4 fields.
    v4 = { network: makeCidr(0, 0), subnetLen: 0, subnetMin: 0, subnetMax: 0 };
    for (const k of ['Network', 'SubnetLen', 'SubnetMin', 'SubnetMax']) {
      if (field(cfg, k) !== undefined) notes.push(`${k} in the network config is ignored (EnableIPv4 is false: the network is IPv6-only)`);
    }
  }
  let ipv6: Ipv6NetworkConfig | undefined;
  if (enableIPv6) {
    ipv6 = parseIpv6Network(cfg, fail);
  } else {
    for (const k of ['IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax']) {
      if (field(cfg, k) !== undefined) notes.push(`${k} in the network config is ignored (EnableIPv6 is not set: the network is IPv4-only)`);
    }
  }

  let backend: Record<string, unknown> = {};
  const backendValue = field(cfg, 'Backend');
  if (backendValue !== undefined && backendValue !== null) {
    if (typeof backendValue !== 'object' || Array.isArray(backendValue)) {
      fail(`Backend must be an object like {"Type": "udp"}, found ${JSON.stringify(backendValue)}`);
    }
    backend = backendValue as Record<string, unknown>;
  }
  const typeValue = field(backend, 'Type');
  // flannel: no Backend at all means udp; a Backend without Type means "", which it then refuses.
  const backendType = backendValue === undefined || backendValue === null ? 'udp' : typeValue;
  if (typeof backendType !== 'string' || backendType === '') {
    return fail(`Backend.Type must be a backend name like "udp", found ${JSON.stringify(typeValue)}`);
  }

  return { ...v4, enableIPv4, ...(ipv6 !== undefined ? { ipv6 } : {}), backendType, backend, notes };
}

type Fail = (detail: string) => never;

/** Network, SubnetLen, SubnetMin, SubnetMax: flannel's CheckNetworkConfig, IPv4 half. */
function parseIpv4Network(cfg: Record<string, unknown>, fail: Fail): Pick<NetworkConfig, 'network' | 'subnetLen' | 'subnetMin' | 'subnetMax'> {
  const networkText = field(cfg, 'Network');
  if (networkText === undefined || networkText === '') {
    fail('Network is missing (the pod network, e.g. "10.244.0.0/16"; an IPv6-only network sets "EnableIPv4": false)');
  }
  if (typeof networkText === 'string' && networkText.includes(':')) {
    fail(`Network ${JSON.stringify(networkText)} is IPv6: the IPv6 pod network goes in IPv6Network, with "EnableIPv6": true`);
  }
  if (typeof networkText !== 'string') fail(`Network must be a string like "10.244.0.0/16", found ${JSON.stringify(networkText)}`);
  let parsed: Cidr;
  try {
    parsed = parseCidr(networkText as string);
  } catch (err) {
    return fail(`Network: ${(err as Error).message}`);
  }
  // Go's net.ParseCIDR keeps the network part only; so does flannel.
  const network = makeCidr(parsed.network, parsed.prefixLength);

  let subnetLen: number;
  const lenValue = field(cfg, 'SubnetLen');
  if (lenValue === undefined || lenValue === 0) {
    if (network.prefixLength > 28) fail(`Network ${formatCidr(network)} is too small: flannel needs at least a /28`);
    subnetLen = network.prefixLength <= 22 ? 24 : network.prefixLength + 2;
  } else {
    if (typeof lenValue !== 'number' || !Number.isInteger(lenValue) || lenValue < 0) {
      return fail(`SubnetLen must be a whole number, found ${JSON.stringify(lenValue)}`);
    }
    if (lenValue > 30) fail(`SubnetLen ${lenValue} is too long: it must be /30 or shorter (a node needs room for its bridge and pods)`);
    if (lenValue < network.prefixLength + 2) {
      fail(`SubnetLen ${lenValue} is too short: Network ${formatCidr(network)} must hold at least four subnets, so /${network.prefixLength + 2} or longer`);
    }
    subnetLen = lenValue;
  }
  const subnetSize = 2 ** (32 - subnetLen);
  const mask = prefixMask(subnetLen);
  const networkEnd = network.network + 2 ** (32 - network.prefixLength); // one past the last address

  const bound = (name: 'SubnetMin' | 'SubnetMax', fallback: number): number => {
    const v = field(cfg, name);
    if (v === undefined || v === '' || v === null) return fallback;
    if (typeof v !== 'string') return fail(`${name} must be an address string like "10.244.1.0", found ${JSON.stringify(v)}`);
    let addr: number;
    try {
      addr = parseIPv4(v);
    } catch (err) {
      return fail(`${name}: ${(err as Error).message}`);
    }
    if (!cidrContains(network, addr)) fail(`${name} ${v} is not inside Network ${formatCidr(network)}`);
    if (((addr & mask) >>> 0) !== addr) {
      fail(`${name} ${v} is not on a /${subnetLen} boundary (did you mean ${formatIPv4((addr & mask) >>> 0)}?)`);
    }
    return addr;
  };
  const subnetMin = bound('SubnetMin', network.network + subnetSize);
  const subnetMax = bound('SubnetMax', networkEnd - subnetSize);
  if (subnetMin > subnetMax) fail(`SubnetMin ${formatIPv4(subnetMin)} is after SubnetMax ${formatIPv4(subnetMax)}: no subnet to hand out`);
  return { network, subnetLen, subnetMin, subnetMax };
}

const bigOf = (bytes: Uint8Array): bigint => {
  let n = 0n;
  for (let i = 0; i < 16; i++) n = (n << 8n) | BigInt(bytes[i]);
  return n;
};
const bytesOf = (n: bigint): Uint8Array => {
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--, n >>= 8n) out[i] = Number(n & 0xffn);
  return out;
};

/** IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax: flannel's CheckNetworkConfig, IPv6 half. */
function parseIpv6Network(cfg: Record<string, unknown>, fail: Fail): Ipv6NetworkConfig {
  const text = field(cfg, 'IPv6Network');
  if (text === undefined || text === null || text === '') {
    return fail('EnableIPv6 is true but IPv6Network is missing (the IPv6 pod network, e.g. "fd00:10:244::/56")');
  }
  if (typeof text !== 'string') return fail(`IPv6Network must be a string like "fd00:10:244::/56", found ${JSON.stringify(text)}`);
  if (!text.includes(':')) return fail(`IPv6Network ${JSON.stringify(text)} is not an IPv6 CIDR (the IPv4 network goes in Network)`);
  let parsed: Cidr6;
  try {
    parsed = parseCidr6(text);
  } catch (err) {
    return fail(`IPv6Network: ${(err as Error).message}`);
  }
  const network = makeCidr6(parsed.network, parsed.prefixLength);
  const net = formatCidr6(network);

  let subnetLen: number;
  const lenValue = field(cfg, 'IPv6SubnetLen');
  if (lenValue === undefined || lenValue === null || lenValue === 0) {
    if (network.prefixLength > 124) fail(`IPv6Network ${net} is too small: flannel needs at least a /124`);
    subnetLen = network.prefixLength <= 62 ? 64 : network.prefixLength + 2;
  } else {
    if (typeof lenValue !== 'number' || !Number.isInteger(lenValue) || lenValue < 0) {
      return fail(`IPv6SubnetLen must be a whole number, found ${JSON.stringify(lenValue)}`);
    }
    if (lenValue > 126) fail(`IPv6SubnetLen ${lenValue} is too long: it must be /126 or shorter (a node needs room for its bridge and pods)`);
    if (lenValue < network.prefixLength + 2) {
      fail(`IPv6SubnetLen ${lenValue} is too short: IPv6Network ${net} must hold at least four subnets, so /${network.prefixLength + 2} or longer`);
    }
    subnetLen = lenValue;
  }
  const size = 1n << BigInt(128 - subnetLen);
  const start = bigOf(network.network);
  const end = start + (1n << BigInt(128 - network.prefixLength)); // one past the last address

  const bound = (name: 'IPv6SubnetMin' | 'IPv6SubnetMax', fallback: bigint): Uint8Array => {
    const v = field(cfg, name);
    if (v === undefined || v === '' || v === null) return bytesOf(fallback);
    if (typeof v !== 'string') return fail(`${name} must be an address string like "fd00:10:244:1::", found ${JSON.stringify(v)}`);
    let addr: Uint8Array;
    try {
      addr = parseIPv6(v);
    } catch (err) {
      return fail(`${name}: ${(err as Error).message}`);
    }
    if (!cidr6Contains(network, addr)) fail(`${name} ${v} is not inside IPv6Network ${net}`);
    const aligned = maskIPv6(addr, subnetLen);
    if (!ipv6Equals(aligned, addr)) fail(`${name} ${v} is not on a /${subnetLen} boundary (did you mean ${formatIPv6(aligned)}?)`);
    return addr;
  };
  const subnetMin = bound('IPv6SubnetMin', start + size);
  const subnetMax = bound('IPv6SubnetMax', end - size);
  if (bigOf(subnetMin) > bigOf(subnetMax)) {
    fail(`IPv6SubnetMin ${formatIPv6(subnetMin)} is after IPv6SubnetMax ${formatIPv6(subnetMax)}: no IPv6 subnet to hand out`);
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

/** The IPv6 subnet `offset` subnets after `from` (IPv6SubnetLen apart); exported for the etcd allocator. */
export function ipv6SubnetAt(ipv6: Ipv6NetworkConfig, from: Uint8Array, offset: bigint): Uint8Array {
  return bytesOf(bigOf(from) + offset * (1n << BigInt(128 - ipv6.subnetLen)));
}

/** An address as an unsigned 128-bit number, for ordering and counting IPv6 subnets. */
export function ipv6ToBigInt(bytes: Uint8Array): bigint {
  return bigOf(bytes);
}

/** How many IPv6 subnets IPv6SubnetMin..IPv6SubnetMax hold (a bigint: a /48 of /64s is 65 536, a /32 four billion). */
export function ipv6SubnetCount(ipv6: Ipv6NetworkConfig): bigint {
  return (bigOf(ipv6.subnetMax) - bigOf(ipv6.subnetMin)) / (1n << BigInt(128 - ipv6.subnetLen)) + 1n;
}


/** Backend.Port: the UDP port of the udp backend (8285 when absent, flannel's). */
export function backendPort(config: NetworkConfig): number | undefined {
  const port = field(config.backend, 'Port');
  if (port === undefined || port === 0) return undefined;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new NetworkConfigError(`network config: Backend.Port must be a port number 1..65535, found ${JSON.stringify(port)}`);
  }
  return port;
}

/** Backend.VNI: the VXLAN network identifier of the vxlan backend (1 when absent, flannel's). */
export function backendVni(config: NetworkConfig): number {
  const vni = field(config.backend, 'VNI');
  if (vni === undefined) return 1;
  if (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) {
    throw new NetworkConfigError(`network config: Backend.VNI must be a whole number 0..16777215, found ${JSON.stringify(vni)}`);
  }
  return vni;
}

/** How many subnets SubnetMin..SubnetMax hold. */
export function subnetCount(config: NetworkConfig): number {
  return (config.subnetMax - config.subnetMin) / 2 ** (32 - config.subnetLen) + 1;
}
