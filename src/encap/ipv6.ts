// IPv6 header (RFC 8200) helpers on (buf, off): read, validate, hop limit
// decrement, the upper-layer protocol behind the extension headers. No
// allocation; addresses stay in the packet (16 bytes at off + 8 and off + 24).
//
// The forwarder does not parse extension headers to forward a packet: they
// travel as they are, inside the payload length, as a router forwards them.
// ipv6UpperLayer() walks them only to answer one question, whether a packet is
// an ICMPv6 error (no ICMPv6 error may be sent about one, RFC 4443 §2.4 (e)).
import { DropReason, type DropReasonCode } from './drop-reasons.js';
import { read16, write16 } from './bytes.js';
import { onesComplementSum } from './checksum.js';

export const IPV6_HEADER = 40;
export const IPV6_OFFSET_PAYLOAD_LENGTH = 4;
export const IPV6_OFFSET_NEXT_HEADER = 6;
export const IPV6_OFFSET_HOP_LIMIT = 7;
export const IPV6_OFFSET_SOURCE = 8;
export const IPV6_OFFSET_DESTINATION = 24;
export const IPV6_DEFAULT_HOP_LIMIT = 64;
/** The smallest link MTU IPv6 allows (RFC 8200 §5): every path carries 1280 bytes. */
export const IPV6_MIN_MTU = 1280;

export const IP_PROTOCOL_ICMPV6 = 58;
// Extension headers (RFC 8200 §4) the walk steps over.
export const IPV6_EXT_HOP_BY_HOP = 0;
export const IPV6_EXT_ROUTING = 43;
export const IPV6_EXT_FRAGMENT = 44;
export const IPV6_EXT_DESTINATION = 60;
export const IPV6_EXT_AUTH = 51;
/** Longest chain the walk follows (RFC 8200 gives no limit; real packets carry a few). */
const MAX_EXTENSION_HEADERS = 8;

export function ipv6PayloadLength(buf: Uint8Array, off: number): number {
  return read16(buf, off + IPV6_OFFSET_PAYLOAD_LENGTH);
}

/** The packet's length by its header: 40 + payload length. */
export function ipv6TotalLength(buf: Uint8Array, off: number): number {
  return IPV6_HEADER + read16(buf, off + IPV6_OFFSET_PAYLOAD_LENGTH);
}

export function ipv6HopLimit(buf: Uint8Array, off: number): number {
  return buf[off + IPV6_OFFSET_HOP_LIMIT];
}

/**
 * `len` bytes were received at buf[off..]. Trailing bytes past 40 + payload
 * length are allowed (the caller trims them), as for IPv4. A payload length
 * of 0 is a jumbogram's (RFC 2675, Hop-by-Hop option) or an empty packet's:
 * an empty packet is valid only if it really has no next header (59); a
 * jumbogram cannot come through a 64 KiB TUN frame, so it is a bad length.
 */
export function validateIPv6(buf: Uint8Array, off: number, len: number): DropReasonCode {
  if (len < IPV6_HEADER) return DropReason.TooShort;
  if (buf[off] >>> 4 !== 6) return DropReason.NotIPv4;
  const payload = read16(buf, off + IPV6_OFFSET_PAYLOAD_LENGTH);
  if (IPV6_HEADER + payload > len) return DropReason.Ipv6BadPayloadLength;
  if (payload === 0 && buf[off + IPV6_OFFSET_NEXT_HEADER] !== 59) return DropReason.Ipv6BadPayloadLength;
  return DropReason.None;
}

/**
 * Hop limit − 1, as a router does (RFC 8200 §3): no header checksum to patch.
 * A packet that arrives with hop limit ≤ 1 must not be forwarded: false, and
 * the packet is left as is (the caller drops it, as the IPv4 path does for TTL).
 */
export function decrementHopLimit(buf: Uint8Array, off: number): boolean {
  const hops = buf[off + IPV6_OFFSET_HOP_LIMIT];
  if (hops <= 1) return false;
  buf[off + IPV6_OFFSET_HOP_LIMIT] = hops - 1;
  return true;
}

/** Result of ipv6UpperLayer: the protocol number (or -1), and where its header starts (or -1). */
export class UpperLayer {
  protocol = -1;
  offset = -1;
  /** A fragment with a non-zero offset: the upper-layer header is in another fragment. */
  laterFragment = false;
}

/**
 * Walks the extension headers of the validated packet at off (total length
 * `total`) to the upper-layer header. Sets out.protocol/offset, or -1 for both
 * when the chain is cut short, too long, or hidden (ESP). No allocation.
 */
export function ipv6UpperLayer(buf: Uint8Array, off: number, total: number, out: UpperLayer): void {
  out.protocol = -1;
  out.offset = -1;
  out.laterFragment = false;
  let next = buf[off + IPV6_OFFSET_NEXT_HEADER];
  let at = off + IPV6_HEADER;
  const end = off + total;
  for (let n = 0; n <= MAX_EXTENSION_HEADERS; n++) {
    if (next === IPV6_EXT_HOP_BY_HOP || next === IPV6_EXT_ROUTING || next === IPV6_EXT_DESTINATION) {
      if (at + 8 > end) return;
      const length = (buf[at + 1] + 1) << 3;
      next = buf[at];
      at += length;
    } else if (next === IPV6_EXT_FRAGMENT) {
      if (at + 8 > end) return;
      if ((read16(buf, at + 2) & 0xfff8) !== 0) out.laterFragment = true;
      next = buf[at];
      at += 8;
    } else if (next === IPV6_EXT_AUTH) {
      if (at + 8 > end) return;
      const length = (buf[at + 1] + 2) << 2;
      next = buf[at];
      at += length;
    } else {
      if (at > end) return;
      out.protocol = next;
      out.offset = at;
      return;
    }
  }
}

/** Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1) for the packet's own addresses, as a checksum seed. */
export function ipv6PseudoHeaderSum(buf: Uint8Array, off: number, protocol: number, upperLength: number): number {
  let sum = onesComplementSum(buf, off + IPV6_OFFSET_SOURCE, 32) + (upperLength >>> 16) + (upperLength & 0xffff) + protocol;
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum & 0xffff) + (sum >>> 16);
}

/** Writes a 40-byte header: traffic class and flow label 0. Addresses are copied from src/dst at their offsets. */
export function buildIPv6Header(
  buf: Uint8Array,
  off: number,
  payloadLength: number,
  nextHeader: number,
  hopLimit: number,
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
): void {
  buf[off] = 0x60;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  write16(buf, off + IPV6_OFFSET_PAYLOAD_LENGTH, payloadLength);
  buf[off + IPV6_OFFSET_NEXT_HEADER] = nextHeader;
  buf[off + IPV6_OFFSET_HOP_LIMIT] = hopLimit;
  for (let i = 0; i < 16; i++) buf[off + IPV6_OFFSET_SOURCE + i] = src[srcOff + i];
  for (let i = 0; i < 16; i++) buf[off + IPV6_OFFSET_DESTINATION + i] = dst[dstOff + i];
}
