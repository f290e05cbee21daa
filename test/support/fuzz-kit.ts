// Building blocks for the fuzzer (test/unit/fuzz.test.ts) and the live
// injection test (test/integration/robustness.test.ts): a seeded PRNG, valid
// packets of every shape the data plane sees (ICMP echo, TCP with options,
// UDP, fragments, TSO/USO super-packets with their virtio_net_hdr, VXLAN
// frames), and mutations that start from them (bit flips, truncation, length
// fields that lie, bad IHL, options, fragments, 0 and 0xFFFF sizes).
//
// Checksums here are computed with a plain RFC 1071 loop of our own, not the
// code under test, so the fuzzer's oracle does not share its bugs.

// ---- PRNG ----

/**
 * sfc32 (Chris Doty-Humphrey's small fast counter), seeded through splitmix32.
 * reseed() is cheap and allocation-free, so every fuzz case can start from
 * its own state derived from (seed, target, case number) and be replayed alone.
 */
export class Rng {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;

  constructor(seed: number, stream = 0) {
    this.reseed(seed, stream);
  }

  reseed(seed: number, stream = 0): void {
    let s = (seed ^ Math.imul(stream, 0x9e3779b9)) >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next() | 1;
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, n), n ≤ 2^32. */
  int(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n);
  }

  /** Uniform in [lo, hi], both inclusive. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() < p * 0x100000000;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /**
   * Random bytes. A run of 64 or more (up to 192 KiB) is copied from a fixed pool of random
   * bytes at an offset this generator picks (one draw, a memcpy): payloads are
   * as random to the code under test, and the fuzzer spent a quarter of its
   * time drawing them four bytes at a time.
   */
  fill(buf: Uint8Array, off: number, len: number): void {
    const pool = randomPool();
    if (len >= 64 && len <= pool.length) {
      const from = this.int(pool.length - len + 1);
      buf.set(pool.subarray(from, from + len), off);
      return;
    }
    let i = off;
    const end = off + len;
    for (; i + 4 <= end; i += 4) {
      const x = this.u32();
      buf[i] = x;
      buf[i + 1] = x >>> 8;
      buf[i + 2] = x >>> 16;
      buf[i + 3] = x >>> 24;
    }
    for (; i < end; i++) buf[i] = this.u32();
  }
}

let pool: Uint8Array | undefined;

/** 192 KiB of random bytes from a fixed seed, made once: larger than any IPv4 packet, so any run fits at many offsets. */
function randomPool(): Uint8Array {
  if (pool) return pool;
  pool = new Uint8Array(192 * 1024);
  const rng = new Rng(0x9001);
  for (let i = 0; i < pool.length; i += 4) {
    const x = rng.u32();
    pool[i] = x;
    pool[i + 1] = x >>> 8;
    pool[i + 2] = x >>> 16;
    pool[i + 3] = x >>> 24;
  }
  return pool;
}

/** Seeded floats in [0, 1) (Math.random's shape) from Rng, for property tests that want reproducible draws. */
export function makeRandom(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.u32() / 0x100000000;
}

/** A seed from the environment (decimal or 0x hex), else the fixed default, so failures reproduce. */
export function seedFromEnv(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`${name}=${text} is not an integer in 0..2^32-1`);
  return n;
}

/** Stable 32-bit hash of a string (FNV-1a), to derive one stream per fuzz target. */
export function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

// ---- byte helpers ----

export const read16 = (b: Uint8Array, at: number): number => (b[at] << 8) | b[at + 1];
export const read32 = (b: Uint8Array, at: number): number =>
  ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;

export function write16(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 8;
  b[at + 1] = v;
}

export function write32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = v >>> 16;
  b[at + 2] = v >>> 8;
  b[at + 3] = v;
}

