// The longest-prefix-match table the data-plane workers consult per packet:
// destination pod IP → lease index → public IP of the node to tunnel to.
//
// Built on the main thread from a lease snapshot, posted to every worker
// (structured clone), and wrapped there in a LeaseTable. So the built form is
// plain data only: numbers and typed arrays, no Maps, no class instances. A
// table is never modified; a new lease snapshot means a new table swapped in
// whole, so a worker never sees a half-updated one.
//
// Structure: one open-addressing hash region per distinct prefix length,
// keyed by the subnet's network address (addr & mask), linear probing, load
// factor <= 1/2, slots holding lease indexes (-1 = empty). lookup() walks the
// prefix lengths present, longest first, and probes that length's region
// with addr & mask; the first hit is the longest match.
//
// Cost: per prefix length present, one AND, one multiply-shift hash and
// ~1.5 probes expected (~2.5 on a miss). flannel hands out subnets of one
// length (SubnetLen), so the usual lookup is one region whatever the number
// of leases: O(1) for 10 or 10 000 leases, no allocation. Worst case is 33
// regions (every length from /32 to /0 present). Memory: 9 bytes per lease
// plus 16 to 32 bytes of hash slots per lease (prefix and public-IP regions).
//
// Index i of the table is leases[i] of the array it was built from, so the
// main thread can map an index back to the full Lease (backend data, key).
//
// IPv6 (dual-stack leases, issue 24): a second set of regions of the same
// kind, keyed by the 128-bit network as four int32 words; lookup6() reads the
// destination straight from the packet. flannel's IPv6SubnetLen is one
// length too, so it is one region and ~1.5 probes of four word compares. An
// IPv6-only lease (key "0.0.0.0-0&…") is left out of the IPv4 regions: its
// zero IPv4 half would otherwise match every IPv4 address. Memory: 33 bytes
// per lease more (network, prefix length, PublicIPv6) plus 8 to 16 bytes of
// IPv6 hash slots.

import type { Lease } from './lease.js';
import { formatIPv4, prefixMask } from './ipv4-address.js';
import { formatIPv6 } from './ipv6-address.js';

export interface LeaseTableSnapshot {
  /** increases with every snapshot, so workers and logs can tell which table is in force */
  version: number;
  leaseCount: number;

  // Per lease, indexed like the Lease[] the table was built from.
  networks: Uint32Array;
  prefixLengths: Uint8Array;
  publicIps: Uint32Array;
  /**
   * VXLAN: each lease's VTEP MAC (BackendData.VtepMAC), 6 bytes per lease,
   * all zero where the lease has none; the encapsulation writes it as the
   * inner frame's destination.
   */
  vtepMacs: Uint8Array;
  /** The same from BackendV6Data.VtepMAC: the destination of IPv6 inner frames. */
  vtepMacs6: Uint8Array;

  // Per distinct prefix length, longest first.
  lengthCount: number;
  lengthMasks: Uint32Array;
  /** 32 - log2(region size): the multiply-shift hash keeps the top bits */
  lengthHashShifts: Uint8Array;
  /** region size - 1 */
  lengthSlotMasks: Uint32Array;
  /** where each length's region starts in prefixSlots */
  lengthSlotOffsets: Uint32Array;
  /** all regions back to back; lease index or -1 */
  prefixSlots: Int32Array;

  // Public IP → first lease with that public IP, same scheme.
  publicIpHashShift: number;
  publicIpSlotMask: number;
  publicIpSlots: Int32Array;

