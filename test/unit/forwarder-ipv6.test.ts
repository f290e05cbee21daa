// The IPv6 data path of the forwarding core (issue 24), on in-memory devices:
// a dual-stack node (10.244.1.0/24 and fd00:10:244:1::/64) with a dual-stack
// peer. Both paths, hop limit, ICMPv6 errors (checked against a checksum
// computed here, independently of src/encap), every new drop with its
// counter, extension headers forwarded as they are, TSO6 super-packets cut
// into plain segments, and IPv4 unchanged beside it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Harness, packet, plainFrame, checksumsVerify, OWN_POD, PEER_POD, PEER_PUBLIC, OWN_PUBLIC, PORT } from '../support/forwarder-harness.js';
import { parseLeaseAttrs, type Lease } from '../../src/control/lease.js';
import { formatIPv6, parseIPv6 } from '../../src/control/ipv6-address.js';
import { IP_PROTOCOL_TCP, IP_PROTOCOL_UDP } from '../../src/encap/ipv4.js';
import { VirtioNetHeader, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_LEN } from '../../src/encap/virtio-net-header.js';
import { SegmentList, splitSuperPacketRange6 } from '../../src/encap/segmentation.js';
import { describeLayers, renderTraceEvent } from '../../src/observe/trace-render.js';
import type { TraceEvent } from '../../src/observe/trace-event.js';

const OWN6 = 'fd00:10:244:1::5';
const PEER6 = 'fd00:10:244:2::7';
const dual = (key: string, publicIp: string): Lease => parseLeaseAttrs(key, { PublicIP: publicIp, BackendType: 'udp' });
const LEASES = [dual('10.244.1.0-24&fd00:10:244:1::-64', '192.0.2.1'), dual('10.244.2.0-24&fd00:10:244:2::-64', '192.0.2.2')];

function withHarness(opts: ConstructorParameters<typeof Harness>[0], body: (h: Harness) => void): void {
  const h = new Harness({ leases: LEASES, ipv6Subnet: 'fd00:10:244:1::/64', ...opts });
  try {
    body(h);
  } finally {
    h.close();
  }
}

// ---- an independent IPv6 packet builder and checksum (plain loops, nothing from src/encap) ----

