// Software GRO for the wire → TUN direction: consecutive MTU-sized TCP/IPv4
// segments of one flow, received in one batch, are written to the TUN as one
// super-packet with a virtio_net_hdr (GSO TCPV4, NEEDS_CSUM). The kernel then
// handles one skb instead of dozens — the step that took wireguard-go from
// ~2.9 to ~12 Gbit/s. Optionally, consecutive same-size UDP/IPv4 datagrams of
// one flow likewise become one USO super-packet (GSO UDP_L4; see below).
//
// Zero copy: members' payloads stay where they were received; a merged group
// is written as [virtio_net_hdr + rebuilt IPv4/TCP or UDP header] from an arena slot
// followed by each member's payload slice (one iovec each).
//
// Merge rules, in the spirit of the kernel's inet_gro_receive/tcp_gro_receive.
// A packet P joins its flow's open group G (first member F, last member L) only if:
//   - flow: same source and destination address and ports and the same
//     protocol (the flow key); IPv4 protocol TCP; P is not a fragment (MF
//     clear, offset 0);
//   - IPv4: same header length and byte-identical options, same TOS, same TTL
//     (the caller has already decremented it, so equal TTLs stay equal), same
//     DF and reserved bit; when DF is clear, P's id must be L's id + 1 — after
//     resegmentation the kernel numbers segments from F's id, and for
//     fragmentable packets the ids must survive (inet_gro_receive's flush_id);
//     with DF set any id is accepted (RFC 6864 atomic datagrams). The IPv4
//     checksum is not compared: it changed with the TTL and is rebuilt;
//   - TCP: same header length and byte-identical options (timestamps too, so
//     a TSval tick starts a new group, as in the kernel); same ACK number and
//     window; flags exactly ACK, or ACK|PSH; P.seq == L.seq + L.payloadLength;
//   - size: P's payload is not empty and is at most F's payload length (the
//     MSS, = gso_size); a shorter P, or one with PSH, is the last member: it
//     closes the group; the merged IPv4 total length stays ≤ 65535, and a
//     group closes at 1023 members (one writev: UIO_MAXIOV with the header).
// A packet with any other flag (FIN, SYN, RST, URG, ECE, CWR), or no payload,
// or (with verifyChecksums) a bad TCP checksum is never merged: it is written
// alone, and it closes its flow's open group so that no later packet of the
// flow can be merged in front of it. A packet that cannot join the open group
// closes it too and may start a new one. Groups only ever grow at their end,
// so a flow's packets are partitioned into consecutive runs, and writing the
// groups in the order of their first member keeps every flow in order.
// Different flows may be reordered relative to each other, as kernel GRO does.
//
// Merged header: F's IPv4 header with total length = headers + sum of
// payloads and a recomputed header checksum (id stays F's: the kernel numbers
// the resegmented packets from it); F's TCP header with PSH set if the last
// member had it, and the checksum field holding the folded, NOT inverted,
// pseudo-header sum for the merged TCP length (CHECKSUM_PARTIAL: the kernel
// finishes it, or each segment's after resegmentation, because of NEEDS_CSUM).
// virtio_net_hdr: NEEDS_CSUM, GSO TCPV4, hdr_len = IPv4 + TCP header length,
// gso_size = F's payload length, csum_start = IPv4 header length,
// csum_offset = 16. A group of one is written alone: a zero virtio_net_hdr
// and the whole packet, checksums untouched.
//
// UDP (only with udpSegmentation: the caller sets it when the TUN accepted
// TUN_F_USO4, Linux ≥ 6.2). Consecutive datagrams of one flow become one USO
// super-packet (gso_type UDP_L4); the kernel splits it again
// (__udp_gso_segment) before a socket without UDP_GRO sees it, so for small
// datagrams (iperf3 -u -l 64) one writev replaces up to 64 writes. The rules,
// after the kernel's udp_gro_receive_segment and wireguard-go's udpGRO:
//   - flow and IPv4: as for TCP (the flow key includes the protocol, so a TCP
//     and a UDP flow with the same addresses and ports never meet), the id
//     rule included: after resegmentation the kernel numbers the datagrams
//     from F's id, as it does for TCP;
//   - UDP: the length field equals the IPv4 payload length (no padding) and
//     the payload is not empty; the checksum field is not 0. A datagram sent
//     without a checksum is written alone: resegmentation would give every
//     datagram a computed checksum (the kernel's UDP GRO refuses them too,
//     "for symmetry with GSO"), and its payload was never covered end to end;
//     with verifyChecksums, a datagram whose checksum does not verify is
//     written alone (as for TCP: once merged, the kernel treats the payload as
//     CHECKSUM_PARTIAL, i.e. trusted, and computes fresh checksums over it);
//   - size: P's payload is at most F's (= gso_size); a shorter P is the last
//     member and closes the group; a group closes at 64 members
//     (UDP_GRO_CNT_MAX; virtio_net_hdr_to_skb also rejects more than
//     UDP_MAX_SEGMENTS = 64 × gso_size of payload); the merged IPv4 total
//     length stays ≤ 65535.
// A datagram that cannot join closes its flow's open group, as for TCP.
//
// Merged UDP header: F's IPv4 header, total length and header checksum
// rebuilt as for TCP; F's UDP header with length = 8 + sum of payloads and the
// checksum field holding the folded, NOT inverted, pseudo-header sum for that
// same length. Both matter: virtio_net_hdr_to_skb turns NEEDS_CSUM into
// CHECKSUM_PARTIAL without looking at the field, and __udp_gso_segment derives
// each datagram's field as check - uh->len + newlen (one's complement), so the
// field must be the partial sum for exactly the length in uh->len (what
// udp4_hwcsum and udp4_gro_complete put there). virtio_net_hdr: NEEDS_CSUM
// (required for UDP_L4: EINVAL without it), GSO UDP_L4, hdr_len = IPv4 header
// + 8, gso_size = F's payload length, csum_start = IPv4 header length,
// csum_offset = 6 (EINVAL otherwise).
// TCP over IPv6 (issue 24): the same rules with the IPv6 header in place of
// IPv4's: a segment whose next header is TCP directly (no extension headers);
// version, traffic class, flow label, hop limit and both addresses equal to
// the first member's (there is no id to check); the merged payload length
// stays ≤ 65535. Merged header: F's IPv6 header with the payload length of
// the whole, F's TCP header with the pseudo-header sum (IPv6: addresses,
// TCP length, next header); virtio_net_hdr GSO TCPV6, csum_start 40 (built by
// finish()'s one path for both families). The flow table keys IPv6 flows by a
// fold of each address and a protocol of their own (FLOW_TCP6), so they never
// share a bucket with an IPv4 flow; the full addresses are compared against
// the first member before a packet joins, so a fold that collides only costs
// a merge, never mixes flows. UDP over IPv6 is written alone.
//
// addTcp/addTcp6 and canAppendTcp/canAppendTcp6 stay two functions each,
// though their TCP steps are the same: one addTcp for both families (keys and
// IPv6 header checks passed in or branched on) cost TCPv6 15-40 ns more per
// segment in bench-style runs (127 → 142-167 ns, IPv4 unchanged), and sharing
// only the TCP header comparison cost IPv4 5 ns (92 → 97: the shared helper
// was no longer inlined). Per-packet code keeps one family per function.
//
// Checked on Linux 6.18 through a real TUN with USO: such writes are
// accepted and every datagram arrives intact, locally and forwarded with
// software checksums; with the field holding the partial sum for another
// length, or 0, or with uh->len not matching it, every forwarded datagram
// failed its checksum (Udp InCsumErrors), while local delivery accepted even a
// garbage field (CHECKSUM_PARTIAL is trusted, never verified).
import { internetChecksum, onesComplementSum, pseudoHeaderSum } from './checksum.js';
import {
  IPV4_FLAG_DONT_FRAGMENT,
  IPV4_FLAG_MORE_FRAGMENTS,
  IPV4_FRAGMENT_OFFSET_MASK,
  IPV4_MIN_HEADER,
  IPV4_OFFSET_CHECKSUM,
  IPV4_OFFSET_DESTINATION,
  IPV4_OFFSET_FLAGS_FRAGMENT,
  IPV4_OFFSET_ID,
  IPV4_OFFSET_PROTOCOL,
  IPV4_OFFSET_SOURCE,
  IPV4_OFFSET_TOS,
  IPV4_OFFSET_TOTAL_LENGTH,
  IPV4_OFFSET_TTL,
  IP_PROTOCOL_TCP,
  IP_PROTOCOL_UDP,
} from './ipv4.js';
import {
  SEGMENT_MAX_HEADERS,
  TCP_FLAG_ACK,
  TCP_FLAG_PSH,
  TCP_MIN_HEADER,
  TCP_OFFSET_ACK,
  TCP_OFFSET_CHECKSUM,
  TCP_OFFSET_DATA_OFFSET,
  TCP_OFFSET_FLAGS,
  TCP_OFFSET_SEQ,
  TCP_OFFSET_WINDOW,
  UDP_HEADER_LENGTH,
  UDP_OFFSET_CHECKSUM,
  UDP_OFFSET_LENGTH,
} from './segmentation.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHeader,
} from './virtio-net-header.js';
import { read16, read32, write16 } from './bytes.js';
import { IPV6_HEADER, IPV6_OFFSET_HOP_LIMIT, IPV6_OFFSET_NEXT_HEADER, IPV6_OFFSET_PAYLOAD_LENGTH, IPV6_OFFSET_SOURCE, ipv6PseudoHeaderSum } from './ipv6.js';
import { VIRTIO_NET_HDR_GSO_TCPV6 } from './virtio-net-header.js';

