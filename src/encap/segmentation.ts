// Software GSO for the TUN → wire direction: a TCP (TSO) or UDP (USO)
// super-packet read from the TUN with its virtio_net_hdr becomes one ordinary
// IPv4 packet per gso_size bytes of payload, each with complete checksums, as
// the kernel's tcp_gso_segment / __udp_gso_segment would produce.
//
// Zero copy: only the headers are rebuilt, into a caller-provided arena inside
// the same buffer; every segment's payload stays where it is in the
// super-packet and the caller sends header and payload as two iovecs.
import { onesComplementSum, pseudoHeaderSum } from './checksum.js';
import { DropReason } from './drop-reasons.js';
import {
  IPV4_FLAG_MORE_FRAGMENTS,
  IPV4_FRAGMENT_OFFSET_MASK,
  IPV4_MAX_HEADER,
  IPV4_MIN_HEADER,
  IPV4_OFFSET_CHECKSUM,
  IPV4_OFFSET_DESTINATION,
  IPV4_OFFSET_FLAGS_FRAGMENT,
  IPV4_OFFSET_ID,
  IPV4_OFFSET_PROTOCOL,
  IPV4_OFFSET_SOURCE,
  IPV4_OFFSET_TOTAL_LENGTH,
  IP_PROTOCOL_TCP,
  IP_PROTOCOL_UDP,
} from './ipv4.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  type VirtioNetHeader,
} from './virtio-net-header.js';
import { read16, read32, write16, write32 } from './bytes.js';
import { IPV6_HEADER, IPV6_OFFSET_NEXT_HEADER, IPV6_OFFSET_PAYLOAD_LENGTH, IPV6_OFFSET_SOURCE } from './ipv6.js';

// TCP header layout (RFC 9293), shared with coalescing.ts.
export const TCP_MIN_HEADER = 20;
export const TCP_MAX_HEADER = 60;
export const TCP_OFFSET_SEQ = 4;
export const TCP_OFFSET_ACK = 8;
export const TCP_OFFSET_DATA_OFFSET = 12; // high nibble: header length in 32-bit words
export const TCP_OFFSET_FLAGS = 13;
export const TCP_OFFSET_WINDOW = 14;
export const TCP_OFFSET_CHECKSUM = 16;
export const TCP_FLAG_FIN = 0x01;
export const TCP_FLAG_SYN = 0x02;
export const TCP_FLAG_RST = 0x04;
export const TCP_FLAG_PSH = 0x08;
export const TCP_FLAG_ACK = 0x10;
export const TCP_FLAG_URG = 0x20;
export const TCP_FLAG_ECE = 0x40;
export const TCP_FLAG_CWR = 0x80;

export const UDP_HEADER_LENGTH = 8;
export const UDP_OFFSET_LENGTH = 4;
export const UDP_OFFSET_CHECKSUM = 6;

/** Largest IPv4 + TCP header a segment can have: the arena room needed per segment. */
export const SEGMENT_MAX_HEADERS = IPV4_MAX_HEADER + TCP_MAX_HEADER;


// End-around-carry fold of a non-negative sum below 2^31.
function fold16(sum: number): number {
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

// One's complement subtraction of a 16-bit word: adding its complement.
function minus16(word: number): number {
  return ~word & 0xffff;
}

// The segments of one super-packet, filled by splitSuperPacket. Created once
// per worker with the most segments a super-packet may split into (64 KiB at
// the smallest MSS the caller accepts) and reused for every packet.
export class SegmentList {
  readonly capacity: number;
  count = 0;
  /** Segments of the whole super-packet last cut (splitSuperPacketRange may produce a run of them). */
  total = 0;
  /** Where segment i's rebuilt IPv4 + TCP/UDP header starts in the buffer (inside the arena). */
  readonly headerOffset: Int32Array;
  readonly headerLength: Int32Array;
  /** Segment i's payload: a slice of the super-packet, never copied. */
  readonly payloadOffset: Int32Array;
  readonly payloadLength: Int32Array;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.headerOffset = new Int32Array(capacity);
    this.headerLength = new Int32Array(capacity);
    this.payloadOffset = new Int32Array(capacity);
    this.payloadLength = new Int32Array(capacity);
  }
}

/**
 * The virtio_net_hdr of a super-packet against the packet, for either family
 * (once per super-packet): the GSO type (`tcpGsoType` or UDP_L4) matches the
 * protocol byte, the MSS is set, a checksum request points at the L4
 * checksum, and the L4 header fits. Returns the L4 header's length, or
 * -BadVirtioNetHeader.
 */
