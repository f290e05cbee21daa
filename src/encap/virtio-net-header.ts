// struct virtio_net_hdr (include/uapi/linux/virtio_net.h), the 10-byte header
// a TUN opened with IFF_VNET_HDR puts in front of every packet it reads and
// expects in front of every packet written to it. It describes the offloads
// the packet still needs: a partial transport checksum (NEEDS_CSUM) and, for a
// super-packet, segmentation (gso_type, gso_size).
//
// Multi-byte fields are little-endian: that is the TUN's byte order on x86 and
// arm64 unless TUNSETVNETBE is used (virtio 1.0 is little-endian everywhere;
// legacy virtio is native-endian, which on these hosts is the same).
import { onesComplementSum } from './checksum.js';

export const VIRTIO_NET_HDR_LEN = 10;

// flags
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1; // checksum from csum_start, stored at csum_start + csum_offset
export const VIRTIO_NET_HDR_F_DATA_VALID = 2; // checksum already verified (receive side only)

// gso_type
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3; // UFO: IP fragmentation of one UDP datagram; not supported here
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5; // USO: one UDP datagram per gso_size bytes
export const VIRTIO_NET_HDR_GSO_ECN = 0x80; // OR-ed into gso_type: the first segment carries CWR

// Field offsets inside the header.
const OFFSET_FLAGS = 0;
const OFFSET_GSO_TYPE = 1;
const OFFSET_HDR_LEN = 2;
const OFFSET_GSO_SIZE = 4;
const OFFSET_CSUM_START = 6;
const OFFSET_CSUM_OFFSET = 8;

function readLe16(buf: Uint8Array, at: number): number {
  return buf[at] | (buf[at + 1] << 8);
}

function writeLe16(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value;
  buf[at + 1] = value >>> 8;
}

// One reusable instance per worker: read() overwrites every field, so the
// hot path never allocates a header object.
export class VirtioNetHeader {
  flags = 0;
  gsoType = 0;
  /** Length of the headers to replicate per segment; a hint only (see segmentation.ts). */
  hdrLen = 0;
  /** Payload bytes per segment (the MSS for TCP). */
  gsoSize = 0;
  /** Where checksumming starts, from the start of the IP header (= IP header length). */
  csumStart = 0;
  /** Where the checksum is stored, from csumStart (16 for TCP, 6 for UDP). */
  csumOffset = 0;

  read(buf: Uint8Array, off: number): void {
    this.flags = buf[off + OFFSET_FLAGS];
    this.gsoType = buf[off + OFFSET_GSO_TYPE];
    this.hdrLen = readLe16(buf, off + OFFSET_HDR_LEN);
    this.gsoSize = readLe16(buf, off + OFFSET_GSO_SIZE);
    this.csumStart = readLe16(buf, off + OFFSET_CSUM_START);
    this.csumOffset = readLe16(buf, off + OFFSET_CSUM_OFFSET);
  }

  write(buf: Uint8Array, off: number): void {
    buf[off + OFFSET_FLAGS] = this.flags;
    buf[off + OFFSET_GSO_TYPE] = this.gsoType;
    writeLe16(buf, off + OFFSET_HDR_LEN, this.hdrLen);
    writeLe16(buf, off + OFFSET_GSO_SIZE, this.gsoSize);
    writeLe16(buf, off + OFFSET_CSUM_START, this.csumStart);
    writeLe16(buf, off + OFFSET_CSUM_OFFSET, this.csumOffset);
  }

  clear(): void {
    this.flags = 0;
    this.gsoType = 0;
    this.hdrLen = 0;
    this.gsoSize = 0;
    this.csumStart = 0;
    this.csumOffset = 0;
  }
}

// Finishes the checksum of a GSO_NONE packet read with NEEDS_CSUM, as the
// kernel's skb_checksum_help() would before handing it to a device without
// checksum offload. The field at csumStart + csumOffset holds the folded,
// non-inverted pseudo-header sum (CHECKSUM_PARTIAL); it is summed as is with
// everything from csumStart to the end of the packet, and the inverted result
// replaces it.
//
// A result of 0 is stored as 0xFFFF (CSUM_MANGLED_0), for every protocol, as
// skb_checksum_help() does (`csum_fold(csum) ?: CSUM_MANGLED_0`): required for
// UDP, where 0 means "no checksum"; harmless for TCP, where 0x0000 and 0xFFFF
// are the two one's complement zeros and both verify.
//
// pktLen is the IP packet's length (trailing bytes beyond the IPv4 total
// length would be summed too: trim first). Returns false, leaving the packet
// untouched, when the offsets do not fit inside the packet.
export function completePartialChecksum(
  buf: Uint8Array,
  pktOff: number,
  pktLen: number,
  csumStart: number,
  csumOffset: number,
): boolean {
  const fieldAt = csumStart + csumOffset;
  if (csumStart >= pktLen || fieldAt + 2 > pktLen) return false;
  const checksum = ~onesComplementSum(buf, pktOff + csumStart, pktLen - csumStart) & 0xffff;
  const stored = checksum === 0 ? 0xffff : checksum;
  buf[pktOff + fieldAt] = stored >>> 8;
  buf[pktOff + fieldAt + 1] = stored;
  return true;
}