/** Arena room one write needs: virtio_net_hdr + the largest IPv4 + TCP header (a UDP one is smaller). */
export const COALESCE_MAX_WRITE_HEADER = VIRTIO_NET_HDR_LEN + SEGMENT_MAX_HEADERS;

const IPV4_MAX_TOTAL_LENGTH = 0xffff;
/** The flow key's protocol for TCP over IPv6: no IPv4 protocol number we key by, so a folded IPv6 key never meets an IPv4 flow. */
const FLOW_TCP6 = 0x80 | IP_PROTOCOL_TCP;
// Bits of the flags/fragment word that must match: reserved and DF (MF is 0 here).
const IPV4_MERGE_FLAG_BITS = 0xc000;
/** Most datagrams in one UDP group: the kernel's UDP_GRO_CNT_MAX and UDP_MAX_SEGMENTS. */
export const COALESCE_MAX_UDP_SEGMENTS = 64;
/**
 * Most segments in one TCP group: a merged write is one writev of the header
 * and one iovec per segment, and writev takes at most UIO_MAXIOV (1024). Only
 * segments under 64 bytes of payload reach it before the 64 KB bound.
 */
export const COALESCE_MAX_TCP_SEGMENTS = 1023;


function bytesEqual(buf: Uint8Array, a: number, b: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (buf[a + i] !== buf[b + i]) return false;
  return true;
}

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p <<= 1;
  return p;
}