  // IPv6, per lease: the network as 4 big-endian int32 words, its prefix
  // length (NO_IPV6 when the lease has no IPv6 subnet), PublicIPv6 (16 bytes,
  // all zero when absent).
  networks6: Int32Array;
  prefixLengths6: Uint8Array;
  publicIpv6s: Uint8Array;
  // Per distinct IPv6 prefix length, longest first: 4 mask words each, and the region as above.
  length6Count: number;
  length6Masks: Int32Array;
  length6HashShifts: Uint8Array;
  length6SlotMasks: Uint32Array;
  length6SlotOffsets: Uint32Array;
  prefix6Slots: Int32Array;
  // The IPv6 underlay: each lease's PublicIPv6 as 4 big-endian int32 words
  // (all zero when absent), and PublicIPv6 → first lease with it, hashed as the IPv6 prefixes.
  publicIpv6Words: Int32Array;
  publicIpv6HashShift: number;
  publicIpv6SlotMask: number;
  publicIpv6Slots: Int32Array;
}

/** prefixLengths6 of a lease without an IPv6 subnet. */
export const NO_IPV6 = 255;

// Fibonacci hashing (Knuth): multiply by 2^32/φ and keep the top bits. The top
// bits depend on every key bit, which matters because subnet networks differ
// only in their middle bits (10.244.X.0).
const HASH_MULTIPLIER = 0x9e3779b1;

/** The 128-bit key's hash: every word mixed in, the top bits kept (as the IPv4 one). */
function hash6(w0: number, w1: number, w2: number, w3: number, shift: number): number {
  let h = Math.imul(w0, HASH_MULTIPLIER) ^ w1;
  h = Math.imul(h, HASH_MULTIPLIER) ^ w2;
  h = Math.imul(h, HASH_MULTIPLIER) ^ w3;
  return Math.imul(h ^ (h >>> 16), HASH_MULTIPLIER) >>> shift;
}

/** Word w (0..3) of a /len mask, as int32. */
function maskWord6(len: number, w: number): number {
  const bits = Math.min(32, Math.max(0, len - 32 * w));
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) | 0;
}

function regionBits(entries: number): number {
  let bits = 1; // at least 2 slots: a shift of 32 would be a shift of 0 in JS
  while (1 << bits < entries * 2) bits++;
  return bits;
}

/** The VtepMAC of flannel's vxlan BackendData ({"VNI":1,"VtepMAC":"aa:bb:…"}), if well formed. */
export function vtepMacOf(backendData: unknown): Uint8Array | undefined {
  const text = (backendData as { VtepMAC?: unknown } | null)?.VtepMAC;
  if (typeof text !== 'string' || !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(text)) return undefined;
  return Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)));
}

