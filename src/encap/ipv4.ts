// IPv4 header (RFC 791) helpers on (buf, off): read, validate, TTL
// decrement, build. No allocation; addresses are uint32 numbers.
import { checksumAdjust16, internetChecksum, onesComplementSum } from './checksum.js';
import { DropReason, type DropReasonCode } from './drop-reasons.js';
import { read16, read32, write16, write32 } from './bytes.js';

export const IPV4_MIN_HEADER = 20;
export const IPV4_MAX_HEADER = 60;

// Field offsets from the start of the header.
export const IPV4_OFFSET_VERSION_IHL = 0;
export const IPV4_OFFSET_TOS = 1;
export const IPV4_OFFSET_TOTAL_LENGTH = 2;
export const IPV4_OFFSET_ID = 4;
export const IPV4_OFFSET_FLAGS_FRAGMENT = 6;
export const IPV4_OFFSET_TTL = 8;
export const IPV4_OFFSET_PROTOCOL = 9;
export const IPV4_OFFSET_CHECKSUM = 10;
export const IPV4_OFFSET_SOURCE = 12;
export const IPV4_OFFSET_DESTINATION = 16;

// Bits of the 16-bit flags/fragment-offset word.
export const IPV4_FLAG_DONT_FRAGMENT = 0x4000;
export const IPV4_FLAG_MORE_FRAGMENTS = 0x2000;
export const IPV4_FRAGMENT_OFFSET_MASK = 0x1fff;

export const IP_PROTOCOL_ICMP = 1;
export const IP_PROTOCOL_TCP = 6;
export const IP_PROTOCOL_UDP = 17;

export const IPV4_DEFAULT_TTL = 64;


export function ipv4HeaderLength(buf: Uint8Array, off: number): number {
  return (buf[off] & 0x0f) << 2;
}

export function ipv4TotalLength(buf: Uint8Array, off: number): number {
  return read16(buf, off + IPV4_OFFSET_TOTAL_LENGTH);
}

export function ipv4Protocol(buf: Uint8Array, off: number): number {
  return buf[off + IPV4_OFFSET_PROTOCOL];
}

export function ipv4Ttl(buf: Uint8Array, off: number): number {
  return buf[off + IPV4_OFFSET_TTL];
}

export function ipv4Source(buf: Uint8Array, off: number): number {
  return read32(buf, off + IPV4_OFFSET_SOURCE);
}

export function ipv4Destination(buf: Uint8Array, off: number): number {
  return read32(buf, off + IPV4_OFFSET_DESTINATION);
}

export function ipv4DontFragment(buf: Uint8Array, off: number): boolean {
  return (read16(buf, off + IPV4_OFFSET_FLAGS_FRAGMENT) & IPV4_FLAG_DONT_FRAGMENT) !== 0;
}

// Fragment offset != 0: the datagram's transport header is in another fragment.
export function ipv4IsLaterFragment(buf: Uint8Array, off: number): boolean {
  return (read16(buf, off + IPV4_OFFSET_FLAGS_FRAGMENT) & IPV4_FRAGMENT_OFFSET_MASK) !== 0;
}

export function ipv4IsFragment(buf: Uint8Array, off: number): boolean {
  return (
    (read16(buf, off + IPV4_OFFSET_FLAGS_FRAGMENT) &
      (IPV4_FLAG_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET_MASK)) !== 0
  );
}

// `len` is the number of bytes received at buf[off..]; the caller guarantees
// they exist in buf. A total length smaller than `len` is valid: link layers
// and TUN reads may deliver trailing bytes (e.g. Ethernet padding), and the
// caller trims the packet to ipv4TotalLength() before forwarding it.
export function validateIPv4(buf: Uint8Array, off: number, len: number): DropReasonCode {
  if (len < IPV4_MIN_HEADER) return DropReason.TooShort;
  if (buf[off] >>> 4 !== 4) return DropReason.NotIPv4;
  const headerLength = ipv4HeaderLength(buf, off);
  if (headerLength < IPV4_MIN_HEADER || headerLength > len) return DropReason.BadHeaderLength;
  const totalLength = ipv4TotalLength(buf, off);
  if (totalLength < headerLength || totalLength > len) return DropReason.BadTotalLength;
  // A correct header sums to 0xffff including its checksum field; 0 cannot
  // occur because the version nibble is non-zero.
  if (onesComplementSum(buf, off, headerLength) !== 0xffff) return DropReason.BadHeaderChecksum;
  return DropReason.None;
}

// Like flannel's C proxy: a packet that arrives with TTL <= 1 must not be
// forwarded (the caller drops it as DropReason.TtlExpired); it is left as is.
// Otherwise TTL is decremented and the header checksum patched incrementally;
// TTL shares its 16-bit word with the protocol byte.
export function decrementTtl(buf: Uint8Array, off: number): boolean {
  const ttl = buf[off + IPV4_OFFSET_TTL];
  if (ttl <= 1) return false;
  const protocol = buf[off + IPV4_OFFSET_PROTOCOL];
  const checksum = read16(buf, off + IPV4_OFFSET_CHECKSUM);
  const oldWord = (ttl << 8) | protocol;
  buf[off + IPV4_OFFSET_TTL] = ttl - 1;
  write16(buf, off + IPV4_OFFSET_CHECKSUM, checksumAdjust16(checksum, oldWord, oldWord - 0x100));
  return true;
}

// Writes a 20-byte header (no options, TOS 0) with a correct checksum. For
// packets this node originates (ICMP errors) and for tests; forwarded packets
// keep their own header.
export function buildIPv4Header(
  buf: Uint8Array,
  off: number,
  totalLength: number,
  id: number,
  ttl: number,
  protocol: number,
  src: number,
  dst: number,
  dontFragment: boolean,
): void {
  buf[off + IPV4_OFFSET_VERSION_IHL] = 0x45;
  buf[off + IPV4_OFFSET_TOS] = 0;
  write16(buf, off + IPV4_OFFSET_TOTAL_LENGTH, totalLength);
  write16(buf, off + IPV4_OFFSET_ID, id);
  write16(buf, off + IPV4_OFFSET_FLAGS_FRAGMENT, dontFragment ? IPV4_FLAG_DONT_FRAGMENT : 0);
  buf[off + IPV4_OFFSET_TTL] = ttl;
  buf[off + IPV4_OFFSET_PROTOCOL] = protocol;
  write16(buf, off + IPV4_OFFSET_CHECKSUM, 0);
  write32(buf, off + IPV4_OFFSET_SOURCE, src);
  write32(buf, off + IPV4_OFFSET_DESTINATION, dst);
  write16(buf, off + IPV4_OFFSET_CHECKSUM, internetChecksum(buf, off, IPV4_MIN_HEADER));
}

// Identification for packets this node originates. RFC 6864 wants IDs of
// fragmentable (DF clear) datagrams unique per (src, dst, protocol) for the
// datagram lifetime; a wrapping counter from a random start is the usual
// answer. Each worker thread has its own module instance, hence its own
// counter: the random start keeps them apart.
let nextId = Math.floor(Math.random() * 0x10000);

export function nextIPv4Id(): number {
  nextId = (nextId + 1) & 0xffff;
  return nextId;
}
