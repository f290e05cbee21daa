// A flannel lease: one node's pod subnet and the public IP its packets are
// tunnelled to. In flannel's etcd store it is one key/value pair:
//
//   /coreos.com/network/subnets/10.244.2.0-24
//     {"PublicIP":"192.0.2.2","PublicIPv6":null,"BackendType":"udp","BackendData":null}
//
// The subnet key is the subnet with '-' for '/'. Dual-stack clusters append
// "&fd00:10:244:2::-64" and fill PublicIPv6 (and BackendV6Data for vxlan).

import { type Cidr, formatIPv4, makeCidr, parseIPv4 } from './ipv4-address.js';
import { type Cidr6, formatIPv6, ipv6Equals, makeCidr6, parseIPv6 } from './ipv6-address.js';

export interface Lease {
  subnet: Cidr;
  publicIp: number;
  /** flannel backend that owns the lease ("udp", "vxlan", …) */
  backendType: string;
  /** backend-specific JSON, passed through untouched (null when absent) */
  backendData: unknown;
  /** the flannel subnet key, canonical form ("10.244.2.0-24", dual-stack "10.244.2.0-24&fd00:10:244:2::-64") */
  key: string;
  /** dual-stack: the node's IPv6 pod subnet (the key's part after '&'); absent on an IPv4-only lease */
  ipv6Subnet?: Cidr6;
  /** an IPv6-only node: the key's IPv4 half is the zero "0.0.0.0-0", which routes nothing */
  ipv6Only?: true;
  /** PublicIPv6: the node's IPv6 underlay address, when it has one (16 bytes, network order) */
  publicIpv6?: Uint8Array;
  /** BackendV6Data: the IPv6 backend's JSON (VXLAN: flannel-v6.1's VtepMAC), passed through untouched */
  backendV6Data?: unknown;
  /** attributes this version of flannel-udp does not know, ignored (the agent logs each name once) */
  unknownFields?: string[];
}

export class LeaseError extends Error {
  /** the subnet key as written */
  readonly key: string;
  /** the lease attribute concerned ("PublicIP"), '' for the key itself */
  readonly attribute: string;

  constructor(key: string, attribute: string, detail: string) {
    super(`lease ${JSON.stringify(key)}: ${attribute !== '' ? `${attribute}: ` : ''}${detail}`);
    this.name = 'LeaseError';
    this.key = key;
    this.attribute = attribute;
  }
}

const SUBNET_KEY = /^([0-9.]+)-([0-9]{1,2})$/;
// flannel's own pattern for the IPv6 half is [a-f\d:]+ (lower case, as Go prints it).
const SUBNET_KEY_6 = /^([0-9a-f:.]+)-([0-9]{1,3})$/;

/** "10.244.2.0-24" → Cidr (of a dual-stack key, the IPv4 half). Strict: the network address, length 0..32. */
export function parseSubnetKey(key: string): Cidr {
  return parseDualStackSubnetKey(key).subnet;
}

/**
 * flannel's subnet key, both halves: "10.244.2.0-24" or, dual-stack,
 * "10.244.2.0-24&fd00:10:244:2::-64" (MakeSubnetKey). An IPv6-only node's key
 * has the zero IPv4 half "0.0.0.0-0" (Go's empty IP4Net), reported as `ipv6Only`.
 */
export function parseDualStackSubnetKey(key: string): { subnet: Cidr; ipv6Subnet?: Cidr6; ipv6Only: boolean } {
  if (typeof key !== 'string') throw new LeaseError(String(key), '', 'subnet key must be a string');
  const parts = key.split('&');
  if (parts.length > 2) throw new LeaseError(key, '', "more than one '&' (expected IPv4-key or IPv4-key&IPv6-key)");
  const subnet = parseIPv4Half(key, parts[0]);
  if (parts.length === 1) return { subnet, ipv6Only: false };
  const ipv6Subnet = parseIPv6Half(key, parts[1]);
  return { subnet, ipv6Subnet, ipv6Only: subnet.prefixLength === 0 && subnet.network === 0 };
}

function parseIPv4Half(key: string, text: string): Cidr {
  const m = SUBNET_KEY.exec(text);
  if (m === null) {
    throw new LeaseError(key, '', 'not a flannel subnet key (expected network-prefixlength, e.g. 10.244.2.0-24)');
  }
  const prefixLength = Number(m[2]);
  if (prefixLength > 32 || (m[2].length > 1 && m[2][0] === '0')) {
    throw new LeaseError(key, '', `prefix length ${m[2]} is not in 0..32`);
  }
  let ip: number;
  try {
    ip = parseIPv4(m[1]);
  } catch {
    throw new LeaseError(key, '', `${JSON.stringify(m[1])} is not a valid IPv4 address`);
  }
  const subnet = makeCidr(ip, prefixLength);
  if (subnet.network !== subnet.ip) {
    // flannel never writes such keys; accepting one would hide a typo in a hand-written file.
    throw new LeaseError(key, '', `host bits are set (did you mean ${formatSubnetKey(subnet)}?)`);
  }
  return subnet;
}