// One batch of received inner packets. Created once per worker and reused:
// add() per packet, finish() once, read the write arrays, reset().
//
// maxPackets: the most add() calls per batch (a bigger batch is a caller bug:
// RangeError). maxGroups: the most distinct flows (TCP, and UDP when merged)
// tracked per batch; the packets of further flows are still written, each
// alone. Writes never exceed maxPackets, and finish() uses one arena slot per
// write. udpSegmentation: merge UDP datagrams too (see the top of the file);
// set it only when the TUN accepted TUN_F_USO4, or the kernel rejects every
// merged write with EINVAL.
//
// All packets of a batch must live in the same buffer, the one later passed
// to finish().
export class CoalesceBatch {
  readonly maxPackets: number;
  readonly maxGroups: number;
  readonly verifyChecksums: boolean;
  readonly udpSegmentation: boolean;

  packetCount = 0;
  writeCount = 0;

  // Results of finish(), indexed by write w (0 ≤ w < writeCount): first the
  // header bytes [writeHeaderOffset, +writeHeaderLength), then the slices
  // [segmentOffset[s], +segmentLength[s]) for writeSegmentStart ≤ s < writeSegmentEnd.
  readonly writeHeaderOffset: Int32Array;
  readonly writeHeaderLength: Int32Array;
  readonly writeSegmentStart: Int32Array;
  readonly writeSegmentEnd: Int32Array;
  readonly segmentOffset: Int32Array;
  readonly segmentLength: Int32Array;

  // Per packet, by arrival index.
  private readonly packetOffset: Int32Array;
  private readonly packetLength: Int32Array; // bytes given to add()
  private readonly packetNext: Int32Array; // next member of the same group, -1 at the end
  private readonly packetPayloadOffset: Int32Array; // TCP/UDP payload, for merged members
  private readonly packetPayloadLength: Int32Array;

  // Per group, in creation order = order of the first member's arrival.
  private groupCount = 0;
  private readonly groupFirst: Int32Array;
  private readonly groupLast: Int32Array;
  private readonly groupMembers: Int32Array;
  private readonly groupPayloadLength: Int32Array; // sum of the members' payloads
  private readonly groupMss: Int32Array; // the first member's payload length
  private readonly groupNextSeq: Uint32Array; // TCP: seq the next member must carry
  private readonly groupOpen: Uint8Array; // 1 while a packet may still be appended
  private readonly groupPush: Uint8Array; // TCP: the last member carried PSH

  // Flow table: open addressing, linear probing. A bucket is live when its
  // stamp equals the batch generation, so reset() clears it in O(1).
  private readonly flowMask: number;
  private flowCount = 0;
  private generation = 1;
  private readonly flowStamp: Int32Array;
  private readonly flowSource: Int32Array;
  private readonly flowDestination: Int32Array;
  private readonly flowPorts: Int32Array;
  private readonly flowProtocol: Uint8Array;
  private readonly flowGroup: Int32Array; // the flow's most recent group

  private readonly vnet = new VirtioNetHeader();

