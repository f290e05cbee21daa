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
// Fields for other flannel features (EnableNFTables, …) are ignored; IPv6 is
// refused rather than half-supported.

import { type Cidr, cidrContains, formatCidr, formatIPv4, makeCidr, parseCidr, parseIPv4, prefixMask } from './ipv4-address.js';

export interface NetworkConfig {
  /** the whole pod network (FLANNEL_NETWORK) */
  network: Cidr;
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

  if (field(cfg, 'EnableIPv4') === false) fail('EnableIPv4 is false: flannel-udp carries IPv4 only');
  if (field(cfg, 'EnableIPv6') === true) fail('EnableIPv6 is true: IPv6 is not supported by flannel-udp yet');
  if (Array.isArray(field(cfg, 'Networks')) && (field(cfg, 'Networks') as unknown[]).length > 0) {
    fail('Networks (several cluster networks, MultiClusterCIDR) is not supported by flannel-udp; use Network');
  }

  const networkText = field(cfg, 'Network');
  if (networkText === undefined || networkText === '') fail('Network is missing (the pod network, e.g. "10.244.0.0/16")');
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

  for (const k of ['IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax']) {
    if (field(cfg, k) !== undefined) notes.push(`${k} in the network config is ignored (EnableIPv6 is not set; flannel-udp carries IPv4 only)`);
  }

  return { network, subnetLen, subnetMin, subnetMax, backendType, backend, notes };
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
