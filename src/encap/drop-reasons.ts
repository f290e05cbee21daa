// Every packet the data plane does not forward is counted under exactly one of
// these reasons. The numeric codes index the per-worker counter array shared
// with the main thread, so append new reasons at the end and never reorder.
export const DropReason = {
  None: 0,
  TooShort: 1, // shorter than a minimal IPv4 header
  NotIPv4: 2, // version nibble is not 4
  BadHeaderLength: 3, // IHL < 5 or header longer than the packet
  BadTotalLength: 4, // total length field disagrees with the bytes we have
  BadHeaderChecksum: 5,
  TtlExpired: 6,
  NoLease: 7, // no lease covers the destination (answered with ICMP net unreachable)
  NotForThisNode: 8, // inbound packet whose destination is outside our subnet
  TooBig: 9, // larger than the MTU / slot
  SendFailed: 10, // the kernel refused the send (e.g. socket buffer full)
  TunWriteFailed: 11,
  // 12 is free (it was never released with a meaning); codes are positions, so it stays a gap.
  // Outer UDP datagram checks (udp-frame.ts: captures, raw injection, fuzzing).
  NotUdp: 13, // outer IPv4 protocol is not 17
  BadUdpLength: 14, // UDP length < 8, beyond the IP payload, or the datagram is a fragment
  BadUdpChecksum: 15,
  // Offloads (segmentation.ts): a super-packet read from the TUN that cannot be split.
  BadVirtioNetHeader: 16, // virtio_net_hdr inconsistent with the packet (gso type vs protocol, csum_start/offset, gso_size 0, TCP header length)
  TooManySegments: 17, // the super-packet needs more segments than the caller's SegmentList holds
  // VXLAN (vxlan.ts): frames a VTEP must not deliver.
  VxlanBadFlags: 18, // the I flag (0x08) is not set
  VxlanWrongVni: 19,
  VxlanWrongMac: 20, // inner destination MAC is not our VTEP's
  VxlanNotIpv4: 21, // inner ethertype other than IPv4 (IPv4 or IPv6 on a dual-stack node; not ARP), or one the inner packet's version contradicts
  VxlanArp: 22, // an ARP request for our VTEP: flannel programs permanent neighbour entries, so peers never need one answered
  // Who may send (anti-spoofing) and path MTU (forwarder.ts).
  UnknownPeer: 23, // the datagram's outer source is not the PublicIP of any current lease
  SpoofedSource: 24, // the inner source is outside the subnet of the lease the datagram came from
  FragmentationNeeded: 25, // too big for the underlay with DF set: answered with ICMP fragmentation needed
  // IPv6 (ipv6.ts, forwarder.ts). TooShort, TtlExpired (hop limit), NoLease, SpoofedSource and NotForThisNode count IPv6 too.
  Ipv6BadPayloadLength: 26, // 40 + payload length beyond the bytes received, or 0 without "no next header" (a jumbogram)
  Ipv6PacketTooBig: 27, // too big for the underlay: answered with ICMPv6 packet too big (IPv6 routers never fragment)
  // IPv6 underlay (issue 24): it carries IPv6 pods only, as flannel's flannel-v6.1 does.
  Ipv4OverIpv6Underlay: 28, // an IPv4 inner packet in a datagram that came over the IPv6 underlay
} as const;

export type DropReasonCode = (typeof DropReason)[keyof typeof DropReason];

/** One more than the highest code: the size of a per-worker drop counter block. */
export const DROP_REASON_COUNT = Math.max(...Object.values(DropReason)) + 1;

/**
 * Names for logs and metrics, kebab-case ("not-ipv4", "no-lease"), indexed by
 * code (built from the codes, not the key order, so a gap cannot shift them).
 */
export const dropReasonNames: readonly string[] = (() => {
  const names: string[] = Array.from({ length: DROP_REASON_COUNT }, (_, code) => `unused-${code}`);
  for (const [key, code] of Object.entries(DropReason)) {
    names[code] = key.replace(/IPv4/g, 'Ipv4').replace(/[A-Z]/g, (c, i) => (i ? '-' : '') + c.toLowerCase());
  }
  return names;
})();