  constructor(maxPackets: number, maxGroups: number, verifyChecksums = false, udpSegmentation = false) {
    this.maxPackets = maxPackets;
    this.maxGroups = maxGroups;
    this.verifyChecksums = verifyChecksums;
    this.udpSegmentation = udpSegmentation;

    this.writeHeaderOffset = new Int32Array(maxPackets);
    this.writeHeaderLength = new Int32Array(maxPackets);
    this.writeSegmentStart = new Int32Array(maxPackets);
    this.writeSegmentEnd = new Int32Array(maxPackets);
    this.segmentOffset = new Int32Array(maxPackets);
    this.segmentLength = new Int32Array(maxPackets);

    this.packetOffset = new Int32Array(maxPackets);
    this.packetLength = new Int32Array(maxPackets);
    this.packetNext = new Int32Array(maxPackets);
    this.packetPayloadOffset = new Int32Array(maxPackets);
    this.packetPayloadLength = new Int32Array(maxPackets);

    this.groupFirst = new Int32Array(maxPackets);
    this.groupLast = new Int32Array(maxPackets);
    this.groupMembers = new Int32Array(maxPackets);
    this.groupPayloadLength = new Int32Array(maxPackets);
    this.groupMss = new Int32Array(maxPackets);
    this.groupNextSeq = new Uint32Array(maxPackets);
    this.groupOpen = new Uint8Array(maxPackets);
    this.groupPush = new Uint8Array(maxPackets);

    // At most half full, so probe sequences stay short.
    const buckets = nextPowerOfTwo(Math.max(16, maxGroups * 2));
    this.flowMask = buckets - 1;
    this.flowStamp = new Int32Array(buckets);
    this.flowSource = new Int32Array(buckets);
    this.flowDestination = new Int32Array(buckets);
    this.flowPorts = new Int32Array(buckets);
    this.flowProtocol = new Uint8Array(buckets);
    this.flowGroup = new Int32Array(buckets);
  }

  reset(): void {
    this.packetCount = 0;
    this.writeCount = 0;
    this.groupCount = 0;
    this.flowCount = 0;
    if (this.generation === 0x7fffffff) {
      this.flowStamp.fill(0);
      this.generation = 0;
    }
    this.generation++;
  }

  // Adds the validated inner IPv4 packet buf[off, +len) (TTL already
  // decremented), in arrival order.
  add(buf: Uint8Array, off: number, len: number): void {
    const p = this.packetCount;
    if (p >= this.maxPackets) throw new RangeError(`CoalesceBatch: more than ${this.maxPackets} packets`);
    this.packetCount = p + 1;
    this.packetOffset[p] = off;
    this.packetLength[p] = len;
    this.packetNext[p] = -1;

    if (len >= IPV6_HEADER && buf[off] >>> 4 === 6) {
      const totalLength = IPV6_HEADER + read16(buf, off + IPV6_OFFSET_PAYLOAD_LENGTH);
      if (totalLength <= len && buf[off + IPV6_OFFSET_NEXT_HEADER] === IP_PROTOCOL_TCP) this.addTcp6(buf, p, off, totalLength);
      else this.newGroup(p, false);
      return;
    }
    // Not a packet we can place in a flow: alone, and no flow is affected.
    if (len < IPV4_MIN_HEADER || buf[off] >>> 4 !== 4) {
      this.newGroup(p, false);
      return;
    }
    const ipHeaderLength = (buf[off] & 0x0f) << 2;
    const totalLength = read16(buf, off + IPV4_OFFSET_TOTAL_LENGTH);
    const protocol = buf[off + IPV4_OFFSET_PROTOCOL];
    if (
      ipHeaderLength < IPV4_MIN_HEADER ||
      totalLength > len ||
      totalLength < ipHeaderLength ||
      (read16(buf, off + IPV4_OFFSET_FLAGS_FRAGMENT) & (IPV4_FLAG_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET_MASK)) !== 0
    ) {
      this.newGroup(p, false);
      return;
    }
    if (protocol === IP_PROTOCOL_TCP) this.addTcp(buf, p, off, ipHeaderLength, totalLength);
    else if (protocol === IP_PROTOCOL_UDP && this.udpSegmentation) this.addUdp(buf, p, off, ipHeaderLength, totalLength);
    else this.newGroup(p, false);
  }