export function buildLeaseTableSnapshot(leases: readonly Lease[], version: number): LeaseTableSnapshot {
  const leaseCount = leases.length;
  const networks = new Uint32Array(leaseCount);
  const prefixLengths = new Uint8Array(leaseCount);
  const publicIps = new Uint32Array(leaseCount);
  const vtepMacs = new Uint8Array(6 * leaseCount);
  const vtepMacs6 = new Uint8Array(6 * leaseCount);
  const countByLength = new Array<number>(33).fill(0);

  for (let i = 0; i < leaseCount; i++) {
    const { subnet, publicIp } = leases[i];
    const mask = prefixMask(subnet.prefixLength); // throws on a bad length
    networks[i] = (subnet.network & mask) >>> 0;
    prefixLengths[i] = subnet.prefixLength;
    publicIps[i] = publicIp >>> 0;
    const mac = vtepMacOf(leases[i].backendData);
    if (mac) vtepMacs.set(mac, 6 * i);
    const mac6 = vtepMacOf(leases[i].backendV6Data);
    if (mac6) vtepMacs6.set(mac6, 6 * i);
    if (leases[i].ipv6Only !== true) countByLength[subnet.prefixLength]++;
  }

  const lengths: number[] = [];
  for (let len = 32; len >= 0; len--) if (countByLength[len] > 0) lengths.push(len);
  const lengthCount = lengths.length;
  const lengthMasks = new Uint32Array(lengthCount);
  const lengthHashShifts = new Uint8Array(lengthCount);
  const lengthSlotMasks = new Uint32Array(lengthCount);
  const lengthSlotOffsets = new Uint32Array(lengthCount);
  const regionOfLength = new Array<number>(33).fill(-1);
  let totalSlots = 0;
  for (let r = 0; r < lengthCount; r++) {
    const bits = regionBits(countByLength[lengths[r]]);
    lengthMasks[r] = prefixMask(lengths[r]);
    lengthHashShifts[r] = 32 - bits;
    lengthSlotMasks[r] = (1 << bits) - 1;
    lengthSlotOffsets[r] = totalSlots;
    regionOfLength[lengths[r]] = r;
    totalSlots += 1 << bits;
  }

  const prefixSlots = new Int32Array(totalSlots).fill(-1);
  for (let i = 0; i < leaseCount; i++) {
    if (leases[i].ipv6Only === true) continue;
    const r = regionOfLength[prefixLengths[i]];
    const base = lengthSlotOffsets[r];
    const slotMask = lengthSlotMasks[r];
    let slot = Math.imul(networks[i], HASH_MULTIPLIER) >>> lengthHashShifts[r];
    while (prefixSlots[base + slot] !== -1) {
      if (networks[prefixSlots[base + slot]] === networks[i]) {
        // Two leases for one subnet: the data plane could only pick one at random.
        throw new Error(`two leases for subnet ${formatIPv4(networks[i])}/${prefixLengths[i]} (entries ${prefixSlots[base + slot]} and ${i})`);
      }
      slot = (slot + 1) & slotMask;
    }
    prefixSlots[base + slot] = i;
  }

  const publicIpBits = regionBits(leaseCount);
  const publicIpHashShift = 32 - publicIpBits;
  const publicIpSlotMask = (1 << publicIpBits) - 1;
  const publicIpSlots = new Int32Array(1 << publicIpBits).fill(-1);
  for (let i = 0; i < leaseCount; i++) {
    let slot = Math.imul(publicIps[i], HASH_MULTIPLIER) >>> publicIpHashShift;
    let taken = false;
    while (publicIpSlots[slot] !== -1) {
      // One node can hold several leases; the first one stands for it.
      if (publicIps[publicIpSlots[slot]] === publicIps[i]) {
        taken = true;
        break;
      }
      slot = (slot + 1) & publicIpSlotMask;
    }
    if (!taken) publicIpSlots[slot] = i;
  }

  const v6 = buildIpv6Regions(leases);

  return {
    ...v6,
    version,
    leaseCount,
    networks,
    prefixLengths,
    publicIps,
    vtepMacs,
    vtepMacs6,
    lengthCount,
    lengthMasks,
    lengthHashShifts,
    lengthSlotMasks,
    lengthSlotOffsets,
    prefixSlots,
    publicIpHashShift,
    publicIpSlotMask,
    publicIpSlots,
  };
}

