// VXLAN (RFC 7348) as the Linux kernel's vxlan device and flannel's vxlan
// backend put it on the wire: UDP to port 8472, an 8-byte VXLAN header
// (flags 0x08 = "VNI present", 24-bit VNI), then an Ethernet frame from our
// VTEP MAC to the peer's VTEP MAC carrying the IPv4 packet. The kernel's UDP
// socket writes the outer IPv4 and UDP headers; this file writes the 22 bytes
// in front of the inner packet, in the slot's headroom.
//
// Dual-stack: an IPv6 inner packet (version nibble 6) travels the same way,
// same VNI, same port, same IPv4 underlay, with ethertype 0x86dd and the
// peer's IPv6 VTEP MAC (its lease's BackendV6Data.VtepMAC) as destination.
// One local MAC serves both families (docs/design.md: one VTEP MAC).
import type { Encapsulation } from './encapsulation.js';
import { DropReason } from './drop-reasons.js';
import { IPV4_MIN_HEADER } from './ipv4.js';

export const VXLAN_HEADER = 8;
export const ETHERNET_HEADER = 14;
export const VXLAN_HEADROOM = VXLAN_HEADER + ETHERNET_HEADER; // 22
/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): TUN MTU = underlay MTU − 50. */
export const VXLAN_OVERHEAD = 50;
export const VXLAN_DEFAULT_PORT = 8472; // the Linux default, which flannel keeps
export const VXLAN_FLAG_VNI = 0x08;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;

export function parseMac(text: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(text)) throw new Error(`"${text}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)));
}

export function formatMac(mac: Uint8Array, off = 0): string {
  return Array.from(mac.subarray(off, off + 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

export class VxlanEncapsulation implements Encapsulation {
  readonly name = 'vxlan';
  readonly headroom = VXLAN_HEADROOM;
  /** Per-lease peer VTEP MACs (6 bytes per lease index), swapped with the lease table. */
  peerMacs: Uint8Array = new Uint8Array(0);
  /** The same for IPv6 inner packets (BackendV6Data.VtepMAC), all zero where a lease has none. */
  peerMacs6: Uint8Array = new Uint8Array(0);

  constructor(
    readonly vni: number,
    /** This node's VTEP MAC: the source of every frame we send, the destination we accept. */
    readonly localMac: Uint8Array,
    /** The node has an IPv6 subnet: frames with ethertype 0x86dd are delivered (else dropped as before). */
    readonly ipv6 = false,
  ) {
    if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new Error(`VNI ${vni} is outside 0..16777215`);
  }

  encapsulate(buf: Uint8Array, innerOffset: number, _innerLength: number, leaseIndex: number): number {
    const start = innerOffset - VXLAN_HEADROOM;
    const vni = this.vni;
    buf[start] = VXLAN_FLAG_VNI;
    buf[start + 1] = 0;
    buf[start + 2] = 0;
    buf[start + 3] = 0;
    buf[start + 4] = vni >>> 16;
    buf[start + 5] = (vni >>> 8) & 0xff;
    buf[start + 6] = vni & 0xff;
    buf[start + 7] = 0;
    const eth = start + VXLAN_HEADER;
    // The forwarder only hands an IPv6 packet over on a node with an IPv6 subnet.
    const v6 = buf[innerOffset] >>> 4 === 6;
    const macs = v6 ? this.peerMacs6 : this.peerMacs;
    const m = 6 * leaseIndex;
    for (let i = 0; i < 6; i++) buf[eth + i] = macs[m + i];
    const local = this.localMac;
    for (let i = 0; i < 6; i++) buf[eth + 6 + i] = local[i];
    const ethertype = v6 ? ETHERTYPE_IPV6 : ETHERTYPE_IPV4;
    buf[eth + 12] = ethertype >>> 8;
    buf[eth + 13] = ethertype & 0xff;
    return start;
  }

  /**
   * Accepts exactly what a VTEP with our VNI and MAC must deliver. Any source
   * port and any outer checksum are fine: the kernel has already verified a
   * non-zero one before the datagram reached our socket.
   */
  decapsulate(buf: Uint8Array, offset: number, length: number): number {
    if (length < VXLAN_HEADROOM + IPV4_MIN_HEADER) return -DropReason.TooShort;
    if ((buf[offset] & VXLAN_FLAG_VNI) === 0) return -DropReason.VxlanBadFlags;
    const vni = (buf[offset + 4] << 16) | (buf[offset + 5] << 8) | buf[offset + 6];
    if (vni !== this.vni) return -DropReason.VxlanWrongVni;
    const eth = offset + VXLAN_HEADER;
    const ethertype = (buf[eth + 12] << 8) | buf[eth + 13];
    if (ethertype === ETHERTYPE_ARP) return -DropReason.VxlanArp;
    const local = this.localMac;
    for (let i = 0; i < 6; i++) if (buf[eth + i] !== local[i]) return -DropReason.VxlanWrongMac;
    const inner = offset + VXLAN_HEADROOM;
    if (ethertype === ETHERTYPE_IPV4) {
      // On an IPv4-only node the forwarder's IPv4 checks drop a wrong version, as before.
      if (this.ipv6 && buf[inner] >>> 4 !== 4) return -DropReason.VxlanNotIpv4;
      return inner;
    }
    // IPv6 needs an IPv6 subnet here and an IPv6 packet inside (the ethertype and the version must agree).
    if (ethertype !== ETHERTYPE_IPV6 || !this.ipv6 || buf[inner] >>> 4 !== 6) return -DropReason.VxlanNotIpv4;
    return inner;
  }
}