  // Builds the writes. Arena slot w (at arenaOff + w*arenaStride, at least
  // COALESCE_MAX_WRITE_HEADER bytes, inside buf and clear of every packet)
  // receives write w's header. Returns writeCount.
  finish(buf: Uint8Array, arenaOff: number, arenaStride: number): number {
    if (arenaStride < COALESCE_MAX_WRITE_HEADER) {
      throw new RangeError(`arenaStride ${arenaStride} < ${COALESCE_MAX_WRITE_HEADER}`);
    }
    const vnet = this.vnet;
    let s = 0;
    for (let w = 0; w < this.groupCount; w++) {
      const slot = arenaOff + w * arenaStride;
      const first = this.groupFirst[w];
      this.writeHeaderOffset[w] = slot;
      this.writeSegmentStart[w] = s;
      if (this.groupMembers[w] === 1) {
        for (let i = 0; i < VIRTIO_NET_HDR_LEN; i++) buf[slot + i] = 0;
        this.writeHeaderLength[w] = VIRTIO_NET_HDR_LEN;
        this.segmentOffset[s] = this.packetOffset[first];
        this.segmentLength[s] = this.packetLength[first];
        s++;
        this.writeSegmentEnd[w] = s;
        continue;
      }

      // A merged group is TCP over IPv4 or IPv6, or UDP over IPv4 (see the top of the file).
      const off = this.packetOffset[first];
      const v6 = buf[off] >>> 4 === 6;
      const ipHeaderLength = v6 ? IPV6_HEADER : (buf[off] & 0x0f) << 2;
      const headerLength = this.packetPayloadOffset[first] - off; // IP + TCP/UDP
      const l4Length = headerLength - ipHeaderLength + this.groupPayloadLength[w];
      const protocol = v6 ? IP_PROTOCOL_TCP : buf[off + IPV4_OFFSET_PROTOCOL];
      const isTcp = protocol === IP_PROTOCOL_TCP;
      const checksumField = isTcp ? TCP_OFFSET_CHECKSUM : UDP_OFFSET_CHECKSUM;

      vnet.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      vnet.gsoType = v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : isTcp ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_UDP_L4;
      vnet.hdrLen = headerLength;
      vnet.gsoSize = this.groupMss[w];
      vnet.csumStart = ipHeaderLength;
      vnet.csumOffset = checksumField;
      vnet.write(buf, slot);

      const h = slot + VIRTIO_NET_HDR_LEN;
      buf.copyWithin(h, off, off + headerLength);
      if (v6) {
        write16(buf, h + IPV6_OFFSET_PAYLOAD_LENGTH, l4Length);
      } else {
        write16(buf, h + IPV4_OFFSET_TOTAL_LENGTH, ipHeaderLength + l4Length);
        write16(buf, h + IPV4_OFFSET_CHECKSUM, 0);
        write16(buf, h + IPV4_OFFSET_CHECKSUM, internetChecksum(buf, h, ipHeaderLength));
      }
      const l4 = h + ipHeaderLength;
      if (isTcp) {
        if (this.groupPush[w] === 1) buf[l4 + TCP_OFFSET_FLAGS] |= TCP_FLAG_PSH;
      } else {
        write16(buf, l4 + UDP_OFFSET_LENGTH, l4Length);
      }
      write16(buf, l4 + checksumField, this.pseudoHeader(buf, h, protocol, l4Length));
      this.writeHeaderLength[w] = VIRTIO_NET_HDR_LEN + headerLength;

      for (let p = first; p >= 0; p = this.packetNext[p]) {
        this.segmentOffset[s] = this.packetPayloadOffset[p];
        this.segmentLength[s] = this.packetPayloadLength[p];
        s++;
      }
      this.writeSegmentEnd[w] = s;
    }
    this.writeCount = this.groupCount;
    return this.groupCount;
  }

  private addTcp(buf: Uint8Array, p: number, off: number, ipHeaderLength: number, totalLength: number): void {
    const tcp = off + ipHeaderLength;
    if (totalLength < ipHeaderLength + TCP_MIN_HEADER) {
      this.newGroup(p, false);
      return;
    }
    const tcpHeaderLength = (buf[tcp + TCP_OFFSET_DATA_OFFSET] >>> 4) << 2;
    if (tcpHeaderLength < TCP_MIN_HEADER || ipHeaderLength + tcpHeaderLength > totalLength) {
      this.newGroup(p, false);
      return;
    }

    // A TCP segment: find its flow's latest group.
    const source = read32(buf, off + IPV4_OFFSET_SOURCE) | 0;
    const destination = read32(buf, off + IPV4_OFFSET_DESTINATION) | 0;
    const ports = read32(buf, tcp) | 0;
    const bucket = this.findFlow(source, destination, ports, IP_PROTOCOL_TCP);
    const previous = this.flowStamp[bucket] === this.generation ? this.flowGroup[bucket] : -1;

    const payloadLength = totalLength - ipHeaderLength - tcpHeaderLength;
    const flags = buf[tcp + TCP_OFFSET_FLAGS];
    const push = flags === (TCP_FLAG_ACK | TCP_FLAG_PSH);
    const mergeable =
      (flags === TCP_FLAG_ACK || push) &&
      payloadLength > 0 &&
      (!this.verifyChecksums || this.checksumValid(buf, off, ipHeaderLength, totalLength, IP_PROTOCOL_TCP));
    this.packetPayloadOffset[p] = tcp + tcpHeaderLength;
    this.packetPayloadLength[p] = payloadLength;

    if (mergeable && previous >= 0 && this.groupOpen[previous] === 1) {
      if (this.canAppendTcp(buf, previous, off, ipHeaderLength, tcpHeaderLength, payloadLength)) {
        this.link(previous, p, payloadLength);
        this.groupNextSeq[previous] = (this.groupNextSeq[previous] + payloadLength) >>> 0;
        if (push) {
          this.groupPush[previous] = 1;
          this.groupOpen[previous] = 0;
        } else if (payloadLength < this.groupMss[previous] || this.groupMembers[previous] === COALESCE_MAX_TCP_SEGMENTS) {
          this.groupOpen[previous] = 0;
        }
        return;
      }
    }
    // The flow now points at this packet's group, so no later packet of the
    // flow can reach the previous group and be written ahead of this one.
    const g = this.newGroup(p, mergeable && !push);
    if (mergeable) {
      this.groupMss[g] = payloadLength;
      this.groupPayloadLength[g] = payloadLength;
      this.groupNextSeq[g] = (read32(buf, tcp + TCP_OFFSET_SEQ) + payloadLength) >>> 0;
    }
    this.trackFlow(bucket, g, source, destination, ports, IP_PROTOCOL_TCP);
  }