function buildIpv6Regions(leases: readonly Lease[]) {
  const leaseCount = leases.length;
  const networks6 = new Int32Array(4 * leaseCount);
  const prefixLengths6 = new Uint8Array(leaseCount).fill(NO_IPV6);
  const publicIpv6s = new Uint8Array(16 * leaseCount);
  const countByLength = new Array<number>(129).fill(0);
  for (let i = 0; i < leaseCount; i++) {
    const { ipv6Subnet, publicIpv6 } = leases[i];
    if (publicIpv6 !== undefined) publicIpv6s.set(publicIpv6, 16 * i);
    if (ipv6Subnet === undefined) continue;
    const len = ipv6Subnet.prefixLength;
    if (!Number.isInteger(len) || len < 0 || len > 128) throw new Error(`IPv6 prefix length ${len} is out of range (0..128)`);
    const n = ipv6Subnet.network;
    for (let w = 0; w < 4; w++) {
      const word = (n[4 * w] << 24) | (n[4 * w + 1] << 16) | (n[4 * w + 2] << 8) | n[4 * w + 3];
      networks6[4 * i + w] = word & maskWord6(len, w);
    }
    prefixLengths6[i] = len;
    countByLength[len]++;
  }
  const lengths: number[] = [];
  for (let len = 128; len >= 0; len--) if (countByLength[len] > 0) lengths.push(len);
  const length6Count = lengths.length;
  const length6Masks = new Int32Array(4 * length6Count);
  const length6HashShifts = new Uint8Array(length6Count);
  const length6SlotMasks = new Uint32Array(length6Count);
  const length6SlotOffsets = new Uint32Array(length6Count);
  const regionOfLength = new Array<number>(129).fill(-1);
  let totalSlots = 0;
  for (let r = 0; r < length6Count; r++) {
    const bits = regionBits(countByLength[lengths[r]]);
    for (let w = 0; w < 4; w++) length6Masks[4 * r + w] = maskWord6(lengths[r], w);
    length6HashShifts[r] = 32 - bits;
    length6SlotMasks[r] = (1 << bits) - 1;
    length6SlotOffsets[r] = totalSlots;
    regionOfLength[lengths[r]] = r;
    totalSlots += 1 << bits;
  }
  const prefix6Slots = new Int32Array(totalSlots).fill(-1);
  for (let i = 0; i < leaseCount; i++) {
    if (prefixLengths6[i] === NO_IPV6) continue;
    const r = regionOfLength[prefixLengths6[i]];
    const base = length6SlotOffsets[r];
    const slotMask = length6SlotMasks[r];
    const k = 4 * i;
    let slot = hash6(networks6[k], networks6[k + 1], networks6[k + 2], networks6[k + 3], length6HashShifts[r]);
    while (prefix6Slots[base + slot] !== -1) {
      const j = 4 * prefix6Slots[base + slot];
      if (networks6[j] === networks6[k] && networks6[j + 1] === networks6[k + 1] && networks6[j + 2] === networks6[k + 2] && networks6[j + 3] === networks6[k + 3]) {
        const subnet = leases[i].ipv6Subnet!;
        throw new Error(`two leases for IPv6 subnet ${formatIPv6(subnet.network)}/${subnet.prefixLength} (entries ${prefix6Slots[base + slot]} and ${i})`);
      }
      slot = (slot + 1) & slotMask;
    }
    prefix6Slots[base + slot] = i;
  }
  const publicIpv6Words = new Int32Array(4 * leaseCount);
  let withPublicIpv6 = 0;
  for (let i = 0; i < leaseCount; i++) {
    const b = publicIpv6s;
    for (let w = 0; w < 4; w++) {
      const o = 16 * i + 4 * w;
      publicIpv6Words[4 * i + w] = (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
    }
    if (leases[i].publicIpv6 !== undefined) withPublicIpv6++;
  }
  const publicIpv6Bits = regionBits(withPublicIpv6);
  const publicIpv6HashShift = 32 - publicIpv6Bits;
  const publicIpv6SlotMask = (1 << publicIpv6Bits) - 1;
  const publicIpv6Slots = new Int32Array(1 << publicIpv6Bits).fill(-1);
  for (let i = 0; i < leaseCount; i++) {
    if (leases[i].publicIpv6 === undefined) continue;
    const k = 4 * i;
    let slot = hash6(publicIpv6Words[k], publicIpv6Words[k + 1], publicIpv6Words[k + 2], publicIpv6Words[k + 3], publicIpv6HashShift);
    let taken = false;
    while (publicIpv6Slots[slot] !== -1) {
      const j = 4 * publicIpv6Slots[slot];
      // One node can hold several leases; the first one stands for it.
      if (publicIpv6Words[j] === publicIpv6Words[k] && publicIpv6Words[j + 1] === publicIpv6Words[k + 1] && publicIpv6Words[j + 2] === publicIpv6Words[k + 2] && publicIpv6Words[j + 3] === publicIpv6Words[k + 3]) {
        taken = true;
        break;
      }
      slot = (slot + 1) & publicIpv6SlotMask;
    }
    if (!taken) publicIpv6Slots[slot] = i;
  }
  return {
    publicIpv6Words,
    publicIpv6HashShift,
    publicIpv6SlotMask,
    publicIpv6Slots,
    networks6,
    prefixLengths6,
    publicIpv6s,
    length6Count,
    length6Masks,
    length6HashShifts,
    length6SlotMasks,
    length6SlotOffsets,
    prefix6Slots,
  };
}

/** The worker-side view of a snapshot. Holds no state of its own beyond the snapshot's arrays. */
export class LeaseTable {
  readonly version: number;
  readonly leaseCount: number;
  private readonly networks: Uint32Array;
  private readonly prefixLengths: Uint8Array;
  /**
   * The public IPs as signed 32-bit integers (same bits as the snapshot's
   * Uint32Array): underlay addresses are often ≥ 2^31 (192.0.2.x), and a
   * uint32 that large is a heap-allocated number whenever it crosses a
   * function call in V8; an int32 never is. Per packet that was ~34 bytes of
   * garbage (measured with --trace-gc), so the hot path uses int32 addresses.
   */
  private readonly publicIps: Int32Array;
  /** 6 bytes per lease: the peer VTEP MAC (VXLAN), read by the encapsulation. */
  readonly vtepMacs: Uint8Array;
  /** 6 bytes per lease: the peer's IPv6 VTEP MAC (BackendV6Data), for IPv6 inner frames. */
  readonly vtepMacs6: Uint8Array;
  private readonly lengthCount: number;
  private readonly lengthMasks: Uint32Array;
  private readonly lengthHashShifts: Uint8Array;
  private readonly lengthSlotMasks: Uint32Array;
  private readonly lengthSlotOffsets: Uint32Array;
  private readonly prefixSlots: Int32Array;
  private readonly publicIpHashShift: number;
  private readonly publicIpSlotMask: number;
  private readonly publicIpSlots: Int32Array;
  private readonly networks6: Int32Array;
  private readonly prefixLengths6: Uint8Array;
  private readonly publicIpv6s: Uint8Array;
  private readonly length6Count: number;
  private readonly length6Masks: Int32Array;
  private readonly length6HashShifts: Uint8Array;
  private readonly length6SlotMasks: Uint32Array;
  private readonly length6SlotOffsets: Uint32Array;
  private readonly prefix6Slots: Int32Array;
  /** Every lease's PublicIPv6 as 4 int32 words (all zero when absent): the IPv6 underlay's destinations. */
  readonly publicIpv6Words: Int32Array;
  private readonly publicIpv6HashShift: number;
  private readonly publicIpv6SlotMask: number;
  private readonly publicIpv6Slots: Int32Array;

  constructor(snapshot: LeaseTableSnapshot) {
    this.version = snapshot.version;
    this.leaseCount = snapshot.leaseCount;
    this.networks = snapshot.networks;
    this.prefixLengths = snapshot.prefixLengths;
    this.publicIps = new Int32Array(snapshot.publicIps.buffer, snapshot.publicIps.byteOffset, snapshot.publicIps.length);
    this.vtepMacs = snapshot.vtepMacs;
    this.vtepMacs6 = snapshot.vtepMacs6;
    this.lengthCount = snapshot.lengthCount;
    this.lengthMasks = snapshot.lengthMasks;
    this.lengthHashShifts = snapshot.lengthHashShifts;
    this.lengthSlotMasks = snapshot.lengthSlotMasks;
    this.lengthSlotOffsets = snapshot.lengthSlotOffsets;
    this.prefixSlots = snapshot.prefixSlots;
    this.publicIpHashShift = snapshot.publicIpHashShift;
    this.publicIpSlotMask = snapshot.publicIpSlotMask;
    this.publicIpSlots = snapshot.publicIpSlots;
    this.networks6 = snapshot.networks6;
    this.prefixLengths6 = snapshot.prefixLengths6;
    this.publicIpv6s = snapshot.publicIpv6s;
    this.length6Count = snapshot.length6Count;
    this.length6Masks = snapshot.length6Masks;
    this.length6HashShifts = snapshot.length6HashShifts;
    this.length6SlotMasks = snapshot.length6SlotMasks;
    this.length6SlotOffsets = snapshot.length6SlotOffsets;
    this.prefix6Slots = snapshot.prefix6Slots;
    this.publicIpv6Words = snapshot.publicIpv6Words;
    this.publicIpv6HashShift = snapshot.publicIpv6HashShift;
    this.publicIpv6SlotMask = snapshot.publicIpv6SlotMask;
    this.publicIpv6Slots = snapshot.publicIpv6Slots;
  }

  /**
   * Index of a lease whose PublicIPv6 is the address w0..w3 (big-endian words),
   * or -1: who may send over the IPv6 underlay. The all-zero address (a lease
   * without PublicIPv6) is never found.
   */
  findByPublicIpv6(w0: number, w1: number, w2: number, w3: number): number {
    const slots = this.publicIpv6Slots;
    const words = this.publicIpv6Words;
    let slot = hash6(w0, w1, w2, w3, this.publicIpv6HashShift);
    for (;;) {
      const index = slots[slot];
      if (index === -1) return -1;
      const j = 4 * index;
      if (words[j] === w0 && words[j + 1] === w1 && words[j + 2] === w2 && words[j + 3] === w3) return index;
      slot = (slot + 1) & this.publicIpv6SlotMask;
    }
  }

  /** Whether the leases at a and b have the same PublicIPv6 (anti-spoofing over the IPv6 underlay). */
  samePublicIpv6(a: number, b: number): boolean {
    const w = this.publicIpv6Words;
    return w[4 * a] === w[4 * b] && w[4 * a + 1] === w[4 * b + 1] && w[4 * a + 2] === w[4 * b + 2] && w[4 * a + 3] === w[4 * b + 3];
  }

  /**
   * Index of the longest-prefix lease whose IPv6 subnet holds the 16-byte
   * address at buf[off..], or -1. Reads the packet in place: no allocation.
   */
  lookup6(buf: Uint8Array, off: number): number {
    const a0 = (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3];
    const a1 = (buf[off + 4] << 24) | (buf[off + 5] << 16) | (buf[off + 6] << 8) | buf[off + 7];
    const a2 = (buf[off + 8] << 24) | (buf[off + 9] << 16) | (buf[off + 10] << 8) | buf[off + 11];
    const a3 = (buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15];
    const masks = this.length6Masks;
    const networks = this.networks6;
    const slots = this.prefix6Slots;
    for (let r = 0; r < this.length6Count; r++) {
      const m = 4 * r;
      const k0 = a0 & masks[m];
      const k1 = a1 & masks[m + 1];
      const k2 = a2 & masks[m + 2];
      const k3 = a3 & masks[m + 3];
      const base = this.length6SlotOffsets[r];
      const slotMask = this.length6SlotMasks[r];
      let slot = hash6(k0, k1, k2, k3, this.length6HashShifts[r]);
      for (;;) {
        const index = slots[base + slot];
        if (index === -1) break;
        const j = 4 * index;
        if (networks[j] === k0 && networks[j + 1] === k1 && networks[j + 2] === k2 && networks[j + 3] === k3) return index;
        slot = (slot + 1) & slotMask;
      }
    }
    return -1;
  }

  /** Whether the lease at index has an IPv6 subnet. */
  hasIpv6At(index: number): boolean {
    return this.prefixLengths6[index] !== NO_IPV6;
  }

  /** The lease's IPv6 prefix length (NO_IPV6 when it has no IPv6 subnet). */
  prefixLength6At(index: number): number {
    return this.prefixLengths6[index];
  }

  /** The lease's IPv6 network, 16 bytes written to out[off..] (for traces and tests, not the hot path). */
  subnetNetwork6At(index: number, out: Uint8Array, off = 0): void {
    for (let w = 0; w < 4; w++) {
      const word = this.networks6[4 * index + w];
      out[off + 4 * w] = word >>> 24;
      out[off + 4 * w + 1] = word >>> 16;
      out[off + 4 * w + 2] = word >>> 8;
      out[off + 4 * w + 3] = word;
    }
  }

  /** Whether the lease has a PublicIPv6 (an IPv6 underlay address). */
  hasPublicIpv6At(index: number): boolean {
    const w = this.publicIpv6Words;
    return (w[4 * index] | w[4 * index + 1] | w[4 * index + 2] | w[4 * index + 3]) !== 0;
  }

  /** Every lease's PublicIPv6, 16 bytes each (lease i's at 16 * i, all zero when absent). */
  get publicIpv6Bytes(): Uint8Array {
    return this.publicIpv6s;
  }

  /** Index of the longest-prefix lease containing dstAddr (uint32), or -1. */
  lookup(dstAddr: number): number {
    const slots = this.prefixSlots;
    const networks = this.networks;
    for (let r = 0; r < this.lengthCount; r++) {
      const key = (dstAddr & this.lengthMasks[r]) >>> 0;
      const base = this.lengthSlotOffsets[r];
      const slotMask = this.lengthSlotMasks[r];
      let slot = Math.imul(key, HASH_MULTIPLIER) >>> this.lengthHashShifts[r];
      for (;;) {
        const index = slots[base + slot];
        if (index === -1) break;
        if (networks[index] === key) return index;
        slot = (slot + 1) & slotMask;
      }
    }
    return -1;
  }

  /**
   * How many leases sit away from their home slot (reached only after a
   * collision), in the prefix regions and in the public-IP region. The
   * rehearsal picks its made-up leases so that both are non-zero: its lookups
   * then take the collision paths too, as lookups in a real cluster do.
   */
  displaced(): { prefix: number; publicIp: number } {
    let prefix = 0;
    for (let r = 0; r < this.lengthCount; r++) {
      const base = this.lengthSlotOffsets[r];
      for (let s = 0; s <= this.lengthSlotMasks[r]; s++) {
        const i = this.prefixSlots[base + s];
        if (i >= 0 && Math.imul(this.networks[i], HASH_MULTIPLIER) >>> this.lengthHashShifts[r] !== s) prefix++;
      }
    }
    let publicIp = 0;
    for (let s = 0; s <= this.publicIpSlotMask; s++) {
      const i = this.publicIpSlots[s];
      if (i >= 0 && Math.imul(this.publicIps[i], HASH_MULTIPLIER) >>> this.publicIpHashShift !== s) publicIp++;
    }
    return { prefix, publicIp };
  }

  /** Index of a lease whose node has this public IP, or -1 (for checking where tunnelled packets come from). */
  findByPublicIp(addr: number): number {
    const key = addr | 0; // int32 or uint32 in, same bits: compared as int32 (see publicIps)
    const slots = this.publicIpSlots;
    let slot = Math.imul(key, HASH_MULTIPLIER) >>> this.publicIpHashShift;
    for (;;) {
      const index = slots[slot];
      if (index === -1 || this.publicIps[index] === key) return index;
      slot = (slot + 1) & this.publicIpSlotMask;
    }
  }

  /** The public IP as a signed 32-bit integer (its bits are the address; `>>> 0` gives the usual uint32). */
  publicIpAt(index: number): number {
    return this.publicIps[index];
  }

  subnetNetworkAt(index: number): number {
    return this.networks[index];
  }

  prefixLengthAt(index: number): number {
    return this.prefixLengths[index];
  }

  /** Whether addr lies in the subnet of the lease at index (anti-spoofing: inner source vs sending node). */
  subnetContains(index: number, addr: number): boolean {
    const len = this.prefixLengths[index];
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    return ((addr & mask) >>> 0) === this.networks[index];
  }
}