/** RFC 1071 one's complement sum, folded, not inverted: the oracle's own, independent of src/encap/checksum.ts. */
export function sum16(buf: Uint8Array, off: number, len: number, seed = 0): number {
  let s = seed;
  const end = off + len;
  let i = off;
  for (; i + 1 < end; i += 2) {
    s += (buf[i] << 8) | buf[i + 1];
    if (s > 0x3fffffff) s = (s & 0xffff) + (s >>> 16);
  }
  if (i < end) s += buf[i] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

export function pseudoSum(src: number, dst: number, protocol: number, l4Length: number): number {
  return sum16Words([src >>> 16, src & 0xffff, dst >>> 16, dst & 0xffff, protocol, l4Length]);
}

function sum16Words(words: number[]): number {
  let s = 0;
  for (const w of words) s += w;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Rewrites the IPv4 header checksum over `ihl` bytes (no-op when the header does not fit in `len`). */
export function fixIpChecksum(buf: Uint8Array, off: number, len: number): void {
  const ihl = (buf[off] & 0x0f) << 2;
  if (len < 20 || ihl < 20 || ihl > len) return;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  write16(buf, off + 10, ~sum16(buf, off, ihl) & 0xffff);
}

/** The L4 checksum over [ihl, total) verifies against the pseudo-header. */
export function l4ChecksumValid(buf: Uint8Array, off: number): boolean {
  const ihl = (buf[off] & 0x0f) << 2;
  const total = read16(buf, off + 2);
  const protocol = buf[off + 9];
  const l4 = total - ihl;
  return sum16(buf, off + ihl, l4, pseudoSum(read32(buf, off + 12), read32(buf, off + 16), protocol, l4)) === 0xffff;
}

export function hexDump(buf: Uint8Array, off: number, len: number, max = 96): string {
  const shown = Math.max(0, Math.min(len, max));
  const hex = Buffer.from(buf.buffer, buf.byteOffset + off, shown).toString('hex');
  return `${len} bytes: ${hex}${len > shown ? ` … (+${len - shown})` : ''}`;
}

// ---- valid packets ----

export const IP_ICMP = 1;
export const IP_TCP = 6;
export const IP_UDP = 17;

export interface Ipv4Spec {
  src: number;
  dst: number;
  protocol: number;
  ttl?: number;
  id?: number;
  tos?: number;
  df?: boolean;
  mf?: boolean;
  /** In 8-byte units. */
  fragmentOffset?: number;
  /** Raw option bytes; padded with EOL to a multiple of 4 (at most 40). */
  options?: number[];
}

/** Writes the IPv4 header (checksum left 0 for the caller to fix once the total is known); returns its length. */
export function writeIpv4Header(buf: Uint8Array, off: number, s: Ipv4Spec, totalLength: number): number {
  const options = s.options ?? [];
  const optionBytes = Math.min(40, (options.length + 3) & ~3);
  const ihl = 20 + optionBytes;
  buf[off] = 0x40 | (ihl >>> 2);
  buf[off + 1] = s.tos ?? 0;
  write16(buf, off + 2, totalLength);
  write16(buf, off + 4, s.id ?? 0);
  write16(buf, off + 6, (s.df ? 0x4000 : 0) | (s.mf ? 0x2000 : 0) | ((s.fragmentOffset ?? 0) & 0x1fff));
  buf[off + 8] = s.ttl ?? 64;
  buf[off + 9] = s.protocol;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  write32(buf, off + 12, s.src);
  write32(buf, off + 16, s.dst);
  for (let i = 0; i < optionBytes; i++) buf[off + 20 + i] = i < options.length ? options[i] : 0;
  return ihl;
}

/** IP options a router may see: NOP, router alert, record route, timestamp (each well-formed). */
export function randomIpOptions(rng: Rng): number[] {
  const out: number[] = [];
  const count = rng.range(1, 3);
  for (let k = 0; k < count && out.length < 36; k++) {
    switch (rng.int(4)) {
      case 0:
        out.push(1); // NOP
        break;
      case 1:
        out.push(0x94, 4, 0, 0); // router alert
        break;
      case 2: {
        const slots = rng.range(1, 3); // record route, empty slots
        out.push(7, 3 + 4 * slots, 4, ...new Array(4 * slots).fill(0));
        break;
      }
      default: {
        const slots = rng.range(1, 2); // timestamp, flags 0
        out.push(68, 4 + 4 * slots, 5, 0, ...new Array(4 * slots).fill(0));
      }
    }
  }
  return out.slice(0, 40);
}

/** TCP options of a real connection: MSS, window scale, SACK permitted/blocks, timestamps, NOP padding. */
export function randomTcpOptions(rng: Rng): number[] {
  const out: number[] = [];
  if (rng.chance(0.7)) out.push(1, 1, 8, 10, ...bytes32(rng.u32()), ...bytes32(rng.u32())); // timestamps
  if (rng.chance(0.2)) out.push(2, 4, 0x05, 0xb4); // MSS 1460
  if (rng.chance(0.2)) out.push(1, 3, 3, rng.int(15)); // window scale
  if (rng.chance(0.1)) out.push(1, 1, 4, 2); // SACK permitted
  if (rng.chance(0.15)) {
    const blocks = rng.range(1, 2);
    out.push(1, 1, 5, 2 + 8 * blocks);
    for (let b = 0; b < 2 * blocks; b++) out.push(...bytes32(rng.u32()));
  }
  while (out.length % 4 !== 0) out.push(1);
  return out.slice(0, 40);
}

function bytes32(v: number): number[] {
  return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

export interface L4Spec extends Ipv4Spec {
  srcPort?: number;
  dstPort?: number;
  seq?: number;
  ack?: number;
  /** TCP flags byte; default ACK. */
  flags?: number;
  window?: number;
  tcpOptions?: number[];
  payloadLength: number;
  /** How the payload is filled (default: random bytes from rng). */
  payloadByte?: (i: number) => number;
  /** full: a correct checksum; partial: the pseudo-header sum (CHECKSUM_PARTIAL, as in a TSO super-packet); zero (UDP: "none"). */
  l4Checksum?: 'full' | 'partial' | 'zero';
}

/** A complete IPv4 + TCP/UDP/ICMP-echo packet with correct checksums; returns its length. */
export function writePacket(rng: Rng, buf: Uint8Array, off: number, s: L4Spec): number {
  const protocol = s.protocol;
  const tcpOptions = protocol === IP_TCP ? s.tcpOptions ?? [] : [];
  const l4HeaderLength = protocol === IP_TCP ? 20 + tcpOptions.length : 8;
  const ihlGuess = 20 + Math.min(40, ((s.options ?? []).length + 3) & ~3);
  const total = ihlGuess + l4HeaderLength + s.payloadLength;
  const ihl = writeIpv4Header(buf, off, s, total);
  const l4 = off + ihl;
  const payload = l4 + l4HeaderLength;
  if (s.payloadByte) for (let i = 0; i < s.payloadLength; i++) buf[payload + i] = s.payloadByte(i);
  else rng.fill(buf, payload, s.payloadLength);
  if (protocol === IP_TCP) {
    write16(buf, l4, s.srcPort ?? 40000);
    write16(buf, l4 + 2, s.dstPort ?? 5201);
    write32(buf, l4 + 4, s.seq ?? 1000);
    write32(buf, l4 + 8, s.ack ?? 1);
    buf[l4 + 12] = (l4HeaderLength >>> 2) << 4;
    buf[l4 + 13] = s.flags ?? 0x10;
    write16(buf, l4 + 14, s.window ?? 502);
    write16(buf, l4 + 16, 0);
    write16(buf, l4 + 18, 0);
    for (let i = 0; i < tcpOptions.length; i++) buf[l4 + 20 + i] = tcpOptions[i];
  } else if (protocol === IP_UDP) {
    write16(buf, l4, s.srcPort ?? 40000);
    write16(buf, l4 + 2, s.dstPort ?? 5201);
    write16(buf, l4 + 4, 8 + s.payloadLength);
    write16(buf, l4 + 6, 0);
  } else {
    // ICMP echo request, id/seq from the ports
    buf[l4] = 8;
    buf[l4 + 1] = 0;
    write16(buf, l4 + 2, 0);
    write16(buf, l4 + 4, s.srcPort ?? 1);
    write16(buf, l4 + 6, s.dstPort ?? 1);
  }
  fixIpChecksum(buf, off, total);
  const l4Length = total - ihl;
  const checksumAt = protocol === IP_TCP ? l4 + 16 : protocol === IP_UDP ? l4 + 6 : l4 + 2;
  const mode = s.l4Checksum ?? 'full';
  if (protocol === IP_ICMP) {
    write16(buf, checksumAt, ~sum16(buf, l4, l4Length) & 0xffff);
  } else if (mode === 'partial') {
    write16(buf, checksumAt, pseudoSum(s.src, s.dst, protocol, l4Length));
  } else if (mode === 'full') {
    let c = ~sum16(buf, l4, l4Length, pseudoSum(s.src, s.dst, protocol, l4Length)) & 0xffff;
    if (c === 0 && protocol === IP_UDP) c = 0xffff;
    write16(buf, checksumAt, c);
  }
  return total;
}

/** 10.244.<node>.<host> */
export function podAddress(node: number, host: number): number {
  return ((10 << 24) | (244 << 16) | (node << 8) | host) >>> 0;
}

export type InnerKind = 'icmp-echo' | 'tcp' | 'tcp-options' | 'udp' | 'udp-nocsum' | 'fragment' | 'bare-header' | 'large';
export const INNER_KINDS: readonly InnerKind[] = ['icmp-echo', 'tcp', 'tcp-options', 'udp', 'udp-nocsum', 'fragment', 'bare-header', 'large'];

/** One valid inner packet of `kind` from pod 10.244.<srcNode>.x to 10.244.<dstNode>.y; returns its length. */
export function writeInnerPacket(rng: Rng, buf: Uint8Array, off: number, kind: InnerKind, srcNode = 1, dstNode = 2, maxPayload = 1400): number {
  const base: Ipv4Spec = {
    src: podAddress(srcNode, rng.range(2, 254)),
    dst: podAddress(dstNode, rng.range(2, 254)),
    protocol: IP_TCP,
    ttl: rng.chance(0.9) ? 64 : rng.range(0, 255),
    id: rng.int(0x10000),
    df: rng.chance(0.7),
    tos: rng.chance(0.9) ? 0 : rng.int(256),
  };
  const ports = { srcPort: rng.range(1024, 65535), dstPort: rng.pick([22, 80, 443, 5201, 8080, rng.range(1, 65535)]) };
  switch (kind) {
    case 'icmp-echo':
      return writePacket(rng, buf, off, { ...base, ...ports, protocol: IP_ICMP, payloadLength: rng.int(Math.min(maxPayload, 1444) + 1) });
    case 'tcp':
    case 'tcp-options':
      return writePacket(rng, buf, off, {
        ...base,
        ...ports,
        protocol: IP_TCP,
        options: kind === 'tcp-options' && rng.chance(0.5) ? randomIpOptions(rng) : [],
        tcpOptions: kind === 'tcp-options' ? randomTcpOptions(rng) : [],
        seq: rng.u32(),
        ack: rng.u32(),
        flags: rng.pick([0x10, 0x10, 0x18, 0x02, 0x12, 0x11, 0x04, 0x19, 0x50, 0x90]),
        window: rng.int(0x10000),
        payloadLength: rng.chance(0.2) ? 0 : rng.int(Math.min(maxPayload, 1380) + 1),
      });
    case 'udp':
    case 'udp-nocsum':
      return writePacket(rng, buf, off, {
        ...base,
        ...ports,
        protocol: IP_UDP,
        options: rng.chance(0.1) ? randomIpOptions(rng) : [],
        payloadLength: rng.int(Math.min(maxPayload, 1400) + 1),
        l4Checksum: kind === 'udp' ? 'full' : 'zero',
      });
    case 'fragment': {
      const first = rng.chance(0.4);
      return writePacket(rng, buf, off, {
        ...base,
        ...ports,
        protocol: rng.pick([IP_UDP, IP_ICMP, IP_TCP]),
        df: false,
        mf: first || rng.chance(0.5),
        fragmentOffset: first ? 0 : rng.range(1, 0x1fff),
        payloadLength: 8 * rng.range(1, Math.max(1, Math.floor(maxPayload / 8))),
      });
    }
    case 'bare-header': {
      const total = 20 + (rng.chance(0.3) ? rng.int(4) : 0);
      writeIpv4Header(buf, off, { ...base, protocol: rng.int(256) }, total);
      rng.fill(buf, off + 20, total - 20);
      fixIpChecksum(buf, off, total);
      return total;
    }
    case 'large': {
      // Jumbo and maximum-size packets: legal IPv4, larger than any MTU here.
      const payloadLength = rng.pick([8972, 16000, 65535 - 28, 65535 - 20 - 60 - 40, rng.range(1500, 65535 - 28)]);
      return writePacket(rng, buf, off, { ...base, ...ports, protocol: IP_UDP, payloadLength, l4Checksum: 'zero' });
    }
  }
}

// ---- super-packets (TUN reads with IFF_VNET_HDR) ----

export interface VirtioFields {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** A TSO (TCP) or USO (UDP) super-packet as the kernel hands it to a TUN reader: partial L4 checksum, NEEDS_CSUM. */
export function writeSuperPacket(rng: Rng, buf: Uint8Array, off: number, maxTotal: number, vnet: VirtioFields): number {
  const tcp = rng.chance(0.75);
  const mss = rng.chance(0.8) ? rng.range(1200, 1448) : rng.range(8, 1448);
  const ipOptions = rng.chance(0.1) ? randomIpOptions(rng) : [];
  const tcpOptions = tcp ? randomTcpOptions(rng) : [];
  const headerRoom = 20 + ((ipOptions.length + 3) & ~3) + (tcp ? 20 + tcpOptions.length : 8);
  const maxPayload = Math.max(0, Math.min(maxTotal, 65535) - headerRoom);
  const segments = rng.chance(0.2) ? 1 : rng.range(2, 46);
  const payloadLength = Math.min(maxPayload, rng.chance(0.5) ? segments * mss : rng.range(1, segments * mss));
  const length = writePacket(rng, buf, off, {
    src: podAddress(1, rng.range(2, 254)),
    dst: podAddress(2, rng.range(2, 254)),
    protocol: tcp ? IP_TCP : IP_UDP,
    id: rng.int(0x10000),
    df: true,
    options: ipOptions,
    tcpOptions,
    seq: rng.u32(),
    ack: rng.u32(),
    flags: rng.pick([0x10, 0x18, 0x19, 0x90, 0x50]),
    payloadLength,
    payloadByte: undefined,
    l4Checksum: 'partial',
  });
  const ihl = (buf[off] & 0x0f) << 2;
  vnet.flags = 1; // NEEDS_CSUM
  vnet.gsoType = tcp ? (rng.chance(0.1) ? 0x81 : 1) : 5; // TCPV4 (maybe with ECN), UDP_L4
  vnet.hdrLen = ihl + (tcp ? 20 + tcpOptions.length : 8);
  vnet.gsoSize = mss;
  vnet.csumStart = ihl;
  vnet.csumOffset = tcp ? 16 : 6;
  return length;
}

// ---- VXLAN frames ----

/** 8-byte VXLAN header + 14-byte Ethernet header in front of an inner packet already at off + 22. */
export function writeVxlanHeaders(buf: Uint8Array, off: number, vni: number, dstMac: Uint8Array, srcMac: Uint8Array, ethertype = 0x0800): void {
  buf[off] = 0x08;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = vni >>> 16;
  buf[off + 5] = vni >>> 8;
  buf[off + 6] = vni;
  buf[off + 7] = 0;
  for (let i = 0; i < 6; i++) buf[off + 8 + i] = dstMac[i];
  for (let i = 0; i < 6; i++) buf[off + 14 + i] = srcMac[i];
  buf[off + 20] = ethertype >>> 8;
  buf[off + 21] = ethertype;
}

// ---- mutations ----

/** Values that sit on the edges of what a length, version or size field may hold. */
const INTERESTING_BYTES = [0x00, 0x01, 0x04, 0x05, 0x0f, 0x40, 0x45, 0x46, 0x4f, 0x50, 0x7f, 0x80, 0xfe, 0xff];

/**
 * Mutates the packet at buf[off, off+len) in place (room up to `capacity`
 * bytes from off) with 1..4 random, structure-aware edits; returns the new
 * length. `ipAt` is where the IPv4 header to aim at starts (relative to off:
 * 0 for a bare packet, 22 for a VXLAN frame, 28 for an outer datagram's
 * inner packet). With `trace`, each edit is described there (for replays).
 */
export function mutatePacket(rng: Rng, buf: Uint8Array, off: number, len: number, capacity: number, ipAt = 0, trace: string[] | null = null): number {
  const edits = rng.range(1, 4);
  for (let e = 0; e < edits; e++) {
    const ip = off + ipAt;
    const ihl = (buf[ip] & 0x0f) << 2;
    const op = rng.int(16);
    switch (op) {
      case 0: {
        // bit flips, mostly in the headers
        const flips = rng.range(1, 8);
        const span = Math.max(1, rng.chance(0.8) ? Math.min(len, ipAt + 64) : len);
        for (let k = 0; k < flips && len > 0; k++) {
          const at = rng.int(Math.min(span, len));
          const bit = rng.int(8);
          buf[off + at] ^= 1 << bit;
          trace?.push(`flip byte ${at} bit ${bit}`);
        }
        break;
      }
      case 1: {
        // truncate, often at a boundary that matters
        const cuts = [0, 1, ipAt + 19, ipAt + 20, ipAt + ihl - 1, ipAt + ihl, ipAt + ihl + 7, len - 1, rng.int(len + 1)];
        const to = Math.max(0, Math.min(len, rng.pick(cuts)));
        trace?.push(`truncate ${len} -> ${to}`);
        len = to;
        break;
      }
      case 2: {
        // trailing bytes (link padding, garbage)
        const extra = Math.min(capacity - len, rng.pick([1, 3, 16, 64, rng.range(1, 2048)]));
        rng.fill(buf, off + len, extra);
        trace?.push(`append ${extra}`);
        len += extra;
        break;
      }
      case 3: {
        const v = rng.int(16);
        buf[ip] = (v << 4) | (buf[ip] & 0x0f);
        trace?.push(`version ${v}`);
        break;
      }
      case 4: {
        const v = rng.int(16);
        buf[ip] = (buf[ip] & 0xf0) | v;
        trace?.push(`ihl ${v}`);
        break;
      }
      case 5: {
        // total length lies
        const inner = len - ipAt;
        const v = rng.pick([0, 1, 19, 20, ihl - 1, ihl, inner - 1, inner + 1, inner + 8, 0xffff, rng.int(0x10000)]) & 0xffff;
        write16(buf, ip + 2, v);
        trace?.push(`total length ${v}`);
        break;
      }
      case 6: {
        const v = rng.pick([0x2000, 0x0001, 0x1fff, 0x3fff, 0x8000, 0x4000, rng.int(0x10000)]);
        write16(buf, ip + 6, v);
        trace?.push(`flags/fragment 0x${v.toString(16)}`);
        break;
      }
      case 7: {
        const v = rng.pick([0, 1, 2, 255]);
        buf[ip + 8] = v;
        trace?.push(`ttl ${v}`);
        break;
      }
      case 8: {
        const v = rng.pick([0, 1, 6, 17, 41, 47, 50, 132, 255]);
        buf[ip + 9] = v;
        trace?.push(`protocol ${v}`);
        break;
      }
      case 9: {
        // the header checksum, wrong or zero
        const v = rng.chance(0.5) ? 0 : rng.int(0x10000);
        write16(buf, ip + 10, v);
        trace?.push(`ip checksum 0x${v.toString(16)}`);
        break;
      }
      case 10: {
        // transport header fields: TCP data offset, UDP length
        const l4 = ip + Math.max(20, ihl);
        if (buf[ip + 9] === IP_TCP) {
          const v = rng.int(16);
          buf[l4 + 12] = (v << 4) | (buf[l4 + 12] & 0x0f);
          trace?.push(`tcp data offset ${v}`);
        } else {
          const v = rng.pick([0, 7, 8, 9, 0xffff, rng.int(0x10000)]);
          write16(buf, l4 + 4, v);
          trace?.push(`udp length ${v}`);
        }
        break;
      }
      case 11: {
        const at = rng.int(Math.max(1, Math.min(len, ipAt + 60)));
        const v = rng.pick(INTERESTING_BYTES);
        buf[off + at] = v;
        trace?.push(`byte ${at} = 0x${v.toString(16)}`);
        break;
      }
      case 12: {
        // a random run of bytes overwritten
        const at = rng.int(Math.max(1, len));
        const n = Math.min(len - at, rng.range(1, 32));
        rng.fill(buf, off + at, n);
        trace?.push(`random ${n} at ${at}`);
        break;
      }
      case 13: {
        // sizes at the extremes: empty, or a full 64 KiB of garbage
        if (rng.chance(0.5) || capacity < 0xffff || len >= 0xffff) {
          trace?.push(`size 0`);
          len = 0;
        } else {
          rng.fill(buf, off + len, 0xffff - len);
          trace?.push(`size 0xffff`);
          len = 0xffff;
        }
        break;
      }
      case 14: {
        // duplicate a span (options repeated, headers doubled)
        if (len > 2) {
          const from = rng.int(len - 1);
          const n = Math.min(rng.range(1, 64), len - from, capacity - len);
          buf.copyWithin(off + from + n, off + from, off + len);
          len += n;
          trace?.push(`duplicate ${n} at ${from}`);
        }
        break;
      }
      default: {
        // IP options region garbage, then (maybe) a correct checksum below
        if (ihl > 20 && len >= ipAt + ihl) {
          rng.fill(buf, ip + 20, ihl - 20);
          trace?.push(`garbage options`);
        }
      }
    }
  }
  // Half the time the header checksum is made right again, so the checks behind it are reached.
  if (len - ipAt >= 20 && rng.chance(0.5)) {
    fixIpChecksum(buf, off + ipAt, len - ipAt);
    trace?.push('fix ip checksum');
  }
  return len;
}

// ---- control-plane texts ----

const TEXT_TOKENS = [
  '=', '==', '"', "'", ' ', '\t', '\r', '\n', '\r\n', '#', '/', '-', '.', ',', ':', '{', '}', '[', ']', '\\', '\\u0000', '\u0000',
  '0', '1', '24', '32', '33', '255', '256', '-1', '1e3', '1e400', '0x10', '08', '65535', '65536', '99999999999999999999',
  'true', 'false', 'null', 'NaN', '__proto__', 'constructor', 'FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ',
  'FLANNEL_IPV6_NETWORK', 'PublicIP', 'BackendType', 'BackendData', 'PublicIPv6', 'udp', 'vxlan', '10.244.0.0', '10.244.1.1/24',
  '0.0.0.0/0', '255.255.255.255', '10.244.2.0-24', '&fc00::-64', 'é', '😀', '\ud800', '\ufeff',
];

/** Text mutations for the subnet and leases files: tokens, deletions, duplications, case flips, deep nesting. */
export function mutateText(rng: Rng, text: string, corpus: readonly string[]): string {
  const edits = rng.range(1, 4);
  for (let e = 0; e < edits; e++) {
    const at = rng.int(text.length + 1);
    switch (rng.int(9)) {
      case 0:
        text = text.slice(0, at) + rng.pick(TEXT_TOKENS) + text.slice(at);
        break;
      case 1:
        text = text.slice(0, at) + text.slice(at + rng.range(1, 16));
        break;
      case 2: {
        const n = rng.range(1, 40);
        text = text.slice(0, at) + text.slice(at, at + n) + text.slice(at);
        break;
      }
      case 3: {
        const c = text.charCodeAt(at);
        if (!Number.isNaN(c)) text = text.slice(0, at) + String.fromCharCode(c ^ (1 << rng.int(7))) + text.slice(at + 1);
        break;
      }
      case 4: {
        // a line from another valid file
        const other = rng.pick(corpus).split('\n');
        text = text.slice(0, at) + rng.pick(other) + '\n' + text.slice(at);
        break;
      }
      case 5:
        text = text.slice(0, at);
        break;
      case 6: {
        // swap case of a run
        const n = rng.range(1, 12);
        const run = text.slice(at, at + n);
        text = text.slice(0, at) + (rng.chance(0.5) ? run.toUpperCase() : run.toLowerCase()) + text.slice(at + n);
        break;
      }
      case 7: {
        // deep nesting, as a hostile or broken generator could write it
        const depth = rng.pick([10, 100, 1000, 10_000, 100_000]);
        const open = rng.chance(0.5) ? '[' : '{"a":';
        const close = open === '[' ? ']' : '}';
        text = text.slice(0, at) + open.repeat(depth) + (rng.chance(0.8) ? close.repeat(depth) : '') + text.slice(at);
        break;
      }
      default: {
        // a number at the edge
        text = text.slice(0, at) + rng.pick(['-0', '0.5', '1e-400', String(2 ** 53 + 1), String(rng.u32()), '300', '1472']) + text.slice(at);
      }
    }
  }
  return text;
}

/** A random JSON value, for parseLeaseAttrs: mostly lease-shaped objects with one thing wrong. */
export function randomJsonValue(rng: Rng, depth = 0): unknown {
  const roll = rng.int(depth > 2 ? 6 : 9);
  switch (roll) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1.5, 2 ** 53, NaN, Infinity, -0, rng.u32()]);
    case 3:
      return rng.pick(['', 'udp', '192.0.2.2', '192.0.2.256', ' 192.0.2.2', '192.0.2.2 ', '::1', '0x7f.1', '1.2.3', '01.2.3.4', '1.2.3.4.5', '😀']);
    case 4:
    case 5:
      return leaseShaped(rng, depth);
    case 6:
      return Array.from({ length: rng.int(4) }, () => randomJsonValue(rng, depth + 1));
    default: {
      const obj: Record<string, unknown> = {};
      const n = rng.int(5);
      for (let i = 0; i < n; i++) obj[rng.pick(['PublicIP', 'publicip', 'BackendType', 'BackendData', 'PublicIPv6', 'BackendV6Data', '__proto__', 'x', ''])] = randomJsonValue(rng, depth + 1);
      return obj;
    }
  }
}

function leaseShaped(rng: Rng, depth: number): Record<string, unknown> {
  const lease: Record<string, unknown> = { PublicIP: `192.0.2.${rng.range(1, 254)}`, BackendType: rng.pick(['udp', 'vxlan', 'host-gw']) };
  if (rng.chance(0.3)) lease.BackendData = rng.chance(0.5) ? { VNI: 1, VtepMAC: '0e:66:75:00:00:02' } : randomJsonValue(rng, depth + 1);
  if (rng.chance(0.2)) lease.PublicIPv6 = rng.chance(0.5) ? null : randomJsonValue(rng, depth + 1);
  if (rng.chance(0.5)) {
    const key = rng.pick(['PublicIP', 'BackendType', 'BackendData', 'PublicIPv6', 'Publicip', 'Extra']);
    if (rng.chance(0.3)) delete lease[key];
    else lease[key] = randomJsonValue(rng, depth + 1);
  }
  return lease;
}