  /** addTcp for a TCP segment right behind an IPv6 header. */
  private addTcp6(buf: Uint8Array, p: number, off: number, totalLength: number): void {
    const tcp = off + IPV6_HEADER;
    if (totalLength < IPV6_HEADER + TCP_MIN_HEADER) {
      this.newGroup(p, false);
      return;
    }
    const tcpHeaderLength = (buf[tcp + TCP_OFFSET_DATA_OFFSET] >>> 4) << 2;
    if (tcpHeaderLength < TCP_MIN_HEADER || IPV6_HEADER + tcpHeaderLength > totalLength) {
      this.newGroup(p, false);
      return;
    }
    const src = off + IPV6_OFFSET_SOURCE;
    const source = read32(buf, src) ^ read32(buf, src + 4) ^ read32(buf, src + 8) ^ read32(buf, src + 12) | 0;
    const dst = src + 16;
    const destination = read32(buf, dst) ^ read32(buf, dst + 4) ^ read32(buf, dst + 8) ^ read32(buf, dst + 12) | 0;
    const ports = read32(buf, tcp) | 0;
    const bucket = this.findFlow(source, destination, ports, FLOW_TCP6);
    const previous = this.flowStamp[bucket] === this.generation ? this.flowGroup[bucket] : -1;

    const payloadLength = totalLength - IPV6_HEADER - tcpHeaderLength;
    const flags = buf[tcp + TCP_OFFSET_FLAGS];
    const push = flags === (TCP_FLAG_ACK | TCP_FLAG_PSH);
    const mergeable =
      (flags === TCP_FLAG_ACK || push) &&
      payloadLength > 0 &&
      (!this.verifyChecksums || this.checksumValid(buf, off, IPV6_HEADER, totalLength, IP_PROTOCOL_TCP));
    this.packetPayloadOffset[p] = tcp + tcpHeaderLength;
    this.packetPayloadLength[p] = payloadLength;

    if (mergeable && previous >= 0 && this.groupOpen[previous] === 1 && this.canAppendTcp6(buf, previous, off, tcpHeaderLength, payloadLength)) {
      this.link(previous, p, payloadLength);
      this.groupNextSeq[previous] = (this.groupNextSeq[previous] + payloadLength) >>> 0;
      if (push) {
        this.groupPush[previous] = 1;
        this.groupOpen[previous] = 0;
      } else if (payloadLength < this.groupMss[previous] || this.groupMembers[previous] === COALESCE_MAX_TCP_SEGMENTS) {
        this.groupOpen[previous] = 0;
      }
      return;
    }
    const g = this.newGroup(p, mergeable && !push);
    if (mergeable) {
      this.groupMss[g] = payloadLength;
      this.groupPayloadLength[g] = payloadLength;
      this.groupNextSeq[g] = (read32(buf, tcp + TCP_OFFSET_SEQ) + payloadLength) >>> 0;
    }
    this.trackFlow(bucket, g, source, destination, ports, FLOW_TCP6);
  }

  /** canAppendTcp for IPv6: the first member must be IPv6 with the same first word, hop limit and addresses. */
  private canAppendTcp6(buf: Uint8Array, g: number, off: number, tcpHeaderLength: number, payloadLength: number): boolean {
    const firstOff = this.packetOffset[this.groupFirst[g]];
    if (buf[firstOff] >>> 4 !== 6) return false; // never, with FLOW_TCP6 in the key; checked all the same
    const tcp = off + IPV6_HEADER;
    if (payloadLength > this.groupMss[g]) return false;
    if (read32(buf, tcp + TCP_OFFSET_SEQ) !== this.groupNextSeq[g]) return false;
    if (tcpHeaderLength + this.groupPayloadLength[g] + payloadLength > IPV4_MAX_TOTAL_LENGTH) return false;
    if (read32(buf, off) !== read32(buf, firstOff)) return false; // version, traffic class, flow label
    if (buf[off + IPV6_OFFSET_HOP_LIMIT] !== buf[firstOff + IPV6_OFFSET_HOP_LIMIT]) return false;
    if (!bytesEqual(buf, off + IPV6_OFFSET_SOURCE, firstOff + IPV6_OFFSET_SOURCE, 32)) return false;
    const firstTcp = firstOff + IPV6_HEADER;
    if (this.packetPayloadOffset[this.groupFirst[g]] - firstTcp !== tcpHeaderLength) return false;
    if (read32(buf, tcp + TCP_OFFSET_ACK) !== read32(buf, firstTcp + TCP_OFFSET_ACK)) return false;
    if (read16(buf, tcp + TCP_OFFSET_WINDOW) !== read16(buf, firstTcp + TCP_OFFSET_WINDOW)) return false;
    return bytesEqual(buf, tcp + TCP_MIN_HEADER, firstTcp + TCP_MIN_HEADER, tcpHeaderLength - TCP_MIN_HEADER);
  }

