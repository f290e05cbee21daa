// Software GRO for the wire → TUN direction: consecutive MTU-sized TCP/IPv4
// segments of one flow, received in one batch, are written to the TUN as one
// super-packet with a virtio_net_hdr (GSO TCPV4, NEEDS_CSUM). The kernel then
// handles one skb instead of dozens — the step that took wireguard-go from
// ~2.9 to ~12 Gbit/s.
//
// Zero copy: members' payloads stay where they were received; a merged group
// is written as [virtio_net_hdr + rebuilt IPv4/TCP header] from an arena slot
// followed by each member's payload slice (one iovec each).
//
// Merge rules, in the spirit of the kernel's inet_gro_receive/tcp_gro_receive.
// A packet P joins its flow's open group G (first member F, last member L) only if:
//   - flow: same source and destination address and ports (the flow key);
//     IPv4 protocol TCP; P is not a fragment (MF clear, offset 0);
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
//     closes the group; the merged IPv4 total length stays ≤ 65535.
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
} from './segmentation.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_LEN,
  VirtioNetHeader,
} from './virtio-net-header.js';

/** Arena room one write needs: virtio_net_hdr + the largest IPv4 + TCP header. */
export const COALESCE_MAX_WRITE_HEADER = VIRTIO_NET_HDR_LEN + SEGMENT_MAX_HEADERS;

const IPV4_MAX_TOTAL_LENGTH = 0xffff;
// Bits of the flags/fragment word that must match: reserved and DF (MF is 0 here).
const IPV4_MERGE_FLAG_BITS = 0xc000;

function read16(buf: Uint8Array, at: number): number {
  return (buf[at] << 8) | buf[at + 1];
}

function read32(buf: Uint8Array, at: number): number {
  return ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
}

function write16(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 8;
  buf[at + 1] = value;
}

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
// RangeError). maxGroups: the most distinct TCP flows tracked per batch; the
// packets of further flows are still written, each alone. Writes never exceed
// maxPackets, and finish() uses one arena slot per write.
//
// All packets of a batch must live in the same buffer, the one later passed
// to finish().
export class CoalesceBatch {
  readonly maxPackets: number;
  readonly maxGroups: number;
  readonly verifyChecksums: boolean;

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
  private readonly packetPayloadOffset: Int32Array; // TCP payload, for merged members
  private readonly packetPayloadLength: Int32Array;

  // Per group, in creation order = order of the first member's arrival.
  private groupCount = 0;
  private readonly groupFirst: Int32Array;
  private readonly groupLast: Int32Array;
  private readonly groupMembers: Int32Array;
  private readonly groupPayloadLength: Int32Array; // sum of the members' payloads
  private readonly groupMss: Int32Array; // the first member's payload length
  private readonly groupNextSeq: Uint32Array; // seq the next member must carry
  private readonly groupOpen: Uint8Array; // 1 while a packet may still be appended
  private readonly groupPush: Uint8Array; // the last member carried PSH

  // Flow table: open addressing, linear probing. A bucket is live when its
  // stamp equals the batch generation, so reset() clears it in O(1).
  private readonly flowMask: number;
  private flowCount = 0;
  private generation = 1;
  private readonly flowStamp: Int32Array;
  private readonly flowSource: Int32Array;
  private readonly flowDestination: Int32Array;
  private readonly flowPorts: Int32Array;
  private readonly flowGroup: Int32Array; // the flow's most recent group

  private readonly vnet = new VirtioNetHeader();

