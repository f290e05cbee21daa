// IPv6 addresses and CIDRs as 16-byte arrays in network order, the form they
// take on the wire, so the data plane compares packet bytes with them directly
// and the lease table stores them side by side in one typed array.
//
// Parsing follows Go's net.ParseIP (which flannel uses): "::" once at most,
// groups of 1-4 hex digits, an embedded dotted quad only as the last 32 bits,
// no zone ("%eth0"). Formatting is RFC 5952: lower case, leading zeros
// dropped, the longest run of two or more zero groups as "::" (the first on a
// tie), as Go's String() and `ip -6` print addresses.

import { parseIPv4 } from './ipv4-address.js';

export interface Cidr6 {
  /** the address as written (fd00::1 in "fd00::1/64") */
  ip: Uint8Array;
  prefixLength: number;
  /** ip with the host bits cleared */
  network: Uint8Array;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function invalid(text: unknown): Error {
  return new Error(`${JSON.stringify(text)} is not a valid IPv6 address (expected a form like fd00:10:244::1)`);
}

export function parseIPv6(text: string): Uint8Array {
  if (typeof text !== 'string' || text.length < 2 || text.length > 45) throw invalid(text);
  const halves = text.split('::');
  if (halves.length > 2) throw invalid(text);
  const groupsOf = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const head = groupsOf(halves[0]);
  const tail = halves.length === 2 ? groupsOf(halves[1]) : [];

  // An embedded IPv4 address ("::ffff:192.0.2.1") stands for the last two groups.
  const words: number[] = [];
  const all = [...head, ...tail];
  const last = all.length > 0 ? all[all.length - 1] : '';
  let v4: number | undefined;
  if (last.includes('.')) {
    try {
      v4 = parseIPv4(last);
    } catch {
      throw invalid(text);
    }
    (tail.length > 0 ? tail : head).pop();
  }
  for (const group of [...head, ...tail]) if (!HEX_GROUP.test(group)) throw invalid(text);

  const given = head.length + tail.length + (v4 === undefined ? 0 : 2);
  if (halves.length === 1 ? given !== 8 : given > 7) throw invalid(text);
  for (const g of head) words.push(parseInt(g, 16));
  for (let i = given; i < 8; i++) words.push(0);
  for (const g of tail) words.push(parseInt(g, 16));
  if (v4 !== undefined) words.push(v4 >>> 16, v4 & 0xffff);

  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    bytes[2 * i] = words[i] >>> 8;
    bytes[2 * i + 1] = words[i] & 0xff;
  }
  return bytes;
}

export function formatIPv6(bytes: Uint8Array, offset = 0): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((bytes[offset + 2 * i] << 8) | bytes[offset + 2 * i + 1]);
  // The longest run of zero groups (two or more) becomes "::".
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]): string => ws.map((w) => w.toString(16)).join(':');
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLength))}`;
}

/** `ip` with every bit after the first `prefixLength` cleared (a new array). */
export function maskIPv6(ip: Uint8Array, prefixLength: number): Uint8Array {
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 128) {
    throw new Error(`prefix length ${prefixLength} is out of range (0..128)`);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.min(8, Math.max(0, prefixLength - 8 * i));
    out[i] = ip[i] & ((0xff00 >> bits) & 0xff);
  }
  return out;
}

export function makeCidr6(ip: Uint8Array, prefixLength: number): Cidr6 {
  return { ip: Uint8Array.from(ip), prefixLength, network: maskIPv6(ip, prefixLength) };
}

const PREFIX_LENGTH_6 = /^(12[0-8]|1[01][0-9]|[1-9][0-9]|[0-9])$/;

/** "fd00:10:244:1::1/64" → Cidr6. Host bits are allowed (FLANNEL_IPV6_SUBNET has them); `network` has them cleared. */
export function parseCidr6(text: string): Cidr6 {
  const slash = typeof text === 'string' ? text.indexOf('/') : -1;
  if (slash < 0) {
    throw new Error(`${JSON.stringify(text)} is not a valid IPv6 CIDR (expected address/prefix-length like fd00:10:244::/56)`);
  }
  const lengthText = text.slice(slash + 1);
  if (!PREFIX_LENGTH_6.test(lengthText)) {
    throw new Error(`${JSON.stringify(text)} is not a valid IPv6 CIDR (prefix length must be 0..128)`);
  }
  let ip: Uint8Array;
  try {
    ip = parseIPv6(text.slice(0, slash));
  } catch {
    throw new Error(`${JSON.stringify(text)} is not a valid IPv6 CIDR (bad address part)`);
  }
  return makeCidr6(ip, Number(lengthText));
}

/** Network form by default ("fd00:10:244:1::/64"); `useIp` keeps the address as written. */
export function formatCidr6(c: Cidr6, useIp = false): string {
  return `${formatIPv6(useIp ? c.ip : c.network)}/${c.prefixLength}`;
}

export function ipv6Equals(a: Uint8Array, b: Uint8Array, bOffset = 0): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[bOffset + i]) return false;
  return true;
}

export function cidr6Contains(c: Cidr6, addr: Uint8Array, offset = 0): boolean {
  const full = c.prefixLength >> 3;
  for (let i = 0; i < full; i++) if (c.network[i] !== addr[offset + i]) return false;
  const rest = c.prefixLength & 7;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (addr[offset + full] & mask) === c.network[full];
}

/** True when every address of `inner` is inside `outer`. */
export function cidr6Covers(outer: Cidr6, inner: Cidr6): boolean {
  return inner.prefixLength >= outer.prefixLength && cidr6Contains(outer, inner.network);
}

export function cidr6Overlaps(a: Cidr6, b: Cidr6): boolean {
  return cidr6Covers(a, b) || cidr6Covers(b, a);
}

export function cidr6Equals(a: Cidr6, b: Cidr6): boolean {
  return a.prefixLength === b.prefixLength && ipv6Equals(a.network, b.network);
}
