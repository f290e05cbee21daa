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
  // Outer UDP datagram checks (udp-frame.ts: captures, raw injection, fuzzing).
  NotUdp: 13, // outer IPv4 protocol is not 17
  BadUdpLength: 14, // UDP length < 8, beyond the IP payload, or the datagram is a fragment
  BadUdpChecksum: 15,
} as const;

export type DropReasonCode = (typeof DropReason)[keyof typeof DropReason];

/** Names for logs and metrics, kebab-case ("not-ipv4", "no-lease"), indexed by code. */
export const dropReasonNames: readonly string[] = Object.keys(DropReason).map((k) =>
  k.replace(/IPv4/g, 'Ipv4').replace(/[A-Z]/g, (c, i) => (i ? '-' : '') + c.toLowerCase()),
);
export const DROP_REASON_COUNT = dropReasonNames.length;
