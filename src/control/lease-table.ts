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

import type { Lease } from './lease.js';
import { formatIPv4, prefixMask } from './ipv4-address.js';

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
}

// Fibonacci hashing (Knuth): multiply by 2^32/φ and keep the top bits. The top
// bits depend on every key bit, which matters because subnet networks differ
// only in their middle bits (10.244.X.0).
const HASH_MULTIPLIER = 0x9e3779b1;

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
  const countByLength = new Array<number>(33).fill(0);

  for (let i = 0; i < leaseCount; i++) {
    const { subnet, publicIp } = leases[i];
    const mask = prefixMask(subnet.prefixLength); // throws on a bad length
    networks[i] = (subnet.network & mask) >>> 0;
    prefixLengths[i] = subnet.prefixLength;
    publicIps[i] = publicIp >>> 0;
    const mac = vtepMacOf(leases[i].backendData);
    if (mac) vtepMacs.set(mac, 6 * i);
    countByLength[subnet.prefixLength]++;
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

  return {
    version,
    leaseCount,
    networks,
    prefixLengths,
    publicIps,
    vtepMacs,
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
  private readonly lengthCount: number;
  private readonly lengthMasks: Uint32Array;
  private readonly lengthHashShifts: Uint8Array;
  private readonly lengthSlotMasks: Uint32Array;
  private readonly lengthSlotOffsets: Uint32Array;
  private readonly prefixSlots: Int32Array;
  private readonly publicIpHashShift: number;
  private readonly publicIpSlotMask: number;
  private readonly publicIpSlots: Int32Array;

  constructor(snapshot: LeaseTableSnapshot) {
    this.version = snapshot.version;
    this.leaseCount = snapshot.leaseCount;
    this.networks = snapshot.networks;
    this.prefixLengths = snapshot.prefixLengths;
    this.publicIps = new Int32Array(snapshot.publicIps.buffer, snapshot.publicIps.byteOffset, snapshot.publicIps.length);
    this.vtepMacs = snapshot.vtepMacs;
    this.lengthCount = snapshot.lengthCount;
    this.lengthMasks = snapshot.lengthMasks;
    this.lengthHashShifts = snapshot.lengthHashShifts;
    this.lengthSlotMasks = snapshot.lengthSlotMasks;
    this.lengthSlotOffsets = snapshot.lengthSlotOffsets;
    this.prefixSlots = snapshot.prefixSlots;
    this.publicIpHashShift = snapshot.publicIpHashShift;
    this.publicIpSlotMask = snapshot.publicIpSlotMask;
    this.publicIpSlots = snapshot.publicIpSlots;
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
