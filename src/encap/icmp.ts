// ICMP messages this data plane originates (RFC 792): destination unreachable
// when no lease covers a destination or a packet is too big, and echo packets
// for tests and the trace demo.
import { internetChecksum } from './checksum.js';
import { DropReason } from './drop-reasons.js';
import {
  IPV4_DEFAULT_TTL,
  IPV4_MAX_HEADER,
  IPV4_MIN_HEADER,
  IP_PROTOCOL_ICMP,
  buildIPv4Header,
  ipv4Destination,
  ipv4HeaderLength,
  ipv4IsLaterFragment,
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
  nextIPv4Id,
  validateIPv4,
} from './ipv4.js';

export const ICMP_HEADER = 8;

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAMETER_PROBLEM = 12;

// Destination-unreachable codes.
export const ICMP_NET_UNREACHABLE = 0;
export const ICMP_FRAG_NEEDED = 4;

// RFC 792 quotes the original header plus this much of its payload.
export const ICMP_QUOTED_PAYLOAD = 8;
// The largest reply: our header, ICMP header, a 60-byte header and 8 bytes.
export const ICMP_DEST_UNREACH_MAX_LENGTH = IPV4_MIN_HEADER + ICMP_HEADER + IPV4_MAX_HEADER + ICMP_QUOTED_PAYLOAD;

function isIcmpErrorType(type: number): boolean {
  return (
    type === ICMP_DEST_UNREACH ||
    type === ICMP_SOURCE_QUENCH ||
    type === ICMP_REDIRECT ||
    type === ICMP_TIME_EXCEEDED ||
    type === ICMP_PARAMETER_PROBLEM
  );
}

// RFC 1122 §3.2.2: no ICMP error for a source that "does not define a single
// host": 0.0.0.0, loopback, multicast, class E (which includes the limited
// broadcast 255.255.255.255). A subnet's directed broadcast is not known here;
// the caller, which knows its leases, has to exclude it.
function isNonUnicastSource(addr: number): boolean {
  const firstOctet = addr >>> 24;
  return addr === 0 || firstOctet === 127 || firstOctet >= 224;
}

// Also RFC 1122 §3.2.2: none for a datagram sent to multicast or broadcast.
function isMulticastOrBroadcast(addr: number): boolean {
  return addr >>> 24 >= 224;
}

// Writes at out[outOff..] a complete IPv4 packet carrying ICMP destination
// unreachable (type 3) with `code`, addressed to the original's source and
// quoting its header plus the first 8 payload bytes (fewer if it has fewer).
// For ICMP_FRAG_NEEDED, `nextHopMtu` goes in bytes 6-7 (RFC 1191); for other
// codes bytes 4-7 are zero.
//
// Returns the length written (at most ICMP_DEST_UNREACH_MAX_LENGTH), or 0 when
// no error may be sent (RFC 792, RFC 1122 §3.2.2): the original is malformed,
// is itself an ICMP error, is a non-first fragment, or has a non-unicast
// source or a multicast/broadcast destination. The caller still counts the
// packet as dropped (no-lease), just sends nothing. Informational ICMP (echo
// request, ...) does get an answer: flannel's C proxy refuses all ICMP, so there `ping` to a missing
// subnet times out instead of reporting "Destination Net Unreachable".
//
// `out` must not overlap the original. `ipId` defaults to the node's counter;
// tests pass a fixed one to compare exact bytes.
export function buildIcmpDestUnreachable(
  orig: Uint8Array,
  origOff: number,
  origLen: number,
  out: Uint8Array,
  outOff: number,
  srcAddr: number,
  code: number,
  nextHopMtu = 0,
  ipId = nextIPv4Id(),
): number {
  if (validateIPv4(orig, origOff, origLen) !== DropReason.None) return 0;
  if (ipv4IsLaterFragment(orig, origOff)) return 0;
  const origSource = ipv4Source(orig, origOff);
  if (isNonUnicastSource(origSource)) return 0;
  if (isMulticastOrBroadcast(ipv4Destination(orig, origOff))) return 0;

  const origHeaderLength = ipv4HeaderLength(orig, origOff);
  // Bytes past the total length are link padding, not payload.
  const origPayloadLength = ipv4TotalLength(orig, origOff) - origHeaderLength;
  if (ipv4Protocol(orig, origOff) === IP_PROTOCOL_ICMP) {
    // Without a type byte we cannot tell an error from a query: stay silent.
    if (origPayloadLength < 1) return 0;
    if (isIcmpErrorType(orig[origOff + origHeaderLength])) return 0;
  }

  const quoteLength =
    origHeaderLength + (origPayloadLength < ICMP_QUOTED_PAYLOAD ? origPayloadLength : ICMP_QUOTED_PAYLOAD);
  const icmpLength = ICMP_HEADER + quoteLength;
  const totalLength = IPV4_MIN_HEADER + icmpLength;

  const icmp = outOff + IPV4_MIN_HEADER;
  out[icmp] = ICMP_DEST_UNREACH;
  out[icmp + 1] = code;
  out[icmp + 2] = 0; // checksum, filled below
  out[icmp + 3] = 0;
  out[icmp + 4] = 0;
  out[icmp + 5] = 0;
  const mtu = code === ICMP_FRAG_NEEDED ? nextHopMtu : 0;
  out[icmp + 6] = mtu >>> 8;
  out[icmp + 7] = mtu;
  const quote = icmp + ICMP_HEADER;
  for (let i = 0; i < quoteLength; i++) out[quote + i] = orig[origOff + i];
  const checksum = internetChecksum(out, icmp, icmpLength);
  out[icmp + 2] = checksum >>> 8;
  out[icmp + 3] = checksum;

  // DF clear, as Linux sends its ICMP errors: the report may be fragmented
  // on the way back rather than lost to a smaller MTU.
  buildIPv4Header(out, outOff, totalLength, ipId, IPV4_DEFAULT_TTL, IP_PROTOCOL_ICMP, srcAddr, origSource, false);
  return totalLength;
}

// Builds a complete IPv4 ICMP echo request (type 8) or reply (type 0) with
// `payloadLen` bytes of the pattern 0x00, 0x01, ... so a receiver can check
// the payload survived. Returns the packet length.
export function buildIcmpEcho(
  out: Uint8Array,
  outOff: number,
  src: number,
  dst: number,
  type: number,
  id: number,
  seq: number,
  payloadLen: number,
): number {
  const icmpLength = ICMP_HEADER + payloadLen;
  const totalLength = IPV4_MIN_HEADER + icmpLength;
  const icmp = outOff + IPV4_MIN_HEADER;
  out[icmp] = type;
  out[icmp + 1] = 0;
  out[icmp + 2] = 0;
  out[icmp + 3] = 0;
  out[icmp + 4] = id >>> 8;
  out[icmp + 5] = id;
  out[icmp + 6] = seq >>> 8;
  out[icmp + 7] = seq;
  const payload = icmp + ICMP_HEADER;
  for (let i = 0; i < payloadLen; i++) out[payload + i] = i;
  const checksum = internetChecksum(out, icmp, icmpLength);
  out[icmp + 2] = checksum >>> 8;
  out[icmp + 3] = checksum;
  buildIPv4Header(out, outOff, totalLength, nextIPv4Id(), IPV4_DEFAULT_TTL, IP_PROTOCOL_ICMP, src, dst, false);
  return totalLength;
}
