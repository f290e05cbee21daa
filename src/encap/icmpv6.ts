// ICMPv6 errors this data plane originates (RFC 4443): destination
// unreachable (no route) when no lease covers a destination, packet too big
// when a packet does not fit the underlay; echo for tests. The IPv6 twin of
// icmp.ts, written back into the TUN the same way.
import { internetChecksum } from './checksum.js';
import { DropReason } from './drop-reasons.js';
import {
  IPV6_DEFAULT_HOP_LIMIT,
  IPV6_HEADER,
  IPV6_MIN_MTU,
  IPV6_OFFSET_DESTINATION,
  IPV6_OFFSET_SOURCE,
  IP_PROTOCOL_ICMPV6,
  UpperLayer,
  buildIPv6Header,
  ipv6PseudoHeaderSum,
  ipv6TotalLength,
  ipv6UpperLayer,
  validateIPv6,
} from './ipv6.js';

export const ICMPV6_HEADER = 8;
export const ICMPV6_DEST_UNREACH = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_PARAMETER_PROBLEM = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
/** Types below 128 are errors (RFC 4443 §2.1). */
export const ICMPV6_FIRST_INFORMATIONAL = 128;
/** Destination unreachable code 0: no route to destination. */
export const ICMPV6_NO_ROUTE = 0;
/** An error carries as much of the offending packet as keeps it within the minimum MTU (RFC 4443 §2.4 (c)). */
export const ICMPV6_ERROR_MAX_LENGTH = IPV6_MIN_MTU;

/**
 * RFC 4443 §2.4 (e): no error about an ICMPv6 error, about a packet sent to
 * a multicast address (packet too big excepted, e.3), or about one whose
 * source is not a single node (unspecified, multicast; loopback cannot come
 * through a router). A non-first fragment carries no upper-layer header to
 * tell an error from a query: silent too (as the IPv4 path for later fragments).
 */
function mayAnswer(orig: Uint8Array, origOff: number, total: number, type: number, scratch: UpperLayer): boolean {
  const src = origOff + IPV6_OFFSET_SOURCE;
  if (orig[src] === 0xff) return false;
  let zeroPrefix = true;
  for (let i = 0; i < 15; i++) if (orig[src + i] !== 0) zeroPrefix = false;
  if (zeroPrefix && (orig[src + 15] === 0 || orig[src + 15] === 1)) return false;
  if (orig[origOff + IPV6_OFFSET_DESTINATION] === 0xff && type !== ICMPV6_PACKET_TOO_BIG) return false;
  ipv6UpperLayer(orig, origOff, total, scratch);
  if (scratch.laterFragment) return false;
  if (scratch.protocol === IP_PROTOCOL_ICMPV6) {
    // Without the type byte we cannot tell an error from a query: stay silent.
    if (scratch.offset + 1 > origOff + total) return false;
    return orig[scratch.offset] >= ICMPV6_FIRST_INFORMATIONAL;
  }
  // A chain we could not walk might hide an ICMPv6 error: stay silent.
  return scratch.protocol >= 0;
}

const scratchUpper = new UpperLayer();

/**
 * Writes at out[outOff..] a complete IPv6 packet carrying an ICMPv6 error of
 * `type`/`code` about the packet at orig[origOff..] (origLen bytes read),
 * from `srcAddr` (16 bytes at srcOff) to the original's source, quoting as
 * much of the original as fits in 1280 bytes. `param` fills bytes 4-7: the
 * MTU for packet too big, 0 otherwise. Returns the length written, or 0 when
 * no error may be sent (see mayAnswer) or the original is malformed.
 * `out` must not overlap the original.
 */
export function buildIcmpv6Error(
  orig: Uint8Array,
  origOff: number,
  origLen: number,
  out: Uint8Array,
  outOff: number,
  srcAddr: Uint8Array,
  srcOff: number,
  type: number,
  code: number,
  param: number,
): number {
  if (validateIPv6(orig, origOff, origLen) !== DropReason.None) return 0;
  const total = ipv6TotalLength(orig, origOff);
  if (!mayAnswer(orig, origOff, total, type, scratchUpper)) return 0;
  const maxQuote = ICMPV6_ERROR_MAX_LENGTH - IPV6_HEADER - ICMPV6_HEADER;
  const quote = total < maxQuote ? total : maxQuote;
  const icmpLength = ICMPV6_HEADER + quote;

  buildIPv6Header(out, outOff, icmpLength, IP_PROTOCOL_ICMPV6, IPV6_DEFAULT_HOP_LIMIT, srcAddr, srcOff, orig, origOff + IPV6_OFFSET_SOURCE);
  const icmp = outOff + IPV6_HEADER;
  out[icmp] = type;
  out[icmp + 1] = code;
  out[icmp + 2] = 0;
  out[icmp + 3] = 0;
  out[icmp + 4] = param >>> 24;
  out[icmp + 5] = param >>> 16;
  out[icmp + 6] = param >>> 8;
  out[icmp + 7] = param;
  const body = icmp + ICMPV6_HEADER;
  for (let i = 0; i < quote; i++) out[body + i] = orig[origOff + i];
  const checksum = internetChecksum(out, icmp, icmpLength, ipv6PseudoHeaderSum(out, outOff, IP_PROTOCOL_ICMPV6, icmpLength));
  out[icmp + 2] = checksum >>> 8;
  out[icmp + 3] = checksum;
  return IPV6_HEADER + icmpLength;
}

/** A complete ICMPv6 echo request or reply with `payloadLen` bytes 0, 1, 2…, for tests. Returns the packet length. */
export function buildIcmpv6Echo(
  out: Uint8Array,
  outOff: number,
  src: Uint8Array,
  dst: Uint8Array,
  type: number,
  id: number,
  seq: number,
  payloadLen: number,
  hopLimit = IPV6_DEFAULT_HOP_LIMIT,
): number {
  const icmpLength = ICMPV6_HEADER + payloadLen;
  buildIPv6Header(out, outOff, icmpLength, IP_PROTOCOL_ICMPV6, hopLimit, src, 0, dst, 0);
  const icmp = outOff + IPV6_HEADER;
  out[icmp] = type;
  out[icmp + 1] = 0;
  out[icmp + 2] = 0;
  out[icmp + 3] = 0;
  out[icmp + 4] = id >>> 8;
  out[icmp + 5] = id;
  out[icmp + 6] = seq >>> 8;
  out[icmp + 7] = seq;
  for (let i = 0; i < payloadLen; i++) out[icmp + ICMPV6_HEADER + i] = i;
  const checksum = internetChecksum(out, icmp, icmpLength, ipv6PseudoHeaderSum(out, outOff, IP_PROTOCOL_ICMPV6, icmpLength));
  out[icmp + 2] = checksum >>> 8;
  out[icmp + 3] = checksum;
  return IPV6_HEADER + icmpLength;
}
