// The outer framing of UDP mode: IPv4 + UDP (RFC 768) around the inner IPv4
// packet. As in flannel's udp backend the UDP payload is the bare inner packet
// with no header of our own, and on the data path the kernel's UDP socket adds
// and strips these headers. This file is for the places that see or build the
// whole outer datagram: packet captures, raw-socket injection in tests, fuzzing.
import { internetChecksum, onesComplementSum, pseudoHeaderSum } from './checksum.js';
import { DropReason, type DropReasonCode } from './drop-reasons.js';
import {
  IPV4_DEFAULT_TTL,
  IPV4_MIN_HEADER,
  IP_PROTOCOL_UDP,
  buildIPv4Header,
  ipv4Destination,
  ipv4HeaderLength,
  ipv4IsFragment,
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
  validateIPv4,
} from './ipv4.js';

export const UDP_HEADER = 8;
// Headroom to leave in front of a payload for buildOuterIPv4Udp.
export const OUTER_IPV4_UDP_HEADERS = IPV4_MIN_HEADER + UDP_HEADER;

// Writes the 20-byte IPv4 and 8-byte UDP headers at out[off..off+28) in front
// of a payload the caller has already placed at off+28 (headroom: the payload
// is never copied). DF is set, as Linux does on UDP sockets by default
// (IP_PMTUDISC_WANT). The UDP checksum covers pseudo-header, header and
// payload when `withUdpChecksum`, else it is 0 ("none", allowed for IPv4).
// Returns the header length, OUTER_IPV4_UDP_HEADERS.
export function buildOuterIPv4Udp(
  out: Uint8Array,
  off: number,
  srcAddr: number,
  dstAddr: number,
  srcPort: number,
  dstPort: number,
  payloadLength: number,
  ipId: number,
  withUdpChecksum: boolean,
): number {
  const udpLength = UDP_HEADER + payloadLength;
  buildIPv4Header(out, off, IPV4_MIN_HEADER + udpLength, ipId, IPV4_DEFAULT_TTL, IP_PROTOCOL_UDP, srcAddr, dstAddr, true);
  const udp = off + IPV4_MIN_HEADER;
  writeUdpHeader(out, udp, srcPort, dstPort, udpLength, 0);
  if (withUdpChecksum) {
    let checksum = internetChecksum(out, udp, udpLength, pseudoHeaderSum(srcAddr, dstAddr, IP_PROTOCOL_UDP, udpLength));
    // A computed 0 is sent as its one's complement twin, since 0 means "none".
    if (checksum === 0) checksum = 0xffff;
    out[udp + 6] = checksum >>> 8;
    out[udp + 7] = checksum;
  }
  return OUTER_IPV4_UDP_HEADERS;
}

// What parseOuterIPv4Udp found. The caller owns one and passes it to every
// call, so parsing allocates nothing and two parsers never share state.
export interface OuterUdpFields {
  srcAddr: number;
  dstAddr: number;
  srcPort: number;
  dstPort: number;
  // Offset of the inner packet in the parsed buffer (not relative to `off`).
  payloadOffset: number;
  payloadLength: number;
}

export function createOuterUdpFields(): OuterUdpFields {
  return { srcAddr: 0, dstAddr: 0, srcPort: 0, dstPort: 0, payloadOffset: 0, payloadLength: 0 };
}

// Checks the outer datagram at buf[off..off+len) and, on DropReason.None,
// fills `into`; on any other reason `into` is left unspecified.
// Checks: a valid IPv4 header (validateIPv4), protocol 17, not a fragment (a
// capture must be reassembled first; reported as BadUdpLength since the
// datagram is not whole), 8 <= UDP length <= IP payload, and the UDP checksum
// unless it is 0. A UDP length below the IP payload is accepted and the
// payload trimmed to it, as the Linux UDP receive path does.
export function parseOuterIPv4Udp(buf: Uint8Array, off: number, len: number, into: OuterUdpFields): DropReasonCode {
  const ipReason = validateIPv4(buf, off, len);
  if (ipReason !== DropReason.None) return ipReason;
  if (ipv4Protocol(buf, off) !== IP_PROTOCOL_UDP) return DropReason.NotUdp;
  if (ipv4IsFragment(buf, off)) return DropReason.BadUdpLength;

  const headerLength = ipv4HeaderLength(buf, off);
  const ipPayloadLength = ipv4TotalLength(buf, off) - headerLength;
  if (ipPayloadLength < UDP_HEADER) return DropReason.BadUdpLength;
  const udp = off + headerLength;
  const udpLength = (buf[udp + 4] << 8) | buf[udp + 5];
  if (udpLength < UDP_HEADER || udpLength > ipPayloadLength) return DropReason.BadUdpLength;

  const srcAddr = ipv4Source(buf, off);
  const dstAddr = ipv4Destination(buf, off);
  const checksum = (buf[udp + 6] << 8) | buf[udp + 7];
  if (checksum !== 0) {
    // Summed with its checksum field, a correct datagram gives 0xffff.
    const sum = onesComplementSum(buf, udp, udpLength, pseudoHeaderSum(srcAddr, dstAddr, IP_PROTOCOL_UDP, udpLength));
    if (sum !== 0xffff) return DropReason.BadUdpChecksum;
  }

  into.srcAddr = srcAddr;
  into.dstAddr = dstAddr;
  into.srcPort = (buf[udp] << 8) | buf[udp + 1];
  into.dstPort = (buf[udp + 2] << 8) | buf[udp + 3];
  into.payloadOffset = udp + UDP_HEADER;
  into.payloadLength = udpLength - UDP_HEADER;
  return DropReason.None;
}

/** The 8-byte UDP header at `udp`: ports, length (header included) and checksum (0: none), big-endian. */
export function writeUdpHeader(out: Uint8Array, udp: number, srcPort: number, dstPort: number, udpLength: number, checksum: number): void {
  out[udp] = srcPort >>> 8;
  out[udp + 1] = srcPort;
  out[udp + 2] = dstPort >>> 8;
  out[udp + 3] = dstPort;
  out[udp + 4] = udpLength >>> 8;
  out[udp + 5] = udpLength;
  out[udp + 6] = checksum >>> 8;
  out[udp + 7] = checksum;
}