function sum16(bytes: number[]): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i] << 8) | (bytes[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** The upper-layer checksum of an IPv6 packet (RFC 8200 §8.1): 0 when it verifies. */
function upperChecksumOk(p: Uint8Array, upperOffset = 40, protocol = p[6]): boolean {
  const upper = [...p.subarray(upperOffset)];
  const len = upper.length;
  const pseudo = [...p.subarray(8, 40), (len >>> 24) & 255, (len >>> 16) & 255, (len >>> 8) & 255, len & 255, 0, 0, 0, protocol];
  return sum16([...pseudo, ...upper]) === 0xffff;
}

function setChecksum(p: Uint8Array, upperOffset: number, protocol: number, field: number): void {
  p[upperOffset + field] = 0;
  p[upperOffset + field + 1] = 0;
  const upper = [...p.subarray(upperOffset)];
  const len = upper.length;
  const pseudo = [...p.subarray(8, 40), (len >>> 24) & 255, (len >>> 16) & 255, (len >>> 8) & 255, len & 255, 0, 0, 0, protocol];
  const c = ~sum16([...pseudo, ...upper]) & 0xffff;
  p[upperOffset + field] = c >>> 8;
  p[upperOffset + field + 1] = c & 255;
}

interface Spec6 {
  src?: string;
  dst?: string;
  hops?: number;
  /** 'tcp' (default), 'icmp' (echo request unless icmpType), or raw next header */
  kind?: 'tcp' | 'icmp';
  icmpType?: number;
  payload?: number;
  /** extension headers in front of the upper layer: [next header number, total length in bytes] */
  ext?: number[];
  seq?: number;
}

function packet6(s: Spec6 = {}): Uint8Array {
  const kind = s.kind ?? 'tcp';
  const payload = s.payload ?? 100;
  const ext = s.ext ?? [];
  const upperProto = kind === 'tcp' ? IP_PROTOCOL_TCP : 58;
  const upperHeader = kind === 'tcp' ? 20 : 8;
  const extBytes = ext.length * 8;
  const total = 40 + extBytes + upperHeader + payload;
  const p = new Uint8Array(total);
  p[0] = 0x60;
  p[1] = 0x01; // a flow label, carried as is
  p[4] = (total - 40) >>> 8;
  p[5] = (total - 40) & 255;
  p[6] = ext.length > 0 ? ext[0] : upperProto;
  p[7] = s.hops ?? 64;
  p.set(parseIPv6(s.src ?? OWN6), 8);
  p.set(parseIPv6(s.dst ?? PEER6), 24);
  for (let i = 0; i < ext.length; i++) {
    const at = 40 + 8 * i;
    p[at] = i + 1 < ext.length ? ext[i + 1] : upperProto;
    p[at + 1] = 0; // 8 bytes
    p[at + 2] = 1; // a PadN option filling the rest
    p[at + 3] = 4;
  }
  const u = 40 + extBytes;
  for (let i = 0; i < payload; i++) p[u + upperHeader + i] = (i * 13 + (s.seq ?? 0)) & 255;
  if (kind === 'tcp') {
    p[u] = 0x9c;
    p[u + 1] = 0x40;
    p[u + 2] = 0x14;
    p[u + 3] = 0x51;
    const seq = s.seq ?? 1000;
    p[u + 4] = seq >>> 24;
    p[u + 5] = (seq >>> 16) & 255;
    p[u + 6] = (seq >>> 8) & 255;
    p[u + 7] = seq & 255;
    p[u + 12] = 5 << 4;
    p[u + 13] = 0x10;
    p[u + 14] = 0xff;
    p[u + 15] = 0xff;
    setChecksum(p, u, IP_PROTOCOL_TCP, 16);
  } else {
    p[u] = s.icmpType ?? 128;
    setChecksum(p, u, 58, 2);
  }
  return p;
}

const inbound6 = (s: Spec6 = {}) => packet6({ src: PEER6, dst: OWN6, ...s });

// ---- the two paths ----

test('outbound: an IPv6 packet for a leased pod leaves as the UDP payload to the peer\'s PublicIP, hop limit − 1, nothing else changed', () => {
  withHarness({}, (h) => {
    const p = packet6({ hops: 64 });
    h.tun.inject(p);
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 1);
    const d = h.bind.sent[0];
    assert.is(d.peer, PEER_PUBLIC >>> 0);
    assert.is(d.port, PORT);
    assert.is(d.bytes.length, p.length);
    assert.is(d.bytes[7], 63);
    assert.equal([...d.bytes.subarray(0, 7)], [...p.subarray(0, 7)]);
    assert.equal([...d.bytes.subarray(8)], [...p.subarray(8)]);
    assert.ok(upperChecksumOk(d.bytes), 'the hop limit is not in any checksum');
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('inbound: an IPv6 packet from the peer for one of our pods goes into the TUN, hop limit − 1, trailing bytes cut', () => {
  withHarness({}, (h) => {
    const p = inbound6({ hops: 10 });
    const padded = new Uint8Array(p.length + 7);
    padded.set(p);
    h.bind.inject(padded, PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    const written = h.tun.writtenPackets();
    assert.is(written.length, 1);
    assert.is(written[0].length, p.length);
    assert.is(written[0][7], 9);
    assert.ok(upperChecksumOk(written[0]));
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('IPv4 in the same dual-stack worker is forwarded as before, both ways', () => {
  withHarness({}, (h) => {
    h.tun.inject(packet({ ttl: 64 }));
    h.bind.inject(packet({ src: PEER_POD, dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.forwarder.drive(true, true);
    assert.is(h.bind.sent.length, 1);
    assert.is(h.bind.sent[0].bytes[8], 63);
    assert.ok(checksumsVerify(h.bind.sent[0].bytes));
    assert.is(h.tun.writtenPackets().length, 1);
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('extension headers are forwarded as they are (the forwarder does not parse them to forward)', () => {
  withHarness({}, (h) => {
    const p = packet6({ ext: [0, 60], hops: 5 }); // hop-by-hop, then destination options, then TCP
    h.tun.inject(p);
    h.bind.inject(inbound6({ ext: [60] }), PEER_PUBLIC, PORT);
    h.forwarder.drive(true, true);
    assert.is(h.bind.sent.length, 1);
    assert.equal([...h.bind.sent[0].bytes.subarray(8)], [...p.subarray(8)]);
    assert.is(h.bind.sent[0].bytes[7], 4);
    assert.is(h.tun.writtenPackets().length, 1);
    assert.equal(h.nonZeroDrops(), {});
  });
});

// ---- ICMPv6 errors ----

test('no lease: ICMPv6 destination unreachable (no route) back into the TUN, from the destination, quoting the packet, checksum verified independently', () => {
  withHarness({}, (h) => {
    const p = packet6({ dst: 'fd00:10:244:77::1', payload: 1400 - 60 }); // longer than 1280: the quote is cut
    h.tun.inject(p);
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 0);
    assert.is(h.drops('NoLease'), 1);
    const [e] = h.tun.writtenPackets();
    assert.is(e.length, 1280, 'an ICMPv6 error stays within the minimum MTU');
    assert.is(e[0] >>> 4, 6);
    assert.is((e[4] << 8) | e[5], 1280 - 40);
    assert.is(e[6], 58);
    assert.is(e[7], 64);
    assert.is(formatIPv6(e, 8), 'fd00:10:244:77::1');
    assert.is(formatIPv6(e, 24), OWN6);
    assert.is(e[40], 1, 'destination unreachable');
    assert.is(e[41], 0, 'code 0: no route to destination');
    assert.equal([...e.subarray(44, 48)], [0, 0, 0, 0]);
    assert.equal([...e.subarray(48)], [...p.subarray(0, 1280 - 48)]);
    assert.ok(upperChecksumOk(e));
    assert.is(h.count('IcmpSent'), 1);
  });
});

test('too big for the path MTU: ICMPv6 packet too big with the MTU, nothing sent, counted', () => {
  withHarness({ pathMtu: 1400 }, (h) => {
    const p = packet6({ payload: 1450 - 60 });
    h.tun.inject(p);
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 0);
    assert.is(h.drops('Ipv6PacketTooBig'), 1);
    const [e] = h.tun.writtenPackets();
    assert.is(e[40], 2);
    assert.is(e[41], 0);
    assert.is((e[44] << 24) | (e[45] << 16) | (e[46] << 8) | e[47], 1400);
    assert.is(formatIPv6(e, 8), PEER6);
    assert.is(formatIPv6(e, 24), OWN6);
    assert.ok(upperChecksumOk(e));
    // One that fits goes.
    h.tun.inject(packet6({ payload: 1400 - 60 }));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 1);
  });
});

test('no ICMPv6 error about an ICMPv6 error (behind extension headers too), nor for a multicast destination or an unspecified source; queries get one', () => {
  withHarness({}, (h) => {
    const silent = [
      packet6({ dst: 'fd00:10:244:77::1', kind: 'icmp', icmpType: 1 }),
      packet6({ dst: 'fd00:10:244:77::1', kind: 'icmp', icmpType: 127 }),
      packet6({ dst: 'fd00:10:244:77::1', kind: 'icmp', icmpType: 3, ext: [0, 60] }),
      packet6({ dst: 'ff02::16' }),
      packet6({ dst: 'fd00:10:244:77::1', src: '::' }),
    ];
    for (const p of silent) h.tun.inject(p);
    h.forwarder.drive(true, false);
    assert.is(h.drops('NoLease'), silent.length);
    assert.is(h.tun.written.length, 0);
    h.tun.inject(packet6({ dst: 'fd00:10:244:77::1', kind: 'icmp', icmpType: 128, ext: [60] }));
    h.forwarder.drive(true, false);
    assert.is(h.tun.written.length, 1);
    assert.ok(upperChecksumOk(h.tun.writtenPackets()[0]));
  });
});

test('ICMPv6 errors are rate-limited per source like ICMPv4 (the same limiter): a burst of 6, then suppressed', () => {
  withHarness({ batchSize: 32 }, (h) => {
    for (let i = 0; i < 20; i++) h.tun.inject(packet6({ dst: 'fd00:10:244:77::1', seq: i }));
    h.forwarder.drive(true, false);
    assert.is(h.drops('NoLease'), 20);
    assert.is(h.count('IcmpSent'), 6);
    assert.is(h.count('IcmpSuppressed'), 14);
  });
});

// ---- drops ----

test('hop limit: ≤ 1 is a ttl-expired drop both ways (as the IPv4 TTL path: no error sent)', () => {
  withHarness({}, (h) => {
    h.tun.inject(packet6({ hops: 1 }));
    h.tun.inject(packet6({ hops: 0 }));
    h.bind.inject(inbound6({ hops: 1 }), PEER_PUBLIC, PORT);
    h.forwarder.drive(true, true);
    assert.is(h.drops('TtlExpired'), 3);
    assert.is(h.bind.sent.length, 0);
    assert.is(h.tun.written.length, 0);
    h.tun.inject(packet6({ hops: 2 }));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent[0].bytes[7], 1);
  });
});

test('malformed IPv6: truncated header, payload length beyond the packet, a zero payload length (jumbogram) are counted drops', () => {
  withHarness({}, (h) => {
    const good = packet6();
    h.tun.inject(good.slice(0, 39));
    h.tun.inject(good.slice(0, good.length - 1));
    const jumbo = packet6();
    jumbo[4] = 0;
    jumbo[5] = 0;
    h.tun.inject(jumbo);
    h.bind.inject(inbound6().slice(0, 60), PEER_PUBLIC, PORT);
    h.bind.inject(inbound6().slice(0, 20), PEER_PUBLIC, PORT);
    h.forwarder.drive(true, true);
    assert.equal(h.nonZeroDrops(), { TooShort: 2, Ipv6BadPayloadLength: 3 });
    assert.is(h.bind.sent.length, 0);
    assert.is(h.tun.written.length, 0);
  });
});

test('inbound anti-spoofing and no reflection for IPv6: the source must be the sending node\'s, the destination ours', () => {
  withHarness({ leases: [...LEASES, dual('10.244.3.0-24&fd00:10:244:3::-64', '192.0.2.3')] }, (h) => {
    h.bind.inject(inbound6({ src: 'fd00:10:244:3::9' }), PEER_PUBLIC, PORT); // node 3's pod, sent by node 2
    h.bind.inject(inbound6({ src: 'fd00:99::1' }), PEER_PUBLIC, PORT); // nobody's
    h.bind.inject(inbound6({ dst: 'fd00:10:244:3::9' }), PEER_PUBLIC, PORT); // not ours
    h.bind.inject(inbound6(), 0xc0000263, PORT); // 192.0.2.99: no lease
    h.forwarder.drive(false, true);
    assert.equal(h.nonZeroDrops(), { SpoofedSource: 2, NotForThisNode: 1, UnknownPeer: 1 });
    assert.is(h.tun.written.length, 0);
  });
});

test('a node without an IPv6 subnet drops IPv6 exactly as before (not-ipv4)', () => {
  const h = new Harness({ leases: LEASES });
  try {
    h.tun.inject(packet6());
    h.bind.inject(inbound6(), PEER_PUBLIC, PORT);
    h.forwarder.drive(true, true);
    assert.equal(h.nonZeroDrops(), { NotIPv4: 2 });
  } finally {
    h.close();
  }
});

test('an IPv6-only peer lease is reached over IPv6 and never by IPv4', () => {
  withHarness({ leases: [LEASES[0], dual('0.0.0.0-0&fd00:10:244:2::-64', '192.0.2.2')] }, (h) => {
    h.tun.inject(packet6());
    h.tun.inject(packet({ dst: PEER_POD }));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 1);
    assert.is(h.bind.sent[0].bytes[0] >>> 4, 6);
    assert.equal(h.nonZeroDrops(), { NoLease: 1 });
  });
});

// ---- offloads: TSO6 cut into plain segments, partial checksums completed ----

test('a TCPv6 super-packet (TSO6) leaves as plain segments, each with its payload length, sequence and a verifying checksum', () => {
  withHarness({ vnet: true }, (h) => {
    const mss = 1000;
    const p = packet6({ payload: 3500, seq: 5000 });
    const vh = new VirtioNetHeader();
    vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vh.gsoType = VIRTIO_NET_HDR_GSO_TCPV6;
    vh.hdrLen = 60;
    vh.gsoSize = mss;
    vh.csumStart = 40;
    vh.csumOffset = 16;
    const f = new Uint8Array(VIRTIO_NET_HDR_LEN + p.length);
    vh.write(f, 0);
    f.set(p, VIRTIO_NET_HDR_LEN);
    h.tun.inject(f);
    h.forwarder.drive(true, false);
    const segs = h.bind.sent.map((d) => d.bytes);
    assert.is(segs.length, 4);
    let data: number[] = [];
    segs.forEach((s, i) => {
      assert.is(s[0] >>> 4, 6);
      assert.is(s[7], 63);
      assert.is((s[4] << 8) | s[5], s.length - 40);
      const seq = ((s[44] << 24) | (s[45] << 16) | (s[46] << 8) | s[47]) >>> 0;
      assert.is(seq, 5000 + i * mss);
      assert.ok(upperChecksumOk(s), `segment ${i}`);
      data = data.concat([...s.subarray(60)]);
    });
    assert.equal(data, [...p.subarray(60)]);
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('a single IPv6 packet read with NEEDS_CSUM leaves with its checksum completed', () => {
  withHarness({ vnet: true }, (h) => {
    const p = packet6({ payload: 300 });
    // What the kernel hands over: the checksum field holds the pseudo-header sum only.
    const pseudo = [...p.subarray(8, 40), 0, 0, (p.length - 40) >>> 8, (p.length - 40) & 255, 0, 0, 0, IP_PROTOCOL_TCP];
    const partial = sum16(pseudo);
    p[56] = partial >>> 8;
    p[57] = partial & 255;
    const vh = new VirtioNetHeader();
    vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vh.csumStart = 40;
    vh.csumOffset = 16;
    const f = plainFrame(p);
    vh.write(f, 0);
    h.tun.inject(f);
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 1);
    assert.ok(upperChecksumOk(h.bind.sent[0].bytes));
  });
});

test('inbound TCPv6 segments of one flow are merged into one TSO6 super-packet write (GRO), which cuts back into the segments received', () => {
  withHarness({ vnet: true }, (h) => {
    const sent = [0, 1, 2].map((i) => inbound6({ seq: 1000 + i * 100, payload: 100 }));
    for (const p of sent) h.bind.inject(p, PEER_PUBLIC, PORT);
    h.bind.inject(inbound6({ kind: 'icmp' }), PEER_PUBLIC, PORT); // not TCP: alone
    h.forwarder.drive(false, true);
    assert.is(h.tun.written.length, 2);
    const frame = h.tun.written[0];
    const vh = new VirtioNetHeader();
    vh.read(frame, 0);
    assert.is(vh.gsoType, VIRTIO_NET_HDR_GSO_TCPV6);
    assert.is(vh.gsoSize, 100);
    assert.is(vh.csumStart, 40);
    assert.is(vh.csumOffset, 16);
    assert.is(vh.hdrLen, 60);
    const merged = frame.subarray(VIRTIO_NET_HDR_LEN);
    assert.is((merged[4] << 8) | merged[5], 20 + 300);
    assert.is(merged[7], 63, 'hop limit − 1');
    // Cut again as the kernel would: each segment is the one received (hop limit − 1), checksums verify.
    const seg = new SegmentList(8);
    const buf = new Uint8Array(merged.length + 8 * 200);
    buf.set(merged);
    const n = splitSuperPacketRange6(buf, 0, merged.length, vh, 0, 8, merged.length, 160, 0, seg, 0);
    assert.is(n, 3);
    for (let i = 0; i < 3; i++) {
      const p = new Uint8Array(seg.headerLength[i] + seg.payloadLength[i]);
      p.set(buf.subarray(seg.headerOffset[i], seg.headerOffset[i] + seg.headerLength[i]));
      p.set(buf.subarray(seg.payloadOffset[i], seg.payloadOffset[i] + seg.payloadLength[i]), seg.headerLength[i]);
      assert.ok(upperChecksumOk(p), `segment ${i}`);
      const expected = sent[i].slice();
      expected[7] -= 1;
      assert.equal([...p], [...expected]);
    }
    assert.is(h.tun.written[1][VIRTIO_NET_HDR_LEN + 40], 128, 'the ICMPv6 echo, alone');
    assert.is(h.count('CoalescedWrites'), 1);
  });
});

test('TCPv6 segments of different flows, or with another hop limit, are not merged together', () => {
  withHarness({ vnet: true, leases: [...LEASES, dual('10.244.3.0-24&fd00:10:244:3::-64', '192.0.2.3')] }, (h) => {
    h.bind.inject(inbound6({ seq: 1000 }), PEER_PUBLIC, PORT);
    h.bind.inject(inbound6({ seq: 1100, src: 'fd00:10:244:2::8' }), PEER_PUBLIC, PORT); // another flow
    h.bind.inject(inbound6({ seq: 1100, hops: 30 }), PEER_PUBLIC, PORT); // same flow, other hop limit
    h.forwarder.drive(false, true);
    assert.is(h.tun.written.length, 3);
    for (const w of h.tun.writtenPackets()) assert.ok(upperChecksumOk(w));
    assert.is(h.count('CoalescedWrites'), 0);
  });
});

// ---- VXLAN mode (issue 24c): IPv6 inner frames, ethertype 0x86dd, the peer's BackendV6Data MAC ----

const OUR_MAC = [2, 0, 0, 0, 0, 1]; // the harness's VTEP MAC
const PEER_MAC4 = '02:00:00:00:00:02';
const PEER_MAC6 = '06:00:00:00:00:02'; // flannel's flannel-v6.1 has its own MAC: the IPv6 frames must use it
const vxlanLease = (key: string, publicIp: string, mac4: string, mac6?: string): Lease =>
  parseLeaseAttrs(key, {
    PublicIP: publicIp,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: mac4 },
    ...(mac6 ? { BackendV6Data: { VNI: 1, VtepMAC: mac6 } } : {}),
  });
const VXLAN_LEASES = [
  vxlanLease('10.244.1.0-24&fd00:10:244:1::-64', '192.0.2.1', '02:00:00:00:00:01', '02:00:00:00:00:01'),
  vxlanLease('10.244.2.0-24&fd00:10:244:2::-64', '192.0.2.2', PEER_MAC4, PEER_MAC6),
];

/** A VXLAN frame as a VTEP sends it: VNI 1, to `dst`, from the peer, with the ethertype given. */
function vxlanFrame(inner: Uint8Array, ethertype: number, dst: number[] = OUR_MAC, vni = 1): Uint8Array {
  const f = new Uint8Array(22 + inner.length);
  f.set([0x08, 0, 0, 0, vni >>> 16, (vni >>> 8) & 255, vni & 255, 0]);
  f.set(dst, 8);
  f.set([6, 0, 0, 0, 0, 2], 14);
  f[20] = ethertype >>> 8;
  f[21] = ethertype & 255;
  f.set(inner, 22);
  return f;
}

test('VXLAN: an IPv6 packet leaves in a frame with ethertype 0x86dd to the peer\'s BackendV6Data MAC, from ours; IPv4 beside it keeps 0x0800 and the BackendData MAC', () => {
  withHarness({ backend: 'vxlan', leases: VXLAN_LEASES }, (h) => {
    const p = packet6({ hops: 64 });
    h.tun.inject(p);
    h.tun.inject(packet({ src: OWN_POD, dst: PEER_POD }));
    h.forwarder.drive(true, false);
    assert.is(h.bind.sent.length, 2);
    const [f6, f4] = h.bind.sent;
    assert.is(f6.peer, PEER_PUBLIC >>> 0);
    assert.is(f6.port, PORT); // the harness's port (the agent's is 8472 in VXLAN mode)
    assert.equal([...f6.bytes.subarray(0, 8)], [0x08, 0, 0, 0, 0, 0, 1, 0], 'VXLAN header: I flag, VNI 1');
    assert.equal([...f6.bytes.subarray(8, 14)], [6, 0, 0, 0, 0, 2], 'destination: the IPv6 VTEP MAC');
    assert.equal([...f6.bytes.subarray(14, 20)], OUR_MAC, 'source: our VTEP MAC');
    assert.equal([...f6.bytes.subarray(20, 22)], [0x86, 0xdd]);
    const inner = f6.bytes.subarray(22);
    assert.is(inner.length, p.length);
    assert.is(inner[7], 63, 'hop limit − 1');
    assert.equal([...inner.subarray(8)], [...p.subarray(8)]);
    assert.ok(upperChecksumOk(inner));
    assert.equal([...f4.bytes.subarray(8, 14)], [2, 0, 0, 0, 0, 2], 'IPv4: the BackendData MAC');
    assert.equal([...f4.bytes.subarray(20, 22)], [0x08, 0x00]);
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('VXLAN: a TCPv6 super-packet (TSO6) leaves as plain segments, each in its own 0x86dd frame', () => {
  withHarness({ backend: 'vxlan', leases: VXLAN_LEASES, vnet: true }, (h) => {
    const p = packet6({ payload: 2500, seq: 7000 });
    const vh = new VirtioNetHeader();
    vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vh.gsoType = VIRTIO_NET_HDR_GSO_TCPV6;
    vh.hdrLen = 60;
    vh.gsoSize = 1000;
    vh.csumStart = 40;
    vh.csumOffset = 16;
    const f = new Uint8Array(VIRTIO_NET_HDR_LEN + p.length);
    vh.write(f, 0);
    f.set(p, VIRTIO_NET_HDR_LEN);
    h.tun.inject(f);
    h.forwarder.drive(true, false);
    const frames = h.bind.sent.map((d) => d.bytes);
    assert.is(frames.length, 3);
    let data: number[] = [];
    for (const [i, fr] of frames.entries()) {
      assert.equal([...fr.subarray(8, 14)], [6, 0, 0, 0, 0, 2], `segment ${i}: the IPv6 VTEP MAC`);
      assert.equal([...fr.subarray(20, 22)], [0x86, 0xdd]);
      const s = fr.subarray(22);
      assert.is((s[4] << 8) | s[5], s.length - 40);
      assert.ok(upperChecksumOk(s), `segment ${i}`);
      data = data.concat([...s.subarray(60)]);
    }
    assert.equal(data, [...p.subarray(60)]);
    assert.equal(h.nonZeroDrops(), {});
  });
});

test('VXLAN: an inbound 0x86dd frame to our MAC goes into the TUN (hop limit − 1); wrong MAC, ethertype/version disagreements, a spoofed source and hop limit 1 are counted drops', () => {
  withHarness({ backend: 'vxlan', leases: VXLAN_LEASES }, (h) => {
    const good = inbound6({ hops: 9 });
    h.bind.inject(vxlanFrame(good, 0x86dd), PEER_PUBLIC, 8472);
    h.bind.inject(vxlanFrame(good, 0x86dd, [6, 0, 0, 0, 0, 1]), PEER_PUBLIC, 8472); // another VTEP's MAC
    h.bind.inject(vxlanFrame(good, 0x0800), PEER_PUBLIC, 8472); // IPv6 under the IPv4 ethertype
    h.bind.inject(vxlanFrame(packet({ src: PEER_POD, dst: OWN_POD }), 0x86dd), PEER_PUBLIC, 8472); // IPv4 under the IPv6 ethertype
    h.bind.inject(vxlanFrame(good, 0x88b5), PEER_PUBLIC, 8472); // neither family
    h.bind.inject(vxlanFrame(inbound6({ src: 'fd00:10:244:7::1' }), 0x86dd), PEER_PUBLIC, 8472); // no lease of the sender's
    h.bind.inject(vxlanFrame(inbound6({ hops: 1 }), 0x86dd), PEER_PUBLIC, 8472);
    h.forwarder.drive(false, true);
    const written = h.tun.writtenPackets();
    assert.is(written.length, 1);
    const expected = good.slice();
    expected[7] = 8;
    assert.equal([...written[0]], [...expected]);
    assert.equal(h.nonZeroDrops(), { VxlanWrongMac: 1, VxlanNotIpv4: 3, SpoofedSource: 1, TtlExpired: 1 });
  });
});

test('VXLAN on a node without an IPv6 subnet: 0x86dd frames are dropped as before (vxlan-not-ipv4)', () => {
  const h = new Harness({ backend: 'vxlan', leases: VXLAN_LEASES.map((l) => ({ ...l, ipv6Subnet: undefined })) });
  try {
    h.bind.inject(vxlanFrame(inbound6(), 0x86dd), PEER_PUBLIC, 8472);
    h.bind.inject(vxlanFrame(packet({ src: PEER_POD, dst: OWN_POD }), 0x0800), PEER_PUBLIC, 8472);
    h.forwarder.drive(false, true);
    assert.is(h.tun.writtenPackets().length, 1, 'IPv4 still delivered');
    assert.equal(h.nonZeroDrops(), { VxlanNotIpv4: 1 });
  } finally {
    h.close();
  }
});

void OWN_PUBLIC;
void IP_PROTOCOL_UDP;

test('trace: IPv6 packets are traced at every stage both ways, filtered by icmp6, drawn with their IPv6 header; a no-lease drop is reported', () => {
  withHarness({}, (h) => {
    h.control({ type: 'trace', request: { session: 1, filter: 'icmp6', limit: 10, perSecond: 0, shared: new SharedArrayBuffer(4) } });
    h.forwarder.checkControl();
    h.tun.inject(packet6({ kind: 'icmp', hops: 64 }));
    h.tun.inject(packet6({ hops: 64 })); // TCP: not icmp6
    h.tun.inject(packet({ ttl: 64 })); // IPv4: not icmp6
    h.tun.inject(packet6({ kind: 'icmp', dst: 'fd00:10:244:9::1' })); // no lease
    h.forwarder.drive(true, false);
    h.bind.inject(inbound6({ kind: 'icmp', icmpType: 129, hops: 10 }), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    const events = h.reports.flatMap((r) => (r.type === 'trace' ? [r.event] : []));
    const byPacket = new Map<number, TraceEvent[]>();
    for (const e of events) byPacket.set(e.packet, [...(byPacket.get(e.packet) ?? []), e]);
    assert.equal(
      [...byPacket.values()].map((evs) => evs.map((e) => e.stage)),
      [
        ['tun-read', 'lease-lookup', 'encapsulate', 'udp-send'],
        ['tun-read', 'lease-lookup', 'drop'],
        ['udp-receive', 'validate', 'decapsulate', 'tun-write'],
      ],
    );
    const [out, noLease, inbound] = [...byPacket.values()];
    assert.equal(out[1].lease, { key: 'fd00:10:244:2::-64', publicIp: '192.0.2.2' });
    assert.match(out[1].note!, /fd00:10:244:2::\/64 is node 192\.0\.2\.2; hop limit decremented/);
    assert.equal(
      describeLayers(out[3]).map((l) => l.name),
      ['IPv4', 'UDP', 'IPv6', 'ICMPv6', 'payload'],
    );
    assert.is(Object.fromEntries(describeLayers(out[3])[2].fields).hlim, '63', 'the wire shows the decremented hop limit');
    assert.is(noLease[1].lease, null);
    assert.is(noLease[2].drop, 'no-lease');
    assert.match(noLease[2].note!, /ICMPv6 destination unreachable/);
    assert.match(inbound[1].note!, /lease fd00:10:244:2::-64; payload length good/);
    const text = renderTraceEvent(inbound[3], { color: false });
    assert.match(text, /IPv6 \(L3\)\s+src fd00:10:244:2::7  dst fd00:10:244:1::5  hlim 9  next ICMPv6/);
    assert.match(text, /ICMPv6 \(L4\)\s+type echo-reply \(129\)/);
  });
});

test('counters: the IPv6 share of packets read and datagrams received, IPv4 packets not in it', () => {
  withHarness({}, (h) => {
    h.tun.inject(packet6());
    h.tun.inject(packet6({ kind: 'icmp' }));
    h.tun.inject(packet({ ttl: 64 }));
    h.forwarder.drive(true, false);
    h.bind.inject(inbound6(), PEER_PUBLIC, PORT);
    h.bind.inject(packet({ src: PEER_POD, dst: OWN_POD }), PEER_PUBLIC, PORT);
    h.forwarder.drive(false, true);
    assert.is(h.count('TunReadPackets'), 3);
    assert.is(h.count('Ipv6TunReadPackets'), 2);
    assert.is(h.count('UdpReceivedPackets'), 2);
    assert.is(h.count('Ipv6UdpReceivedPackets'), 1);
  });
});

test.run();