  private addUdp(buf: Uint8Array, p: number, off: number, ipHeaderLength: number, totalLength: number): void {
    const udp = off + ipHeaderLength;
    if (totalLength < ipHeaderLength + UDP_HEADER_LENGTH) {
      this.newGroup(p, false);
      return;
    }
    const source = read32(buf, off + IPV4_OFFSET_SOURCE) | 0;
    const destination = read32(buf, off + IPV4_OFFSET_DESTINATION) | 0;
    const ports = read32(buf, udp) | 0;
    const bucket = this.findFlow(source, destination, ports, IP_PROTOCOL_UDP);
    const previous = this.flowStamp[bucket] === this.generation ? this.flowGroup[bucket] : -1;

    const payloadLength = totalLength - ipHeaderLength - UDP_HEADER_LENGTH;
    const mergeable =
      payloadLength > 0 &&
      read16(buf, udp + UDP_OFFSET_LENGTH) === totalLength - ipHeaderLength &&
      read16(buf, udp + UDP_OFFSET_CHECKSUM) !== 0 &&
      (!this.verifyChecksums || this.checksumValid(buf, off, ipHeaderLength, totalLength, IP_PROTOCOL_UDP));
    this.packetPayloadOffset[p] = udp + UDP_HEADER_LENGTH;
    this.packetPayloadLength[p] = payloadLength;

    if (mergeable && previous >= 0 && this.groupOpen[previous] === 1) {
      if (this.canAppendUdp(buf, previous, off, ipHeaderLength, payloadLength)) {
        this.link(previous, p, payloadLength);
        if (payloadLength < this.groupMss[previous] || this.groupMembers[previous] === COALESCE_MAX_UDP_SEGMENTS) {
          this.groupOpen[previous] = 0;
        }
        return;
      }
    }
    const g = this.newGroup(p, mergeable);
    if (mergeable) {
      this.groupMss[g] = payloadLength;
      this.groupPayloadLength[g] = payloadLength;
    }
    this.trackFlow(bucket, g, source, destination, ports, IP_PROTOCOL_UDP);
  }

  private newGroup(p: number, open: boolean): number {
    const g = this.groupCount++;
    this.groupFirst[g] = p;
    this.groupLast[g] = p;
    this.groupMembers[g] = 1;
    this.groupPayloadLength[g] = 0;
    this.groupMss[g] = 0;
    this.groupNextSeq[g] = 0;
    this.groupOpen[g] = open ? 1 : 0;
    this.groupPush[g] = 0;
    return g;
  }

  // Appends packet p to the end of group g.
  private link(g: number, p: number, payloadLength: number): void {
    this.packetNext[this.groupLast[g]] = p;
    this.groupLast[g] = p;
    this.groupMembers[g]++;
    this.groupPayloadLength[g] += payloadLength;
  }

  // Points the flow in `bucket` (live or where it would go) at group g, its
  // newest. A flow beyond maxGroups is not tracked: its group is closed, as
  // no later packet could find it.
  private trackFlow(bucket: number, g: number, source: number, destination: number, ports: number, protocol: number): void {
    if (this.flowStamp[bucket] === this.generation) {
      this.flowGroup[bucket] = g;
    } else if (this.flowCount < this.maxGroups) {
      this.flowCount++;
      this.flowStamp[bucket] = this.generation;
      this.flowSource[bucket] = source;
      this.flowDestination[bucket] = destination;
      this.flowPorts[bucket] = ports;
      this.flowProtocol[bucket] = protocol;
      this.flowGroup[bucket] = g;
    } else {
      this.groupOpen[g] = 0;
    }
  }

