// What the offload tests share to build packets: addresses, option bytes,
// reproducible payloads, and the packet writer.
import { onesComplementSumNaive, pseudoHeaderSum } from '../../src/encap/checksum.js';
import { IP_PROTOCOL_TCP, IP_PROTOCOL_UDP } from '../../src/encap/ipv4.js';
import { TCP_FLAG_ACK } from '../../src/encap/segmentation.js';
import { write16, write32 } from '../../src/encap/bytes.js';

export const SRC = 0x0af40105; // 10.244.1.5
export const DST = 0x0af40909; // 10.244.9.9
/** TCP timestamps option, padded (NOP NOP TS). */
export const TIMESTAMPS = [1, 1, 8, 10, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
/** IPv4 router-alert option: a header longer than 20 bytes. */
export const ROUTER_ALERT = [0x94, 0x04, 0x00, 0x00];

/** `length` bytes from a small LCG: the same for the same seed, different across seeds. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** The outer IPv4 datagram of shared/seeds/002_c556b7dab48906ed.txt (tcpdump -X of a flannel node's VXLAN ping on ens33), verbatim; a fresh copy per call. */
export function vxlanSeedPacket(): Uint8Array {
  return Uint8Array.from(Buffer.from(VXLAN_SEED_HEX.replace(/\s+/g, ''), 'hex'));
}
const VXLAN_SEED_HEX = `
4500 0086 528a 0000 4011 c78a c0a8 6f80 c0a8 6f81 ec98 2118 0072 60d6 0800 0000
0000 0100 3a87 cf81 6ace ce5f f673 cfb9 0800 4500 0054 3bc0 4000 3f01 e8e1 0af4
0013 0af4 010d 0800 2e59 0014 002f 788e 50d5 0000 0000 0000 0000 0000 0000 0000
0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000
0000 0000 0000`;

/** An IPv4 + TCP/UDP packet; every field has a default. */
export interface PacketSpec {
  protocol?: number;
  src?: number;
  sport?: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  id?: number;
  ttl?: number;
  tos?: number;
  df?: boolean;
  fragment?: boolean;
  ipOptions?: number[];
  tcpOptions?: number[];
  payload: Uint8Array;
  l4Checksum?: 'full' | 'partial' | 'bad' | 'zero';
  udpLength?: number; // UDP length field, if not the true length
}

// Writes an IPv4 + TCP/UDP packet at buf[off..] with a plain RFC 1071 loop for
// the checksums (onesComplementSumNaive); returns its length.
export function writePacket(buf: Uint8Array, off: number, s: PacketSpec): number {
  const protocol = s.protocol ?? IP_PROTOCOL_TCP;
  const src = s.src ?? SRC;
  const ipOptions = s.ipOptions ?? [];
  const ihl = 20 + ipOptions.length;
  const l4HeaderLength = protocol === IP_PROTOCOL_TCP ? 20 + (s.tcpOptions ?? []).length : 8;
  const total = ihl + l4HeaderLength + s.payload.length;
  buf[off] = 0x40 | (ihl >> 2);
  buf[off + 1] = s.tos ?? 0;
  write16(buf, off + 2, total);
  write16(buf, off + 4, s.id ?? 0x1000);
  write16(buf, off + 6, (s.df ?? true ? 0x4000 : 0) | (s.fragment ? 0x2000 : 0));
  buf[off + 8] = s.ttl ?? 63;
  buf[off + 9] = protocol;
  write16(buf, off + 10, 0);
  write32(buf, off + 12, src);
  write32(buf, off + 16, DST);
  buf.set(ipOptions, off + 20);
  write16(buf, off + 10, ~onesComplementSumNaive(buf, off, ihl) & 0xffff);
  const l4 = off + ihl;
  write16(buf, l4, s.sport ?? 40000);
  write16(buf, l4 + 2, 5201);
  let field: number;
  if (protocol === IP_PROTOCOL_TCP) {
    write32(buf, l4 + 4, s.seq ?? 1000);
    write32(buf, l4 + 8, s.ack ?? 77);
    buf[l4 + 12] = (l4HeaderLength >> 2) << 4;
    buf[l4 + 13] = s.flags ?? TCP_FLAG_ACK;
    write16(buf, l4 + 14, s.window ?? 502);
    write16(buf, l4 + 18, 0);
    buf.set(s.tcpOptions ?? [], l4 + 20);
    field = l4 + 16;
  } else {
    write16(buf, l4 + 4, s.udpLength ?? l4HeaderLength + s.payload.length);
    field = l4 + 6;
  }
  write16(buf, field, 0);
  buf.set(s.payload, l4 + l4HeaderLength);
  const l4Length = total - ihl;
  const pseudo = pseudoHeaderSum(src, DST, protocol, l4Length);
  let checksum = s.l4Checksum === 'partial' ? pseudo : ~onesComplementSumNaive(buf, l4, l4Length, pseudo) & 0xffff;
  if (s.l4Checksum === 'bad') checksum ^= 0x0101;
  if (protocol === IP_PROTOCOL_UDP && checksum === 0) checksum = 0xffff; // 0 means "none" for UDP
  if (s.l4Checksum === 'zero') checksum = 0;
  write16(buf, field, checksum);
  return total;
}