function parseIPv6Half(key: string, text: string): Cidr6 {
  const m = SUBNET_KEY_6.exec(text);
  if (m === null) {
    throw new LeaseError(key, '', "the IPv6 half after '&' is not network-prefixlength in lower case (e.g. fd00:10:244:2::-64)");
  }
  const prefixLength = Number(m[2]);
  if (prefixLength > 128 || (m[2].length > 1 && m[2][0] === '0')) {
    throw new LeaseError(key, '', `IPv6 prefix length ${m[2]} is not in 0..128`);
  }
  let ip: Uint8Array;
  try {
    ip = parseIPv6(m[1]);
  } catch {
    throw new LeaseError(key, '', `${JSON.stringify(m[1])} is not a valid IPv6 address`);
  }
  const subnet = makeCidr6(ip, prefixLength);
  if (!ipv6Equals(subnet.network, subnet.ip)) {
    throw new LeaseError(key, '', `host bits are set in the IPv6 half (did you mean ${formatIPv6(subnet.network)}-${prefixLength}?)`);
  }
  return subnet;
}

/** MakeSubnetKey: "10.244.2.0-24", or with an IPv6 subnet "10.244.2.0-24&fd00:10:244:2::-64". */
export function formatSubnetKey(subnet: Cidr, ipv6Subnet?: Cidr6): string {
  const v4 = `${formatIPv4(subnet.network)}-${subnet.prefixLength}`;
  return ipv6Subnet === undefined ? v4 : `${v4}&${formatIPv6(ipv6Subnet.network)}-${ipv6Subnet.prefixLength}`;
}

// flannel's LeaseAttrs fields. Go's JSON decoder ignores unknown fields, so a
// newer flanneld may add some: they are ignored here too (and reported, once
// per name, by the agent). A name that differs from a known one only in case
// ("PublicIp") is refused: Go would read it as the known field, we would not,
// and in a hand-written file it is a typo that must not silently drop a route.
const KNOWN_ATTRIBUTES = ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData', 'BackendV6Data'];

/** Validate flannel's lease JSON (already parsed) stored under `key`. */
export function parseLeaseAttrs(key: string, value: unknown): Lease {
  const { subnet, ipv6Subnet, ipv6Only } = parseDualStackSubnetKey(key);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new LeaseError(key, '', `lease attributes must be a JSON object like {"PublicIP":"192.0.2.2","BackendType":"udp"}`);
  }
  const attrs = value as Record<string, unknown>;

  const unknownFields: string[] = [];
  for (const name of Object.keys(attrs)) {
    if (KNOWN_ATTRIBUTES.includes(name)) continue;
    const meant = KNOWN_ATTRIBUTES.find((k) => k.toLowerCase() === name.toLowerCase());
    if (meant) throw new LeaseError(key, name, `unknown attribute (did you mean ${meant}?)`);
    unknownFields.push(name);
  }

  // An IPv6-only node's lease may have no IPv4 public address (Go writes its zero value, "0.0.0.0").
  let publicIp = 0;
  if (!ipv6Only || (attrs.PublicIP !== undefined && attrs.PublicIP !== null)) {
    if (!('PublicIP' in attrs)) throw new LeaseError(key, 'PublicIP', 'missing (the node address packets are tunnelled to)');
    if (typeof attrs.PublicIP !== 'string') throw new LeaseError(key, 'PublicIP', 'must be a string like "192.0.2.2"');
    try {
      publicIp = parseIPv4(attrs.PublicIP);
    } catch (err) {
      throw new LeaseError(key, 'PublicIP', (err as Error).message);
    }
  }

  if (!('BackendType' in attrs)) throw new LeaseError(key, 'BackendType', 'missing (e.g. "udp")');
  if (typeof attrs.BackendType !== 'string' || attrs.BackendType === '') {
    throw new LeaseError(key, 'BackendType', 'must be a non-empty string like "udp"');
  }

  // flannel writes "PublicIPv6": null on every IPv4-only lease.
  let publicIpv6: Uint8Array | undefined;
  if (attrs.PublicIPv6 !== undefined && attrs.PublicIPv6 !== null) {
    if (typeof attrs.PublicIPv6 !== 'string') throw new LeaseError(key, 'PublicIPv6', 'must be null or a string like "fd00::2"');
    try {
      publicIpv6 = parseIPv6(attrs.PublicIPv6);
    } catch (err) {
      throw new LeaseError(key, 'PublicIPv6', (err as Error).message);
    }
  }
  if (ipv6Only && publicIpv6 === undefined && publicIp === 0) {
    throw new LeaseError(key, 'PublicIPv6', 'missing on an IPv6-only lease (the node address packets are tunnelled to)');
  }

  return {
    subnet,
    publicIp,
    backendType: attrs.BackendType,
    backendData: attrs.BackendData ?? null,
    key: formatSubnetKey(subnet, ipv6Subnet),
    ...(ipv6Subnet !== undefined ? { ipv6Subnet } : {}),
    ...(ipv6Only ? { ipv6Only: true as const } : {}),
    ...(publicIpv6 !== undefined ? { publicIpv6 } : {}),
    ...(attrs.BackendV6Data !== undefined && attrs.BackendV6Data !== null ? { backendV6Data: attrs.BackendV6Data } : {}),
    ...(unknownFields.length > 0 ? { unknownFields } : {}),
  };
}
