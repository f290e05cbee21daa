// IPv4 addresses and CIDRs as uint32 numbers in host order (10.0.0.1 = 0x0a000001).
// Numbers, not strings or byte arrays, because the data plane compares and masks
// addresses per packet and the lease table stores them in typed arrays.
//
// JS bitwise operators return *signed* int32, so every result that can have the
// top bit set is brought back to uint32 with `>>> 0`.

export interface Cidr {
  /** the address as written (10.244.1.1 in "10.244.1.1/24") */
  ip: number;
  prefixLength: number;
  /** ip & mask (10.244.1.0 in "10.244.1.1/24") */
  network: number;
  mask: number;
}

// Leading zeros are refused because "010" means 8 to inet_aton and 10 to most
// people; Go's net.ParseIP (which flannel uses) refuses them too.
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const DOTTED_QUAD = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);
const PREFIX_LENGTH = /^(3[0-2]|[12][0-9]|[0-9])$/;

export function parseIPv4(text: string): number {
  const m = typeof text === 'string' ? DOTTED_QUAD.exec(text) : null;
  if (m === null) {
    throw new Error(`${JSON.stringify(text)} is not a valid IPv4 address (expected a dotted quad like 10.244.1.1)`);
  }
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function formatIPv4(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

/** Netmask for a prefix length. /0 is special-cased: JS shifts count mod 32, so 0xffffffff << 32 is not 0. */
export function prefixMask(prefixLength: number): number {
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) {
    throw new Error(`prefix length ${prefixLength} is out of range (0..32)`);
  }
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

export function makeCidr(ip: number, prefixLength: number): Cidr {
  const mask = prefixMask(prefixLength);
  ip = ip >>> 0;
  return { ip, prefixLength, network: (ip & mask) >>> 0, mask };
}

/** "10.244.1.1/24" → Cidr. Host bits are allowed (FLANNEL_SUBNET has them); `network` has them cleared. */
export function parseCidr(text: string): Cidr {
  const slash = typeof text === 'string' ? text.indexOf('/') : -1;
  if (slash < 0) {
    throw new Error(`${JSON.stringify(text)} is not a valid IPv4 CIDR (expected address/prefix-length like 10.244.0.0/16)`);
  }
  const lengthText = text.slice(slash + 1);
  if (!PREFIX_LENGTH.test(lengthText)) {
    throw new Error(`${JSON.stringify(text)} is not a valid IPv4 CIDR (prefix length must be 0..32)`);
  }
  let ip: number;
  try {
    ip = parseIPv4(text.slice(0, slash));
  } catch {
    throw new Error(`${JSON.stringify(text)} is not a valid IPv4 CIDR (bad address part)`);
  }
  return makeCidr(ip, Number(lengthText));
}

/** Network form by default ("10.244.1.0/24"); `useIp` keeps the address as written ("10.244.1.1/24"). */
export function formatCidr(c: Cidr, useIp = false): string {
  return `${formatIPv4(useIp ? c.ip : c.network)}/${c.prefixLength}`;
}

export function cidrContains(c: Cidr, addr: number): boolean {
  return ((addr & c.mask) >>> 0) === c.network;
}

/** True when every address of `inner` is inside `outer`. */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  return inner.prefixLength >= outer.prefixLength && cidrContains(outer, inner.network);
}

/** Two CIDRs overlap exactly when one covers the other (CIDR blocks nest or are disjoint). */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrCovers(a, b) || cidrCovers(b, a);
}

export function cidrEquals(a: Cidr, b: Cidr): boolean {
  return a.network === b.network && a.prefixLength === b.prefixLength;
}