  // The TCP merge rules against the group's first and last member (see the
  // top of the file); flow key, flags and non-empty payload are already checked.
  private canAppendTcp(
    buf: Uint8Array,
    g: number,
    off: number,
    ipHeaderLength: number,
    tcpHeaderLength: number,
    payloadLength: number,
  ): boolean {
    const firstOff = this.packetOffset[this.groupFirst[g]];
    const tcp = off + ipHeaderLength;
    if (payloadLength > this.groupMss[g]) return false;
    if (read32(buf, tcp + TCP_OFFSET_SEQ) !== this.groupNextSeq[g]) return false;
    if (ipHeaderLength + tcpHeaderLength + this.groupPayloadLength[g] + payloadLength > IPV4_MAX_TOTAL_LENGTH) {
      return false;
    }
    if (!this.ipv4HeadersMatch(buf, g, off, ipHeaderLength)) return false;
    const firstTcp = firstOff + ipHeaderLength;
    if (this.packetPayloadOffset[this.groupFirst[g]] - firstTcp !== tcpHeaderLength) return false;
    if (read32(buf, tcp + TCP_OFFSET_ACK) !== read32(buf, firstTcp + TCP_OFFSET_ACK)) return false;
    if (read16(buf, tcp + TCP_OFFSET_WINDOW) !== read16(buf, firstTcp + TCP_OFFSET_WINDOW)) return false;
    return bytesEqual(buf, tcp + TCP_MIN_HEADER, firstTcp + TCP_MIN_HEADER, tcpHeaderLength - TCP_MIN_HEADER);
  }


  // The UDP merge rules; flow key, length field, non-empty payload and
  // checksum are already checked. The 64-member cap closes the group instead.
  private canAppendUdp(buf: Uint8Array, g: number, off: number, ipHeaderLength: number, payloadLength: number): boolean {
    if (payloadLength > this.groupMss[g]) return false;
    if (ipHeaderLength + UDP_HEADER_LENGTH + this.groupPayloadLength[g] + payloadLength > IPV4_MAX_TOTAL_LENGTH) {
      return false;
    }
    return this.ipv4HeadersMatch(buf, g, off, ipHeaderLength);
  }

  // The IPv4 rules shared by TCP and UDP: header length, TOS, TTL, DF and
  // reserved bit, consecutive ids when DF is clear, identical options.
  private ipv4HeadersMatch(buf: Uint8Array, g: number, off: number, ipHeaderLength: number): boolean {
    const firstOff = this.packetOffset[this.groupFirst[g]];
    if ((buf[firstOff] & 0x0f) << 2 !== ipHeaderLength) return false;
    if (buf[off + IPV4_OFFSET_TOS] !== buf[firstOff + IPV4_OFFSET_TOS]) return false;
    if (buf[off + IPV4_OFFSET_TTL] !== buf[firstOff + IPV4_OFFSET_TTL]) return false;
    const fragmentWord = read16(buf, off + IPV4_OFFSET_FLAGS_FRAGMENT);
    if ((fragmentWord & IPV4_MERGE_FLAG_BITS) !== (read16(buf, firstOff + IPV4_OFFSET_FLAGS_FRAGMENT) & IPV4_MERGE_FLAG_BITS)) {
      return false;
    }
    if ((fragmentWord & IPV4_FLAG_DONT_FRAGMENT) === 0) {
      const lastOff = this.packetOffset[this.groupLast[g]];
      if (read16(buf, off + IPV4_OFFSET_ID) !== ((read16(buf, lastOff + IPV4_OFFSET_ID) + 1) & 0xffff)) return false;
    }
    return bytesEqual(buf, off + IPV4_MIN_HEADER, firstOff + IPV4_MIN_HEADER, ipHeaderLength - IPV4_MIN_HEADER);
  }

  private checksumValid(buf: Uint8Array, off: number, ipHeaderLength: number, totalLength: number, protocol: number): boolean {
    const l4Length = totalLength - ipHeaderLength;
    return onesComplementSum(buf, off + ipHeaderLength, l4Length, this.pseudoHeader(buf, off, protocol, l4Length)) === 0xffff;
  }

  /** The pseudo-header sum of the IPv4 or IPv6 header at off (its version nibble says which) for an upper layer of l4Length. */
  private pseudoHeader(buf: Uint8Array, off: number, protocol: number, l4Length: number): number {
    if (buf[off] >>> 4 === 6) return ipv6PseudoHeaderSum(buf, off, protocol, l4Length);
    return pseudoHeaderSum(read32(buf, off + IPV4_OFFSET_SOURCE), read32(buf, off + IPV4_OFFSET_DESTINATION), protocol, l4Length);
  }

  // The flow's live bucket, or the empty bucket where it would go.
  private findFlow(source: number, destination: number, ports: number, protocol: number): number {
    let h =
      Math.imul(source, 0x9e3779b1) ^ Math.imul(destination, 0x85ebca6b) ^ Math.imul(ports, 0xc2b2ae35) ^ protocol;
    h ^= h >>> 15;
    const mask = this.flowMask;
    const generation = this.generation;
    for (let b = h & mask; ; b = (b + 1) & mask) {
      if (this.flowStamp[b] !== generation) return b;
      if (
        this.flowSource[b] === source &&
        this.flowDestination[b] === destination &&
        this.flowPorts[b] === ports &&
        this.flowProtocol[b] === protocol
      ) {
        return b;
      }
    }
  }
}