function gsoL4HeaderLength(
  buf: Uint8Array,
  pktOff: number,
  vnet: VirtioNetHeader,
  ipHeaderLength: number,
  totalLength: number,
  protocolByte: number,
  tcpGsoType: number,
): number {
  const gsoType = vnet.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  let isTcp: boolean;
  if (gsoType === tcpGsoType) isTcp = true;
  else if (gsoType === VIRTIO_NET_HDR_GSO_UDP_L4) isTcp = false;
  else return -DropReason.BadVirtioNetHeader;
  if (protocolByte !== (isTcp ? IP_PROTOCOL_TCP : IP_PROTOCOL_UDP)) return -DropReason.BadVirtioNetHeader;
  if (vnet.gsoSize === 0) return -DropReason.BadVirtioNetHeader;
  if ((vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
    if (vnet.csumStart !== ipHeaderLength || vnet.csumOffset !== (isTcp ? TCP_OFFSET_CHECKSUM : UDP_OFFSET_CHECKSUM)) return -DropReason.BadVirtioNetHeader;
  }
  if (vnet.hdrLen > totalLength) return -DropReason.BadVirtioNetHeader;
  if (!isTcp) return totalLength < ipHeaderLength + UDP_HEADER_LENGTH ? -DropReason.BadVirtioNetHeader : UDP_HEADER_LENGTH;
  if (totalLength < ipHeaderLength + TCP_MIN_HEADER) return -DropReason.BadVirtioNetHeader;
  const l4HeaderLength = (buf[pktOff + ipHeaderLength + TCP_OFFSET_DATA_OFFSET] >>> 4) << 2;
  if (l4HeaderLength < TCP_MIN_HEADER || ipHeaderLength + l4HeaderLength > totalLength) return -DropReason.BadVirtioNetHeader;
  return l4HeaderLength;
}

// Splits the TCPV4 or UDP_L4 super-packet at buf[pktOff, +pktLen) (the IPv4
// header onwards; `vnet` is its already-read virtio_net_hdr) into `out`.
// Segment i's headers are written at arenaOff + i*arenaStride + arenaHeadroom,
// leaving arenaHeadroom bytes in front of each for the caller's own
// encapsulation; the arena must not overlap the packet. GSO_NONE packets are
// not for this function: see completePartialChecksum.
//
// Every segment gets: the IPv4 header (options included) with its own total
// length, id = original id + i (mod 2^16, as inet_gso_segment does without
// FIXEDID) and header checksum; for TCP, seq = original seq + i*gso_size, FIN
// and PSH kept on the last segment only and CWR on the first only
// (tcp_gso_segment); for UDP, its own length. The TCP/UDP checksum is computed
// in full from the pseudo-header, the rebuilt header and the payload slice —
// the super-packet's field holds a partial sum for the whole length and is
// ignored. A computed 0 is stored as 0xFFFF (see completePartialChecksum).
//
// Cost: each payload byte is summed once; the headers are summed once per
// super-packet, and per segment only the changed words are added.
//
// Returns the number of segments (≥ 1; a super-packet carrying at most one
// gso_size of payload gives one), or the negated DropReason:
//   TooShort, NotIPv4, BadHeaderLength, BadTotalLength — the IPv4 header;
//   BadVirtioNetHeader — gso_type neither TCPV4 nor UDP_L4 (ECN bit allowed),
//     IPv4 protocol not the one gso_type says, gso_size 0, NEEDS_CSUM with
//     csum_start ≠ IPv4 header length or csum_offset not the TCP/UDP checksum
//     field, hdr_len beyond the packet, TCP data offset < 5 or the TCP/UDP
//     header beyond the packet, or a super-packet that is an IP fragment;
//   TooManySegments — more segments than out.capacity.
// hdr_len is only checked to lie inside the packet: the kernel fills it with
// skb_headlen(), which on the forward path can include payload (wireguard-go
// found this), so the header length comes from the TCP data offset instead.
// Throws RangeError when arenaStride < arenaHeadroom + SEGMENT_MAX_HEADERS,
// a caller bug independent of the packet.
export function splitSuperPacket(
  buf: Uint8Array,
  pktOff: number,
  pktLen: number,
  vnet: VirtioNetHeader,
  arenaOff: number,
  arenaStride: number,
  arenaHeadroom: number,
  out: SegmentList,
): number {
  out.count = 0;
  const n = splitSuperPacketRange(buf, pktOff, pktLen, vnet, 0, out.capacity + 1, arenaOff, arenaStride, arenaHeadroom, out, 0);
  if (n > out.capacity) {
    out.count = 0;
    return -DropReason.TooManySegments;
  }
  return n;
}

// The same cut, one run of segments at a time, so a super-packet of any
// segment count can be sent through a bounded arena: segments
// [first, first + maxCount) of the super-packet (fewer at its end), written to
// out from index outStart (headers at arenaOff + (outStart + j)*arenaStride +
// arenaHeadroom). Sets out.total to the super-packet's segment count and
// out.count to outStart + the segments produced, and returns the segments
// produced, or the negated DropReason as above (never TooManySegments). When
// the run would not fit (more than out.capacity - outStart segments), nothing
// is written and the run's length is returned: callers size maxCount to fit.
// Segment numbering (IPv4 id, TCP seq, FIN/PSH on the last, CWR on the
// first) is that of the whole super-packet, whatever the run.
export function splitSuperPacketRange(
  buf: Uint8Array,
  pktOff: number,
  pktLen: number,
  vnet: VirtioNetHeader,
  first: number,
  maxCount: number,
  arenaOff: number,
  arenaStride: number,
  arenaHeadroom: number,
  out: SegmentList,
  outStart: number,
): number {
  if (arenaStride < arenaHeadroom + SEGMENT_MAX_HEADERS) {
    throw new RangeError(`arenaStride ${arenaStride} < arenaHeadroom ${arenaHeadroom} + ${SEGMENT_MAX_HEADERS}`);
  }

  // The IPv4 header: structure only. Its checksum is rebuilt per segment
  // anyway, and this packet comes from our own kernel.
  if (pktLen < IPV4_MIN_HEADER) return -DropReason.TooShort;
  if (buf[pktOff] >>> 4 !== 4) return -DropReason.NotIPv4;
  const ipHeaderLength = (buf[pktOff] & 0x0f) << 2;
  if (ipHeaderLength < IPV4_MIN_HEADER || ipHeaderLength > pktLen) return -DropReason.BadHeaderLength;
  const totalLength = read16(buf, pktOff + IPV4_OFFSET_TOTAL_LENGTH);
  if (totalLength < ipHeaderLength || totalLength > pktLen) return -DropReason.BadTotalLength;
  const fragmentWord = read16(buf, pktOff + IPV4_OFFSET_FLAGS_FRAGMENT);
  if ((fragmentWord & (IPV4_FLAG_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET_MASK)) !== 0) {
    return -DropReason.BadVirtioNetHeader;
  }

  // The virtio_net_hdr against the packet.
  const l4HeaderLength = gsoL4HeaderLength(buf, pktOff, vnet, ipHeaderLength, totalLength, buf[pktOff + IPV4_OFFSET_PROTOCOL], VIRTIO_NET_HDR_GSO_TCPV4);
  if (l4HeaderLength < 0) return l4HeaderLength;
  const isTcp = (vnet.gsoType & ~VIRTIO_NET_HDR_GSO_ECN) === VIRTIO_NET_HDR_GSO_TCPV4;
  const protocol = isTcp ? IP_PROTOCOL_TCP : IP_PROTOCOL_UDP;
  const checksumField = isTcp ? TCP_OFFSET_CHECKSUM : UDP_OFFSET_CHECKSUM;
  const mss = vnet.gsoSize;
  const l4 = pktOff + ipHeaderLength;
  const headerLength = ipHeaderLength + l4HeaderLength;
  const payloadTotal = totalLength - headerLength;
  const count = payloadTotal === 0 ? 1 : ((payloadTotal + mss - 1) / mss) | 0;
  out.total = count;
  if (first >= count) return 0;
  const end = Math.min(count, first + maxCount);
  // splitSuperPacket asks for one more than fits, to learn the count: it produces nothing then.
  if (end - first > out.capacity - outStart) return end - first;

  // Header sums without the words that change per segment, once.
  const id0 = read16(buf, pktOff + IPV4_OFFSET_ID);
  const ipBaseSum = fold16(
    onesComplementSum(buf, pktOff, ipHeaderLength) +
      minus16(totalLength) +
      minus16(id0) +
      minus16(read16(buf, pktOff + IPV4_OFFSET_CHECKSUM)),
  );
  const src = read32(buf, pktOff + IPV4_OFFSET_SOURCE);
  const dst = read32(buf, pktOff + IPV4_OFFSET_DESTINATION);
  let l4BaseSum: number;
  let seq0 = 0;
  let flags0 = 0;
  let dataOffsetByte = 0;
  if (isTcp) {
    seq0 = read32(buf, l4 + TCP_OFFSET_SEQ);
    dataOffsetByte = buf[l4 + TCP_OFFSET_DATA_OFFSET];
    flags0 = buf[l4 + TCP_OFFSET_FLAGS];
    l4BaseSum = fold16(
      onesComplementSum(buf, l4, l4HeaderLength) +
        minus16(seq0 >>> 16) +
        minus16(seq0 & 0xffff) +
        minus16((dataOffsetByte << 8) | flags0) +
        minus16(read16(buf, l4 + TCP_OFFSET_CHECKSUM)),
    );
  } else {
    l4BaseSum = fold16(read16(buf, l4) + read16(buf, l4 + 2)); // the ports; length and checksum are per segment
  }

  const last = count - 1;
  const payloadStart = pktOff + headerLength;
  const headerOffsets = out.headerOffset;
  const headerLengths = out.headerLength;
  const payloadOffsets = out.payloadOffset;
  const payloadLengths = out.payloadLength;
  for (let i = first; i < end; i++) {
    const j = outStart + i - first;
    const segPayloadOff = payloadStart + i * mss;
    const segPayloadLen = i === last ? payloadTotal - i * mss : mss;
    const h = arenaOff + j * arenaStride + arenaHeadroom;
    buf.copyWithin(h, pktOff, pktOff + headerLength);

    const segTotal = headerLength + segPayloadLen;
    const id = (id0 + i) & 0xffff;
    write16(buf, h + IPV4_OFFSET_TOTAL_LENGTH, segTotal);
    write16(buf, h + IPV4_OFFSET_ID, id);
    write16(buf, h + IPV4_OFFSET_CHECKSUM, ~fold16(ipBaseSum + segTotal + id) & 0xffff);

    const segL4 = h + ipHeaderLength;
    const l4Length = l4HeaderLength + segPayloadLen;
    let sum = pseudoHeaderSum(src, dst, protocol, l4Length) + l4BaseSum + onesComplementSum(buf, segPayloadOff, segPayloadLen);
    if (isTcp) {
      const seq = (seq0 + i * mss) >>> 0;
      let flags = flags0;
      if (i !== last) flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      if (i !== 0) flags &= ~TCP_FLAG_CWR;
      write32(buf, segL4 + TCP_OFFSET_SEQ, seq);
      buf[segL4 + TCP_OFFSET_FLAGS] = flags;
      sum += (seq >>> 16) + (seq & 0xffff) + ((dataOffsetByte << 8) | flags);
    } else {
      write16(buf, segL4 + UDP_OFFSET_LENGTH, l4Length);
      sum += l4Length;
    }
    let checksum = ~fold16(sum) & 0xffff;
    if (checksum === 0) checksum = 0xffff;
    write16(buf, segL4 + checksumField, checksum);

    headerOffsets[j] = h;
    headerLengths[j] = headerLength;
    payloadOffsets[j] = segPayloadOff;
    payloadLengths[j] = segPayloadLen;
  }
  out.count = outStart + end - first;
  return end - first;
}

// The IPv6 counterpart of splitSuperPacketRange (same arguments, arena and
// result): a TCPV6 or UDP_L4 super-packet whose fixed header is followed
// directly by the TCP or UDP header. Each segment gets the IPv6 header with
// its own payload length (IPv6 has no identification or header checksum), TCP
// seq/flags as for IPv4, and a full TCP/UDP checksum over the IPv6
// pseudo-header. Extension headers in a super-packet are refused
// (BadVirtioNetHeader): Linux's TCP does not put any there.
// Drops: TooShort, Ipv6BadPayloadLength (the IPv6 header), BadVirtioNetHeader.
export function splitSuperPacketRange6(
  buf: Uint8Array,
  pktOff: number,
  pktLen: number,
  vnet: VirtioNetHeader,
  first: number,
  maxCount: number,
  arenaOff: number,
  arenaStride: number,
  arenaHeadroom: number,
  out: SegmentList,
  outStart: number,
): number {
  if (arenaStride < arenaHeadroom + SEGMENT_MAX_HEADERS) {
    throw new RangeError(`arenaStride ${arenaStride} < arenaHeadroom ${arenaHeadroom} + ${SEGMENT_MAX_HEADERS}`);
  }
  if (pktLen < IPV6_HEADER) return -DropReason.TooShort;
  if (buf[pktOff] >>> 4 !== 6) return -DropReason.NotIPv4;
  const totalLength = IPV6_HEADER + read16(buf, pktOff + IPV6_OFFSET_PAYLOAD_LENGTH);
  if (totalLength > pktLen) return -DropReason.Ipv6BadPayloadLength;

  const l4HeaderLength = gsoL4HeaderLength(buf, pktOff, vnet, IPV6_HEADER, totalLength, buf[pktOff + IPV6_OFFSET_NEXT_HEADER], VIRTIO_NET_HDR_GSO_TCPV6);
  if (l4HeaderLength < 0) return l4HeaderLength;
  const isTcp = (vnet.gsoType & ~VIRTIO_NET_HDR_GSO_ECN) === VIRTIO_NET_HDR_GSO_TCPV6;
  const protocol = isTcp ? IP_PROTOCOL_TCP : IP_PROTOCOL_UDP;
  const checksumField = isTcp ? TCP_OFFSET_CHECKSUM : UDP_OFFSET_CHECKSUM;
  const mss = vnet.gsoSize;
  const l4 = pktOff + IPV6_HEADER;
  const headerLength = IPV6_HEADER + l4HeaderLength;
  const payloadTotal = totalLength - headerLength;
  const count = payloadTotal === 0 ? 1 : ((payloadTotal + mss - 1) / mss) | 0;
  out.total = count;
  if (first >= count) return 0;
  const end = Math.min(count, first + maxCount);
  if (end - first > out.capacity - outStart) return end - first;

  // The pseudo-header's addresses once; its length and protocol per segment.
  const addressSum = onesComplementSum(buf, pktOff + IPV6_OFFSET_SOURCE, 32);
  let l4BaseSum: number;
  let seq0 = 0;
  let flags0 = 0;
  let dataOffsetByte = 0;
  if (isTcp) {
    seq0 = read32(buf, l4 + TCP_OFFSET_SEQ);
    dataOffsetByte = buf[l4 + TCP_OFFSET_DATA_OFFSET];
    flags0 = buf[l4 + TCP_OFFSET_FLAGS];
    l4BaseSum = fold16(
      onesComplementSum(buf, l4, l4HeaderLength) +
        minus16(seq0 >>> 16) +
        minus16(seq0 & 0xffff) +
        minus16((dataOffsetByte << 8) | flags0) +
        minus16(read16(buf, l4 + TCP_OFFSET_CHECKSUM)),
    );
  } else {
    l4BaseSum = fold16(read16(buf, l4) + read16(buf, l4 + 2));
  }

  const last = count - 1;
  const payloadStart = pktOff + headerLength;
  for (let i = first; i < end; i++) {
    const j = outStart + i - first;
    const segPayloadOff = payloadStart + i * mss;
    const segPayloadLen = i === last ? payloadTotal - i * mss : mss;
    const h = arenaOff + j * arenaStride + arenaHeadroom;
    buf.copyWithin(h, pktOff, pktOff + headerLength);
    const l4Length = l4HeaderLength + segPayloadLen;
    write16(buf, h + IPV6_OFFSET_PAYLOAD_LENGTH, l4Length);

    const segL4 = h + IPV6_HEADER;
    let sum = addressSum + protocol + l4Length + l4BaseSum + onesComplementSum(buf, segPayloadOff, segPayloadLen);
    if (isTcp) {
      const seq = (seq0 + i * mss) >>> 0;
      let flags = flags0;
      if (i !== last) flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      if (i !== 0) flags &= ~TCP_FLAG_CWR;
      write32(buf, segL4 + TCP_OFFSET_SEQ, seq);
      buf[segL4 + TCP_OFFSET_FLAGS] = flags;
      sum += (seq >>> 16) + (seq & 0xffff) + ((dataOffsetByte << 8) | flags);
    } else {
      write16(buf, segL4 + UDP_OFFSET_LENGTH, l4Length);
      sum += l4Length;
    }
    let checksum = ~fold16(sum) & 0xffff;
    if (checksum === 0) checksum = 0xffff;
    write16(buf, segL4 + checksumField, checksum);

    out.headerOffset[j] = h;
    out.headerLength[j] = headerLength;
    out.payloadOffset[j] = segPayloadOff;
    out.payloadLength[j] = segPayloadLen;
  }
  out.count = outStart + end - first;
  return end - first;
}