  constructor(maxPackets: number, maxGroups: number, verifyChecksums = false) {
    this.maxPackets = maxPackets;
    this.maxGroups = maxGroups;
    this.verifyChecksums = verifyChecksums;

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

    // Not a TCP segment we can place in a flow: alone, and no flow is affected.
    if (len < IPV4_MIN_HEADER + TCP_MIN_HEADER || buf[off] >>> 4 !== 4) {
      this.newGroup(p, false);
      return;
    }
    const ipHeaderLength = (buf[off] & 0x0f) << 2;
    const totalLength = read16(buf, off + IPV4_OFFSET_TOTAL_LENGTH);
    if (
      buf[off + IPV4_OFFSET_PROTOCOL] !== IP_PROTOCOL_TCP ||
      ipHeaderLength < IPV4_MIN_HEADER ||
      totalLength > len ||
      totalLength < ipHeaderLength + TCP_MIN_HEADER ||
      (read16(buf, off + IPV4_OFFSET_FLAGS_FRAGMENT) & (IPV4_FLAG_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET_MASK)) !== 0
    ) {
      this.newGroup(p, false);
      return;
    }
    const tcp = off + ipHeaderLength;
    const tcpHeaderLength = (buf[tcp + TCP_OFFSET_DATA_OFFSET] >>> 4) << 2;
    if (tcpHeaderLength < TCP_MIN_HEADER || ipHeaderLength + tcpHeaderLength > totalLength) {
      this.newGroup(p, false);
      return;
    }

    // A TCP segment: find its flow's latest group.
    const source = read32(buf, off + IPV4_OFFSET_SOURCE) | 0;
    const destination = read32(buf, off + IPV4_OFFSET_DESTINATION) | 0;
    const ports = read32(buf, tcp) | 0;
    const bucket = this.findFlow(source, destination, ports);
    const known = this.flowStamp[bucket] === this.generation;
    const previous = known ? this.flowGroup[bucket] : -1;

    const payloadLength = totalLength - ipHeaderLength - tcpHeaderLength;
    const flags = buf[tcp + TCP_OFFSET_FLAGS];
    const push = flags === (TCP_FLAG_ACK | TCP_FLAG_PSH);
    const mergeable =
      (flags === TCP_FLAG_ACK || push) &&
      payloadLength > 0 &&
      (!this.verifyChecksums || this.tcpChecksumValid(buf, off, ipHeaderLength, totalLength));
    this.packetPayloadOffset[p] = tcp + tcpHeaderLength;
    this.packetPayloadLength[p] = payloadLength;

    if (mergeable && previous >= 0 && this.groupOpen[previous] === 1) {
      if (this.canAppend(buf, previous, off, ipHeaderLength, tcpHeaderLength, payloadLength)) {
        this.append(previous, p, payloadLength, push);
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
    if (known) {
      this.flowGroup[bucket] = g;
    } else if (this.flowCount < this.maxGroups) {
      this.flowCount++;
      this.flowStamp[bucket] = this.generation;
      this.flowSource[bucket] = source;
      this.flowDestination[bucket] = destination;
      this.flowPorts[bucket] = ports;
      this.flowGroup[bucket] = g;
    } else {
      this.groupOpen[g] = 0; // untracked flow: can never be found again, so alone
    }
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

      const off = this.packetOffset[first];
      const ipHeaderLength = (buf[off] & 0x0f) << 2;
      const tcpHeaderLength = this.packetPayloadOffset[first] - off - ipHeaderLength;
      const headerLength = ipHeaderLength + tcpHeaderLength;
      const payloadLength = this.groupPayloadLength[w];

      vnet.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      vnet.gsoType = VIRTIO_NET_HDR_GSO_TCPV4;
      vnet.hdrLen = headerLength;
      vnet.gsoSize = this.groupMss[w];
      vnet.csumStart = ipHeaderLength;
      vnet.csumOffset = TCP_OFFSET_CHECKSUM;
      vnet.write(buf, slot);

      const h = slot + VIRTIO_NET_HDR_LEN;
      buf.copyWithin(h, off, off + headerLength);
      write16(buf, h + IPV4_OFFSET_TOTAL_LENGTH, headerLength + payloadLength);
      write16(buf, h + IPV4_OFFSET_CHECKSUM, 0);
      write16(buf, h + IPV4_OFFSET_CHECKSUM, internetChecksum(buf, h, ipHeaderLength));
      const tcp = h + ipHeaderLength;
      if (this.groupPush[w] === 1) buf[tcp + TCP_OFFSET_FLAGS] |= TCP_FLAG_PSH;
      write16(
        buf,
        tcp + TCP_OFFSET_CHECKSUM,
        pseudoHeaderSum(
          read32(buf, h + IPV4_OFFSET_SOURCE),
          read32(buf, h + IPV4_OFFSET_DESTINATION),
          IP_PROTOCOL_TCP,
          tcpHeaderLength + payloadLength,
        ),
      );
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

  private append(g: number, p: number, payloadLength: number, push: boolean): void {
    this.packetNext[this.groupLast[g]] = p;
    this.groupLast[g] = p;
    this.groupMembers[g]++;
    this.groupPayloadLength[g] += payloadLength;
    this.groupNextSeq[g] = (this.groupNextSeq[g] + payloadLength) >>> 0;
    if (push) {
      this.groupPush[g] = 1;
      this.groupOpen[g] = 0;
    } else if (payloadLength < this.groupMss[g]) {
      this.groupOpen[g] = 0;
    }
  }

  // The merge rules against the group's first and last member (see the top
  // of the file); flow key, flags and non-empty payload are already checked.
  private canAppend(
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
    if ((buf[firstOff] & 0x0f) << 2 !== ipHeaderLength) return false;
    const firstTcp = firstOff + ipHeaderLength;
    if (this.packetPayloadOffset[this.groupFirst[g]] - firstTcp !== tcpHeaderLength) return false;
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
    if (read32(buf, tcp + TCP_OFFSET_ACK) !== read32(buf, firstTcp + TCP_OFFSET_ACK)) return false;
    if (read16(buf, tcp + TCP_OFFSET_WINDOW) !== read16(buf, firstTcp + TCP_OFFSET_WINDOW)) return false;
    if (!bytesEqual(buf, off + IPV4_MIN_HEADER, firstOff + IPV4_MIN_HEADER, ipHeaderLength - IPV4_MIN_HEADER)) {
      return false;
    }
    return bytesEqual(buf, tcp + TCP_MIN_HEADER, firstTcp + TCP_MIN_HEADER, tcpHeaderLength - TCP_MIN_HEADER);
  }

  private tcpChecksumValid(buf: Uint8Array, off: number, ipHeaderLength: number, totalLength: number): boolean {
    const tcpLength = totalLength - ipHeaderLength;
    const pseudo = pseudoHeaderSum(
      read32(buf, off + IPV4_OFFSET_SOURCE),
      read32(buf, off + IPV4_OFFSET_DESTINATION),
      IP_PROTOCOL_TCP,
      tcpLength,
    );
    return onesComplementSum(buf, off + ipHeaderLength, tcpLength, pseudo) === 0xffff;
  }

  // The flow's live bucket, or the empty bucket where it would go.
  private findFlow(source: number, destination: number, ports: number): number {
    let h = Math.imul(source, 0x9e3779b1) ^ Math.imul(destination, 0x85ebca6b) ^ Math.imul(ports, 0xc2b2ae35);
    h ^= h >>> 15;
    const mask = this.flowMask;
    const generation = this.generation;
    for (let b = h & mask; ; b = (b + 1) & mask) {
      if (this.flowStamp[b] !== generation) return b;
      if (this.flowSource[b] === source && this.flowDestination[b] === destination && this.flowPorts[b] === ports) {
        return b;
      }
    }
  }
}
