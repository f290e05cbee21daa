// A flannel lease: one node's pod subnet and the public IP its packets are
// tunnelled to. In flannel's etcd store it is one key/value pair:
//
//   /coreos.com/network/subnets/10.244.2.0-24
//     {"PublicIP":"192.0.2.2","PublicIPv6":null,"BackendType":"udp","BackendData":null}
//
// The subnet key is the subnet with '-' for '/'. Dual-stack clusters append
// "&fc00:0:0:2::-64"; flannel-udp carries IPv4 only and refuses those keys
// rather than half-reading them.

import { type Cidr, formatIPv4, makeCidr, parseIPv4 } from './ipv4-address.js';
import type { Cidr6 } from './ipv6-address.js';

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

/** "10.244.2.0-24" → Cidr. Strict: the address must be the network address and the length 0..32. */
export function parseSubnetKey(key: string): Cidr {
  if (typeof key !== 'string') throw new LeaseError(String(key), '', 'subnet key must be a string');
  if (key.includes('&')) {
    throw new LeaseError(key, '', 'dual-stack (IPv4&IPv6) subnet keys are not supported by flannel-udp');
  }
  const m = SUBNET_KEY.exec(key);
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

export function formatSubnetKey(subnet: Cidr): string {
  return `${formatIPv4(subnet.network)}-${subnet.prefixLength}`;
}

// flannel's LeaseAttrs fields. Go's JSON decoder ignores unknown fields, so a
// newer flanneld may add some: they are ignored here too (and reported, once
// per name, by the agent). A name that differs from a known one only in case
// ("PublicIp") is refused: Go would read it as the known field, we would not,
// and in a hand-written file it is a typo that must not silently drop a route.
const KNOWN_ATTRIBUTES = ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData', 'BackendV6Data'];

/** Validate flannel's lease JSON (already parsed) stored under `key`. */
export function parseLeaseAttrs(key: string, value: unknown): Lease {
  const subnet = parseSubnetKey(key);
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

  if (!('PublicIP' in attrs)) throw new LeaseError(key, 'PublicIP', 'missing (the node address packets are tunnelled to)');
  if (typeof attrs.PublicIP !== 'string') throw new LeaseError(key, 'PublicIP', 'must be a string like "192.0.2.2"');
  let publicIp: number;
  try {
    publicIp = parseIPv4(attrs.PublicIP);
  } catch (err) {
    throw new LeaseError(key, 'PublicIP', (err as Error).message);
  }

  if (!('BackendType' in attrs)) throw new LeaseError(key, 'BackendType', 'missing (e.g. "udp")');
  if (typeof attrs.BackendType !== 'string' || attrs.BackendType === '') {
    throw new LeaseError(key, 'BackendType', 'must be a non-empty string like "udp"');
  }

  // IPv6 attributes are allowed (flannel writes "PublicIPv6": null on every
  // IPv4 lease) but carry nothing flannel-udp uses.
  if (attrs.PublicIPv6 !== undefined && attrs.PublicIPv6 !== null && typeof attrs.PublicIPv6 !== 'string') {
    throw new LeaseError(key, 'PublicIPv6', 'must be null or a string');
  }

  return {
    subnet,
    publicIp,
    backendType: attrs.BackendType,
    backendData: attrs.BackendData ?? null,
    key: formatSubnetKey(subnet),
    ...(unknownFields.length > 0 ? { unknownFields } : {}),
  };
}
