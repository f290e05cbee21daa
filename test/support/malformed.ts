// The datagrams the live injection test sends at a running agent's UDP port:
// each kind is the UDP payload (flannel's wire format: the bare inner IPv4
// packet), built from a valid packet with one thing wrong. Shared by the
// injector (runs inside a namespace) and the test (which names the kinds).
import { Rng, writePacket, fixIpChecksum, write16, IP_UDP, IP_ICMP, IP_TCP, randomTcpOptions } from './fuzz-kit.js';

export const MALFORMED_KINDS = [
  'truncated-ipv4', // fewer bytes than a header, or than the total length says
  'wrong-version', // version nibble 0, 5, 6, 15, …; checksum right
  'bad-ihl', // IHL < 5, or a header longer than the datagram; checksum right
  'total-length-lies', // total length longer than the datagram, or shorter than the header
  'bad-header-checksum',
  'ttl-expired', // TTL 1 or 0: must not be forwarded
  'dst-outside-subnet', // valid, but for another node's subnet or outside the cluster
  'empty', // a UDP datagram with 0 payload bytes
  'garbage-65000', // 65000 random bytes (sent as outer IP fragments, reassembled by the receiving kernel)
  'inner-source-unleased', // valid, but from a pod address no lease covers (anti-spoofing: spoofed-source)
] as const;
export type MalformedKind = (typeof MALFORMED_KINDS)[number];

export interface InnerAddresses {
  /** Inner source (a pod address of the sender's own subnet, for the malformed kinds). */
  src: number;
  /** Inner destination: a pod of the receiving node. */
  dst: number;
  /** For 'dst-outside-subnet': where else to send (other subnets, outside the cluster). */
  elsewhere: readonly number[];
  /** For 'inner-source-unleased': a source address no lease covers. */
  unleased: number;
}

/** A valid inner packet (UDP, ICMP echo or TCP with options) from `src` to `dst`; returns its length. */
export function writeValidInner(rng: Rng, buf: Uint8Array, off: number, src: number, dst: number, payload?: Uint8Array): number {
  const protocol = payload ? IP_UDP : rng.pick([IP_UDP, IP_ICMP, IP_TCP]);
  return writePacket(rng, buf, off, {
    src,
    dst,
    protocol,
    ttl: 64,
    id: rng.int(0x10000),
    df: true,
    srcPort: rng.range(30000, 60000),
    dstPort: payload ? 9 : rng.range(1, 65535),
    tcpOptions: protocol === IP_TCP ? randomTcpOptions(rng) : [],
    seq: rng.u32(),
    flags: 0x18,
    payloadLength: payload ? payload.length : rng.range(0, 1200),
    payloadByte: payload ? (i) => payload[i] : undefined,
  });
}

/** Writes one datagram payload of `kind` at buf[off..]; returns its length (0 for 'empty'). */
export function writeMalformed(rng: Rng, buf: Uint8Array, off: number, kind: MalformedKind, a: InnerAddresses): number {
  switch (kind) {
    case 'truncated-ipv4': {
      const len = writeValidInner(rng, buf, off, a.src, a.dst);
      // Below a header (too-short), or past the header but short of the total length (bad-total-length).
      return rng.chance(0.5) ? rng.range(1, 19) : rng.range(20, len - 1);
    }
    case 'wrong-version': {
      const len = writeValidInner(rng, buf, off, a.src, a.dst);
      buf[off] = (rng.pick([0, 1, 5, 6, 7, 15]) << 4) | (buf[off] & 0x0f);
      fixIpChecksum(buf, off, len);
      return len;
    }
    case 'bad-ihl': {
      const len = writeValidInner(rng, buf, off, a.src, a.dst);
      if (rng.chance(0.5)) {
        buf[off] = 0x40 | rng.range(0, 4); // shorter than the minimal header
        return len;
      }
      // A header that claims more bytes than the datagram has.
      const cut = rng.range(20, 39);
      buf[off] = 0x4f; // 60-byte header
      write16(buf, off + 2, cut);
      return cut;
    }
    case 'total-length-lies': {
      const len = writeValidInner(rng, buf, off, a.src, a.dst);
      write16(buf, off + 2, rng.chance(0.7) ? rng.range(len + 1, 0xffff) : rng.range(0, 19));
      fixIpChecksum(buf, off, len);
      return len;
    }
    case 'bad-header-checksum': {
      const len = writeValidInner(rng, buf, off, a.src, a.dst);
      buf[off + 10] ^= 1 << rng.int(8);
      return len;
    }
    case 'ttl-expired': {
      const len = writeValidInner(rng, buf, off, a.src, a.dst);
      buf[off + 8] = rng.chance(0.8) ? 1 : 0;
      fixIpChecksum(buf, off, len);
      return len;
    }
    case 'dst-outside-subnet':
      return writeValidInner(rng, buf, off, a.src, rng.pick(a.elsewhere));
    case 'inner-source-unleased':
      return writeValidInner(rng, buf, off, a.unleased, a.dst);
    case 'empty':
      return 0;
    case 'garbage-65000':
      rng.fill(buf, off, 65000);
      buf[off] = (rng.pick([0, 1, 5, 6, 8, 15]) << 4) | (buf[off] & 0x0f); // never version 4
      return 65000;
  }
}

